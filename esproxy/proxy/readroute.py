"""Read/write splitting: which cluster answers a request when ``destination.followers`` is set.

Writes, and reads that only the leader can answer faithfully, go to the leader (``ProxyApp.primary``);
other reads go to a usable follower (``ProxyApp.followers``, round robin) and, if it gives no answer,
to the leader once more, transparently. :func:`leader_reason` and :func:`follower_view` decide from
the request alone; :class:`Follower` keeps what the proxy knows of one follower (answering? how far
behind?), refreshed by a greenlet of its own; :class:`ReadRouter` puts the two together and holds the
read-your-writes memory. Switchover may assign ``ProxyApp.primary`` and ``ProxyApp.followers`` at
any time: nothing here keeps either.

Scroll, point-in-time, async search, EQL and SQL (cursors) keep state in the cluster that opened
them, under an opaque id: they all go to the leader, so that a continuation always finds its context
whichever worker process or follower would have served it (see docs/operations.md, Read/write
splitting).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Optional, Sequence
from urllib.parse import unquote

import gevent

from esproxy.clients.elastic import Elastic, Response, UpstreamError
from esproxy.core import routing
from esproxy.core.bulk import BulkFormatError
from esproxy.core.config import ClientTls, ElasticDestination
from esproxy.core.logs import redact_url
from esproxy.core.schema import Duration, Url
from esproxy.core.stats import STATS
from esproxy.replay import Rules, intersect, matches

from .readnames import Rewritten, follower_request
from .request import BadBody, Request

log = logging.getLogger("esproxy.reads")

FORCE_HEADER = "X-Esproxy-Read"  # value `leader`: this request goes to the leader
FORCE_ENVIRON = "HTTP_" + FORCE_HEADER.upper().replace("-", "_")
UPSTREAM_ENVIRON = "esproxy.upstream"  # the Elastic that answered, for the access log

POLL_EVERY = 1.0  # seconds between two looks at each follower and its replay
PROBE_TIMEOUT = 2.0  # most seconds a follower's `GET /` or its replay's stats may take
DOWN_HOLD = 5.0  # after a read failed on a follower, it gets no reads for at least this long
RYW_CLIENTS = 10_000  # clients remembered for read-your-writes (least recently writing forgotten first)
RYW_INDICES = 64  # indices remembered per client; more, and all its reads go to the leader

# Why a read went to the leader although followers are configured (esproxy_read_fallbacks_total).
FALLBACK_REASONS = ("down", "timeout", "lag", "forced", "read_your_writes", "scroll", "renamed", "delayed")
# Not reads, or reads of the cluster rather than of indices: the leader's, not counted as fallbacks.
WRITE, CLUSTER = "write", "cluster"

# Path segments of APIs whose answer carries an id that only the cluster which gave it knows.
STATEFUL_APIS = frozenset({"_pit", "_async_search", "_eql", "_sql"})
# `_search/<segment>`: scroll continuations and clears, OpenSearch's point-in-time API.
STATEFUL_SEARCH = frozenset({"scroll", "point_in_time"})
# Document reads an index path may name after the index: `/idx`, `/idx/_doc/1`, `/idx/_source/1`...
INDEX_READS = frozenset({"_doc", "_source", "_mapping", "_mappings"})
# APIs whose body may name other indices than the path does.
MULTI_TARGET = frozenset({"_msearch", "_mget", "_mtermvectors", "_rank_eval"})


# ---------------------------------------------------------------------- pure decisions


def leader_reason(method: str, uri: str, body: bytes) -> Optional[str]:
    """Why the leader must answer this request, whatever the followers' state; None when a follower may.

    ``body`` is the request body as the client sent it (decompressed when it was compressed)."""
    return _leader_reason(Request(method, uri, body), body)


def _leader_reason(request: Request, plain: bytes) -> Optional[str]:
    """:func:`leader_reason` of the request as the proxy's stages have it (``plain``: its plain body)."""
    if request.writing:
        return WRITE
    segments = request.segments
    query = request.uri.partition("?")[2]
    if _stateful(segments, query, plain):
        return "scroll"
    if not any(s in routing.READ_ONLY_APIS for s in segments) and not _index_read(segments):
        return CLUSTER  # `/`, `_cat`, `_cluster`, `_nodes`, index settings and stats...: the leader's own
    return None


def _stateful(segments: list[str], query: str, body: bytes) -> bool:
    if any(s in STATEFUL_APIS for s in segments):
        return True
    for i, s in enumerate(segments[:-1]):
        if s == "_search" and segments[i + 1] in STATEFUL_SEARCH:
            return True
    if any(p.partition("=")[0] == "scroll" for p in query.split("&")):
        return True
    # A search within a point in time names no index in its path, the id is in the body.
    return segments[-1] in ("_search", "_msearch") and b'"pit"' in body


def _index_read(segments: list[str]) -> bool:
    first = segments[0]
    if not first or first.startswith("_"):
        return False
    if len(segments) == 1 or segments[1] in INDEX_READS:
        return True
    return len(segments) == 3 and not segments[1].startswith("_")  # ES 6 `/idx/type/id`


def read_indices(uri: str) -> Optional[list[str]]:
    """The index names (or patterns) a read's path names; None when it names none (all, or in the body)."""
    segments = uri.partition("?")[0].strip("/").split("/")
    first = unquote(segments[0])
    if not first or first.startswith("_") or any(s in MULTI_TARGET for s in segments):
        return None
    return [name for name in first.split(",") if name]


def written_indices(method: str, uri: str, body: bytes) -> list[str]:
    """The indices a write changed, as named; ``*`` when that is not known from the request (``body``: plain)."""
    return _written(Request(method, uri, body))


def _written(request: Request) -> list[str]:
    """:func:`written_indices` of the request as the proxy's stages have it (its actions read once)."""
    uri = request.uri
    named = read_indices(uri) or []
    segments = uri.partition("?")[0].strip("/").split("/")
    if "_bulk" in segments:
        try:
            actions = request.actions
        except (BulkFormatError, BadBody):
            return ["*"]
        found = {str(a.meta["_index"]) for a in actions if a.meta.get("_index")}
        if any(not a.meta.get("_index") for a in actions):
            if not named:
                return ["*"]
            found.update(named)
        return sorted(found)
    if "_reindex" in segments or not named:
        return ["*"]
    return named


def delayed_read(names: Optional[list[str]], delayed: Sequence[dict[str, Any]]) -> bool:
    """Whether a read naming ``names`` (A's names or patterns, :func:`read_indices`; None: all, or named in the
    body) may read an index a delayed sync rule follows (``delayed``: the replay's ``undo_rules`` with a
    delay): B holds those indices as they were a delay ago, so the leader answers. An alias is judged by
    its own name: a rule that should keep its alias's reads off B names the alias among its indices."""
    rules = [r for r in delayed if r.get("delay_seconds")]
    if not rules:
        return False
    if names is None:
        return True
    for name in names:
        if name.startswith("-"):
            continue  # narrows a wildcard: decided with it
        pattern = "*" if name == "_all" else name
        for rule in rules:
            includes, excludes = rule.get("indices") or [], rule.get("exclude") or []
            if "*" in pattern:
                if any(intersect(p, pattern) for p in includes):
                    return True
            elif any(matches(p, pattern) for p in includes) and not any(matches(e, pattern) for e in excludes):
                return True
    return False


@dataclass(frozen=True)
class View:
    """A read as a follower is asked it: as sent (``names`` None), or in B's index names (proxy/readnames.py)."""

    uri: str
    body: bytes
    names: Optional[Rewritten] = None  # turns B's answer back into A's names


def follower_view(method: str, uri: str, body: bytes, plain: bytes, rules: Optional[Rules]) -> Optional[View]:
    """The read as the follower must be asked it, or None when B cannot answer it faithfully.

    ``body`` as the client sent it, ``plain`` decompressed. No sync rules (none in the proxy's config):
    B holds A's indices under A's names, the read goes as it is. With rules: proxy/readnames.py names B's
    indices in the read (plain) and A's in B's answer, or says the leader must answer."""
    if rules is None or not rules.active:
        return View(uri, body)
    rewritten = follower_request(rules, method, uri, plain)
    return None if rewritten is None else View(rewritten.uri, rewritten.body, rewritten)


# ---------------------------------------------------------------------- read-your-writes


class RecentWrites:
    """The indices each client wrote within the last ``window`` seconds; bounded in clients and indices."""

    def __init__(self, window: float, clients: int = RYW_CLIENTS, per_client: int = RYW_INDICES) -> None:
        self.window = window
        self.clients = clients
        self.per_client = per_client
        self._by_client: OrderedDict[str, dict[str, float]] = OrderedDict()  # key -> index -> expiry

    def __len__(self) -> int:
        return len(self._by_client)

    def wrote(self, client: str, indices: list[str], now: float) -> None:
        entry = self._live(self._by_client.pop(client, {}), now)
        until = now + self.window
        for name in indices:
            entry[name] = until
        if len(entry) > self.per_client:
            entry = {"*": until}
        self._by_client[client] = entry
        while len(self._by_client) > self.clients:
            self._by_client.popitem(last=False)

    def recently_wrote(self, client: str, names: Optional[list[str]], now: float) -> bool:
        """Whether ``client`` wrote one of ``names`` (patterns allowed; None: any index) within the window."""
        entry = self._by_client.get(client)
        if entry is None:
            return False
        entry = self._live(entry, now)
        if not entry:
            del self._by_client[client]
            return False
        self._by_client[client] = entry
        if names is None or "*" in entry:
            return True
        return any(fnmatchcase(written, name) for name in names for written in entry)

    @staticmethod
    def _live(entry: dict[str, float], now: float) -> dict[str, float]:
        return {name: until for name, until in entry.items() if until > now}


def client_key(environ: dict[str, Any]) -> str:
    """Who a request comes from, for read-your-writes: its credentials when it has some, else its address."""
    credentials = environ.get("HTTP_AUTHORIZATION")
    if credentials:
        return "auth:" + hashlib.sha256(credentials.encode("utf-8", "replace")).hexdigest()[:32]
    return "addr:" + environ.get("REMOTE_ADDR", "")


# ---------------------------------------------------------------------- followers


class Follower:
    """One follower cluster as this proxy sees it: answering or not, and its replay's lag.

    A greenlet (:meth:`start`) asks the follower ``GET /`` and the replay's ``/_esproxy/stats`` every
    second. A read that fails on it (:meth:`failed`) takes it out for at least DOWN_HOLD seconds."""

    def __init__(self, elastic: Elastic, unshipped_age: Optional[Callable[[], float]] = None) -> None:
        self.elastic = elastic
        self.cfg = elastic.cfg
        self.name = redact_url(elastic.url)
        self.max_lag = float(self.cfg.maxLag)
        self.unshipped_age = unshipped_age
        self.lag: Optional[float] = None  # seconds; None: not known
        self.lag_problem = "not read yet"
        self.down = ""  # "", "down" or "timeout"
        self.down_problem = ""
        self.hold_until = 0.0
        self.state = "starting"
        self.since = time.time()
        self.delayed: list[dict[str, Any]] = []  # its replay's sync rules with a delay (replay.undo_rules)
        self._probe = Elastic(_short(self.cfg, self.cfg.url), "follower")
        cfg = self.cfg
        self._admin = (
            Elastic(
                # replayAdminTls, else the cluster's tls (what this watch used before replayAdminTls existed)
                _short(cfg, cfg.replayAdmin, dict(cfg.replayAdminHeader), cfg.replayAdminTls or None),
                "replay-admin",
            )
            if self.cfg.replayAdmin
            else None
        )
        self._loop: Optional[gevent.Greenlet] = None

    def unusable(self) -> Optional[str]:
        """Why no read goes to this follower now (a fallback reason), None when it may serve reads."""
        if self.down:
            return self.down
        if self.max_lag > 0 and (self.lag is None or self.lag > self.max_lag):
            return "lag"
        return None

    def failed(self, e: UpstreamError) -> None:
        """A read got no answer from this follower."""
        self.down = "timeout" if e.timeout else "down"
        self.down_problem = str(e)
        self.hold_until = time.monotonic() + DOWN_HOLD
        self._note_state()

    # ------------------------------------------------------------------ the watch

    def start(self) -> None:
        if self._loop is None:
            self._loop = gevent.spawn(self._watch)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None
        for e in (self._probe, self._admin):
            if e is not None:
                e.close()

    def _watch(self) -> None:
        while True:
            self.poll()
            gevent.sleep(POLL_EVERY)

    def poll(self) -> None:
        """Look at the follower and its replay once."""
        self._check_answers()
        self._read_lag()
        self._note_state()

    def _check_answers(self) -> None:
        try:
            r = self._probe.request("GET", "/", {}, None)
        except UpstreamError as e:
            self.down, self.down_problem = ("timeout" if e.timeout else "down"), str(e)
            return
        if r.status >= 500 or r.status in (401, 403):
            self.down, self.down_problem = "down", f"GET / answered {r.status}"
        elif self.down and time.monotonic() >= self.hold_until:
            self.down, self.down_problem = "", ""

    def _read_lag(self) -> None:
        lag, problem = self._replay_lag()
        if lag is not None and self.unshipped_age is not None:
            # Writes this proxy captured but has not shipped to Kafka yet are not in the replay's lag.
            lag = max(lag, self.unshipped_age())
        self.lag, self.lag_problem = (None if lag is None else round(lag, 3)), problem

    def _replay_lag(self) -> tuple[Optional[float], str]:
        if self._admin is None:
            return None, "no replayAdmin to read the lag from"
        try:
            r = self._admin.request("GET", "/_esproxy/stats", {}, None)
        except UpstreamError as e:
            hint = " (replayAdminTls.ca: the CA of that replay's admin.tls.cert)" if e.untrusted else ""
            return None, f"replay admin: {e}{hint}"
        if r.status != 200:
            return None, f"replay admin answered {r.status}"
        replay = r.json().get("replay", {})
        self.delayed = [x for x in replay.get("undo_rules") or [] if isinstance(x, dict) and x.get("delay_seconds")]
        rows = replay.get("consumer_lag")
        if not isinstance(rows, list):
            return None, "replay admin: no replay.consumer_lag in its stats"
        seconds = [row.get("lag_seconds") for row in rows if isinstance(row, dict)]
        seconds = [float(s) for s in seconds if isinstance(s, (int, float))]
        if not seconds:
            return None, "the replay has no partition assigned"
        return max(seconds), ""

    def _note_state(self) -> None:
        reason = self.unusable()
        state = "ok" if reason is None else ("lag_unknown" if reason == "lag" and self.lag is None else reason)
        if state == self.state:
            return
        self.state, self.since = state, time.time()
        if state == "ok":
            log.info("follower %s serves reads (lag %s)", self.name, _seconds(self.lag))
        else:
            log.warning("follower %s gets no reads: %s", self.name, self.problem())

    def problem(self) -> str:
        if self.down:
            return f"{self.down}: {self.down_problem}"
        if self.lag is None and self.max_lag > 0:
            return f"lag unknown: {self.lag_problem}"
        if self.max_lag > 0 and self.lag is not None and self.lag > self.max_lag:
            return f"lags {self.lag:.3f}s, more than maxLag {self.max_lag:g}s"
        return ""

    def row(self) -> dict[str, Any]:
        """This follower in /_esproxy/stats."""
        return {
            "cluster": self.name,
            "state": self.state,
            "usable": self.state == "ok",
            "since": round(self.since, 3),
            "lag_seconds": self.lag,
            "max_lag_seconds": self.max_lag,
            "replay_admin": redact_url(self.cfg.replayAdmin),
            "problem": self.problem(),
        }


def _short(
    cfg: ElasticDestination, url: str, header: Optional[dict[str, str]] = None, tls: Optional[ClientTls] = None
) -> ElasticDestination:
    """A client config for the watch: a few connections, a short timeout. ``header``/``tls`` replace the
    cluster's for another server (the replay's admin must not get the cluster's credentials)."""
    timeout = Duration(min(float(cfg.timeout), PROBE_TIMEOUT))
    return dataclasses.replace(
        cfg,
        url=Url(url),
        timeout=timeout,
        maxConns=2,
        header=cfg.header if header is None else header,
        tls=cfg.tls if tls is None else tls,
    )


def _seconds(value: Optional[float]) -> str:
    return "unknown" if value is None else f"{value:.3f}s"


# ---------------------------------------------------------------------- the router


class ReadRouter:
    """Sends each request to the leader or a follower (ProxyApp._forward calls :meth:`forward`)."""

    def __init__(self, read_your_writes: float = 0.0, rules: Optional[Rules] = None) -> None:
        self.rules = rules
        self.recent = RecentWrites(read_your_writes) if read_your_writes > 0 else None
        self._turn = 0

    def choose(
        self, environ: dict[str, Any], request: Request, followers: Sequence[Follower]
    ) -> tuple[Optional[Follower], str, Optional[View]]:
        """(follower, "", what to ask it), or (None, why the leader answers, None: the request as it is)."""
        if request.writing:  # before decompressing: a write's body is not looked at
            return None, WRITE, None
        plain = _plain(request)
        if plain is None:
            return None, CLUSTER, None  # a body that does not decode: the leader answers as it would
        reason = _leader_reason(request, plain)
        if reason is not None:
            return None, reason, None
        if environ.get(FORCE_ENVIRON, "").strip().lower() == "leader":
            return None, "forced", None
        uri = request.uri
        if self.recent is not None and self.recent.recently_wrote(
            client_key(environ), read_indices(uri), time.monotonic()
        ):
            return None, "read_your_writes", None
        view = follower_view(request.method, uri, request.body, plain, self.rules)
        if view is None:
            return None, "renamed", None
        usable = [f for f in followers if f.unusable() is None]
        if usable and any(f.delayed for f in usable):  # a delayed follower answers no read of its delayed indices
            names = read_indices(uri)
            usable = [f for f in usable if not delayed_read(names, f.delayed)]
            if not usable:
                return None, "delayed", None
        if not usable:
            return None, (followers[0].unusable() or "down") if followers else CLUSTER, None
        self._turn = (self._turn + 1) % len(usable)
        return usable[self._turn], "", view

    def forward(
        self,
        primary: Elastic,
        followers: Sequence[Follower],
        environ: dict[str, Any],
        request: Request,
        headers: dict[str, str],
        stream_over: Optional[int],
    ) -> Response:
        """The answer of the follower chosen, else of the leader; UpstreamError when the leader gives none."""
        follower, reason, view = self.choose(environ, request, followers)
        method = request.method
        if follower is not None and view is not None:
            asked, over = headers, stream_over
            if view.names is not None:  # a plain body in B's names, a whole plain answer to rename
                asked = {k: v for k, v in headers.items() if k.lower() not in ("content-encoding", "accept-encoding")}
                over = None
            try:
                r = follower.elastic.request(method, view.uri, asked, view.body, stream_over=over)
            except UpstreamError as e:
                follower.failed(e)
                reason = "timeout" if e.timeout else "down"
            else:
                answer = r.body if view.names is None else view.names.answer(r.status, r.body)
                if r.stream is None and r.status in (502, 503, 504):
                    reason = "down"  # it answered that it cannot: the leader may
                elif answer is None:
                    reason = "renamed"  # B's answer cannot stand for A's (an index B lacks...)
                else:
                    environ[UPSTREAM_ENVIRON] = follower.elastic
                    STATS.read_by(follower.name)
                    return r if answer is r.body else dataclasses.replace(r, body=answer)
        if reason in FALLBACK_REASONS:
            STATS.read_fallback(reason)
        r = primary.request(method, request.uri, headers, request.body, stream_over=stream_over)
        if reason != WRITE:
            STATS.read_by(redact_url(primary.url))
        return r

    def answered(self, environ: dict[str, Any], request: Request, status: int) -> None:
        """A request the leader answered: a successful write opens the client's read-your-writes window."""
        if self.recent is None or not 200 <= status < 300 or not request.writing:
            return
        names = _written(request) if _plain(request) is not None else ["*"]
        self.recent.wrote(client_key(environ), names, time.monotonic())


def _plain(request: Request) -> Optional[bytes]:
    """The body decompressed as its Content-Encoding says (an empty one as it is); None when it does not decode."""
    if not request.body:
        return request.body
    try:
        return request.plain
    except BadBody:
        return None


def rules_for(cfg_rules: Any) -> Optional[Rules]:
    """The sync rules of the proxy's config (None without a follow section)."""
    return Rules.from_config(cfg_rules) if cfg_rules.rules else None
