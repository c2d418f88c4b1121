"""Log lines in the Go original's format, so operators' greps keep working:

    2022-05-24 14:36:16.777 [INFO ] 14008 --- [20   ] [-]  : cpu.profile started

The bracket after ``---`` is the greenlet (the original printed the goroutine id). Nothing that
can carry credentials (request headers, URLs with user info) is logged: see :func:`redact_url`;
and every line goes through :func:`redact` as a last guard (``Authorization``/``ApiKey``/``Basic``/
``Bearer`` values, passwords in URLs, ``"password": "..."`` fields of captured bodies, and every
value the config took from ``${ENV}`` or ``file:``, see :mod:`esproxy.core.secretrefs`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from gevent import getcurrent

from .schema import format_duration
from .secretrefs import mask

log = logging.getLogger("esproxy")

_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR", "CRITICAL": "FATAL"}


def _greenlet_id() -> int:
    return getattr(getcurrent(), "minimal_ident", 0)


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class SeedFormatter(logging.Formatter):
    _stamp = (-1, "")  # (a second, its local time as text): strftime once a second

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, record.levelname[:5])
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.head(record.created, int(record.msecs), level) + redact(text)

    def head(self, created: float, msecs: int, level: str, greenlet: Optional[int] = None) -> str:
        """A line's start: local time to the millisecond, level, pid, greenlet (default: the current one)."""
        second, when = self._stamp
        if int(created) != second:
            second = int(created)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._stamp = (second, when)
        if greenlet is None:
            greenlet = _greenlet_id()
        return f"{when}.{msecs:03d} [{level}] {_pid} --- [{greenlet:<5}] [-]  : "


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


def _may_hold_secret(text: str) -> tuple[bool, bool, bool]:
    """For each of _SECRETS, whether the line holds what that pattern needs in order to match.

    Every log line goes through redact(); most hold none of these words, and three regex scans
    cost more than these substring tests.
    """
    return (
        "Basic" in text or "ApiKey" in text or "Bearer" in text,
        "://" in text and "@" in text,
        _may_name_a_secret(text),
    )


def _may_name_a_secret(text: str) -> bool:
    """Whether the third of _SECRETS can match: one of its words in any case. Its UTF-8 bytes
    lowered (ASCII letters only: a group of access log lines lowers several times faster so than
    with str.lower()) hold the word wherever ``text.lower()`` does, but where a character that
    lower() or re.IGNORECASE turns into an ASCII letter spells it: those are looked for as such."""
    lower = text.encode("utf-8", "surrogatepass").lower()
    return (
        b"passw" in lower
        or b"secret" in lower
        or b"api_key" in lower
        or b"apikey" in lower
        or any(c in text for c in _IGNORECASE_ODD)
    )


# The characters but A-Z that str.lower() or re.IGNORECASE turns into (or matches to) ASCII letters:
# İ, ı, ſ, and the Kelvin sign K.
_IGNORECASE_ODD = ("\u0130", "\u0131", "\u017f", "\u212a")


def redact(text: str) -> str:
    """Mask credentials in a log line."""
    for (pattern, repl), needed in zip(_SECRETS, _may_hold_secret(text)):
        if needed:
            text = pattern.sub(repl, text)
    return mask(text)


# An access log line's fields as access_log() took them, formatted when its group is written.
AccessEntry = tuple[float, int, str, str, str, str, str, float, int, bytes]

# Answer bytes that access log lines not yet written may hold before they are written at once.
HELD_BODIES = 1 << 20


class LazyFlushHandler(logging.StreamHandler):
    """Writes lines in groups: at once from WARNING up (with every line before them), otherwise at
    most ``interval`` seconds after the first unwritten line, and at exit (logging.shutdown).

    A flush per line was a write(2) per line: under load, a good part of the proxy's CPU. Access log
    lines come as their fields (:meth:`add_access`) and are formatted with their group, in one pass
    that also looks for secrets to redact once for the whole group rather than once per line.
    """

    def __init__(self, stream: Any, interval: float = 0.2) -> None:
        super().__init__(stream)
        self.interval = interval
        self._pending: list[str | AccessEntry] = []
        self._held = 0  # bytes of answers in the access entries of _pending
        self._timer: Optional[threading.Timer] = None
        os.register_at_fork(after_in_child=self._forget)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line, record.levelno)

    def add(self, line: str, levelno: int) -> None:
        """A formatted line, written with the next group (at once from WARNING up)."""
        self._pending.append(line + self.terminator)
        if levelno >= logging.WARNING:
            self.flush()
        elif self._timer is None:
            self._start_timer()

    def add_access(self, entry: AccessEntry) -> None:
        """An access log line (INFO), formatted and written with the next group; at once when the
        answers the group's lines hold pass HELD_BODIES (large answers are not kept for long)."""
        self._pending.append(entry)
        self._held += len(entry[-1])
        if self._held > HELD_BODIES:
            self.flush()
        elif self._timer is None:
            self._start_timer()

    def _start_timer(self) -> None:
        self._timer = threading.Timer(self.interval, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # set by Handler.__init__
            if self._timer is not None:
                self._timer.cancel()  # a no-op when this is the timer's own call
                self._timer = None
            if self._pending:
                pending, self._pending, self._held = self._pending, [], 0
                try:
                    text = self._text(pending)
                    self.stream.write(text)
                except Exception:  # like StreamHandler.emit: a closed stdout must not kill the caller
                    pass
            super().flush()

    def _text(self, pending: list[str | AccessEntry]) -> str:
        """The group as written: lines as they came, access entries formatted (and redacted) as
        ``log.info("access log: %s", line)`` through this handler would have written them."""
        entries = [p for p in pending if type(p) is tuple]
        if not entries:
            return "".join(pending)  # type: ignore[arg-type]  # only str here
        texts = ["access log: " + _entry_line(entry) for entry in entries]
        joined = "\n".join(texts)
        if any(_may_hold_secret(joined)) or mask(joined) is not joined:  # rare: line by line, as redact() would
            texts = [redact(t) for t in texts]
        formatter = self.formatter
        if not isinstance(formatter, SeedFormatter):
            formatter = SeedFormatter()
        info, end = _LEVELS["INFO"], self.terminator
        heads = [formatter.head(e[0], int((e[0] - int(e[0])) * 1000), info, e[1]) for e in entries]
        lines = iter(head + text + end for head, text in zip(heads, texts))
        return "".join(p if type(p) is str else next(lines) for p in pending)  # type: ignore[misc]

    def _forget(self) -> None:
        # A forked child: its parent writes these lines; the timer thread did not survive the fork.
        self._pending = []
        self._held = 0
        self._timer = None


class MaskedStream:
    """A text stream whose writes go through :func:`esproxy.core.secretrefs.mask`: stderr, where gevent prints
    the traceback of a greenlet's unexpected exception without going through logging."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def setup(level: str = "INFO") -> None:
    if not isinstance(sys.stderr, MaskedStream):
        sys.stderr = MaskedStream(sys.stderr)
    handler = LazyFlushHandler(sys.stdout)
    handler.setFormatter(SeedFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"WARN": "WARNING"}.get(level.upper(), level.upper()))
    # What SeedFormatter does not print, logging need not collect for every record (the logging
    # HOWTO's "Optimization"): the caller's frame, thread and process.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Their retry chatter repeats what esproxy's own warnings say; keep their errors.
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def redact_url(url: str) -> str:
    """Drop the password of ``http://user:pass@host`` URLs."""
    if "@" not in url:  # no user info (the common case: skip the parse)
        return url
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
    if not log.isEnabledFor(logging.INFO):
        return
    direct = _direct_handler()
    if direct is None:
        line = _access_line(remote_addr, method, path, target, direction, seconds, status, response_body)
        log.info("access log: %s", line)
        return
    # What log.info would write through that handler, without a LogRecord and the Logger's calls, and
    # formatted later with the other lines of its group (add_access): once per proxied request.
    entry = (time.time(), _greenlet_id(), remote_addr, method, path, target, direction, seconds, status, response_body)
    with direct.lock:  # type: ignore[union-attr]  # set by Handler.__init__
        direct.add_access(entry)


def _access_line(
    remote_addr: str,
    method: str,
    path: str,
    target: str,
    direction: str,
    seconds: float,
    status: int,
    response_body: bytes,
) -> str:
    # What json.dumps(entry, ensure_ascii=False, separators=(",", ":")) writes, without building the dict
    return (
        f'{{"RemoteAddr":{_string(remote_addr)},"Method":{_string(method)},"Path":{_string(path)},'
        f'"Target":{_string(redact_url(target))},"Direction":{_string(direction)},'
        f'"Duration":{_string(format_duration(seconds))},"StatusCode":{int(status)},'
        f'"ResponseBody":{_body_json(response_body)}}}'
    )


def _entry_line(entry: AccessEntry) -> str:
    """An access entry's JSON; one that cannot be formatted (a bug) is said so in its place, and the
    group's other lines are written all the same."""
    try:
        return _access_line(*entry[2:])
    except Exception as e:  # noqa: BLE001 - formatted in the flush, away from the request that logged it
        return f"{{}} (not formatted: {type(e).__name__}: {e}; {entry[3]!r} {entry[4]!r} -> {entry[8]!r})"


def _direct_handler() -> Optional[LazyFlushHandler]:
    """The handler of logs.setup() when it is the only place an INFO line of ``log`` goes (no
    handler, filter or level on the way that the line would meet), else None."""
    root = logging.root
    if log.handlers or log.filters or not log.propagate or log.disabled or log.parent is not root or root.filters:
        return None
    handlers = root.handlers
    if len(handlers) != 1:
        return None
    h = handlers[0]
    if type(h) is not LazyFlushHandler or h.filters or h.level > logging.INFO or type(h.formatter) is not SeedFormatter:
        return None
    return h


_string = json.encoder.encode_basestring  # a str as json.dumps(ensure_ascii=False) writes it (C)
_scan_json = json.decoder.JSONDecoder().scan_once  # (value, end) of the JSON value at an index (C)


def _body_json(body: bytes) -> str:
    """The answer as a JSON value: parsed, or as a string when it is not JSON."""
    if not body:
        return '""'
    try:
        text = body.decode("utf-8")
        try:
            value, end = _scan_json(text, 0)  # json.loads without its Python around the C scanner
        except StopIteration:  # no value at 0 (a blank first, or no JSON)
            end = -1
        if end != len(text):  # json.loads decides: it takes blanks around the value
            value = json.loads(text)
    except ValueError:  # UnicodeDecodeError included
        return json.dumps(body.decode("utf-8", "replace"), ensure_ascii=False)
    if "\n" in text or "\r" in text or "\\u" in text:
        # Not one line, or escapes: as json.dumps writes it (an escaped "password" gets redacted).
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text  # valid JSON on one line already: no need to write it again
