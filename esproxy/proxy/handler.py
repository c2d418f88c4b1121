"""The proxy role's request handler: forward to the primary, capture successful writes.

Requests go to the primary as sent, except that writes the primary would choose a document id for
get one from the proxy first (``assignIds``, see proxy/autoids.py).

One :class:`ProxyApp` (a WSGI app) per ``source.proxies[]`` entry, served by a gevent
``WSGIServer``. Responses go back as the primary sent them (status, headers but hop-by-hop ones,
body bytes, compressed or not). A 2xx answer to a write becomes a bean on the fanout queue before
the client gets its answer.

Each request read becomes one :class:`~esproxy.proxy.request.Request`, handed through the stages in
order (read-only guard, assigned ids, intent, read routing, forward, capture or settle); no stage
classifies the request or reads its body on its own. The connection side (request line, limits,
sending) is proxy/connection.py's.
"""

from __future__ import annotations

import logging
import socket
import time
from http import HTTPStatus
from typing import Any, Iterable, Optional

import gevent
from gevent.pywsgi import WSGIServer

from esproxy.clients.elastic import Elastic, Response, UpstreamError
from esproxy.clients.tls import wsgi_server
from esproxy.core.bean import Bean
from esproxy.core.config import ProxySource
from esproxy.core.logs import access_log
from esproxy.core.retry import retry
from esproxy.core.stats import STATS
from esproxy.core.wsgi import JSON_TYPE, AdminEndpoints, Environ, StartResponse, error_body, header_check, unauthorized
from esproxy.replay import Rules

from . import readonly
from .autoids import assign
from .capture import capture
from .connection import RawPathHandler
from .leadership import Leadership
from .limits import (
    LimitedInput,
    Limits,
    OverBudget,
    ProxyServer,
    Refused,
)
from .readroute import FORCE_ENVIRON, UPSTREAM_ENVIRON, Follower, ReadRouter
from .recorder import NotRecorded, Recorder, Unavailable
from .request import BadBody, Request, decompress
from .settle import settle
from .spool import SpoolFull, intent_record

log = logging.getLogger("esproxy.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",  # recomputed by the server from the body we return
    }
)
HOP_BY_HOP_SENT = frozenset(name.encode() for name in HOP_BY_HOP)  # as Response.raw's names, lowered
# Request headers forwarded as they are; more with `passHeaders`.
FORWARDED = ("Content-Type", "Content-Encoding", "Accept", "Accept-Encoding", "Authorization", "X-Opaque-Id")

PROXY_CREDENTIALS = "missing or wrong credentials for the proxy (source.proxies[].header)"

# Seconds past a write's deadline (sent + the primary's timeout) before its outcome is read back from A.
SETTLE_GRACE = 5.0

# Requests pass_read may answer, and paths it leaves to the WSGI path (the admin endpoints'; a
# percent-encoded start might decode to them).
PASSED = frozenset({"GET", "HEAD"})
LOCAL_PATHS = ("/_esproxy/", "/%")

# Answers to requests that are not captured (reads) and are longer than this, or of unknown length,
# are streamed to the client as they arrive instead of being held whole in memory.
STREAM_OVER = 256 * 1024


class ErrorAnswer(Exception):
    """An answer of the proxy's own instead of the primary's (an Elasticsearch-style error)."""

    def __init__(
        self, status: int, kind: str, reason: str, access_logged: bool = True, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.body = error_body(status, kind, reason)
        self.access_logged = access_logged
        self.headers = list(headers)


class ProxyApp:
    admin: Optional[AdminEndpoints] = None  # answers /_esproxy/ paths (set by Listeners)
    # In front of a follower (followerReadOnly): its followed indices refuse writes (proxy/readonly.py).
    read_only: Optional[Rules] = None
    leadership: Optional[Leadership] = None  # with followers: the switchover's write pause (set by Listeners)

    def __init__(self, cfg: ProxySource, primary: Elastic, fanout: Optional[Recorder]) -> None:
        self.cfg = cfg
        self.primary = primary
        self.fanout = fanout
        # durability: spool, and a spool to record in: each write's intent is on disk before it is forwarded
        self.records_intents = fanout is not None and fanout.records_intents and cfg.durability == "spool"
        self.accesslog = cfg.accesslog and not cfg.noaccesslog
        self.check = header_check(cfg.header) if cfg.header else None
        names = list(FORWARDED) + [h for h in cfg.passHeaders if h not in FORWARDED]
        self.forwarded = [(f"HTTP_{h.upper().replace('-', '_')}", h) for h in names]
        # For pass_read: the environ keys of the request headers it reads (forwarded, checked, routing's)
        ignored = ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")  # pywsgi gives these no HTTP_ key
        read = (
            [key for key, _ in self.forwarded]
            + [FORCE_ENVIRON]
            + [f"HTTP_{k.upper().replace('-', '_')}" for k in cfg.header]
        )
        self.header_keys = frozenset(key for key in read if key not in ignored)
        self._environ_keys: dict[str, Optional[str]] = {}  # a header's name -> _environ_key's
        self.inflight = 0
        self.draining = False
        # Read/write splitting (readroute.py): reads may go to these; switchover may replace the list.
        self.followers: list[Follower] = []
        self.reads = ReadRouter(cfg.readYourWrites)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.admin is not None and environ.get("PATH_INFO", "").startswith("/_esproxy/"):
            return self.admin.serve(environ, start_response, self.check)
        self.inflight += 1
        streaming = False
        try:
            result = STATS.track(self._handle, environ, start_response)
            streaming = not isinstance(result, list)
            return self._until_sent(result) if streaming else result
        finally:
            if not streaming:
                self.inflight -= 1

    def passes(self, handler: RawPathHandler) -> bool:
        """Whether a request can take :meth:`pass_read`: a plain HTTP/1.1 GET or HEAD with no body,
        which nothing captures, checks or answers here (the WSGI path would only forward it)."""
        path = handler.path
        if handler.command not in PASSED or handler.request_version != "HTTP/1.1":
            return False
        if self.draining or not path.startswith("/") or path.startswith(LOCAL_PATHS):
            return False
        headers = handler.headers
        return (
            handler.content_length is None
            and headers.get("transfer-encoding") is None
            and headers.get("expect") is None
            and not handler._connection_upgrade_requested()
        )

    def pass_read(self, handler: RawPathHandler) -> None:
        """A read that :meth:`passes`, answered as the WSGI path would answer it, byte for byte,
        without building its environ or going through WSGI: the header check, the read routing and
        the access log are given the few environ entries they read (:meth:`_header_environ`)."""
        started = time.perf_counter()
        method, uri = handler.command, handler.path
        self.inflight += 1
        streaming = False
        try:
            environ = self._header_environ(handler)
            if self.check is not None:
                challenge = self.check(environ)
                if challenge is not None:
                    headers_401, payload = unauthorized(challenge, PROXY_CREDENTIALS)
                    STATS.observe_request(method, 401, time.perf_counter() - started)
                    handler.send_answer(f"401 {_phrase(401)}", headers_401, payload)
                    return
            headers = {name: environ[key] for key, name in self.forwarded if key in environ}
            content_type = handler.headers.get("content-type")
            if content_type:
                headers["Content-Type"] = content_type
            remote, peer = handler.peer()
            headers["X-Forwarded-For"] = environ["REMOTE_ADDR"] = remote
            primary = self.primary  # the leader this read goes to, even if a switchover swaps it meanwhile
            followers = self.followers
            try:
                if followers:
                    r = self.reads.forward(primary, followers, environ, Request(method, uri), headers, STREAM_OVER)
                else:
                    r = primary.request(method, uri, headers, b"", stream_over=STREAM_OVER, raw=True)
            except UpstreamError as e:
                answer = self._error(e, method, uri)
                self._log_access(peer, primary, method, uri, started, answer.status, answer.body)
                STATS.observe_request(method, answer.status, time.perf_counter() - started)
                status = f"{answer.status} {_phrase(answer.status)}"
                handler.send_answer(status, [JSON_TYPE, *answer.headers], answer.body)
                return
            upstream = environ.get(UPSTREAM_ENVIRON, primary)  # a follower, if one answered
            status = f"{r.status} {r.reason or _phrase(r.status)}"
            if r.raw is not None:  # the answer's head lines relayed as they came, but the hop-by-hop ones
                self._log_access(peer, upstream, method, uri, started, r.status, r.body)
                STATS.observe_request(method, r.status, time.perf_counter() - started)
                handler.send_lines(status, *_relayed_lines(r.raw, method), r.body)
                return
            out = _relayed_headers(r, method)
            if r.stream is not None:
                self._log_access(peer, upstream, method, uri, started, r.status, _streamed(r))
                STATS.observe_request(method, r.status, time.perf_counter() - started)
                streaming = True
                try:
                    handler.send_stream(status, out, r.length, r.stream)
                finally:
                    self.inflight -= 1
                return
            self._log_access(peer, upstream, method, uri, started, r.status, r.body)
            STATS.observe_request(method, r.status, time.perf_counter() - started)
            handler.send_answer(status, out, r.body)
        finally:
            if not streaming:
                self.inflight -= 1

    def _header_environ(self, handler: RawPathHandler) -> Environ:
        """The environ entries of the request headers pass_read's choices read, as pywsgi would make them."""
        environ: Environ = {}
        keys = self._environ_keys
        for name, value in handler.headers._headers:
            key = keys.get(name, "")
            if key == "":  # a name not seen yet
                key = self._environ_key(name)
            if key is not None:
                value = value.strip()
                if key in environ:  # repeated: joined as pywsgi joins them
                    value = environ[key] + ("; " if "COOKIE" in key else ",") + value
                environ[key] = value
        return environ

    def _environ_key(self, name: str) -> Optional[str]:
        """The environ key pywsgi gives a header (None: none, or one pass_read does not read),
        remembered for the next request (for a bounded number of names)."""
        key: Optional[str] = None
        if "_" not in name:  # pywsgi leaves such headers out of the environ
            key = "HTTP_" + name.replace("-", "_").upper()
            if key not in self.header_keys:
                key = None
        if len(self._environ_keys) < 1000:
            self._environ_keys[name] = key
        return key

    def _until_sent(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        """A streamed answer is in flight (a graceful stop waits for it) until its last chunk is sent."""
        try:
            yield from chunks
        finally:
            self.inflight -= 1

    def _handle(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        if self.check is not None:
            challenge = self.check(environ)
            if challenge is not None:
                headers, payload = unauthorized(challenge, PROXY_CREDENTIALS)
                return self._reply(start_response, 401, headers, payload)
        method = environ["REQUEST_METHOD"]
        uri = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        reading = method not in ("GET", "HEAD") or _has_body(environ)
        try:
            if reading and isinstance(environ["wsgi.input"], LimitedInput):
                environ["wsgi.input"].reserve(_content_length(environ))
        except OverBudget as e:  # maxInFlightBytes: not read (it is read and dropped after the answer), not forwarded
            self._access(environ, method, uri, started, e.status, e.body)
            return self._reply(start_response, e.status, [JSON_TYPE, *e.headers], e.body)
        try:
            body = environ["wsgi.input"].read() if reading else b""
        except (
            Refused
        ) as e:  # over maxContentLength or maxInFlightBytes (a chunked body), or too slow: nothing forwarded
            self._access(environ, method, uri, started, e.status, e.body)
            return self._reply(start_response, e.status, [JSON_TYPE, *e.headers, ("Connection", "close")], e.body)
        except OSError as e:  # cut short by the connection's end, or chunks that are not chunks
            payload = error_body(400, "esproxy_bad_request_exception", f"the request body cannot be read: {e}")
            self._access(environ, method, uri, started, 400, payload)
            return self._reply(start_response, 400, [JSON_TYPE, ("Connection", "close")], payload)
        # The request as the stages see it, from here on the only holder of its body: a copy no longer
        # needed (a body rewritten with ids, a body recorded) is let go as soon as it can be.
        request = Request(method, uri, body, environ.get("HTTP_CONTENT_ENCODING", "").lower())
        del body
        if self.read_only is not None:
            refused = readonly.refused(self.read_only, request)
            if refused is not None:
                payload = error_body(readonly.STATUS, readonly.KIND, refused.reason)
                self._access(environ, method, uri, started, readonly.STATUS, payload)
                return self._reply(start_response, readonly.STATUS, [JSON_TYPE], payload)
        gated = request.writing and self.leadership is not None
        try:
            if gated:
                self._admit()
            try:
                r = self._write_or_read(environ, request, started)
            finally:
                if gated:
                    assert self.leadership is not None
                    self.leadership.write_done()
        except ErrorAnswer as e:
            if e.access_logged:
                self._access(environ, method, uri, started, e.status, e.body)
            return self._reply(start_response, e.status, [JSON_TYPE, *e.headers], e.body)
        return self._relay(start_response, environ, method, uri, started, r)

    def _admit(self) -> None:
        """A write while a switchover pauses writes: held until the resume, or refused (503, Retry-After)."""
        assert self.leadership is not None
        retry_after = self.leadership.admit_write()
        if retry_after is not None:
            reason = "writes are paused while the leader cluster is switched over; retry shortly"
            headers = [("Retry-After", str(retry_after))]
            raise ErrorAnswer(503, "esproxy_switchover_in_progress_exception", reason, headers=headers)

    def _write_or_read(self, environ: Environ, request: Request, started: float) -> Response:
        """The stages of a request, in order: ids assigned, intent recorded, forwarded (read routing),
        then captured. ``request`` is the only holder of its body (no local here keeps it)."""
        primary = self.primary  # the leader this request goes to, even if a failover swaps it meanwhile
        capturing = self.fanout is not None and request.writing
        recording = capturing and self.records_intents
        if capturing:
            _plain(request)  # a body that is not the compression it names: refused, not forwarded
        if recording and self.cfg.assignIds:
            environ = with_assigned_ids(environ, request)
        intent = self._begin(request) if recording else None
        try:
            r = self._forward(primary, environ, self._upstream_headers(environ), request, capturing)
        except UpstreamError as e:
            raise self._unanswered(primary, e, environ, request, started, intent) from None
        if self.followers:
            self.reads.answered(environ, request, r.status)
        if capturing:
            self._record(primary, environ, request, r, intent)
        return r

    def _begin(self, request: Request) -> str:
        """durability: spool — the write's intent, on disk before it is forwarded; its id."""
        assert self.fanout is not None
        try:
            settling = b"" if request.kind not in ("", "bulk") else _plain(request)  # one document: no body
            return self.fanout.begin(request.method, request.uri, settling)
        except SpoolFull as e:
            kind = "esproxy_unavailable_exception" if isinstance(e, Unavailable) else "esproxy_spool_full_exception"
            raise ErrorAnswer(503, kind, f"write refused, not forwarded: {e}") from None
        except OSError as e:  # the spool's disk is full or failing: the intent is not on disk
            reason = f"write refused, not forwarded: the spool cannot record it: {e}"
            raise ErrorAnswer(503, "esproxy_spool_full_exception", reason) from None

    def _upstream_headers(self, environ: Environ) -> dict[str, str]:
        """The request headers forwarded to the primary (pass_read makes the same ones without an environ)."""
        headers = {name: environ[key] for key, name in self.forwarded if key in environ}
        if "CONTENT_TYPE" in environ and environ["CONTENT_TYPE"]:
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        headers["X-Forwarded-For"] = environ.get("REMOTE_ADDR", "")
        return headers

    def _forward(
        self, primary: Elastic, environ: Environ, headers: dict[str, str], request: Request, capturing: bool
    ) -> Response:
        """The primary's (or a follower's) answer, a read's long answer streamed; UpstreamError when
        it gives none."""
        stream_over = None if capturing else STREAM_OVER
        followers = self.followers
        if followers:
            return self.reads.forward(primary, followers, environ, request, headers, stream_over)
        return primary.request(request.method, request.uri, headers, request.body, stream_over=stream_over)

    def _unanswered(
        self,
        primary: Elastic,
        e: UpstreamError,
        environ: Environ,
        request: Request,
        started: float,
        intent: Optional[str],
    ) -> ErrorAnswer:
        """The primary gave no answer: the write's intent is closed (it never got there) or left to settle."""
        if intent is not None:
            assert self.fanout is not None
            if e.refused:
                self.fanout.done(intent, [])
            else:  # A may have applied it: copy what A holds once it answers again
                sent = time.time() - (time.perf_counter() - started)
                record = intent_record(intent, request.method, request.uri, b"", sent)  # the body: the request's
                self.settle_later(record, self._bean(primary, environ, request), primary, request)
        return self._error(e, request.method, request.uri)

    def _error(self, e: UpstreamError, method: str, uri: str) -> ErrorAnswer:
        """The answer to a request the primary gave no answer to."""
        if e.untrusted:  # logged by the Elastic once per change of state, not for each request
            reason = f"request not forwarded: {e}; trust its CA (tls.ca) or pin it (tls.fingerprint)"
            return ErrorAnswer(502, "esproxy_upstream_untrusted_exception", reason)
        log.warning("primary %s %s failed: %s", method, uri, e)
        kind = "esproxy_upstream_timeout_exception" if e.timeout else "esproxy_upstream_exception"
        return ErrorAnswer(504 if e.timeout else 502, kind, f"primary cluster did not answer: {e}")

    def _record(self, primary: Elastic, environ: Environ, request: Request, r: Response, intent: Optional[str]) -> None:
        """A write the primary answered: its beans (if it succeeded) recorded before the client hears of it."""
        assert self.fanout is not None
        beans: list[Bean] = []
        if 200 <= r.status < 300:
            beans = capture(self._bean(primary, environ, request), _decoded(r), primary.current_docs, request)
            STATS.writes_captured += 1
        # Sent and answered: what the beans need of the body they hold (a `_bulk`'s, a copy made by capture).
        # No local keeps the body (nor the bean made of it): it goes now, before the beans are recorded.
        method, uri = request.method, request.uri
        request.sent()
        try:
            if intent is not None:
                self.fanout.done(intent, beans)  # on disk before the client hears of it
            elif beans and self.cfg.durability == "kafka":
                self.fanout.deliver_now(beans, deadline=time.monotonic() + primary.cfg.timeout)
            else:
                for bean in beans:
                    self.fanout.put(bean)
        except (NotRecorded, Unavailable, OSError) as e:  # OSError: the spool's disk failed
            log.error(
                "%s %s applied by the primary but not recorded for replication: %s; beans: %s",
                method,
                uri,
                e,
                [b.to_json().decode() for b in beans],
            )
            reason = f"applied by the primary cluster but not recorded for replication: {e}"
            if intent is not None and isinstance(e, OSError):
                self._record_later(intent, beans)
                reason += "; recorded as soon as the spool can be written"
            raise ErrorAnswer(503, "esproxy_not_recorded_exception", reason, access_logged=False) from None

    def _record_later(self, intent: str, beans: list[Bean]) -> None:
        """The beans of a write A applied that the spool could not take (its disk full or failing), tried again
        until they are on disk: B gets the write without waiting for a restart to settle its open intent."""
        gevent.spawn(self._done_when_written, intent, beans)

    def _done_when_written(self, intent: str, beans: list[Bean]) -> None:
        """Close an intent with its beans, waiting for a spool whose disk is full or failing (retried)."""
        assert self.fanout is not None
        fanout = self.fanout

        waited = []

        def waiting(e: BaseException, attempts: int, delay: float) -> None:
            if not waited:
                log.warning("recording %d bean(s) of intent %s waits for the spool (%s)", len(beans), intent, e)
            waited.append(delay)

        retry(lambda: fanout.done(intent, beans), (OSError,), waiting, base=0.5, cap=5)
        if waited:
            log.info("recorded %d bean(s) of intent %s after %.1fs", len(beans), intent, sum(waited))

    def _relay(
        self, start_response: StartResponse, environ: Environ, method: str, uri: str, started: float, r: Response
    ) -> Iterable[bytes]:
        """The primary's answer to the client: its status, headers (but hop-by-hop ones) and body."""
        out = _relayed_headers(r, method)
        if r.stream is not None:
            self._access(environ, method, uri, started, r.status, _streamed(r))
            start_response(f"{r.status} {r.reason or _phrase(r.status)}", self._closing(out))
            return r.stream
        self._access(environ, method, uri, started, r.status, r.body)
        return self._reply(start_response, r.status, out, r.body, reason=r.reason)

    def _reply(
        self,
        start_response: StartResponse,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        reason: str = "",
    ) -> Iterable[bytes]:
        start_response(f"{status} {reason or _phrase(status)}", self._closing(headers))
        return [body]

    def _closing(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not self.draining:
            return headers
        return [(k, v) for k, v in headers if k.lower() != "connection"] + [("Connection", "close")]

    def settle_later(
        self,
        intent: dict[str, Any],
        template: Bean,
        primary: Optional[Elastic] = None,
        request: Optional[Request] = None,
    ) -> None:
        """Copy A's state for a write of unknown outcome once A answers, then close its intent; ``primary``:
        the cluster the write went to (default: the leader now); ``request``: the write, if it is this
        process's (none: an intent read back from the spool)."""
        gevent.spawn(self._settle, intent, template, primary or self.primary, request)

    def _settle(self, intent: dict[str, Any], template: Bean, primary: Elastic, request: Optional[Request]) -> None:
        assert self.fanout is not None and self.fanout.records_intents
        # A keeps applying a write whose client (this proxy) is gone: read it back only once A has
        # answered it or given up, or B would copy a state the write then changes.
        wait = intent.get("time", 0) + primary.cfg.timeout + SETTLE_GRACE - time.time()
        if wait > 0:
            log.info("settling %s %s in %.0fs, once the primary is done with it", intent["method"], intent["uri"], wait)
            gevent.sleep(wait)

        def primary_down(e: BaseException, attempts: int, delay: float) -> None:
            method, uri = intent["method"], intent["uri"]
            log.warning("settling %s %s waits for the primary (%s); retrying in %.0fs", method, uri, e, delay)

        beans = retry(
            lambda: settle(intent, primary, template, request), (UpstreamError,), primary_down, base=1, cap=30
        )
        self._done_when_written(intent["id"], beans)

    def _bean(self, primary: Elastic, environ: Environ, request: Request) -> Bean:
        """What capture turns into beans: the request as forwarded (ids assigned), its body plain."""
        content_type = environ.get("CONTENT_TYPE") or "application/json"
        return Bean(
            method=request.method,
            requestUri=request.uri,
            body=_plain(request),
            header={"Content-Type": [content_type]},
            host=environ.get("HTTP_HOST", ""),
            remoteAddr=_remote(environ),
            labels=dict(self.cfg.labels) or None,
            clusterIds=[self._cluster_id(primary)] if self._cluster_id(primary) else [],
        )

    def _cluster_id(self, primary: Elastic) -> str:
        if not primary.cluster_id:  # the primary was down at start; it answered just now
            try:
                primary.ensure_cluster_id()
            except UpstreamError as e:
                log.warning("cluster id of %s still unknown: %s", primary.target(""), e)
        return primary.cluster_id

    def _access(self, environ: Environ, method: str, uri: str, started: float, status: int, body: bytes) -> None:
        upstream = environ.get(UPSTREAM_ENVIRON, self.primary)
        self._log_access(_remote(environ), upstream, method, uri, started, status, body)

    def _log_access(
        self, remote: str, upstream: Elastic, method: str, uri: str, started: float, status: int, body: bytes
    ) -> None:
        """The access log line of a request ``upstream`` answered (pass_read calls it without an environ)."""
        if self.accesslog or upstream.accesslog:
            seconds = time.perf_counter() - started
            direction = "primary" if upstream is self.primary else upstream.direction
            access_log(remote, method, uri, upstream.target(uri), direction, seconds, status, body)


def with_assigned_ids(environ: Environ, request: Request) -> Environ:
    """The environ to forward ``request`` with, once given ids for the documents it would let the
    primary name (proxy/autoids.py: ``request`` is changed in place).

    A rewritten compressed body is forwarded plain: the environ returned has no Content-Encoding
    (recompressing would cost the proxy CPU for bytes that mostly travel a LAN to the primary).
    """
    encoding = request.encoding
    if not assign(request) or request.encoding == encoding:  # nothing changed, or only the path
        return environ
    return {k: v for k, v in environ.items() if k != "HTTP_CONTENT_ENCODING"}


def _relayed_headers(r: Response, method: str) -> list[tuple[str, str]]:
    """The headers of the primary's answer that the client gets: all but the hop-by-hop ones, plus the
    length of a streamed body, or a HEAD's length as the primary said it (there is no body to measure)."""
    out = [(k, v) for k, v in r.headers if k.lower() not in HOP_BY_HOP]
    if r.stream is not None:
        if r.length is not None:
            out.append(("Content-Length", str(r.length)))
    elif method == "HEAD":
        out += [(k, v) for k, v in r.headers if k.lower() == "content-length"]
    return out


def _relayed_lines(raw: list[tuple[bytes, bytes]], method: str) -> tuple[bytes, bool, bool]:
    """:func:`_relayed_headers` of an answer's headers as sent (Response.raw), as the lines
    send_answer would write of them, and whether those hold a Date, a Content-Length."""
    lines = []
    date = False
    length: Optional[tuple[bytes, bytes]] = None
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP_SENT:
            if lower == b"content-length" and method == "HEAD":
                length = (name, value)  # once at most: Response.raw has no name twice
            continue
        if lower == b"date":
            date = True
        lines += (name, b": ", value, b"\r\n")
    if length is not None:
        lines += (length[0], b": ", length[1], b"\r\n")
    return b"".join(lines), date, length is not None


def _plain(request: Request) -> bytes:
    """The request's body decompressed (once: Request.plain); ErrorAnswer 400 if it does not decode."""
    try:
        return request.plain
    except BadBody as e:
        raise ErrorAnswer(400, "esproxy_bad_request_exception", str(e)) from None


def _decoded(r: Response) -> bytes:
    encoding = next((v.lower() for k, v in r.headers if k.lower() == "content-encoding"), "")
    return decompress(r.body, encoding) if encoding in ("gzip", "deflate") else r.body


def _streamed(r: Response) -> bytes:
    """What the access log says of a streamed answer's body."""
    return f"<streamed, {r.length or 'chunked'} bytes>".encode()


def _remote(environ: Environ) -> str:
    return f"{environ.get('REMOTE_ADDR', '')}:{environ.get('REMOTE_PORT', '')}"


def _content_length(environ: Environ) -> Optional[int]:
    """The request's Content-Length (pywsgi checked it is a number), None for a chunked body."""
    length = environ.get("CONTENT_LENGTH")
    return int(length) if length else None


def _has_body(environ: Environ) -> bool:
    return bool(environ.get("CONTENT_LENGTH")) or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def make_server(app: ProxyApp, listener: Optional[socket.socket] = None) -> WSGIServer:
    """The server of one proxy entry, on its host:port or on a socket already bound (pre-fork workers: each
    builds its own here, so each applies the same limits); HTTPS with tls."""
    return wsgi_server(
        listener if listener is not None else (app.cfg.host, app.cfg.port),
        app,
        app.cfg.tls,
        f"tls of the proxy on port {app.cfg.port}",
        server_class=ProxyServer,
        limits=Limits.of(app.cfg),
        handler_class=RawPathHandler,
        log=None,
        error_log=logging.getLogger("esproxy.wsgi"),
    )
