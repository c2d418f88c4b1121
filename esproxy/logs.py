"""Log lines in the Go original's format, so operators' greps keep working:

    2022-05-24 14:36:16.777 [INFO ] 14008 --- [20   ] [-]  : cpu.profile started

The bracket after ``---`` is the greenlet (the original printed the goroutine id). Nothing that
can carry credentials (request headers, URLs with user info) is logged: see :func:`redact_url`;
and every line goes through :func:`redact` as a last guard (``Authorization``/``ApiKey``/``Basic``/
``Bearer`` values, passwords in URLs, ``"password": "..."`` fields of captured bodies).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .schema import format_duration

log = logging.getLogger("esproxy")

_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR", "CRITICAL": "FATAL"}


def _greenlet_id() -> int:
    try:
        from gevent import getcurrent
    except ImportError:  # pragma: no cover - gevent is a dependency
        return 0
    return getattr(getcurrent(), "minimal_ident", 0)


class SeedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = _LEVELS.get(record.levelname, record.levelname[:5])
        line = f"{when}.{int(record.msecs):03d} [{level}] {os.getpid()} --- [{_greenlet_id():<5}] [-]  : "
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return line + redact(text)


_SECRETS = (
    # Authorization: Basic xxx / ApiKey xxx / Bearer xxx, as a header, in JSON or in a repr
    (re.compile(r"\b(Basic|ApiKey|Bearer)(\s+|%20)[A-Za-z0-9+/._~-]{6,}=*"), r"\1\2***"),
    # user:password@ in URLs
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*):[^@/\s\"']*@", re.IGNORECASE), r"\1:***@"),
    # "password": "..." (and passwd, secret, api_key) in JSON bodies, also escaped inside JSON strings
    (
        re.compile(
            r'((?:\\?")(?:password|passwd|secret|api_key|apikey)(?:\\?")\s*:\s*(?:\\?"))(?:[^"\\]|\\[^"])*', re.I
        ),
        r"\1***",
    ),
)


def redact(text: str) -> str:
    """Mask credentials in a log line."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(SeedFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"WARN": "WARNING"}.get(level.upper(), level.upper()))
    # Their retry chatter repeats what esproxy's own warnings say; keep their errors.
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def redact_url(url: str) -> str:
    """Drop the password of ``http://user:pass@host`` URLs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def access_log(
    remote_addr: str,
    method: str,
    path: str,
    target: str,
    direction: str,
    seconds: float,
    status: int,
    response_body: bytes,
) -> None:
    """One ``access log: {...}`` line with the original's fields."""
    body: Any
    try:
        body = json.loads(response_body) if response_body else ""
    except (ValueError, UnicodeDecodeError):
        body = response_body.decode("utf-8", "replace")
    entry = {
        "RemoteAddr": remote_addr,
        "Method": method,
        "Path": path,
        "Target": redact_url(target),
        "Direction": direction,
        "Duration": format_duration(seconds),
        "StatusCode": status,
        "ResponseBody": body,
    }
    log.info("access log: %s", json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
