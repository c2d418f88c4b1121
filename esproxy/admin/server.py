"""``/_esproxy/health``, ``/_esproxy/stats`` (JSON) and ``/_esproxy/metrics`` (Prometheus text).

The proxy role answers them on its own port(s) (they are never forwarded to Elasticsearch: index
names cannot start with ``_``); any role answers them on ``admin.port`` when it is set, which is how
the replay role is scraped. Where the proxy requires client headers (``source.proxies[].header``)
these paths require them too; the admin port requires ``admin.header``.

Gauges are read at scrape time through an :class:`AdminView` that esproxy.roles builds: the fanout queue,
the upstream connection pools, the pre-fork workers, the replay consumers. Counters come from
:data:`esproxy.core.stats.STATS`. The metrics are one table (:data:`METRICS`), each read from the
``/_esproxy/stats`` snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol

from gevent.pywsgi import WSGIServer

from esproxy import __version__
from esproxy.clients.tls import wsgi_server
from esproxy.core.logs import redact_url
from esproxy.core.secretrefs import mask_bytes
from esproxy.core.stats import LATENCY_BUCKETS, STATS, Stats
from esproxy.core.wsgi import JSON_TYPE, Check, StartResponse, error_body, error_doc, header_check, unauthorized

from .health import Problem, problems

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
    """The 401 answer when ``check`` refuses the request; None when it may pass."""
    challenge = check(environ) if check is not None else None
    if challenge is None:
        return None
    headers, body = unauthorized(challenge, "missing or wrong credentials for /_esproxy/")
    return _reply(start_response, "401 Unauthorized", headers, body)


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


class Admin:
    def __init__(self, view: AdminView, stats: Stats = STATS) -> None:
        self.view = view
        self.stats = stats
        self.server: Optional[WSGIServer] = None

    # ------------------------------------------------------------------ HTTP

    def serve(
        self, environ: dict[str, Any], start_response: StartResponse, check: Optional[Check] = None
    ) -> Iterable[bytes]:
        refused = refuse(environ, start_response, check)
        if refused is not None:
            return refused
        path = environ.get("PATH_INFO", "")
        body = read_body(environ) if self._control_of(path) is not None else b""
        status, headers, data = self.answer(path, environ.get("REQUEST_METHOD", ""), body)
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

    def answer(self, path: str, method: str, body: bytes = b"") -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body for an admin path (also asked for by pre-fork workers)."""
        control = self._control_of(path)
        if control is None:
            return self.render(path, method)
        prefix, handle = control
        parts = [p for p in path[len(PREFIX + prefix) :].split("/") if p]
        code, doc = handle(method, parts, body)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}.get(
            code, "Error"
        )
        return f"{code} {reason}", [JSON_TYPE], mask_bytes(json.dumps(doc, ensure_ascii=False).encode() + b"\n")

    def render(self, path: str, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body for a GET of health, stats or metrics; no value the config took
        from ``${ENV}`` or ``file:`` shows in them."""
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
            return "200 OK", json_type, json.dumps(self.snapshot(), ensure_ascii=False, indent=1).encode() + b"\n"
        if path == PREFIX + "health":
            status, doc = self.health()
            return status, json_type, json.dumps(doc, ensure_ascii=False).encode() + b"\n"
        body = error_body(404, "resource_not_found_exception", f"no {path}; try {PREFIX}health, stats or metrics")
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
        )

    def health(self) -> tuple[str, dict[str, Any]]:
        """200 ``{"status": "ok", ...}``, or 503 in Elasticsearch's error shape with one root cause per problem.

        Both carry ``health`` (ok / unhealthy / stopping), ``version``, ``pid`` and ``reasons``
        (``[{"check", "reason"}]``, empty when ok).
        """
        common: dict[str, Any] = {"version": __version__, "pid": os.getpid()}
        if self.view.stopping():
            found = [Problem("stopping", "esproxy is stopping (graceful stop in progress)")]
            kind, verdict = "esproxy_stopping_exception", "stopping"
        else:
            found = self.problems()
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

    def start_listener(self, host: str, port: int, required: dict[str, str], tls: Optional[ServerTls] = None) -> None:
        """The separate admin listener (``admin.port``); HTTPS with ``admin.tls``."""
        check = header_check(required) if required else None

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            return self.serve(environ, start_response, check)

        error_log = logging.getLogger("esproxy.wsgi")
        self.server = wsgi_server((host, port), app, tls, "admin.tls", log=None, error_log=error_log)
        self.server.start()
        scheme = "https" if tls else "http"
        log.info("admin listening on %s:%d (%s; %shealth, stats, metrics)", host, port, scheme, PREFIX)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=0.5)

    # ------------------------------------------------------------------ renderings

    def snapshot(self) -> dict[str, Any]:
        """``/_esproxy/stats``: every counter and gauge, read once; the metrics are rendered from it."""
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
        return {
            "version": __version__,
            "pid": os.getpid(),
            **({"workers": workers.pids()} if workers is not None else {}),
            "uptime_seconds": round(s.uptime(), 3),
            "proxy": {
                "requests": {f"{m} {st}": n for (m, st), n in sorted(s.requests.items())},
                "latency_seconds": {"count": s.latency_count, "sum": round(s.latency_sum, 6), "le": buckets},
                "writes_captured": s.writes_captured,
                "connections": s.connections,
                "in_flight": {
                    "bytes": in_flight,
                    "limit": in_flight_limit,
                    "refused": s.inflight_refused,
                },
                **({"workers": workers.rows()} if workers is not None else {}),
                "reads": dict(sorted(s.reads.items())),
                "read_fallbacks": dict(sorted(s.read_fallbacks.items())),
                "queue": {"depth": depth, "capacity": capacity},
                "spool": {"records": s.spool_records, "bytes": s.spool_bytes},
                "oldest_unshipped_seconds": round(self.view.oldest_unshipped_age(), 3),
                "kafka": {
                    "produced": dict(s.kafka_produced),
                    "failed": _failed_by_topic(s.kafka_failed),
                    "failing_seconds": {t: round(now - first, 3) for t, (first, _, _) in s.produce_failing.items()},
                },
            },
            "upstreams": upstreams,
            "followers": self.view.followers(),
            **({"switchover": self._switchover_state()} if self.view.switchover is not None else {}),
            "replay": {
                "messages": s.replay_messages,
                "bytes": s.replay_bytes,
                "messages_per_second": s.replay_rate(),
                "by_index": {i: {"writes": c, "bytes": b} for i, (c, b) in sorted(s.replay_by_index.items())},
                "skipped": dict(s.replay_skipped),
                "skipped_by_rules": dict(s.replay_skipped_by_rules),
                "throttled_seconds": round(s.replay_throttled_seconds, 3),
                "followed": {i: e.as_dict() for i, e in sorted(s.followed.items())},
                "dead_letters": s.dead_letters,
                "consumer_lag": self.view.lags(),
                "unassigned": self.view.unassigned(),
            },
        }

    def _switchover_state(self) -> dict[str, Any]:
        """The proxy's leader, write pause and switches (esproxy.proxy.leadership); {} when it cannot say."""
        assert self.view.switchover is not None
        status, doc = self.view.switchover("GET", [], b"")
        return doc if status == 200 else {}

    def prometheus(self) -> str:
        """``/_esproxy/metrics``: :data:`METRICS`, read from one snapshot and the health verdict."""
        snap = self.snapshot()
        found = self.problems(lags=snap["replay"]["consumer_lag"], unassigned=snap["replay"]["unassigned"])
        reading = Reading(snap, found, healthy=not found and not self.view.stopping())
        lines: list[str] = []
        for m in METRICS:
            lines.append(f"# HELP {m.name} {m.help}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            for suffix, labels, value in m.samples(reading):
                lines.append(f"{m.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- metric definitions


@dataclass(frozen=True)
class Reading:
    """What every metric is read from: the /_esproxy/stats snapshot and the health verdict."""

    snap: dict[str, Any]
    problems: list[Problem]
    healthy: bool


Sample = tuple[str, dict[str, str], float]  # name suffix (a histogram's _bucket, _sum, _count), labels, value


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # gauge, counter or histogram
    help: str
    samples: Callable[[Reading], Iterable[Sample]]


def _one(value: Callable[[dict[str, Any]], float]) -> Callable[[Reading], Iterable[Sample]]:
    """The samples of an unlabelled metric: one value, read from the snapshot."""
    return lambda r: [("", {}, value(r.snap))]


def _requests(r: Reading) -> Iterable[Sample]:
    for key, n in r.snap["proxy"]["requests"].items():
        method, status = key.split(" ", 1)
        yield "", {"method": method, "status": status}, n


def _latency(r: Reading) -> Iterable[Sample]:
    latency = r.snap["proxy"]["latency_seconds"]
    for bound, total in latency["le"].items():
        yield "_bucket", {"le": bound}, total
    yield "_sum", {}, latency["sum"]
    yield "_count", {}, latency["count"]


def _workers(field: str) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [
        ("", {"worker": str(w["slot"]), "pid": str(w["pid"])}, w[field]) for w in r.snap["proxy"].get("workers", [])
    ]


def _kafka_failed(r: Reading) -> Iterable[Sample]:
    for topic, reasons in r.snap["proxy"]["kafka"]["failed"].items():
        for reason, n in reasons.items():
            yield "", {"topic": topic, "reason": reason}, n


def _upstreams(field: str) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [
        ("", {"cluster": u["cluster"], "direction": u["direction"]}, u[field]) for u in r.snap["upstreams"]
    ]


def _clusters(r: Reading) -> Iterable[Sample]:
    for u in r.snap["upstreams"]:
        yield "", {"cluster": u["cluster"], "direction": u["direction"], "cluster_id": u["cluster_id"]}, 1


def _by_index(field: str) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [("", {"index": i}, row[field]) for i, row in r.snap["replay"]["by_index"].items()]


def _followed(field: str) -> Callable[[Reading], Iterable[Sample]]:
    """Per follower index (B's name, at most 1000) and its sync rule."""
    return lambda r: [
        ("", {"index": i, "rule": row["rule"]}, row[field]) for i, row in r.snap["replay"]["followed"].items()
    ]


def _lags(field: str) -> Callable[[Reading], Iterable[Sample]]:
    def samples(r: Reading) -> Iterable[Sample]:
        for x in r.snap["replay"]["consumer_lag"]:
            if x[field] is not None:
                yield "", {"group": x["group"], "topic": x["topic"], "partition": str(x["partition"])}, x[field]

    return samples


def _switchover(value: Callable[[dict[str, Any]], Any]) -> Callable[[Reading], Iterable[Sample]]:
    """A sample of the proxy's switchover state, none without followers."""

    def samples(r: Reading) -> Iterable[Sample]:
        state = r.snap.get("switchover")
        if state:
            yield "", {}, value(state) or 0

    return samples


def _leader(r: Reading) -> Iterable[Sample]:
    state = r.snap.get("switchover")
    if state:
        yield "", {"url": state["leader"], "config_primary": str(state["leader"] == state["config_primary"]).lower()}, 1


_SPOOL = "in the durable spool, not yet taken by Kafka."

METRICS: tuple[Metric, ...] = (
    Metric("esproxy_build_info", "gauge", "esproxy version (always 1).", lambda r: [("", {"version": __version__}, 1)]),
    Metric(
        "esproxy_uptime_seconds", "gauge", "Seconds since the process started.", _one(lambda s: s["uptime_seconds"])
    ),
    Metric(
        "esproxy_requests_total",
        "counter",
        "Proxy requests answered, by method and status (/_esproxy/ paths not counted).",
        _requests,
    ),
    Metric("esproxy_request_duration_seconds", "histogram", "Time to answer a proxy request.", _latency),
    Metric(
        "esproxy_connections_total",
        "counter",
        "Client connections the proxy accepted (all workers).",
        _one(lambda s: s["proxy"]["connections"]),
    ),
    Metric(
        "esproxy_worker_connections_total",
        "counter",
        "Client connections a pre-fork worker accepted (since that worker started).",
        _workers("connections"),
    ),
    Metric(
        "esproxy_worker_requests_total",
        "counter",
        "Proxy requests a pre-fork worker answered (since that worker started).",
        _workers("requests"),
    ),
    Metric(
        "esproxy_inflight_bytes",
        "gauge",
        "Request bytes in flight reserved against maxInFlightBytes (twice each body), all workers.",
        _one(lambda s: s["proxy"]["in_flight"]["bytes"]),
    ),
    Metric(
        "esproxy_inflight_limit_bytes",
        "gauge",
        "maxInFlightBytes (0: no budget).",
        _one(lambda s: s["proxy"]["in_flight"]["limit"]),
    ),
    Metric(
        "esproxy_inflight_refused_total",
        "counter",
        "Requests answered 429 (circuit_breaking_exception) because they would pass maxInFlightBytes.",
        _one(lambda s: s["proxy"]["in_flight"]["refused"]),
    ),
    Metric(
        "esproxy_writes_captured_total",
        "counter",
        "Successful writes captured for Kafka.",
        _one(lambda s: s["proxy"]["writes_captured"]),
    ),
    Metric(
        "esproxy_reads_total",
        "counter",
        "Reads answered by each cluster, with destination.followers set (URL, password redacted).",
        lambda r: [("", {"cluster": c}, n) for c, n in r.snap["proxy"]["reads"].items()],
    ),
    Metric(
        "esproxy_read_fallbacks_total",
        "counter",
        "Reads the leader answered instead of a follower, by reason: down, timeout, lag, forced (header),"
        " read_your_writes, scroll (scroll, point in time, async search, SQL/EQL), renamed (follow rules).",
        lambda r: [("", {"reason": k}, n) for k, n in r.snap["proxy"]["read_fallbacks"].items()],
    ),
    Metric(
        "esproxy_follower_usable",
        "gauge",
        "1 while a follower may serve reads, else 0; `state`: ok, down, timeout, lag, lag_unknown, starting.",
        lambda r: [("", {"cluster": f["cluster"], "state": f["state"]}, int(f["usable"])) for f in r.snap["followers"]],
    ),
    Metric(
        "esproxy_follower_lag_seconds",
        "gauge",
        "A follower's lag as the proxy sees it: its replay's (max over partitions, from replayAdmin), or this"
        " proxy's oldest unshipped write if older; absent while unknown.",
        lambda r: [
            ("", {"cluster": f["cluster"]}, f["lag_seconds"])
            for f in r.snap["followers"]
            if f["lag_seconds"] is not None
        ],
    ),
    Metric(
        "esproxy_queue_depth",
        "gauge",
        "Captured writes waiting for the producer.",
        _one(lambda s: s["proxy"]["queue"]["depth"]),
    ),
    Metric(
        "esproxy_queue_capacity",
        "gauge",
        "chanSize (0: direct hand-off).",
        _one(lambda s: s["proxy"]["queue"]["capacity"]),
    ),
    Metric(
        "esproxy_oldest_unshipped_seconds",
        "gauge",
        "Seconds the oldest captured write not yet taken by Kafka has waited (spool or queue; 0: none waits).",
        _one(lambda s: s["proxy"]["oldest_unshipped_seconds"]),
    ),
    Metric("esproxy_spool_records", "gauge", "Records " + _SPOOL, _one(lambda s: s["proxy"]["spool"]["records"])),
    Metric("esproxy_spool_bytes", "gauge", "Bytes " + _SPOOL, _one(lambda s: s["proxy"]["spool"]["bytes"])),
    Metric(
        "esproxy_kafka_produced_total",
        "counter",
        "Messages the broker acknowledged (or accepted, requiredAcks NoResponse), by topic.",
        lambda r: [("", {"topic": t}, n) for t, n in sorted(r.snap["proxy"]["kafka"]["produced"].items())],
    ),
    Metric(
        "esproxy_kafka_produce_failed_total",
        "counter",
        "Messages the broker did not take, by topic and reason (the error's class name, or why it was refused).",
        _kafka_failed,
    ),
    Metric(
        "esproxy_upstream_connections_in_use",
        "gauge",
        "Connections to a cluster serving a request now.",
        _upstreams("connections_in_use"),
    ),
    Metric(
        "esproxy_upstream_connections_idle",
        "gauge",
        "Kept-alive connections to a cluster waiting for a request.",
        _upstreams("connections_idle"),
    ),
    Metric(
        "esproxy_cluster_info",
        "gauge",
        "Clusters and their ids (/meta.elasticproxy/_doc/clusterid; empty until read).",
        _clusters,
    ),
    Metric(
        "esproxy_leader_info",
        "gauge",
        "The cluster the proxy writes to (1), with followers: config_primary false after a switchover.",
        _leader,
    ),
    Metric(
        "esproxy_switchover_paused",
        "gauge",
        "1 while writes are paused for a switchover.",
        _switchover(lambda s: int(s["paused"])),
    ),
    Metric(
        "esproxy_switchovers_total",
        "counter",
        "Leader switches (switchover and failover) in the state file's history.",
        _switchover(lambda s: s["switches"]),
    ),
    Metric(
        "esproxy_switchover_last_duration_seconds",
        "gauge",
        "The last switch: from the command's start to the new leader.",
        _switchover(lambda s: (s["last_switch"] or {}).get("duration_seconds")),
    ),
    Metric(
        "esproxy_switchover_last_write_pause_seconds",
        "gauge",
        "The last switchover: how long writes were paused.",
        _switchover(lambda s: (s["last_switch"] or {}).get("write_pause_seconds")),
    ),
    Metric(
        "esproxy_switchover_writes_refused_total",
        "counter",
        "Writes answered 503 (Retry-After) while paused for a switchover, since the start.",
        _switchover(lambda s: s["writes_refused"]),
    ),
    Metric(
        "esproxy_replay_messages_total", "counter", "Kafka messages consumed.", _one(lambda s: s["replay"]["messages"])
    ),
    Metric(
        "esproxy_replay_message_bytes_total",
        "counter",
        "Bytes of Kafka messages consumed.",
        _one(lambda s: s["replay"]["bytes"]),
    ),
    Metric(
        "esproxy_replay_messages_per_second",
        "gauge",
        "Messages consumed per second over the last 10 s.",
        _one(lambda s: s["replay"]["messages_per_second"]),
    ),
    Metric(
        "esproxy_replay_writes_total",
        "counter",
        "Writes applied to the target cluster, by index (first path segment of the request).",
        _by_index("writes"),
    ),
    Metric(
        "esproxy_replay_bytes_total", "counter", "Message bytes of the writes applied, by index.", _by_index("bytes")
    ),
    Metric(
        "esproxy_replay_skipped_total",
        "counter",
        "Messages skipped: refused by the target (4xx) or not a bean, by index.",
        lambda r: [("", {"index": i}, n) for i, n in sorted(r.snap["replay"]["skipped"].items())],
    ),
    Metric(
        "esproxy_sync_docs_total",
        "counter",
        "Writes (document actions) the replay applied to each follower index under a sync rule.",
        _followed("docs"),
    ),
    Metric("esproxy_sync_bytes_total", "counter", "Bytes applied to each follower index.", _followed("bytes")),
    Metric(
        "esproxy_sync_failures_total",
        "counter",
        "Writes into each follower index B refused (to the dead letters).",
        _followed("failures"),
    ),
    Metric(
        "esproxy_sync_lag_seconds",
        "gauge",
        "Capture on A (the Kafka timestamp) to application on B of the last write applied to each follower index.",
        _followed("lag_seconds"),
    ),
    Metric(
        "esproxy_sync_last_applied_timestamp_seconds",
        "gauge",
        "Unix time of the last write applied to each follower index.",
        _followed("last_applied"),
    ),
    Metric(
        "esproxy_replay_throttled_seconds_total",
        "counter",
        "Seconds the replay waited for its rate limit (source.kafkas[].maxDocsPerSecond, maxBytesPerSecond).",
        lambda r: [("", {}, r.snap["replay"]["throttled_seconds"])],
    ),
    Metric(
        "esproxy_replay_skipped_by_rules_total",
        "counter",
        "Writes (and `_bulk` actions) not replayed because no follower sync rule follows their index, by A's"
        ' index (at most 1000 names, the rest as "(other)").',
        lambda r: [("", {"index": i}, n) for i, n in sorted(r.snap["replay"]["skipped_by_rules"].items())],
    ),
    Metric(
        "esproxy_dead_letters_total",
        "counter",
        "Dead letters written: by the replay (messages that can never apply: not a bean, or refused with a 4xx),"
        " or by the proxy (writes the broker refuses for good).",
        _one(lambda s: s["replay"]["dead_letters"]),
    ),
    Metric(
        "esproxy_consumer_lag",
        "gauge",
        "Offsets from the oldest record not yet applied (else the next to fetch) to the high watermark, per"
        " assigned partition (approximate where the high watermark counts record batches).",
        _lags("lag"),
    ),
    Metric(
        "esproxy_consumer_lag_seconds",
        "gauge",
        "Now minus the Kafka timestamp of the oldest record fetched and not yet applied, per assigned partition"
        " (0: caught up).",
        _lags("lag_seconds"),
    ),
    Metric(
        "esproxy_replay_stalled_seconds",
        "gauge",
        "How long records of a partition have waited with none applied (0: none waits).",
        _lags("stalled_seconds"),
    ),
    Metric(
        "esproxy_replay_unassigned_seconds",
        "gauge",
        "How long a partition this replay does not hold has had writes waiting with no commit of its group"
        " (health.maxUnassigned); absent while some replay of the group applies it.",
        lambda r: [
            ("", {"group": x["group"], "topic": x["topic"], "partition": str(x["partition"])}, x["waiting_seconds"])
            for x in r.snap["replay"]["unassigned"]
        ],
    ),
    Metric(
        "esproxy_healthy",
        "gauge",
        "1 when /_esproxy/health answers 200, else 0.",
        lambda r: [("", {}, 1 if r.healthy else 0)],
    ),
    Metric(
        "esproxy_health_problem",
        "gauge",
        "1 per check that makes /_esproxy/health answer 503 now.",
        lambda r: [("", {"check": c}, 1) for c in sorted({p.check for p in r.problems})],
    ),
)


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


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _reply(start_response: StartResponse, status: str, headers: list[tuple[str, str]], body: bytes) -> Iterable[bytes]:
    start_response(status, headers)
    return [body]
