"""The ``/_esproxy/metrics`` table: one :class:`Metric` per Prometheus metric, each read by attribute from
the typed ``/_esproxy/stats`` snapshot (esproxy.admin.snapshot) and the health verdict.

A new metric is a row of :data:`METRICS`; tests/test_unit_admin_metrics.py renders every one of them from a
snapshot with every section filled, so a misspelt field fails there, not at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from esproxy import __version__

from .health import Problem
from .snapshot import (
    FollowedIndex,
    IndexWrites,
    PartitionLag,
    RuleLaneRow,
    Snapshot,
    Switchover,
    Upstream,
    WorkerRow,
)


@dataclass(frozen=True)
class Reading:
    """What every metric is read from: the /_esproxy/stats snapshot and the health verdict."""

    snap: Snapshot
    problems: list[Problem]
    healthy: bool


Sample = tuple[str, dict[str, str], float]  # name suffix (a histogram's _bucket, _sum, _count), labels, value


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # gauge, counter or histogram
    help: str
    samples: Callable[[Reading], Iterable[Sample]]


def _one(value: Callable[[Snapshot], float]) -> Callable[[Reading], Iterable[Sample]]:
    """The samples of an unlabelled metric: one value, read from the snapshot."""
    return lambda r: [("", {}, value(r.snap))]


def _requests(r: Reading) -> Iterable[Sample]:
    for key, n in r.snap.proxy.requests.items():
        method, status = key.split(" ", 1)
        yield "", {"method": method, "status": status}, n


def _latency(r: Reading) -> Iterable[Sample]:
    latency = r.snap.proxy.latency_seconds
    for bound, total in latency.le.items():
        yield "_bucket", {"le": bound}, total
    yield "_sum", {}, latency.sum
    yield "_count", {}, latency.count


def _workers(value: Callable[[WorkerRow], float]) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [("", {"worker": str(w.slot), "pid": str(w.pid)}, value(w)) for w in r.snap.proxy.workers or []]


def _kafka_failed(r: Reading) -> Iterable[Sample]:
    for topic, reasons in r.snap.proxy.kafka.failed.items():
        for reason, n in reasons.items():
            yield "", {"topic": topic, "reason": reason}, n


def _upstreams(value: Callable[[Upstream], float]) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [("", {"cluster": u.cluster, "direction": u.direction}, value(u)) for u in r.snap.upstreams]


def _clusters(r: Reading) -> Iterable[Sample]:
    for u in r.snap.upstreams:
        yield "", {"cluster": u.cluster, "direction": u.direction, "cluster_id": u.cluster_id}, 1


def _by_index(value: Callable[[IndexWrites], float]) -> Callable[[Reading], Iterable[Sample]]:
    return lambda r: [("", {"index": i}, value(row)) for i, row in r.snap.replay.by_index.items()]


def _followed(value: Callable[[FollowedIndex], float]) -> Callable[[Reading], Iterable[Sample]]:
    """Per follower index (B's name, at most 1000) and its sync rule."""
    return lambda r: [("", {"index": i, "rule": row.rule}, value(row)) for i, row in r.snap.replay.followed.items()]


def _rule_lanes(value: Callable[[RuleLaneRow], float]) -> Callable[[Reading], Iterable[Sample]]:
    """Per sync rule and partition with writes waiting in the rule's lane."""
    return lambda r: [
        ("", {"rule": x.rule, "group": x.group, "topic": x.topic, "partition": str(x.partition)}, value(x))
        for x in r.snap.replay.rule_lanes
    ]


def _lags(value: Callable[[PartitionLag], Optional[float]]) -> Callable[[Reading], Iterable[Sample]]:
    def samples(r: Reading) -> Iterable[Sample]:
        for x in r.snap.replay.consumer_lag:
            v = value(x)
            if v is not None:
                yield "", {"group": x.group, "topic": x.topic, "partition": str(x.partition)}, v

    return samples


def _switchover(value: Callable[[Switchover], Any]) -> Callable[[Reading], Iterable[Sample]]:
    """A sample of the proxy's switchover state, none without followers (or while it cannot say)."""

    def samples(r: Reading) -> Iterable[Sample]:
        state = r.snap.switchover
        if isinstance(state, Switchover):
            yield "", {}, value(state) or 0

    return samples


def _leader(r: Reading) -> Iterable[Sample]:
    state = r.snap.switchover
    if isinstance(state, Switchover):
        yield "", {"url": state.leader, "config_primary": str(state.leader == state.config_primary).lower()}, 1


_SPOOL = "in the durable spool, not yet taken by Kafka."

METRICS: tuple[Metric, ...] = (
    Metric("esproxy_build_info", "gauge", "esproxy version (always 1).", lambda r: [("", {"version": __version__}, 1)]),
    Metric("esproxy_uptime_seconds", "gauge", "Seconds since the process started.", _one(lambda s: s.uptime_seconds)),
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
        _one(lambda s: s.proxy.connections),
    ),
    Metric(
        "esproxy_worker_connections_total",
        "counter",
        "Client connections a pre-fork worker accepted (since that worker started).",
        _workers(lambda w: w.connections),
    ),
    Metric(
        "esproxy_worker_requests_total",
        "counter",
        "Proxy requests a pre-fork worker answered (since that worker started).",
        _workers(lambda w: w.requests),
    ),
    Metric(
        "esproxy_inflight_bytes",
        "gauge",
        "Request bytes in flight reserved against maxInFlightBytes (twice each body), all workers.",
        _one(lambda s: s.proxy.in_flight.bytes),
    ),
    Metric(
        "esproxy_inflight_limit_bytes",
        "gauge",
        "maxInFlightBytes (0: no budget).",
        _one(lambda s: s.proxy.in_flight.limit),
    ),
    Metric(
        "esproxy_inflight_refused_total",
        "counter",
        "Requests answered 429 (circuit_breaking_exception) because they would pass maxInFlightBytes.",
        _one(lambda s: s.proxy.in_flight.refused),
    ),
    Metric(
        "esproxy_writes_captured_total",
        "counter",
        "Successful writes captured for Kafka.",
        _one(lambda s: s.proxy.writes_captured),
    ),
    Metric(
        "esproxy_reads_total",
        "counter",
        "Reads answered by each cluster, with destination.followers set (URL, password redacted).",
        lambda r: [("", {"cluster": c}, n) for c, n in r.snap.proxy.reads.items()],
    ),
    Metric(
        "esproxy_read_fallbacks_total",
        "counter",
        "Reads the leader answered instead of a follower, by reason: down, timeout, lag, forced (header),"
        " read_your_writes, scroll (scroll, point in time, async search, SQL/EQL), renamed (follow rules).",
        lambda r: [("", {"reason": k}, n) for k, n in r.snap.proxy.read_fallbacks.items()],
    ),
    Metric(
        "esproxy_follower_usable",
        "gauge",
        "1 while a follower may serve reads, else 0; `state`: ok, down, timeout, lag, lag_unknown, starting.",
        lambda r: [("", {"cluster": f.cluster, "state": f.state}, int(f.usable)) for f in r.snap.followers],
    ),
    Metric(
        "esproxy_follower_lag_seconds",
        "gauge",
        "A follower's lag as the proxy sees it: its replay's (max over partitions, from replayAdmin), or this"
        " proxy's oldest unshipped write if older; absent while unknown.",
        lambda r: [("", {"cluster": f.cluster}, f.lag_seconds) for f in r.snap.followers if f.lag_seconds is not None],
    ),
    Metric(
        "esproxy_queue_depth",
        "gauge",
        "Captured writes waiting for the producer.",
        _one(lambda s: s.proxy.queue.depth),
    ),
    Metric(
        "esproxy_queue_capacity",
        "gauge",
        "chanSize (0: direct hand-off).",
        _one(lambda s: s.proxy.queue.capacity),
    ),
    Metric(
        "esproxy_oldest_unshipped_seconds",
        "gauge",
        "Seconds the oldest captured write not yet taken by Kafka has waited (spool or queue; 0: none waits).",
        _one(lambda s: s.proxy.oldest_unshipped_seconds),
    ),
    Metric("esproxy_spool_records", "gauge", "Records " + _SPOOL, _one(lambda s: s.proxy.spool.records)),
    Metric("esproxy_spool_bytes", "gauge", "Bytes " + _SPOOL, _one(lambda s: s.proxy.spool.bytes)),
    Metric(
        "esproxy_kafka_produced_total",
        "counter",
        "Messages the broker acknowledged (or accepted, requiredAcks NoResponse), by topic.",
        lambda r: [("", {"topic": t}, n) for t, n in sorted(r.snap.proxy.kafka.produced.items())],
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
        _upstreams(lambda u: u.connections_in_use),
    ),
    Metric(
        "esproxy_upstream_connections_idle",
        "gauge",
        "Kept-alive connections to a cluster waiting for a request.",
        _upstreams(lambda u: u.connections_idle),
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
        _switchover(lambda s: int(s.paused)),
    ),
    Metric(
        "esproxy_switchovers_total",
        "counter",
        "Leader switches (switchover and failover) in the state file's history.",
        _switchover(lambda s: s.switches),
    ),
    Metric(
        "esproxy_switchover_last_duration_seconds",
        "gauge",
        "The last switch: from the command's start to the new leader.",
        _switchover(lambda s: (s.last_switch or {}).get("duration_seconds")),
    ),
    Metric(
        "esproxy_switchover_last_write_pause_seconds",
        "gauge",
        "The last switchover: how long writes were paused.",
        _switchover(lambda s: (s.last_switch or {}).get("write_pause_seconds")),
    ),
    Metric(
        "esproxy_switchover_writes_refused_total",
        "counter",
        "Writes answered 503 (Retry-After) while paused for a switchover, since the start.",
        _switchover(lambda s: s.writes_refused),
    ),
    Metric("esproxy_replay_messages_total", "counter", "Kafka messages consumed.", _one(lambda s: s.replay.messages)),
    Metric(
        "esproxy_replay_message_bytes_total",
        "counter",
        "Bytes of Kafka messages consumed.",
        _one(lambda s: s.replay.bytes),
    ),
    Metric(
        "esproxy_replay_messages_per_second",
        "gauge",
        "Messages consumed per second over the last 10 s.",
        _one(lambda s: s.replay.messages_per_second),
    ),
    Metric(
        "esproxy_replay_writes_total",
        "counter",
        "Writes applied to the target cluster, by index (first path segment of the request).",
        _by_index(lambda x: x.writes),
    ),
    Metric(
        "esproxy_replay_bytes_total",
        "counter",
        "Message bytes of the writes applied, by index.",
        _by_index(lambda x: x.bytes),
    ),
    Metric(
        "esproxy_replay_skipped_total",
        "counter",
        "Messages skipped: refused by the target (4xx) or not a bean, by index.",
        lambda r: [("", {"index": i}, n) for i, n in sorted(r.snap.replay.skipped.items())],
    ),
    Metric(
        "esproxy_sync_docs_total",
        "counter",
        "Writes (document actions) the replay applied to each follower index under a sync rule.",
        _followed(lambda x: x.docs),
    ),
    Metric(
        "esproxy_sync_bytes_total", "counter", "Bytes applied to each follower index.", _followed(lambda x: x.bytes)
    ),
    Metric(
        "esproxy_sync_failures_total",
        "counter",
        "Writes into each follower index B refused (to the dead letters).",
        _followed(lambda x: x.failures),
    ),
    Metric(
        "esproxy_sync_lag_seconds",
        "gauge",
        "Capture on A (the Kafka timestamp) to application on B of the last write applied to each follower index.",
        _followed(lambda x: x.lag_seconds),
    ),
    Metric(
        "esproxy_sync_lag_beyond_delay_seconds",
        "gauge",
        "esproxy_sync_lag_seconds less the rule's delay (follow.rules[].delay): how late the last write applied to"
        " each follower index was.",
        _followed(lambda x: x.lag_beyond_delay_seconds),
    ),
    Metric(
        "esproxy_sync_delay_seconds",
        "gauge",
        "The delay of each sync rule that has one (follow.rules[].delay), per follower index it applied to.",
        lambda r: [
            ("", {"index": i, "rule": row.rule}, row.delay_seconds)
            for i, row in r.snap.replay.followed.items()
            if row.delay_seconds
        ],
    ),
    Metric(
        "esproxy_sync_waiting",
        "gauge",
        "Writes waiting in a sync rule's own lane (delayed or held), per rule and partition.",
        _rule_lanes(lambda x: x.waiting),
    ),
    Metric(
        "esproxy_sync_waiting_lag_beyond_delay_seconds",
        "gauge",
        "How far past its due time (capture + the rule's delay) the oldest write waiting in a rule's lane is;"
        " 0 inside the delay and while held (health.maxReplayLag applies to it).",
        _rule_lanes(lambda x: x.lag_beyond_delay_seconds),
    ),
    Metric(
        "esproxy_sync_held",
        "gauge",
        "1 while a rule's lane is stopped at a write its guard holds (esproxy sync approve|reject), per rule and"
        " partition.",
        _rule_lanes(lambda x: 1 if x.held else 0),
    ),
    Metric(
        "esproxy_sync_decided_total",
        "counter",
        "Writes an operator rejected or skipped (esproxy sync reject|skip): dead letters that are not failures.",
        _one(lambda s: s.replay.sync_decided),
    ),
    Metric(
        "esproxy_sync_last_applied_timestamp_seconds",
        "gauge",
        "Unix time of the last write applied to each follower index.",
        _followed(lambda x: x.last_applied),
    ),
    Metric(
        "esproxy_replay_throttled_seconds_total",
        "counter",
        "Seconds the replay waited for its rate limit (source.kafkas[].maxDocsPerSecond, maxBytesPerSecond).",
        lambda r: [("", {}, r.snap.replay.throttled_seconds)],
    ),
    Metric(
        "esproxy_replay_skipped_by_rules_total",
        "counter",
        "Writes (and `_bulk` actions) not replayed because no follower sync rule follows their index, by A's"
        ' index (at most 1000 names, the rest as "(other)").',
        lambda r: [("", {"index": i}, n) for i, n in sorted(r.snap.replay.skipped_by_rules.items())],
    ),
    Metric(
        "esproxy_dead_letters_total",
        "counter",
        "Dead letters written: by the replay (messages that can never apply: not a bean, or refused with a 4xx),"
        " or by the proxy (writes the broker refuses for good).",
        _one(lambda s: s.replay.dead_letters),
    ),
    Metric(
        "esproxy_consumer_lag",
        "gauge",
        "Offsets from the oldest record not yet applied (else the next to fetch) to the high watermark, per"
        " assigned partition (approximate where the high watermark counts record batches).",
        _lags(lambda x: x.lag),
    ),
    Metric(
        "esproxy_consumer_lag_seconds",
        "gauge",
        "Now minus the Kafka timestamp of the oldest record fetched and not yet applied, per assigned partition"
        " (0: caught up).",
        _lags(lambda x: x.lag_seconds),
    ),
    Metric(
        "esproxy_replay_stalled_seconds",
        "gauge",
        "How long records of a partition have waited with none applied (0: none waits).",
        _lags(lambda x: x.stalled_seconds),
    ),
    Metric(
        "esproxy_replay_unassigned_seconds",
        "gauge",
        "How long a partition this replay does not hold has had writes waiting with no commit of its group"
        " (health.maxUnassigned); absent while some replay of the group applies it.",
        lambda r: [
            ("", {"group": x.group, "topic": x.topic, "partition": str(x.partition)}, x.waiting_seconds)
            for x in r.snap.replay.unassigned
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


def render(reading: Reading) -> str:
    """The Prometheus text exposition of every metric."""
    lines: list[str] = []
    for m in METRICS:
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for suffix, labels, value in m.samples(reading):
            lines.append(f"{m.name}{suffix}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
