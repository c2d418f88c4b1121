"""The proxy's side of one client connection: pywsgi's handler, with the request line checked, the
target kept raw, the listener's limits applied while a request is read, and answers sent in one send.

:class:`RawPathHandler` hands each request to the server's application (proxy/handler.py's ProxyApp):
a plain GET or HEAD to its ``pass_read`` (no WSGI environ built), anything else through WSGI.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from typing import Any, Optional

import httptools
from gevent.pywsgi import Input, WSGIHandler, format_date_time

from esproxy.clients.lean import send_all
from esproxy.core.stats import STATS
from esproxy.core.wsgi import Environ

from .httpheaders import HeadersTooLarge, read_headers
from .limits import (
    LimitedInput,
    Limits,
    ProxyServer,
    Refused,
    RequestTimeout,
    TimedOut,
    answer_and_close,
    client_name,
    content_too_long,
    headers_too_large,
    line_too_long,
    wait_for_bytes,
)

# The request line as RFC 9112 has it: method SP request-target SP version, the method a token, the target
# a path (origin form) without blanks or control characters; bytes of UTF-8 characters (index names sent
# unescaped, as curl does) are kept. Not "//...": the upstream client refuses to send it (a protocol-relative
# URL), which would leave a write of unknown outcome to settle.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"/(?!/)[^\x00-\x20\x7f]*")
_VERSIONS = ("HTTP/1.0", "HTTP/1.1")


# Request heads the fast path reads (see RawPathHandler._plain_head): a GET or HEAD whose whole head is in
# the connection's buffer; headers that give a request a body, or that pywsgi or ProxyApp.passes look at
# beyond their value, send it the ordinary way.
_PLAIN_STARTS = (b"GET /", b"HEAD /")
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))


class _HeadReader:
    """httptools' callbacks for one request head: its target and headers as sent."""

    __slots__ = ("url", "headers")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


class PlainHeaders:
    """A plain head's headers, with what the proxy reads of pywsgi's message object (``get``, the
    ``_headers`` list of (name, value)), the values as the email parser stores them."""

    __slots__ = ("_headers", "_first")

    def __init__(self, headers: list[tuple[str, str]], first: dict[str, str]) -> None:
        self._headers = headers
        self._first = first  # lowercase name -> the first value

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return list(self._headers)


class BadRequestLine(ValueError):
    """pywsgi answers a ValueError from read_request with a 400 and closes the connection."""


_date = (-1, b"")  # (a second, its Date header line): formatted once a second


def _date_header() -> bytes:
    """``Date: ...\\r\\n`` as pywsgi writes it, for the current second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: " + format_date_time(now) + b"\r\n")
    return _date[1]


class RawPathHandler(WSGIHandler):
    """Keeps the request target as the client sent it: PATH_INFO is percent-decoded, which would
    turn a document id like ``a%2Fb`` into a path. Sets TCP_NODELAY on each client connection,
    sends an answer's head and body in one send, reads headers with httpheaders.read_headers, and
    applies the listener's limits (esproxy.proxy.limits) while it reads a request."""

    server: ProxyServer
    served = 0  # requests read on this connection

    def MessageClass(self, fp: Any, *args: Any) -> Any:
        limits = self.server.limits
        return read_headers(fp, *args, max_count=limits.max_header_count, max_bytes=limits.max_header_size)

    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi's, on a request line checked first. pywsgi splits the line at any whitespace, and in
        latin-1 that includes bytes of UTF-8 characters (\\x85, \\xa0): it is given the line with the target
        as ``/``, and the target is put back after."""
        parts = raw_requestline.rstrip("\r\n").split(" ")
        if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or parts[2] not in _VERSIONS:
            raise BadRequestLine(f"not an HTTP/1.x request line: {raw_requestline[:200]!r}")
        method, target, version = parts
        if not _TARGET.fullmatch(target):
            raise BadRequestLine(f"not a path (no blanks or control characters): {target[:200]!r}")
        ok = super().read_request(f"{method} / {version}")
        self.path = target
        self.requestline = raw_requestline.rstrip("\r\n")
        return ok

    passing = False  # this request takes ProxyApp.pass_read instead of the WSGI path
    _peer: Optional[tuple[str, str]] = None

    def peer(self) -> tuple[str, str]:
        """(the client's address, ``address:port``) as the environ's REMOTE_ADDR and the access log
        name it (once per connection)."""
        if self._peer is None:
            address = self.client_address
            remote, port = (str(address[0]), str(address[1])) if isinstance(address, tuple) else ("", "")
            self._peer = (remote, f"{remote}:{port}")
        return self._peer

    def get_environ(self) -> Environ:
        self.passing = self.server.application.passes(self)
        if self.passing:  # no environ to build (pywsgi's error logging reads one: an empty one)
            self.wsgi_input = None  # no body: nothing to read or to finish
            return {}
        env = super().get_environ()
        env["RAW_URI"] = self.path
        if isinstance(self.wsgi_input, Input):  # not for a connection upgrade (not Elasticsearch's)
            self.wsgi_input = env["wsgi.input"] = LimitedInput(
                self.wsgi_input, self.server.limits, self.server.deadlines
            )
        return env

    def handle_one_response(self) -> None:
        if not self.passing:
            super().handle_one_response()
            return
        self.status = None
        self.response_length = 0
        try:
            self.server.application.pass_read(self)
        except OSError as e:  # the client went away (as pywsgi's own path: close, say nothing)
            self.close_connection = True
            if e.args and e.args[0] not in self.ignored_socket_errors:
                self.handle_error(*sys.exc_info())
        except Exception:  # noqa: BLE001 - as pywsgi's own path: logged, a 500 if nothing was sent
            self.handle_error(*sys.exc_info())

    def send_answer(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """What start_response + a one-piece body send through pywsgi, byte for byte: the head as
        given, then Date (unless given) and Content-Length (unless given or a 204/304), in one send."""
        head = []
        date = length = False
        for name, value in headers:
            head += (name, ": ", value, "\r\n")
            lower = name.lower()
            date = date or lower == "date"
            length = length or lower == "content-length"
        self.send_lines(status, "".join(head).encode("latin-1"), date, length, body)

    def send_lines(self, status: str, lines: bytes, date: bool, length: bool, body: bytes) -> None:
        """:meth:`send_answer` of header lines already written (``Name: value\\r\\n`` each);
        ``date``, ``length``: whether they hold a Date, a Content-Length."""
        code = status[:3]
        out = b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n" + lines
        if not date:
            out += _date_header()
        if not length and code not in ("204", "304"):
            out += b"Content-Length: %d\r\n" % len(body)
        out += b"\r\n"
        self.status = status.encode("latin-1")
        self.code = int(code)
        if len(body) > 65536:
            self._sendall(out)
            self._sendall(body)
        else:
            self._send_small(out + body)

    def _send_small(self, data: bytes) -> None:
        """pywsgi's _sendall, through lean.send_all."""
        try:
            send_all(self.socket, data)
        except OSError as ex:
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def send_stream(self, status: str, headers: list[tuple[str, str]], length: Optional[int], chunks: Any) -> None:
        """A streamed answer as pywsgi sends an iterable one: with its Content-Length, else chunked."""
        self.status = status.encode("latin-1")
        self.code = int(status[:3])
        head = ["HTTP/1.1 ", status, "\r\n"] + [f"{name}: {value}\r\n" for name, value in headers]
        out = "".join(head).encode("latin-1")
        if not any(name.lower() == "date" for name, _ in headers):
            out += _date_header()
        chunked = length is None and self.code not in (204, 304)
        out += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n"
        try:
            self._sendall(out)
            for chunk in chunks:
                if chunk:
                    self._sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                self._sendall(b"0\r\n\r\n")
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def handle_one_request(self) -> Any:
        """gevent's, with the limits: None closes the connection, True reads the next request."""
        if self.rfile.closed:
            return None
        server = self.server
        limits, deadlines = server.limits, server.deadlines
        # While a request is awaited and its head read, the deadlines time the reads (not the socket's
        # timeout: a gevent.Timeout for each wait); the socket's timeout is for the answer's sends.
        self.socket.settimeout(None)
        if not wait_for_bytes(self.rfile, limits.idle_timeout if self.served else limits.read_timeout, deadlines):
            return None  # nothing came (idle, or a connection that never asked): closed without an answer
        self.served += 1
        if self._plain_head(limits):
            self.socket.settimeout(server.patience)  # for the answer's sends
            self.passing = True
            self.wsgi_input = None
            self.environ = {}
            self.application = server.application
            self.handle_one_response()
            if self.close_connection or self.rfile.closed:
                return None
            return True
        started = time.perf_counter()
        self.command = ""
        try:
            deadlines.arm(limits.read_timeout)
            try:
                if not self._read_head(limits):
                    return None
            except TimedOut:
                raise RequestTimeout("the request line and headers", limits) from None
            finally:
                deadlines.disarm()
                self.socket.settimeout(server.patience)  # for what is sent next: an answer, a refusal, a 400
        except Refused as e:
            self.server.refusals.note(e, client_name(self.client_address))
            STATS.observe_request(self.command or "OTHER", e.status, time.perf_counter() - started)
            answer_and_close(self.socket, e)
            return None
        except OSError:  # the client went away
            return None
        except Exception as e:  # malformed: gevent's 400
            return self._handle_client_error(e)
        self.environ = self.get_environ()
        self.application = server.application
        try:
            self.handle_one_response()
        finally:
            if isinstance(self.wsgi_input, LimitedInput):  # answered (and its capture recorded): its bytes in flight go
                self.wsgi_input.release()
        if isinstance(self.wsgi_input, LimitedInput) and self.wsgi_input.unfinished:
            self.close_connection = True  # the body's end was never read: the next request cannot be found
        if self.close_connection or self.rfile.closed:
            return None
        return True

    def _plain_head(self, limits: Limits) -> bool:
        """Whether the next request is a plain read, whose whole head is in the connection's buffer
        already, read here (llhttp) and consumed: a GET or HEAD by HTTP/1.1, no body, nothing a
        limit refuses, and that ProxyApp.passes gives to pass_read. Such a head is read as the
        ordinary way (pywsgi, httpheaders.read_headers) reads it, to the same command, path,
        headers and close_connection, with none of that way's Python; any other head (odd, refused,
        partly arrived, to be answered through WSGI) is left unread here and goes that way."""
        data = self.rfile.peek(1)
        if not data.startswith(_PLAIN_STARTS):
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = data[: end + 4]
        reader = _HeadReader()
        try:
            httptools.HttpRequestParser(reader).feed_data(head)
        except Exception:  # noqa: BLE001 - refused by llhttp (stricter than read_headers), an upgrade: the ordinary way decides
            return False
        url = reader.url
        method = b"GET" if data[0] == 71 else b"HEAD"  # "G"
        line = b"%s %s HTTP/1.1\r\n" % (method, url)
        if not head.startswith(line) or url.startswith(b"//") or len(line) - 2 > limits.max_initial_line_length:
            return False  # not the one request line the checks accept, or one refused (414)
        raw = reader.headers
        if len(raw) > limits.max_header_count or len(head) - len(line) - 2 > limits.max_header_size:
            return False  # refused (431)
        headers = []
        first: dict[str, str] = {}
        for name, value in raw:
            lower = name.lower()
            if lower in _NOT_PLAIN:
                return False
            text = value.decode("latin-1")
            key = lower.decode("latin-1")
            if key not in first:
                first[key] = text
            headers.append((name.decode("latin-1"), text))
        connection = first.get("connection", "").lower()
        if connection == "upgrade":
            return False
        self.command = method.decode()
        self.path = url.decode("latin-1")
        self.request_version = "HTTP/1.1"
        self.requestline = line[:-2].decode("latin-1")
        self.headers = PlainHeaders(headers, first)
        self.content_length = None
        self.close_connection = connection == "close"
        self.response_length = 0
        if not self.server.application.passes(self):
            return False
        self.rfile.read(len(head))
        return True

    def _read_head(self, limits: Limits) -> bool:
        """The request line and headers (False: the client closed); Refused over a limit."""
        line = self.rfile.readline(limits.max_initial_line_length + 3)  # + CR LF, + 1 to tell it is longer
        if not line:
            return False
        self.requestline = line.decode("latin-1")
        if len(self.requestline.rstrip("\r\n")) > limits.max_initial_line_length:
            raise line_too_long(limits)
        self.response_length = 0
        try:
            if not self.read_request(self.requestline):
                raise ValueError(f"bad request line {self.requestline!r}")
        except HeadersTooLarge as e:
            raise headers_too_large(str(e), e.too_many) from None
        if self.content_length is not None and self.content_length > limits.max_content_length:
            raise content_too_long(self.content_length, limits, known=True)
        return True

    def handle(self) -> None:
        # pywsgi sends the status line + headers and the body in two writes; with Nagle on, the body
        # waits for the client's delayed ACK: ~40 ms per answer on a kept-alive connection.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP
            pass
        STATS.connections += 1
        super().handle()

    def log_request(self) -> None:
        pass  # make_server passes log=None: pywsgi would format each request's line for nothing

    def _write_with_headers(self, data: bytes) -> None:
        # pywsgi's own sends the head and the body in two sends; one send costs less CPU (on
        # loopback a send also does the receiver's TCP work). The bytes on the wire are the same.
        data = data or b""  # pywsgi's own 400 (bad chunks) writes the body "", a str
        self.headers_sent = True
        self.finalize_headers()
        head = [b"HTTP/1.1 ", self.status, b"\r\n"]
        for header, value in self.response_headers:
            head += (header, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if self.response_use_chunked or len(data) > 65536:
            self._sendall(b"".join(head))
            self._write(data)
        else:
            head.append(data)
            self._sendall(b"".join(head))
