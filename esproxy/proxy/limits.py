"""What a client of the proxy may send, and how slowly (``source.proxies[]``: ``maxContentLength``,
``maxInitialLineLength``, ``maxHeaderSize``, ``maxHeaderCount``, ``readTimeout``, ``idleTimeout``,
``maxConnections``), and the Elasticsearch-style answers that refuse a request over them.

The proxy's handler (esproxy.proxy.connection.RawPathHandler) applies them while it reads a request;
:class:`ProxyServer` bounds the connections. A refused request is never forwarded nor captured,
and its connection is closed after the answer: what the client still sends is read and thrown
away for at most :data:`LINGER` seconds first, so that a client busy sending a body it was refused
can still read why (Apache's "lingering close").
"""

from __future__ import annotations

import io
import logging
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Optional

from gevent import Timeout
from gevent.pywsgi import Input

from esproxy.clients.tls import HttpsServer
from esproxy.core.config import ProxySource
from esproxy.core.deadlines import Deadlines, TimedOut
from esproxy.core.schema import format_duration, format_size
from esproxy.core.stats import STATS
from esproxy.core.wsgi import error_body

from . import inflight

log = logging.getLogger("esproxy.proxy")

LINGER = 2.0  # seconds a refused client's remaining bytes are read and dropped before the close
CHUNK = 64 * 1024  # a body is read this much at a time, each within readTimeout
LOG_EVERY = 10.0  # seconds between two log lines about refusals of one kind


@dataclass(frozen=True)
class Limits:
    max_content_length: int
    max_initial_line_length: int
    max_header_size: int
    max_header_count: int
    read_timeout: float  # 0: none
    idle_timeout: float  # 0: none
    max_connections: int  # 0: none

    @classmethod
    def of(cls, p: ProxySource) -> Limits:
        return cls(
            p.maxContentLength,
            p.maxInitialLineLength,
            p.maxHeaderSize,
            p.maxHeaderCount,
            float(p.readTimeout),
            float(p.idleTimeout),
            p.maxConnections,
        )


class Refused(Exception):
    """A request the limits refuse: answered ``status`` with an Elasticsearch-style error, then closed."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind
        self.body = error_body(status, kind, reason)
        self.headers: list[tuple[str, str]] = []

    def response(self) -> bytes:
        """The whole answer, head and body, as sent on the socket."""
        head = (
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in self.headers)
            + f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("latin-1") + self.body


class OverBudget(Refused):
    """A request that would take the bytes in flight over maxInFlightBytes (esproxy.proxy.inflight): 429, as
    Elasticsearch's in-flight requests circuit breaker answers, with Retry-After."""

    def __init__(self, wanted: int) -> None:
        budget = inflight.BUDGET
        used, limit = budget.in_flight(), budget.limit
        super().__init__(
            429, "circuit_breaking_exception", f"{wanted} more bytes in flight than maxInFlightBytes allows"
        )
        self.body = inflight.refusal_body(wanted, used, limit)
        self.headers = [("Retry-After", str(inflight.RETRY_AFTER))]
        inflight.note_refusal()


class RequestTimeout(Refused):
    def __init__(self, what: str, limits: Limits) -> None:
        reason = f"{what} did not arrive within {format_duration(limits.read_timeout)} (readTimeout)"
        super().__init__(408, "esproxy_request_timeout_exception", reason)


def content_too_long(size: int, limits: Limits, known: bool) -> Refused:
    said = f"request body of {size} bytes" if known else f"request body of more than {size - 1} bytes"
    limit = format_size(limits.max_content_length)
    reason = f"{said} is larger than the limit of {limit} (maxContentLength)"
    return Refused(413, "esproxy_content_too_long_exception", reason)


def line_too_long(limits: Limits) -> Refused:
    limit = format_size(limits.max_initial_line_length)
    reason = f"request line longer than the limit of {limit} (maxInitialLineLength)"
    return Refused(414, "esproxy_too_long_http_line_exception", reason)


def headers_too_large(why: str, too_many: bool) -> Refused:
    setting = "maxHeaderCount" if too_many else "maxHeaderSize"
    return Refused(431, "esproxy_too_long_http_header_exception", f"request headers: {why} ({setting})")


def too_many_connections(limits: Limits) -> Refused:
    reason = f"{limits.max_connections} client connections are open already (maxConnections); retry later"
    return Refused(503, "esproxy_too_many_connections_exception", reason)


def wait_for_bytes(rfile: Any, seconds: float, deadlines: Deadlines) -> bool:
    """Whether a byte arrives within ``seconds`` (0: however long it takes); False at EOF too, and when the
    client resets the connection (wrk at its end, load balancers routinely): between requests an ordinary close."""
    deadlines.arm(seconds)
    try:
        return bool(rfile.peek(1))
    except TimedOut:
        return False
    except OSError as e:
        log.debug("connection closed by the client between requests: %s", e)
        return False
    finally:
        deadlines.disarm()


def answer_and_close(sock: socket.socket, refused: Refused) -> None:
    """Send the refusal, read and drop what the client still sends (for LINGER seconds at most), close."""
    try:
        sock.sendall(refused.response())
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER
        with Timeout(LINGER, False):
            while time.monotonic() < deadline and sock.recv(CHUNK):
                pass
    except OSError:
        pass
    finally:
        sock.close()


class LimitedInput:
    """A request's ``wsgi.input``: gevent's Input, read CHUNK at a time, each within readTimeout, and no
    more than maxContentLength in all (a chunked body's size is known only as it comes)."""

    def __init__(self, raw: Input, limits: Limits, deadlines: Deadlines) -> None:
        self.raw = raw
        self.limits = limits
        self.deadlines = deadlines
        self.position = 0
        self.unfinished = False  # refused or timed out: the body was not read to its end
        self.reserved = 0  # bytes of esproxy.proxy.inflight.BUDGET held for this request (the handler gives them back)
        self.growing = False  # a body of unknown length: reserved as it arrives

    def reserve(self, content_length: Optional[int]) -> None:
        """Before the body is read: reserve its bytes in flight (a body of unknown length: as it comes);
        OverBudget if the budget has no room for it."""
        if content_length is None:
            self.growing = True
            return
        wanted = inflight.OVERHEAD * content_length
        if not inflight.BUDGET.take(wanted):
            raise OverBudget(wanted)
        self.reserved += wanted

    def release(self) -> None:
        inflight.BUDGET.give(self.reserved)
        self.reserved = 0

    def read(self, length: Optional[int] = None) -> bytes:
        # Gathered in a BytesIO, not a list joined at the end: its getvalue() hands over its own buffer,
        # so a large body is in memory once, not twice (the pieces and their join).
        gathered = io.BytesIO()
        left = -1 if length is None or length < 0 else length
        while left:
            room = self.limits.max_content_length - self.position + 1  # a byte over the limit is enough to refuse
            n = min(CHUNK, room) if left < 0 else min(CHUNK, room, left)
            data = self._read_within(self.raw.read, n)
            if not data:
                break
            if len(data) == left and not gathered.tell():
                return data  # the whole (small) body in one piece: no copy at all
            gathered.write(data)
            left = left - len(data) if left > 0 else left
        return gathered.getvalue()

    def readline(self, size: Optional[int] = None) -> bytes:
        room = self.limits.max_content_length - self.position + 1
        n = min(CHUNK, room) if size is None or size < 0 else min(CHUNK, room, size)
        return self._read_within(self.raw.readline, n)

    def _read_within(self, reader: Any, n: int) -> bytes:
        self.deadlines.arm(self.limits.read_timeout)
        try:
            data = reader(n)
        except (TimedOut, TimeoutError):  # the deadline, or the socket's own timeout when it expires first
            self.unfinished = True
            raise RequestTimeout("the request body", self.limits) from None
        finally:
            self.deadlines.disarm()
        self.position += len(data)
        if self.position > self.limits.max_content_length:
            self.unfinished = True
            raise content_too_long(self.position, self.limits, known=False)
        if self.growing and data:
            wanted = inflight.OVERHEAD * len(data)
            if not inflight.BUDGET.take(wanted):
                self.unfinished = True
                raise OverBudget(self.reserved + wanted)
            self.reserved += wanted
        return data

    def _discard(self) -> None:
        """What the application left unread (gevent calls this before the next request): read and
        dropped within the limits, or the connection is closed (``unfinished``)."""
        if self.unfinished:
            return
        try:
            while self.read(CHUNK):
                pass
        except Refused:
            pass
        except OSError:
            self.unfinished = True


class RefusalLog:
    """Logs refusals of one kind at most once every LOG_EVERY seconds, with how many there were since."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[float, int]] = {}  # kind -> (when logged, refusals not logged since)

    def note(self, refused: Refused, client: str) -> None:
        now = time.monotonic()
        when, quiet = self.last.get(refused.kind, (0.0, 0))
        if when and now - when < LOG_EVERY:
            self.last[refused.kind] = (when, quiet + 1)
            return
        self.last[refused.kind] = (now, 0)
        more = f" (and {quiet} more since the last such line)" if quiet else ""
        log.warning("refused a request from %s: %d %s%s", client, refused.status, refused, more)


class ProxyServer(HttpsServer):
    """gevent's WSGIServer (HTTPS with the listener's tls) with the proxy's limits: a connection over
    maxConnections is answered 503 and closed; a TLS handshake must be done within readTimeout too.

    Accepting and refusing, rather than leaving connections waiting in the listen backlog, tells a client at
    once that this proxy is busy (Elasticsearch clients retry a 503 on another node), while the connections
    being served carry on.
    """

    def __init__(self, listener: Any, application: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(listener, application, **kwargs)
        self.limits = limits
        if limits.read_timeout:
            self.handshake_timeout = min(self.handshake_timeout, limits.read_timeout)
        self.connections = 0
        self.refusals = RefusalLog()
        self.deadlines = Deadlines(limits.read_timeout, limits.idle_timeout)
        # A client that reads no answer cannot hold a connection forever either: each send waits this long at most.
        self.patience = max(limits.read_timeout, limits.idle_timeout) or None

    def handle(self, sock: socket.socket, address: Any) -> None:
        limit = self.limits.max_connections
        if limit and self.connections >= limit:
            refused = too_many_connections(self.limits)
            self.refusals.note(refused, client_name(address))
            STATS.observe_request("OTHER", refused.status, 0.0)  # its request is not read
            answer_and_close(sock, refused)
            return
        self.connections += 1
        try:
            sock.settimeout(self.patience)
            super().handle(sock, address)
        finally:
            self.connections -= 1

    def stop(self, timeout: Optional[float] = None) -> None:
        super().stop(timeout)
        self.deadlines.close()


def client_name(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)
