"""Requests on geventhttpclient's connection pool with a request builder and a response parser of
our own: every request whose body is bytes (or none) and that asks for no ``100-continue`` and no
chunked upload, that is all the proxy and the replay send.

geventhttpclient's response parser is C (llhttp), but it calls back into Python for every header
name, value and body piece; with the request builder and its Headers class that was about a
quarter of the proxy's CPU per proxied GET, and ~15 % per captured write. So
:meth:`esproxy.clients.elastic.Elastic.request` sends them here: the request head is built like
geventhttpclient's (same headers, same order, same checks, the same Content-Length), head and body
go in one send as there, the response head is read in one piece and split with bytes methods, and
the body is framed by its Content-Length or chunked encoding (or the connection's end). The answer
is the :class:`~esproxy.clients.elastic.Response` the client built before: headers as sent (names'
case kept, same-name lines grouped where the first one stood, values without leading blanks), the
body as sent (chunked framing removed).

Connections come from and go back to the same pool (its ``maxConns`` bound holds for both paths).
A kept-alive connection the cluster closed meanwhile is retried once on a new one for the methods
geventhttpclient retries (the idempotent ones: GET, HEAD, PUT, DELETE...), never for a POST, which
the cluster may have applied; a connection that broke while the body was sent is first read for
the answer the cluster may have sent before closing (a 413 to a body too large), as there.
"""

from __future__ import annotations

import re
import socket
from typing import Any, Iterator, Optional

import httptools

from esproxy.core.deadlines import Deadlines, TimedOut

# geventhttpclient's own checks of what it sends (2.6; older versions checked less)
_TOKEN_RE = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD_VALUE_RE = re.compile(r"\A[\t\x20-\x7e\x80-\xff]*\Z")
_REQUEST_TARGET_RE = re.compile(r"\A[^\x00-\x20\x7f]*\Z")

# geventhttpclient's: retried on a connection that broke (RFC 9110 9.2.2), and the methods sent with
# "Content-Length: 0" when they have no body (RFC 9112 6.3)
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))

MAX_HEAD = 1024 * 1024  # a response head larger than this is refused (llhttp's default limit is 80 KB)
RECV = 64 * 1024


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` in one send when the socket takes it whole (a request head, a small
    answer): gevent's sendall asks the kernel for SO_SNDBUF first, a syscall per call."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class Unparsable(ValueError):
    """The cluster's answer is not HTTP/1.x as this parser reads it."""


class Closed(OSError):
    """The connection ended before a whole answer arrived."""


def takes(headers: dict[str, str]) -> bool:
    """Whether a request with these headers (and a bytes body or none) is sent here: not one that
    asks for ``Expect: 100-continue`` or names a Transfer-Encoding (geventhttpclient sends those)."""
    for name, value in headers.items():
        key = name.lower()
        if key == "transfer-encoding" or (key == "expect" and "100-continue" in str(value).lower()):
            return False
    return True


def build_head(method: str, uri: str, headers: dict[str, str], host: str, length: int = 0) -> bytes:
    """The request head geventhttpclient would send for ``method`` and a body of ``length`` bytes:
    its User-Agent, the given headers, then Host and Content-Length (each unless given; the length
    of an empty body only for the methods that carry one)."""
    if method not in _TOKENS:
        if not _TOKEN_RE.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        _known_token(method)
    if not _REQUEST_TARGET_RE.fullmatch(uri) or uri.startswith("//"):
        raise ValueError(f"invalid request URI {uri!r}")
    if not uri.startswith("/"):
        uri = "/" + uri
    lines = [f"{method} {uri} HTTP/1.1\r\n"]
    fields = {"user-agent": ("User-Agent", USER_AGENT)}
    for name, value in headers.items():
        fields[name.lower()] = (name, value)
    fields.setdefault("host", ("Host", host))
    if "content-length" not in fields and (length or method in BODY_METHODS):
        fields["content-length"] = ("Content-Length", str(length))
    for name, value in fields.values():
        if name not in _TOKENS:
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid header field name {name!r}")
            _known_token(name)
        value = str(value)
        if not _FIELD_VALUE_RE.fullmatch(value):
            raise ValueError(f"invalid value for header field {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


_TOKENS: set[str] = set()  # methods and header names build_head found tokens (a bounded number of them)


def _known_token(token: str) -> None:
    if len(_TOKENS) < 1000:
        _TOKENS.add(token)


def _user_agent() -> str:
    from geventhttpclient.client import HTTPClient

    return HTTPClient.DEFAULT_HEADERS["User-Agent"]


USER_AGENT = _user_agent()


def parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    """(version, status, reason, headers) of a response head (without its blank line).

    The headers are read by llhttp (httptools) when it takes the head, else line by line here
    (:func:`parse_head_lines`), to the same list: llhttp is stricter (it refuses what the lines'
    reading takes, never the other way round), and gives each name and value as that reading does.
    """
    version, status, reason = _status_line(head)
    if head.endswith(b"\r\n") or b"\r\n\r\n" in head:  # an empty line: llhttp would end the head there
        return parse_head_lines(head)
    reader = _HeadReader()
    try:
        httptools.HttpResponseParser(reader).feed_data(head + b"\r\n\r\n")
    except Exception:  # noqa: BLE001 - httptools' errors (HttpParserUpgrade among them): read line by line
        return parse_head_lines(head)
    raw = reader.headers
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    if len(headers) > 1 and len({name.lower() for name, _ in raw}) < len(raw):
        headers = _grouped(headers)  # a name more than once: its lines together, where the first stood
    return version, status, reason, headers


def parse_head_raw(block: bytes) -> Optional[tuple[str, int, str, list[tuple[bytes, bytes]]]]:
    """:func:`parse_head`'s answer for an answer's head up to its first blank line (``block`` ends
    with it), the headers as sent (bytes: their latin-1 is parse_head's), when llhttp takes the
    head and no name is there twice; else None (parse_head decides)."""
    version, status, reason = _status_line(block)
    reader = _HeadReader()
    try:
        httptools.HttpResponseParser(reader).feed_data(block)
    except Exception:  # noqa: BLE001 - httptools' errors: parse_head decides
        return None
    raw = reader.headers
    if len(raw) > 1 and len({name.lower() for name, _ in raw}) < len(raw):
        return None
    return version, status, reason, raw


class _HeadReader:
    """httptools' callback for the headers of one answer head."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def _status_line(head: bytes) -> tuple[str, int, str]:
    end = head.find(b"\r\n")
    status_line = (head if end < 0 else head[:end]).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise Unparsable(f"bad status line {status_line[:100]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


def _grouped(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Same-name lines together, where the first of them stood (names compared without case)."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for name, value in headers:
        key = name.lower()
        if key in grouped:
            grouped[key].append((name, value))
        else:
            grouped[key] = [(name, value)]
    return [entry for entries in grouped.values() for entry in entries]


def parse_head_lines(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    """:func:`parse_head` in Python, line by line: any name that is a token, the value as it follows
    the colon and its blanks (anything but CR LF)."""
    version, status, reason = _status_line(head)
    headers = []
    for raw in head.split(b"\r\n")[1:]:
        line = raw.decode("latin-1")
        name, sep, value = line.partition(":")
        if not sep or not name or not _TOKEN_RE.fullmatch(name):
            raise Unparsable(f"bad header line {line[:100]!r}")
        headers.append((name, value.lstrip(" \t")))
    return version, status, reason, _grouped(headers)


class Answer:
    """One response being read from a pooled connection."""

    def __init__(self, pool: Any, sock: socket.socket, method: str) -> None:
        self.pool, self.sock, self.method = pool, sock, method
        self.buffer = bytearray()
        self.got_bytes = False
        self.deadlines: Optional[Deadlines] = None
        self.timeout: Optional[float] = None  # the socket's own, while deadlines time its waits

    def time_waits(self, deadlines: Deadlines) -> None:
        """From now until :meth:`finish`, each wait for the answer's bytes is timed by ``deadlines``
        (the socket's own timeout, without a gevent.Timeout started for each wait)."""
        timeout = self.sock.gettimeout()
        if timeout:
            self.deadlines, self.timeout = deadlines, timeout
            self.sock.settimeout(None)

    def _fill(self) -> bool:
        deadlines = self.deadlines
        if deadlines is None:
            data = self.sock.recv(RECV)
        else:
            deadlines.arm(self.timeout)  # type: ignore[arg-type]  # set with deadlines
            try:
                data = self.sock.recv(RECV)
            except TimedOut:
                raise socket.timeout("timed out") from None
            finally:
                deadlines.disarm()
        if not data:
            return False
        self.got_bytes = True
        self.buffer += data
        return True

    def read_head(self) -> tuple[int, str, list[tuple[str, str]], bool]:
        """(status, reason, headers, keep-alive) of the final answer (1xx ones skipped)."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise Unparsable("response head too large")
                if not self._fill():
                    raise Closed("connection closed before the answer's head")
                end = self.buffer.find(b"\r\n\r\n")
            version, status, reason, headers = parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            if 100 <= status < 200 and status != 101:
                continue
            connection = ",".join([v for k, v in headers if len(k) == 10 and k.lower() == "connection"]).lower()
            keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
            return status, reason, headers, keep

    def read_head_raw(self) -> Optional[tuple[int, str, list[tuple[bytes, bytes]], bool, str, int]]:
        """(status, reason, headers as sent, keep-alive, framing, Content-Length) of a final answer
        whose head :func:`parse_head_raw` takes, the head consumed; None (nothing consumed) for any
        other: :meth:`read_head` reads it."""
        end = self.buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(self.buffer) > MAX_HEAD:
                return None
            if not self._fill():
                raise Closed("connection closed before the answer's head")
            end = self.buffer.find(b"\r\n\r\n")
        parsed = parse_head_raw(bytes(self.buffer[: end + 4]))
        if parsed is None:
            return None
        version, status, reason, headers = parsed
        if status < 200:  # a 1xx: read_head skips it
            return None
        connection: list[bytes] = []
        encoding: list[bytes] = []
        length = None
        for name, value in headers:
            size = len(name)
            if size == 10 or size == 14 or size == 17:  # (lower() only for names of the lengths below)
                key = name.lower()
                if key == b"connection":
                    connection.append(value)
                elif key == b"transfer-encoding":
                    encoding.append(value)
                elif key == b"content-length":
                    length = value  # once at most (no name twice)
        joined = b",".join(connection).decode("latin-1").lower()
        keep = "keep-alive" in joined if version == "HTTP/1.0" else "close" not in joined
        if self.method == "HEAD" or status in (204, 304):
            framing, size = "none", 0
        elif encoding:
            te = b",".join(encoding).decode("latin-1").lower()
            framing, size = ("chunked" if te.rsplit(",", 1)[-1].strip() == "chunked" else "close"), 0
        elif length is not None:
            if not length.isdigit():
                return None  # read_head and framing() refuse it
            framing, size = "length", int(length)
        else:
            framing, size = "close", 0
        del self.buffer[: end + 4]
        return status, reason, headers, keep, framing, size

    def framing(self, status: int, headers: list[tuple[str, str]]) -> tuple[str, int]:
        """("none" | "length" | "chunked" | "close", Content-Length)."""
        if self.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return "none", 0
        # (the lengths first: a name of another length is not one of these, and lower() costs)
        encoding = ",".join([v for k, v in headers if len(k) == 17 and k.lower() == "transfer-encoding"]).lower()
        if encoding:
            if encoding.rsplit(",", 1)[-1].strip() != "chunked":
                return "close", 0
            return "chunked", 0
        lengths = {v for k, v in headers if len(k) == 14 and k.lower() == "content-length"}
        if len(lengths) > 1:
            raise Unparsable(f"conflicting Content-Length values {sorted(lengths)}")
        if lengths:
            value = lengths.pop()
            if not value.isdigit():
                raise Unparsable(f"bad Content-Length {value!r}")
            return "length", int(value)
        return "close", 0

    def body(self, framing: str, length: int) -> bytes:
        """The whole body: ``b"".join(self.pieces(framing, length))``, without the pieces when its
        length is known."""
        if framing != "length":
            return b"".join(self.pieces(framing, length))
        buffer = self.buffer
        while len(buffer) < length:
            if not self._fill():
                raise Closed(f"connection closed with {length - len(buffer)} of {length} body bytes unread")
        data = bytes(buffer[:length])
        del buffer[:length]
        return data

    def pieces(self, framing: str, length: int) -> Iterator[bytes]:
        """The body as it arrives (chunked framing removed), at most RECV bytes at a time."""
        if framing == "length":
            left = length
            while left:
                if not self.buffer and not self._fill():
                    raise Closed(f"connection closed with {left} of {length} body bytes unread")
                piece = bytes(self.buffer[:left])
                del self.buffer[: len(piece)]
                left -= len(piece)
                yield piece
        elif framing == "chunked":
            yield from self._chunks()
        elif framing == "close":
            if self.buffer:
                yield bytes(self.buffer)
                self.buffer.clear()
            while self._fill():
                yield bytes(self.buffer)
                self.buffer.clear()

    def _line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > MAX_HEAD:
                raise Unparsable("chunk header too large")
            if not self._fill():
                raise Closed("connection closed inside a chunked body")

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Unparsable(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._line():  # trailers, up to the blank line
                    pass
                return
            left = size
            while left:
                if not self.buffer and not self._fill():
                    raise Closed("connection closed inside a chunk")
                piece = bytes(self.buffer[:left])
                del self.buffer[: len(piece)]
                left -= len(piece)
                yield piece
            if self._line():
                raise Unparsable("chunk not followed by CRLF")

    def finish(self, reusable: bool) -> None:
        """Give the connection back (a whole answer read, nothing more on it) or close it."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.deadlines is not None:
            sock.settimeout(self.timeout)  # back as the pool gave it
            self.deadlines = None
        if reusable and not self.buffer:
            self.pool.return_socket(sock)
        else:
            self.pool.release_socket(sock)
