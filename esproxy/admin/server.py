"""``/_esproxy/health``, ``/_esproxy/stats`` (JSON), ``/_esproxy/metrics`` (Prometheus text) and the console,
``/_esproxy/ui`` (esproxy.admin.console).

The proxy role answers them on its own port(s) (they are never forwarded to Elasticsearch: index
names cannot start with ``_``); any role answers them on ``admin.port`` when it is set, which is how
the replay role is scraped. Where the proxy requires client headers (``source.proxies[].header``)
these paths require them too; the admin port requires ``admin.header``.

Gauges are read at scrape time through an :class:`AdminView` that esproxy.roles builds: the fanout queue,
the upstream connection pools, the pre-fork workers, the replay consumers. Counters come from
:data:`esproxy.core.stats.STATS`. The ``/_esproxy/stats`` snapshot is typed (esproxy.admin.snapshot); the
metrics are one table (esproxy.admin.metrics.METRICS), each read from it by attribute.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Union

import gevent
from gevent.pywsgi import WSGIServer

from esproxy import __version__
from esproxy.clients.tls import wsgi_server
from esproxy.core.logs import redact_url
from esproxy.core.secretrefs import mask_bytes
from esproxy.core.stats import LATENCY_BUCKETS, STATS, Stats
from esproxy.core.wsgi import JSON_TYPE, Check, StartResponse, error_body, error_doc, header_check, unauthorized

from . import console, metrics
from .health import Problem, notices, problems
from .metrics import Reading
from .snapshot import (
    FollowedIndex,
    FollowerRow,
    IndexWrites,
    InFlight,
    KafkaProduce,
    Latency,
    PartitionLag,
    ProxySection,
    Queue,
    ReplaySection,
    RuleLaneRow,
    Snapshot,
    Spool,
    Switchover,
    UnassignedPartition,
    Upstream,
    WorkerRow,
    as_json,
)

if TYPE_CHECKING:  # pragma: no cover
    from esproxy.clients.elastic import Elastic
    from esproxy.core.config import HealthSettings, ServerTls

log = logging.getLogger("esproxy.admin")

PREFIX = "/_esproxy/"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def read_body(environ: dict[str, Any]) -> bytes:
    length = environ.get("CONTENT_LENGTH") or "0"
    return environ["wsgi.input"].read(int(length)) if length.isdigit() and int(length) > 0 else b""


def refuse(environ: dict[str, Any], start_response: StartResponse, check: Optional[Check]) -> Optional[Iterable[bytes]]:
    """The 401 answer when ``check`` refuses the request (for the console's page, the page that asks for the
    header); the 403 answer to a change (POST, PUT, DELETE) a browser sends from a page of another origin
    (the console's buttons, a form elsewhere: credentials a browser keeps must not be used by another site's
    page); None when it may pass."""
    method = environ.get("REQUEST_METHOD", "")
    if method not in ("GET", "HEAD") and cross_origin(environ):
        body = error_body(403, "security_exception", "a change to /_esproxy/ from a page of another origin")
        return _reply(start_response, "403 Forbidden", [JSON_TYPE], body)
    challenge = check(environ) if check is not None else None
    if challenge is None:
        return None
    if environ.get("PATH_INFO", "").rstrip("/") == PREFIX + "ui" and method in ("GET", "HEAD"):
        headers = console.page_headers() + ([("WWW-Authenticate", challenge)] if challenge else [])
        return _reply(start_response, "401 Unauthorized", headers, console.login_page())
    headers, body = unauthorized(challenge, "missing or wrong credentials for /_esproxy/")
    return _reply(start_response, "401 Unauthorized", headers, body)


def cross_origin(environ: dict[str, Any]) -> bool:
    """Whether a browser sent the request from a page of another origin than this listener's (its ``Origin``
    header names another host and port than ``Host``); a client that is no browser sends no ``Origin``."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return False
    host = environ.get("HTTP_HOST", "")
    return origin.split("://", 1)[-1].rstrip("/").lower() != host.lower()


class Workers(Protocol):
    """Pre-fork workers as the admin endpoints see them (esproxy.proxy.prefork.WorkerPool)."""

    def reports(self) -> list[dict[str, Any]]:
        """Each worker's last counters (esproxy.core.stats.Stats.proxy_report, plus ``upstreams`` rows)."""
        ...

    def pids(self) -> list[int]: ...

    def rows(self) -> list[dict[str, Any]]:
        """Per worker: slot, pid, connections accepted, requests answered."""
        ...


@dataclass(frozen=True)
class AdminView:
    """What the admin endpoints read of the running process, and nothing more (built by esproxy.roles.Roles)."""

    health: HealthSettings
    stopping: Callable[[], bool]
    queue: Callable[[], tuple[int, int]]  # captured writes in the in-memory queue, its capacity
    in_flight: Callable[[], tuple[int, int]]  # request bytes in flight, their budget (0: none); esproxy.proxy.inflight
    unshipped: Callable[[], int]  # captured writes not yet taken by Kafka (esproxy.proxy.fanout.Fanout.unshipped)
    oldest_unshipped_age: Callable[[], float]  # seconds (esproxy.proxy.fanout.Fanout.oldest_unshipped_age)
    elastics: Callable[[], list[Elastic]]  # this process's clusters, their connection pools
    workers: Callable[[], Optional[Workers]]  # None: no pre-fork workers
    lags: Callable[[], list[dict[str, Any]]]  # per assigned partition of every replay: KafkaReplay.lag()
    # /_esproxy/sync/...: (method, path parts after sync/, body) -> (status, JSON); esproxy.replay.followcontrol
    sync: Optional[Callable[[str, list[str], bytes], tuple[int, Any]]] = None
    # replays waiting for their cluster's id at start: (cluster, since time.monotonic(), the last error)
    unstarted: Callable[[], list[tuple[str, float, str]]] = lambda: []
    # partitions no replay of the group applies, per replay: KafkaReplay.unassigned() (esproxy.replay.groupwatch)
    unassigned: Callable[[], list[dict[str, Any]]] = lambda: []
    # the proxy's followers, one row each (esproxy.proxy.readroute.Follower.row); none without followers
    followers: Callable[[], list[dict[str, Any]]] = lambda: []
    # /_esproxy/switchover[/...]: the same shape as sync; esproxy.proxy.leadership (the proxy role with followers)
    switchover: Optional[Callable[[str, list[str], bytes], tuple[int, Any]]] = None
    # writes waiting in sync rules' own lanes, delayed or held: KafkaReplay.rule_lanes() (esproxy.replay.holdback)
    rule_lanes: Callable[[], list[dict[str, Any]]] = lambda: []
    # the sync rules with a delay or a guard: name, indices, exclude, delay_seconds, guard (read by a proxy's
    # read routing and by switchover: a delayed follower answers no read of those indices and is not promoted)
    undo_rules: Callable[[], list[dict[str, Any]]] = lambda: []
    # the roles this process runs ("proxy", "replay"): which tables the console shows
    roles: tuple[str, ...] = ()


class Admin:
    def __init__(self, view: AdminView, stats: Stats = STATS) -> None:
        self.view = view
        self.stats = stats
        self.server: Optional[WSGIServer] = None
        self.series = console.Series()  # the console's charts: the last hour, sampled by start_sampler
        self._sampler: Optional[gevent.Greenlet] = None

    # ------------------------------------------------------------------ HTTP

    def serve(
        self, environ: dict[str, Any], start_response: StartResponse, check: Optional[Check] = None
    ) -> Iterable[bytes]:
        refused = refuse(environ, start_response, check)
        if refused is not None:
            return refused
        path = environ.get("PATH_INFO", "")
        body = read_body(environ) if self._control_of(path) is not None else b""
        query = environ.get("QUERY_STRING", "")
        status, headers, data = self.answer(path, environ.get("REQUEST_METHOD", ""), body, query)
        return _reply(start_response, status, headers, data)

    def _control_of(self, path: str) -> Optional[tuple[str, Callable[[str, list[str], bytes], tuple[int, Any]]]]:
        """A runtime control's prefix and handler: the follower sync rules (the replay's;
        esproxy.replay.followcontrol) or the switchover (the proxy's; esproxy.proxy.leadership); None for
        other paths."""
        if path.startswith(PREFIX + "sync/") and self.view.sync is not None:
            return "sync/", self.view.sync
        if (path + "/").startswith(PREFIX + "switchover/") and self.view.switchover is not None:
            return "switchover", self.view.switchover
        return None

    def answer(
        self, path: str, method: str, body: bytes = b"", query: str = ""
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body for an admin path (also asked for by pre-fork workers, with no query)."""
        control = self._control_of(path)
        if control is None:
            return self.render(path, method, query)
        prefix, handle = control
        parts = [p for p in path[len(PREFIX + prefix) :].split("/") if p]
        code, doc = handle(method, parts, body)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}.get(
            code, "Error"
        )
        return f"{code} {reason}", [JSON_TYPE], mask_bytes(json.dumps(doc, ensure_ascii=False).encode() + b"\n")

    def render(self, path: str, method: str, query: str = "") -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body for a GET of health, stats, metrics or the console; no value the
        config took from ``${ENV}`` or ``file:`` shows in them."""
        if path == PREFIX + "ui/series" and method in ("GET", "HEAD"):  # numbers only: nothing to mask
            return "200 OK", [console.JSON_TYPE, ("Cache-Control", "no-store")], self.series.as_json(_after(query))
        if path == PREFIX + "ui/refresh" and method in ("GET", "HEAD"):  # what the page's script polls
            doc = {"panel": console.panel(self.console_data()), "series": self.series.doc(_after(query))}
            body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            return "200 OK", [JSON_TYPE, ("Cache-Control", "no-store")], mask_bytes(body)
        status, headers, body = self._render(path, method)
        return status, headers, mask_bytes(body)

    def _render(self, path: str, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
        json_type = [JSON_TYPE]
        if method not in ("GET", "HEAD"):
            return (
                "405 Method Not Allowed",
                json_type,
                error_body(405, "method_not_allowed", f"{path} answers GET only"),
            )
        if path == PREFIX + "metrics":
            return "200 OK", [("Content-Type", PROMETHEUS_TYPE)], self.prometheus().encode()
        if path == PREFIX + "stats":
            doc = as_json(self.snapshot())
            return "200 OK", json_type, json.dumps(doc, ensure_ascii=False, indent=1).encode() + b"\n"
        if path == PREFIX + "health":
            status, doc = self.health()
            return status, json_type, json.dumps(doc, ensure_ascii=False).encode() + b"\n"
        if path.rstrip("/") == PREFIX + "ui":
            data = self.console_data()
            title = f"esproxy {' + '.join(data.roles) or 'admin'}: {data.verdict}"
            return "200 OK", console.page_headers(), console.page(console.panel(data), title)
        body = error_body(404, "resource_not_found_exception", f"no {path}; try {PREFIX}health, stats, metrics or ui")
        return "404 Not Found", json_type, body

    def problems(
        self, lags: Optional[list[dict[str, Any]]] = None, unassigned: Optional[list[dict[str, Any]]] = None
    ) -> list[Problem]:
        """What keeps health at 503 now; ``lags``, ``unassigned``: the replays' rows if already read."""
        return problems(
            self.view.health,
            now=time.monotonic(),
            ship_age=self.view.oldest_unshipped_age(),
            backlog=self.view.unshipped(),
            produce_failing=self.stats.produce_failing,
            lags=self.view.lags() if lags is None else lags,
            dead_letter_times=self.stats.dead_letter_times,
            unstarted=self.view.unstarted(),
            unassigned=self.view.unassigned() if unassigned is None else unassigned,
            rule_lanes=self.view.rule_lanes(),
        )

    def health(
        self, lags: Optional[list[dict[str, Any]]] = None, unassigned: Optional[list[dict[str, Any]]] = None
    ) -> tuple[str, dict[str, Any]]:
        """200 ``{"status": "ok", ...}``, or 503 in Elasticsearch's error shape with one root cause per problem.

        Both carry ``health`` (ok / unhealthy / stopping), ``version``, ``pid`` and ``reasons``
        (``[{"check", "reason"}]``, empty when ok). ``lags``, ``unassigned``: the replays' rows if already read.
        """
        common: dict[str, Any] = {"version": __version__, "pid": os.getpid()}
        shown = notices(self.view.rule_lanes())
        if shown:  # not failures: writes sync rules' guards hold, waiting for a decision
            common["notices"] = [p.as_dict() for p in shown]
        if self.view.stopping():
            found = [Problem("stopping", "esproxy is stopping (graceful stop in progress)")]
            kind, verdict = "esproxy_stopping_exception", "stopping"
        else:
            found = self.problems(lags, unassigned)
            kind, verdict = "esproxy_unhealthy_exception", "unhealthy"
        if not found:
            return "200 OK", {"status": "ok", "health": "ok", **common, "reasons": []}
        causes = [{"type": kind, "reason": p.reason} for p in found]
        error = error_doc(503, kind, "; ".join(p.reason for p in found), root_causes=causes)
        return "503 Service Unavailable", {
            **error,
            "health": verdict,
            **common,
            "reasons": [p.as_dict() for p in found],
        }

    def console_data(self) -> console.PanelData:
        """What the console's panel shows, read once."""
        lags, unassigned = self.view.lags(), self.view.unassigned()
        snap = self.snapshot(lags, unassigned)
        _, doc = self.health(lags, unassigned)
        rules: Optional[list[dict[str, Any]]] = None
        indices: list[dict[str, Any]] = []
        if self.view.sync is not None:
            code, answer = self.view.sync("GET", ["rules"], b"")
            rules = answer.get("rules", []) if code == 200 else []
            code, answer = self.view.sync("GET", ["status"], b"")
            indices = answer.get("indices", []) if code == 200 else []
        return console.PanelData(
            verdict=doc["health"],
            reasons=doc["reasons"],
            roles=self.view.roles,
            snap=snap,
            series=self.series,
            rules=rules,
            indices=indices,
            dead_letters=list(self.stats.dead_letter_reasons),
        )

    def sample(self) -> None:
        """Add one sample of the figures to the console's series."""
        self.series.add(console.sample(self.snapshot(), time.time()))

    def start_sampler(self, every: float = console.EVERY) -> None:
        """Sample every ``every`` seconds (the first at once) until stop()."""

        def loop() -> None:
            while True:
                try:
                    self.sample()
                except Exception:  # a figure that cannot be read now: the next sample will tell
                    log.exception("console: cannot sample the figures")
                gevent.sleep(every)

        self._sampler = gevent.spawn(loop)

    def start_listener(self, host: str, port: int, required: dict[str, str], tls: Optional[ServerTls] = None) -> None:
        """The separate admin listener (``admin.port``); HTTPS with ``admin.tls``."""
        check = header_check(required) if required else None

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            return self.serve(environ, start_response, check)

        error_log = logging.getLogger("esproxy.wsgi")
        self.server = wsgi_server((host, port), app, tls, "admin.tls", log=None, error_log=error_log)
        self.server.start()
        scheme = "https" if tls else "http"
        log.info("admin listening on %s:%d (%s; %shealth, stats, metrics, ui)", host, port, scheme, PREFIX)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.kill(block=False)
        if self.server is not None:
            self.server.stop(timeout=0.5)

    # ------------------------------------------------------------------ renderings

    def snapshot(
        self, lags: Optional[list[dict[str, Any]]] = None, unassigned: Optional[list[dict[str, Any]]] = None
    ) -> Snapshot:
        """``/_esproxy/stats``: every counter and gauge, read once; the metrics are rendered from it.
        ``lags``, ``unassigned``: the replays' rows if already read."""
        workers = self.view.workers()
        reports = workers.reports() if workers is not None else []
        s = self.stats.with_reports(reports) if workers is not None else self.stats
        depth, capacity = self.view.queue()
        in_flight, in_flight_limit = self.view.in_flight()
        buckets = {}
        total = 0
        for bound, n in zip(list(LATENCY_BUCKETS) + ["+Inf"], s.latency_buckets):
            total += n
            buckets[str(bound)] = total
        upstreams = upstream_rows(self.view.elastics())
        if workers is not None:
            upstreams = merge_upstreams([upstreams] + [r.get("upstreams", []) for r in reports])
        now = time.monotonic()
        proxy = ProxySection(
            requests={f"{m} {st}": n for (m, st), n in sorted(s.requests.items())},
            latency_seconds=Latency(count=s.latency_count, sum=round(s.latency_sum, 6), le=buckets),
            writes_captured=s.writes_captured,
            connections=s.connections,
            in_flight=InFlight(bytes=in_flight, limit=in_flight_limit, refused=s.inflight_refused),
            workers=[WorkerRow.of(w) for w in workers.rows()] if workers is not None else None,
            reads=dict(sorted(s.reads.items())),
            read_fallbacks=dict(sorted(s.read_fallbacks.items())),
            queue=Queue(depth=depth, capacity=capacity),
            spool=Spool(records=s.spool_records, bytes=s.spool_bytes),
            oldest_unshipped_seconds=round(self.view.oldest_unshipped_age(), 3),
            kafka=KafkaProduce(
                produced=dict(s.kafka_produced),
                failed=_failed_by_topic(s.kafka_failed),
                failing_seconds={t: round(now - first, 3) for t, (first, _, _) in s.produce_failing.items()},
            ),
        )
        replay = ReplaySection(
            messages=s.replay_messages,
            bytes=s.replay_bytes,
            messages_per_second=s.replay_rate(),
            by_index={i: IndexWrites(writes=c, bytes=b) for i, (c, b) in sorted(s.replay_by_index.items())},
            skipped=dict(s.replay_skipped),
            skipped_by_rules=dict(s.replay_skipped_by_rules),
            throttled_seconds=round(s.replay_throttled_seconds, 3),
            followed={i: FollowedIndex.of(e.as_dict()) for i, e in sorted(s.followed.items())},
            dead_letters=s.dead_letters,
            consumer_lag=[PartitionLag.of(x) for x in (self.view.lags() if lags is None else lags)],
            unassigned=[
                UnassignedPartition.of(x) for x in (self.view.unassigned() if unassigned is None else unassigned)
            ],
            rule_lanes=[RuleLaneRow.of(x) for x in self.view.rule_lanes()],
            undo_rules=self.view.undo_rules(),
            sync_decided=s.sync_decided,
        )
        return Snapshot(
            version=__version__,
            pid=os.getpid(),
            workers=workers.pids() if workers is not None else None,
            uptime_seconds=round(s.uptime(), 3),
            proxy=proxy,
            upstreams=[Upstream.of(u) for u in upstreams],
            followers=[FollowerRow.of(f) for f in self.view.followers()],
            switchover=self._switchover_state() if self.view.switchover is not None else None,
            replay=replay,
        )

    def _switchover_state(self) -> Union[Switchover, dict[str, Any]]:
        """The proxy's leader, write pause and switches (esproxy.proxy.leadership); {} when it cannot say."""
        assert self.view.switchover is not None
        status, doc = self.view.switchover("GET", [], b"")
        return Switchover.of(doc) if status == 200 else {}

    def prometheus(self) -> str:
        """``/_esproxy/metrics``: :data:`esproxy.admin.metrics.METRICS`, read from one snapshot and the health
        verdict."""
        lags, unassigned = self.view.lags(), self.view.unassigned()
        snap = self.snapshot(lags, unassigned)
        found = self.problems(lags=lags, unassigned=unassigned)
        return metrics.render(Reading(snap, found, healthy=not found and not self.view.stopping()))


def _failed_by_topic(failed: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, reason), n in sorted(failed.items()):
        out.setdefault(topic, {})[reason] = n
    return out


def upstream_rows(elastics: Iterable[Elastic]) -> list[dict[str, Any]]:
    out = []
    for e in elastics:
        in_use, idle = e.connections()
        out.append(
            {
                "cluster": redact_url(e.url),
                "direction": e.direction,
                "cluster_id": e.cluster_id,
                "connections_in_use": in_use,
                "connections_idle": idle,
            }
        )
    return out


def merge_upstreams(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (cluster, direction), connections summed over processes (pre-fork workers)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            key = (row["cluster"], row["direction"])
            if key not in merged:
                merged[key] = dict(row)
                continue
            m = merged[key]
            m["connections_in_use"] += row["connections_in_use"]
            m["connections_idle"] += row["connections_idle"]
            m["cluster_id"] = m["cluster_id"] or row["cluster_id"]
    return list(merged.values())


def _after(query: str) -> float:
    """``after=`` of the series' query: a time.time(); 0 (everything) when absent or not a number."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "after":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


def _reply(start_response: StartResponse, status: str, headers: list[tuple[str, str]], body: bytes) -> Iterable[bytes]:
    start_response(status, headers)
    return [body]
