"""Request headers for gevent's WSGI server without the email parser, stricter than http.client.

pywsgi reads a request's headers with ``http.client.parse_headers``, which runs them through
``email.parser``: about 5 % of the proxy's CPU per request. :func:`read_headers` reads the same
lines under the same limits and builds the same message object (pywsgi's ``OldMessage``) itself
when every line is plainly ``Name: value`` or a folded continuation: what ``http.client`` would
give, but that a folded value's line breaks become spaces (RFC 9112, 5.2).

Any other head is refused with :class:`MalformedHead`, which pywsgi answers with a 400 and a closed
connection: a line that is not a header (a bare CR, an empty name, a continuation first), no blank
line before the connection's end, a value with a control character but tab (the upstream client
refuses to send it: the write would be left of unknown outcome), or a body length that can be read
two ways: a Transfer-Encoding other than ``chunked`` (pywsgi would read no body), both
Transfer-Encoding and Content-Length, more than one Content-Length or one that is not digits
(pywsgi's ``int()`` takes ``+5`` and ``1_0``). ``http.client`` keeps the headers before an odd line
and leaves the rest of the head, the body's length with it, to be read as the body or as the next
request: each of these is a way to smuggle a request past a front end that reads the head otherwise.
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
_DIGITS = re.compile(r"[0-9]+")
_FOLD = re.compile(r"\r?\n[ \t]+")  # obs-fold: replaced by a space (RFC 9112, 5.2)
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # a field value (RFC 9110, 5.5): no control characters but tab
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+:")  # email.feedparser's header line, with a non-empty name


class MalformedHead(ValueError):
    """A request head that is not header lines ended by a blank line (pywsgi answers a ValueError with 400)."""


class HeadersTooLarge(client.HTTPException):
    """More header lines (``too_many``) or bytes than allowed (the proxy answers 431)."""

    def __init__(self, reason: str, too_many: bool) -> None:
        super().__init__(reason)
        self.too_many = too_many


def read_headers(fp: BinaryIO, *args: Any, max_count: int = MAXHEADERS, max_bytes: Optional[int] = None) -> Any:
    """What ``gevent.pywsgi.headers_factory(fp)`` returns, for the lines up to the blank one;
    MalformedHead for a head that is not plainly header lines.

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
    if lines[-1] == b"":
        raise MalformedHead("the connection ended inside the request head")
    parsed = parse_plain(lines)
    if parsed is None:
        raise MalformedHead("a line of the request head is not a header (Name: value) or its continuation")
    parsed = [(name, _FOLD.sub(" ", value)) for name, value in parsed]
    for name, value in parsed:
        if not _VALUE.fullmatch(value):
            raise MalformedHead(f"the value of {name} has a control character")
    _check_framing(parsed)
    if _Message is None:
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


def _check_framing(headers: list[tuple[str, str]]) -> None:
    """MalformedHead unless the body's length is said one way only (see the module's doc)."""
    encodings = [v for n, v in headers if n.lower() == "transfer-encoding"]
    lengths = [v for n, v in headers if n.lower() == "content-length"]
    if encodings and (len(encodings) > 1 or encodings[0].lower() != "chunked"):  # exactly as pywsgi compares
        raise MalformedHead(f"Transfer-Encoding {', '.join(encodings)!r}: only chunked is read")
    if encodings and lengths:
        raise MalformedHead("both Transfer-Encoding and Content-Length")
    if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0].strip(" \t"))):
        raise MalformedHead(f"Content-Length {', '.join(lengths)!r} is not one number")


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
