"""Request headers for gevent's WSGI server without the email parser in the common case.

pywsgi reads a request's headers with ``http.client.parse_headers``, which runs them through
``email.parser``: about 5 % of the proxy's CPU per request. :func:`read_headers` reads the same
lines under the same limits and builds the same message object (pywsgi's ``OldMessage``) itself
when every line is plainly ``Name: value`` or a folded continuation; any other block (a line that
is not a header, a bare CR, an empty name, a ``From `` line, a continuation first) goes through
``http.client``'s parser as before, so what the application sees never differs.
"""

from __future__ import annotations

import re
from http import client
from typing import Any, BinaryIO, Optional

from gevent import pywsgi
from gevent.pywsgi import headers_factory

_Message = getattr(pywsgi, "OldMessage", None)  # what headers_factory returns

MAXLINE = 65536  # http.client's limits
MAXHEADERS = 100
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+:")  # email.feedparser's header line, with a non-empty name


class HeadersTooLarge(client.HTTPException):
    """More header lines (``too_many``) or bytes than allowed (the proxy answers 431)."""

    def __init__(self, reason: str, too_many: bool) -> None:
        super().__init__(reason)
        self.too_many = too_many


def read_headers(fp: BinaryIO, *args: Any, max_count: int = MAXHEADERS, max_bytes: Optional[int] = None) -> Any:
    """What ``gevent.pywsgi.headers_factory(fp)`` returns, for the lines up to the blank one.

    More than ``max_count`` header lines, or more than ``max_bytes`` bytes of them (line ends
    included), raise :class:`HeadersTooLarge` as soon as the line over the limit is read.
    """
    lines = []
    size = 0
    while True:
        room = MAXLINE if max_bytes is None else min(MAXLINE, max_bytes - size + 2)  # + the blank line
        line = fp.readline(room + 1)
        if len(line) > MAXLINE:
            return headers_factory(_Replay([line]))  # its "Line too long" answer
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            break
        size += len(line)
        if len(lines) > max_count:
            raise HeadersTooLarge(f"more than {max_count} header lines", too_many=True)
        if max_bytes is not None and size > max_bytes:
            raise HeadersTooLarge(f"more than {max_bytes} bytes of headers", too_many=False)
    parsed = parse_plain(lines) if _Message is not None else None
    if parsed is None:
        return headers_factory(_Replay(lines))
    message = _Message()
    message._headers = parsed  # email.message.Message's list of (name, value)
    return message


def parse_plain(lines: list[bytes]) -> Optional[list[tuple[str, str]]]:
    """(name, value) pairs as email's compat32 policy stores them, or None for an unusual block."""
    headers: list[tuple[str, str]] = []
    source: list[str] = []  # the lines of the header being read, line ends included
    for raw in lines[:-1]:  # the last one is the blank line (or EOF)
        line = raw.decode("iso-8859-1")
        end = 2 if line.endswith("\r\n") else 1 if line.endswith("\n") else 0
        if not end or "\r" in line[:-end]:
            return None
        if line[0] in " \t":
            if not source:
                return None
            source.append(line)
            continue
        if not _NAME.match(line) or line.startswith("From "):
            return None
        if source:
            headers.append(_header(source))
        source = [line]
    if source:
        headers.append(_header(source))
    return headers


def _header(source: list[str]) -> tuple[str, str]:
    # email.policy.Compat32.header_source_parse
    name, value = source[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(source[1:])
    return name, value.rstrip("\r\n")


class _Replay:
    """Lines already read, offered to http.client again."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = iter(lines)

    def readline(self, limit: int = -1) -> bytes:
        return next(self._lines, b"")
