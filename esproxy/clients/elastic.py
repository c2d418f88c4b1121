"""An Elasticsearch cluster (or an HTTP backup endpoint) reached over kept-alive pooled connections.

One :class:`Elastic` per ``destination.primaries[]`` / ``rests[]`` entry. The pool is bounded
(``maxConns``) and blocks when all connections are busy, so the number of upstream connections
stays at most the number of concurrent callers.

The client is geventhttpclient's (an HTTP/1.1 client for gevent with a C response parser): measured
with ``make bench`` it costs about a third of the CPU per request of urllib3's pool and an eighth of
``requests``'. It sends the request line, headers and body in one write, passes the request target
through as given (percent-encoding preserved) and never decodes the response body.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import select
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from gevent.monkey import get_original
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError

from esproxy.core import labels, mediatype
from esproxy.core.bean import Bean
from esproxy.core.bulk import (
    Action,
    BulkFormatError,
    Item,
    UnparsableAnswer,
    is_bulk_uri,
    parse_request,
    parse_response,
)
from esproxy.core.config import ElasticDestination
from esproxy.core.deadlines import Deadlines
from esproxy.core.logs import access_log, redact_url
from esproxy.core.retry import Backoff

from . import lean
from .tls import client_context

log = logging.getLogger("esproxy.elastic")

CLUSTER_ID_PATH = "/meta.elasticproxy/_doc/clusterid"
CONNECT_TIMEOUT = 5.0
STREAM_CHUNK = 64 * 1024
LARGE_BODY = 1 << 20  # request bodies over this are sent after their head, not joined to it
_poll = get_original("select", "poll")  # the blocking one: with a 0 timeout it never blocks


class UpstreamError(Exception):
    """The cluster could not be asked or did not answer; ``timeout`` tells the two apart."""

    def __init__(self, target: str, reason: str, timeout: bool, refused: bool = False, untrusted: bool = False) -> None:
        super().__init__(f"{redact_url(target)}: {reason}")
        self.timeout = timeout
        self.refused = refused  # never reached the cluster: the request cannot have been applied
        self.untrusted = untrusted  # its TLS certificate failed the check (a config matter, not an outage)


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    # request(stream_over=N) and a body over N bytes (or of unknown length): the body is not read,
    # ``stream`` yields it and gives the connection back at the end; ``body`` stays empty.
    stream: Optional[Iterator[bytes]] = None
    length: Optional[int] = None  # the Content-Length of a streamed body, when the cluster sent one
    # request(raw=True): the headers as the cluster sent them (no name twice), ``headers`` left empty;
    # None when the answer was read the ordinary way (then ``headers`` has them).
    raw: Optional[list[tuple[bytes, bytes]]] = None

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Elastic:
    def __init__(self, cfg: ElasticDestination, direction: str = "primary") -> None:
        self.cfg = cfg
        self.url = cfg.url
        self.direction = direction
        self.accesslog = cfg.accesslog and not cfg.noaccesslog
        self.matches = labels.parse(cfg.labelEval)
        self.header = dict(cfg.header)
        self.cluster_id = ""
        self._target = redact_url(cfg.url.rstrip("/"))  # every access log line names it
        # Set once the cluster refused a compatibility media type (see mediatype): replays send the plain one.
        self.plain_media_types = False
        # Its certificate failed the TLS check at the last connection: logged once per change, not per request.
        self.untrusted = False
        self.url_text = redact_url(cfg.url)
        parts = urlsplit(cfg.url)
        self._prefix = parts.path.rstrip("/")
        if parts.username is not None and not any(k.lower() == "authorization" for k in self.header):
            userinfo = f"{parts.username}:{parts.password or ''}".encode()
            self.header["Authorization"] = "Basic " + base64.b64encode(userinfo).decode("ascii")
        tls: dict[str, Any] = {}
        if parts.scheme == "https":
            context = client_context(cfg.tls, f"tls of {redact_url(cfg.url)}")
            # geventhttpclient asks the factory for a context, then sets check_hostname = not insecure
            tls = {"ssl_context_factory": lambda **_: context, "insecure": not context.check_hostname}
        self._client = HTTPClient(
            parts.hostname or "127.0.0.1",
            parts.port,
            ssl=parts.scheme == "https",
            **tls,
            concurrency=cfg.maxConns,  # the bound: a caller waits for a free connection beyond it
            connection_timeout=min(CONNECT_TIMEOUT, cfg.timeout),
            network_timeout=cfg.timeout,
        )
        self._host = _host_header(self._client.host, self._client.port)
        self._deadlines = Deadlines(cfg.timeout)  # the waits of the answers read through lean
        pool = getattr(self._client, "_connection_pool", None)
        if hasattr(pool, "_is_socket_alive"):
            pool._is_socket_alive = _idle_and_open  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"Elastic({redact_url(self.url)})"

    def connections(self) -> tuple[int, int]:
        """(in use, idle) connections of the upstream pool, for /_esproxy/ gauges."""
        pool = self._client._connection_pool  # geventhttpclient keeps no public counters
        return max(0, pool.size - pool._semaphore.counter), pool._socket_queue.qsize()

    def target(self, uri: str) -> str:
        return self._target + uri

    def request(
        self,
        method: str,
        uri: str,
        headers: dict[str, str],
        body: Optional[bytes],
        stream_over: Optional[int] = None,
        raw: bool = False,
    ) -> Response:
        """Send one request; ``uri`` is the raw path and query. Raises UpstreamError, never 5xx-wraps.

        With ``stream_over``, an answer body longer than that (or of unknown length) is not read
        here: the Response's ``stream`` yields it (a large search or scroll page passes through
        without being held in memory). With ``raw``, an answer read whole whose head llhttp takes
        keeps its headers as sent (Response.raw), for a relay that writes them as they came."""
        try:
            r = self._request(method, uri, headers, body, stream_over, raw)
        except UpstreamError as e:
            if e.untrusted and not self.untrusted:
                log.error("%s cluster %s is not trusted, nothing is sent to it: %s", self.direction, self.url_text, e)
                self.untrusted = True
            raise  # other failures leave the state as it was: the certificate was not seen
        if self.untrusted:
            log.info("%s cluster %s: its TLS certificate is trusted again", self.direction, self.url_text)
            self.untrusted = False
        return r

    def _request(
        self,
        method: str,
        uri: str,
        headers: dict[str, str],
        body: Optional[bytes],
        stream_over: Optional[int],
        raw: bool = False,
    ) -> Response:
        merged = {**headers, **self.header} if self.header else headers
        if (body is None or type(body) is bytes) and lean.takes(merged):
            return self._exchange(method.upper(), uri, merged, body or b"", stream_over, raw)
        try:
            r = self._client.request(method, self._prefix + uri, body=body or b"", headers=merged)
            length = r.get("content-length")
            length = int(length) if length and length.isdigit() else None
            if stream_over is not None and method != "HEAD" and (length is None or length > stream_over):
                items = list(r.items())
                return Response(r.status_code, r.status_message or "", items, b"", self._chunks(r, uri), length)
            try:
                data = r.read()  # the whole body, as sent (compressed or not); the connection goes back
            finally:
                r.release()
        except (HTTPParseError, OSError, ValueError) as e:
            raise self._failure(uri, e) from None
        return Response(r.status_code, r.status_message or "", list(r.items()), data)

    def _failure(self, uri: str, e: BaseException) -> UpstreamError:
        """The UpstreamError for what sending ``uri`` raised: a timeout (connect or read; gevent's socket
        timeout is a TimeoutError), an untrusted certificate, a refused connection, or else a reset, closed,
        unparsable answer or an unusable target."""
        if isinstance(e, socket.timeout):
            return UpstreamError(self.target(uri), f"timed out: {e or 'no answer'}", timeout=True)
        if isinstance(e, ssl.SSLCertVerificationError):
            reason = f"TLS certificate not trusted ({getattr(e, 'verify_message', '') or e})"
            return UpstreamError(self.target(uri), reason, timeout=False, refused=True, untrusted=True)
        if isinstance(e, ConnectionRefusedError):
            return UpstreamError(self.target(uri), f"cannot connect: {e}", timeout=False, refused=True)
        return UpstreamError(self.target(uri), str(e) or type(e).__name__, timeout=False)

    def _exchange(
        self, method: str, uri: str, headers: dict[str, str], body: bytes, stream_over: Optional[int], raw: bool = False
    ) -> Response:
        """A request through esproxy.clients.lean: what request() answered through geventhttpclient, for less CPU."""
        pool = self._client._connection_pool
        try:
            head = lean.build_head(method, self._prefix + uri, headers, self._host, len(body))
            # One send for a small request; a large body is sent from its own buffer, not copied after the head.
            request = head + body if len(body) <= LARGE_BODY else None
            for attempt in (1, 2):
                pooled = pool._socket_queue.qsize() > 0  # get_socket() takes an idle one first
                sock = pool.get_socket()
                answer = lean.Answer(pool, sock, method)
                try:
                    try:
                        if request is not None:
                            lean.send_all(sock, request)
                        else:
                            lean.send_all(sock, head)
                            sock.sendall(body)
                    except (ConnectionResetError, BrokenPipeError):
                        pass  # the cluster may have answered before it closed (a 413 to a large body): read it
                    answer.time_waits(self._deadlines)
                    plain = answer.read_head_raw() if raw else None
                    if plain is None:
                        status, reason, items, keep = answer.read_head()
                    break
                except (OSError, lean.Unparsable) as e:
                    answer.finish(reusable=False)
                    # A kept-alive connection the cluster closed meanwhile: once more on a new one, unless the
                    # cluster may have applied the request (not idempotent).
                    stale = isinstance(e, (lean.Closed, ConnectionResetError, BrokenPipeError))
                    if attempt == 2 or not pooled or answer.got_bytes or not stale or method not in lean.IDEMPOTENT:
                        raise
            if plain is not None:
                status, reason, sent, keep, framing, length = plain
                if framing == "none" or (framing == "length" and (stream_over is None or length <= stream_over)):
                    try:
                        data = answer.body(framing, length)
                    except BaseException:
                        answer.finish(reusable=False)
                        raise
                    answer.finish(reusable=keep)
                    return Response(status, reason, [], data, raw=sent)
                items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in sent]
            else:
                framing, length = answer.framing(status, items)
            known = length if framing == "length" else None
            if stream_over is not None and framing != "none" and (known is None or known > stream_over):
                return Response(status, reason, items, b"", self._pieces(answer, framing, length, uri, keep), known)
            try:
                data = answer.body(framing, length)
            except BaseException:
                answer.finish(reusable=False)
                raise
            answer.finish(reusable=keep and framing != "close")
        except (OSError, ValueError) as e:
            raise self._failure(uri, e) from None
        return Response(status, reason, items, data)

    def _pieces(self, answer: lean.Answer, framing: str, length: int, uri: str, keep: bool) -> Iterator[bytes]:
        done = False
        try:
            yield from answer.pieces(framing, length)
            done = True
        except (OSError, ValueError) as e:  # the client sees a cut answer (its connection is closed)
            log.warning("streaming the answer of %s failed: %s", self.target(uri), e)
        finally:
            answer.finish(reusable=done and keep and framing != "close")

    def _chunks(self, r: Any, uri: str) -> Iterator[bytes]:
        released = False
        try:
            while True:
                chunk = r.read(STREAM_CHUNK)
                if not chunk:
                    break
                yield chunk
            r.release()
            released = True
        except (OSError, HTTPParseError) as e:  # the client sees a cut answer (its connection is closed)
            log.warning("streaming the answer of %s failed: %s", self.target(uri), e)
        finally:
            if not released:  # cut short (an error, the client gone): the rest of the body is unread
                pool, sock, r._pool, r._sock = r._pool, r._sock, None, None
                if pool is not None and sock is not None:
                    pool.release_socket(sock)  # closes it, frees its slot; never back into the pool

    def ensure_cluster_id(self) -> str:
        """Read (or create once) the id stored in the cluster, as the Go original does."""
        found = self.request("GET", CLUSTER_ID_PATH, {}, None)
        cid = found.json().get("_source", {}).get("id") if found.status == 200 else None
        if not cid:
            if found.status not in (200, 404):
                raise UpstreamError(self.target(CLUSTER_ID_PATH), _status_text(found), timeout=False)
            created = self.request(
                "PUT",
                CLUSTER_ID_PATH + "?op_type=create",
                {"Content-Type": "application/json"},
                json.dumps({"id": new_cluster_id()}).encode(),
            )
            if created.status not in (200, 201, 409):  # 409: another process created it first
                raise UpstreamError(self.target(CLUSTER_ID_PATH), _status_text(created), timeout=False)
            return self.ensure_cluster_id()
        self.cluster_id = str(cid)
        return self.cluster_id

    def current_docs(
        self, docs: list[tuple[str, str, Optional[str]]]
    ) -> dict[tuple[str, str], Optional[tuple[bytes, int]]]:
        """(index, id, routing) -> (source, version to replay it with: capture.doc_version) as the cluster
        holds them now, None if absent."""
        wanted = [{"_index": i, "_id": d, **({"routing": r} if r is not None else {})} for i, d, r in docs]
        r = self.request("POST", "/_mget", {"Content-Type": "application/json"}, json.dumps({"docs": wanted}).encode())
        if r.status != 200:
            raise UpstreamError(self.target("/_mget"), _status_text(r), timeout=False)
        found: dict[tuple[str, str], Optional[tuple[bytes, int]]] = {}
        for doc in json.loads(r.body).get("docs", []):
            key = (str(doc.get("_index")), str(doc.get("_id")))
            if doc.get("found"):
                source = json.dumps(doc["_source"], ensure_ascii=False, separators=(",", ":")).encode()
                found[key] = (source, max(int(doc.get("_seq_no", 0)), int(doc.get("_version") or 0)))
            else:
                found[key] = None
        return found

    def close(self) -> None:
        self._deadlines.close()
        self._client.close()


def _idle_and_open(sock: Optional[socket.socket]) -> bool:
    """geventhttpclient's check of a pooled connection before reuse (not readable while idle: no
    FIN, no stray bytes), with a plain poll(2): gevent's select() cost ~5 % of the proxy's CPU."""
    if sock is None or sock.fileno() < 0:
        return False
    try:
        poller = _poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _host_header(host: str, port: int) -> str:
    """The Host geventhttpclient sends (brackets around an IPv6 address, the port unless 80/443)."""
    if ":" in host and host[0] != "[" and host[-1] != "]":
        host = f"[{host}]"
    return host if port in (80, 443) else f"{host}:{port}"


def _status_text(r: Response) -> str:
    return f"status {r.status}: {r.body[:300].decode('utf-8', 'replace')}"


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KSUID_EPOCH = 1400000000


def new_cluster_id() -> str:
    """A 27-character KSUID (time-ordered, random), the id format of the Go original."""
    raw = int(time.time() - _KSUID_EPOCH).to_bytes(4, "big") + os.urandom(16)
    n = int.from_bytes(raw, "big")
    out = []
    for _ in range(27):
        n, rem = divmod(n, 62)
        out.append(_BASE62[rem])
    return "".join(reversed(out))


def is_retriable(status: int) -> bool:
    """Worth asking again later: overload, server errors, and credentials B refuses (401/403), which
    are the operator's to fix rather than a fault of the message."""
    return status in (401, 403, 429) or status >= 500


def replay(dest: Elastic, bean: Bean, stopping: Callable[[], bool], waits: Optional[Backoff] = None) -> Response:
    """Apply ``bean`` to ``dest``, retrying connection errors, 5xx and 429 with capped backoff.

    Returns the final response (2xx, or a 4xx the cluster will answer again: the caller decides);
    raises Aborted if ``stopping()`` turns true while waiting. Only the HTTP status is read: a
    `_bulk` goes through replay_as_sent, which reads its items.
    """
    content_type = next((v[0] for k, v in bean.header.items() if k.lower() == "content-type" and v), "")
    headers = {"Content-Type": content_type or "application/json"}
    plain = mediatype.plain(headers["Content-Type"])
    if plain and dest.plain_media_types:
        headers["Content-Type"] = plain
    elif plain:
        headers["Accept"] = mediatype.accept_for(headers["Content-Type"])
    waits = waits or Backoff(stopping=stopping)
    while True:
        started = time.perf_counter()
        r: Optional[Response] = None
        problem = ""
        try:
            r = dest.request(bean.method, bean.requestUri, headers, bean.body)
        except UpstreamError as e:
            problem = str(e)
        if dest.accesslog:
            access_log(
                bean.remoteAddr,
                bean.method,
                bean.requestUri,
                dest.target(bean.requestUri),
                dest.direction,
                time.perf_counter() - started,
                r.status if r else 0,
                r.body if r else b"",
            )
        if r is not None:
            if plain and headers["Content-Type"] != plain and mediatype.refused(r.status, r.body):
                log.warning(
                    "%s refuses Content-Type %s: replaying such writes as %s",
                    redact_url(dest.url),
                    headers["Content-Type"],
                    plain,
                )
                dest.plain_media_types = True
                headers = {"Content-Type": plain}
                continue
            if not is_retriable(r.status):
                return r
            problem = _status_text(r)
        _retry_later(dest, waits, bean.method, bean.requestUri, problem)


@dataclass
class Replayed:
    """What a cluster did with a write replayed as sent."""

    refused: Optional[Response] = None  # the answer when the write as a whole was refused (a 4xx)
    applied: int = 0  # how many writes it applied (or already had): 1, or the `_bulk` actions
    refused_actions: list[tuple[bytes, Item]] = field(default_factory=list)  # `_bulk` actions refused for good


def replay_as_sent(dest: Elastic, bean: Bean, stopping: Callable[[], bool], retry_unreadable: bool = True) -> Replayed:
    """Apply a write replayed as sent (not a document bean) with replay()'s retries; a `_bulk` has its items read.

    A `_bulk` B answers 2xx may still have refused some actions: each item is read against its action
    (``filter_path`` is left out of the query: it could hide the items' status). Applied, a create
    answered 409 (the document exists: a redelivery), a 409 to an externally versioned action (B has
    that version or a newer one), a ``delete`` answered 404: done. 429 and 5xx items, and a 409 to an
    update without conditions (a concurrent write on B), are sent again, alone, after a backoff. A 409
    to a client's ``if_seq_no``/``if_primary_term`` or internal ``version`` is refused: those numbers
    are A's and mean nothing on B, so B may well not hold the write; so is any other 4xx. An answer
    that cannot be read, or with a wrong item count, sends the same actions again (unless not
    ``retry_unreadable``: then it is logged, and nothing more is sent). Raises Aborted if ``stopping()``.
    """
    if not is_bulk_uri(bean.requestUri):
        r = replay(dest, bean, stopping)
        return Replayed(refused=r) if r.status >= 300 else Replayed(applied=1)
    pending: list[tuple[bytes, Optional[Action]]]
    try:
        pending = [(action.lines(), action) for action in parse_request(bean.body)]
    except BulkFormatError:
        pending = []
    if not pending:  # B will most likely refuse it; if it takes it, its items stand or fall together
        pending = [(bean.body, None)]
    bean = replace(bean, requestUri=_without_filter_path(bean.requestUri))
    done = Replayed()
    waits = Backoff(stopping=stopping)
    first = True
    while pending:
        sent = replace(bean, body=b"".join(chunk for chunk, _ in pending)) if not first else bean
        r = replay(dest, sent, stopping, waits)
        if r.status >= 300:
            if first:
                return Replayed(refused=r)
            item = Item("bulk", r.status, error=r.body[:1000].decode("utf-8", "replace"))
            done.refused_actions += [(chunk, item) for chunk, _ in pending]
            return done
        first = False
        split = pending[0][1] is not None
        items, problem = _items(r, len(pending) if split else -1)
        retry: list[tuple[bytes, Optional[Action]]] = []
        if items is None and not retry_unreadable:
            log.warning(
                "%s %s %s: %s; its items not read", dest.direction, bean.method, dest.target(bean.requestUri), problem
            )
        elif items is None:
            retry = pending  # the answer does not say which actions B applied: all of them again
        else:
            outcomes = [_bulk_outcome(action, item) for action, item in zip(_actions_of(pending, len(items)), items)]
            again = sorted({item.status for item, outcome in zip(items, outcomes) if outcome == "retry"})
            problem = f"{outcomes.count('retry')} of {len(items)} actions answered {', '.join(map(str, again))}"
            if not split:  # one body: applied, sent again or refused as a whole
                refused = [item for item, outcome in zip(items, outcomes) if outcome == "refused"]
                if refused:
                    done.refused_actions.append((bean.body, refused[0]))
                elif again:
                    retry = pending
                else:
                    done.applied += max(1, len(items))
            else:
                for (chunk, action), item, outcome in zip(pending, items, outcomes):
                    if outcome == "done":
                        done.applied += 1
                    elif outcome == "retry":
                        retry.append((chunk, action))
                    else:
                        done.refused_actions.append((chunk, item))
        pending = retry
        if pending:
            _retry_later(dest, waits, bean.method, bean.requestUri, problem)
    return done


def _actions_of(pending: list[tuple[bytes, Optional[Action]]], count: int) -> list[Optional[Action]]:
    """The action of each of ``count`` items: one per chunk, or None for every item of a body not split."""
    return [action for _, action in pending] if pending[0][1] is not None else [None] * count


def _bulk_outcome(action: Optional[Action], item: Item) -> str:
    """What B's ``item`` means for ``action`` of a `_bulk` replayed as sent: "done", "retry" or "refused"."""
    if item.ok or (item.verb == "delete" and item.status == 404):
        return "done"
    if item.status == 409:
        meta = action.meta if action is not None else {}
        version_type = str(meta.get("version_type", meta.get("_version_type", "")))
        if item.verb == "create" or meta.get("op_type") == "create" or version_type.startswith("external"):
            return "done"
        conditions = ("if_seq_no", "if_primary_term", "version", "_version")
        if item.verb == "update" and action is not None and not any(key in meta for key in conditions):
            return "retry"  # no condition of the client's: it met a concurrent write on B
        return "refused"
    return "retry" if is_retriable(item.status) else "refused"


def _without_filter_path(uri: str) -> str:
    """``uri`` without ``filter_path``: it shapes only the answer, and could leave out what the items say."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != "filter_path"]
    return path + ("?" + "&".join(kept) if kept else "")


def replay_docs(dest: Elastic, chunks: list[bytes], stopping: Callable[[], bool]) -> list[tuple[bytes, Item]]:
    """Apply versioned document actions in one `_bulk`, retrying what can succeed later.

    An item B answers 409 holds an older version than B already has (a newer write won) and a
    delete answered 404 found nothing to delete: both are done. 429 and 5xx items are sent again
    after a backoff; what is left is returned: actions B refuses for good (mapping errors...).
    """
    pending, failed, waits = chunks, [], Backoff(stopping=stopping)
    while pending:
        started = time.perf_counter()
        body = b"".join(pending)
        retry: list[bytes] = []
        try:
            r = dest.request("POST", "/_bulk", {"Content-Type": "application/x-ndjson"}, body)
        except UpstreamError as e:
            retry, problem = pending, str(e)
        else:
            if dest.accesslog:
                access_log(
                    "",
                    "POST",
                    "/_bulk",
                    dest.target("/_bulk"),
                    dest.direction,
                    time.perf_counter() - started,
                    r.status,
                    b"",
                )
            if is_retriable(r.status):
                retry, problem = pending, _status_text(r)
            elif r.status >= 300:
                item = Item("bulk", r.status, error=r.body[:1000].decode("utf-8", "replace"))
                return failed + [(chunk, item) for chunk in pending]
            else:
                items, problem = _items(r, len(pending))
                if items is None:
                    retry = pending  # the answer does not say which actions B applied: all of them again
                for chunk, item in zip(pending, items or ()):
                    if item.ok or item.status == 409 or (item.verb == "delete" and item.status == 404):
                        continue
                    if is_retriable(item.status):
                        retry.append(chunk)
                    else:
                        failed.append((chunk, item))
                if items is not None:
                    problem = f"{len(retry)} of {len(pending)} actions answered 429/5xx"
        pending = retry
        if pending:
            _retry_later(dest, waits, "POST", "/_bulk", problem)
    return failed


def _items(r: Response, sent: int) -> tuple[Optional[list[Item]], str]:
    """The items of B's 2xx `_bulk` answer, one per action sent (any number when ``sent`` is -1); else
    None and why (a truncated or mangled answer, from a proxy in front of B or a server that is not
    Elasticsearch)."""
    try:
        items = parse_response(r.body)
    except UnparsableAnswer as e:
        return None, f"status {r.status}, but {e}"
    if sent >= 0 and len(items) != sent:
        start = r.body[:200].decode("utf-8", "replace")
        return None, f"status {r.status}, but the _bulk answer has {len(items)} items for {sent} actions: {start!r}"
    return items, ""


def _retry_later(dest: Elastic, waits: Backoff, method: str, uri: str, problem: str) -> None:
    delay = waits.next()
    # An untrusted certificate does not go away by itself: the operator has to act, so each retry says so loudly.
    log.log(
        logging.ERROR if dest.untrusted else logging.WARNING,
        "%s %s %s failed (attempt %d): %s; retrying in %.1fs",
        dest.direction,
        method,
        dest.target(uri),
        waits.attempts,
        problem,
        delay,
    )
    waits.sleep(delay, f"{method} {uri} not applied: stopping")
