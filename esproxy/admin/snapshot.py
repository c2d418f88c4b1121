"""The ``/_esproxy/stats`` snapshot, typed: one dataclass per section, read by attribute.

:class:`esproxy.admin.server.Admin` builds a :class:`Snapshot` once per request; ``/_esproxy/stats`` is its
:func:`as_json`, and every metric of :data:`esproxy.admin.metrics.METRICS` reads its attributes, so that a
misspelt field fails where the metric is declared (a type checker, tests/test_unit_admin_metrics.py), not
at scrape time. Field order is the JSON's key order.

The rows other modules hand the admin as dicts (a replay's partition lag, a follower, the switchover state...)
become :class:`Row` subclasses with :meth:`Row.of`: the fields declared here, typed, and any key a producer
adds later kept in ``extra``, so the JSON stays what the producer wrote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, TypeVar, Union

R = TypeVar("R", bound="Row")

OMIT_NONE = {"omit_none": True}  # a field left out of the JSON while it is None (workers without pre-fork...)


def as_json(value: Any) -> Any:
    """The JSON data of a snapshot (or any part of it): dataclasses as objects in field order."""
    if isinstance(value, Row):
        out = {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
        out.update((k, as_json(v)) for k, v in value.extra.items())
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: as_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)
        }
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


class Row:
    """A row another module produces as a dict, as a frozen dataclass of the fields declared for it;
    ``extra``: the row's other keys, in their order (none unless its producer added some)."""

    extra: ClassVar[dict[str, Any]] = {}  # an instance's own, set by of()

    @classmethod
    def of(cls: type[R], row: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        out = cls(**{k: v for k, v in row.items() if k in names})
        object.__setattr__(out, "extra", {k: v for k, v in row.items() if k not in names})
        return out


# ---------------------------------------------------------------------- rows from other modules


@dataclass(frozen=True)
class WorkerRow(Row):
    """A pre-fork worker (esproxy.proxy.prefork.WorkerPool.rows)."""

    slot: int
    pid: int
    connections: int
    requests: int


@dataclass(frozen=True)
class Upstream(Row):
    """A cluster's connection pool, summed over processes (esproxy.admin.server.upstream_rows)."""

    cluster: str
    direction: str
    cluster_id: str
    connections_in_use: int
    connections_idle: int


@dataclass(frozen=True)
class FollowerRow(Row):
    """A follower of the proxy's read routing (esproxy.proxy.readroute.Follower.row)."""

    cluster: str
    state: str
    usable: bool
    since: float
    lag_seconds: Optional[float]
    max_lag_seconds: float
    replay_admin: str
    problem: str


@dataclass(frozen=True)
class Switchover(Row):
    """The proxy's leader and write pause (esproxy.proxy.leadership.Leadership.status, plus esproxy.roles')."""

    leader: str
    followers: list[str]
    config_primary: str
    paused: bool
    mode: str
    paused_seconds: float
    writes_in_flight: int
    writes_refused: int
    writes_held: int
    switches: int
    last_switch: Optional[dict[str, Any]]
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class FollowedIndex(Row):
    """What the replay applied to one follower index (esproxy.core.stats.FollowedIndex)."""

    source: str
    rule: str
    docs: int
    bytes: int
    failures: int
    last_applied: float
    lag_seconds: float
    delay_seconds: float = 0.0
    lag_beyond_delay_seconds: float = 0.0


@dataclass(frozen=True)
class PartitionLag(Row):
    """An assigned partition of a replay (esproxy.replay.consumer.KafkaReplay.lag)."""

    group: str
    topic: str
    partition: int
    lag: Optional[int]
    lag_seconds: float
    stalled_seconds: float
    paused_by: str
    oldest_offset: Optional[int]


@dataclass(frozen=True)
class RuleLaneRow(Row):
    """A sync rule's writes of one partition waiting in the rule's lane, delayed or held
    (esproxy.replay.holdback.Holdback.rows)."""

    group: str
    rule: str
    topic: str
    partition: int
    waiting: int
    oldest_offset: int
    oldest_captured: float
    delay_seconds: float
    due_in_seconds: float
    lag_beyond_delay_seconds: float
    stalled_seconds: float
    held: Optional[dict[str, Any]]


@dataclass(frozen=True)
class UnassignedPartition(Row):
    """A partition no replay of the group applies (esproxy.replay.groupwatch.GroupWatch.rows)."""

    group: str
    topic: str
    partition: int
    lag: int
    committed: int
    waiting_seconds: float


# ---------------------------------------------------------------------- the sections the admin builds


@dataclass(frozen=True)
class Latency:
    count: int
    sum: float
    le: dict[str, int]  # cumulative, by upper bound ("+Inf" last)


@dataclass(frozen=True)
class InFlight:
    bytes: int
    limit: int
    refused: int


@dataclass(frozen=True)
class Queue:
    depth: int
    capacity: int


@dataclass(frozen=True)
class Spool:
    records: int
    bytes: int


@dataclass(frozen=True)
class KafkaProduce:
    produced: dict[str, int]  # topic -> messages
    failed: dict[str, dict[str, int]]  # topic -> reason -> messages
    failing_seconds: dict[str, float]  # topic -> seconds since its first failure with no success since


@dataclass(frozen=True)
class ProxySection:
    requests: dict[str, int]  # "METHOD status" -> requests
    latency_seconds: Latency
    writes_captured: int
    connections: int
    in_flight: InFlight
    workers: Optional[list[WorkerRow]] = field(metadata=OMIT_NONE)
    reads: dict[str, int]
    read_fallbacks: dict[str, int]
    queue: Queue
    spool: Spool
    oldest_unshipped_seconds: float
    kafka: KafkaProduce


@dataclass(frozen=True)
class IndexWrites:
    writes: int
    bytes: int


@dataclass(frozen=True)
class ReplaySection:
    messages: int
    bytes: int
    messages_per_second: float
    by_index: dict[str, IndexWrites]
    skipped: dict[str, int]
    skipped_by_rules: dict[str, int]
    throttled_seconds: float
    followed: dict[str, FollowedIndex]
    dead_letters: int
    consumer_lag: list[PartitionLag]
    unassigned: list[UnassignedPartition]
    rule_lanes: list[RuleLaneRow] = field(default_factory=list)  # delayed and held writes (follow.rules[])
    sync_decided: int = 0  # writes an operator rejected or skipped (their dead letters are not failures)
    undo_rules: list[dict[str, Any]] = field(default_factory=list)  # sync rules with a delay or a guard


@dataclass(frozen=True)
class Snapshot:
    """``/_esproxy/stats``: every counter and gauge, read once."""

    version: str
    pid: int
    workers: Optional[list[int]] = field(metadata=OMIT_NONE)  # pre-fork workers' pids
    uptime_seconds: float
    proxy: ProxySection
    upstreams: list[Upstream]
    followers: list[FollowerRow]
    # None: no switchover (no followers); {}: the proxy cannot say yet (starting)
    switchover: Union[Switchover, dict[str, Any], None] = field(metadata=OMIT_NONE)
    replay: ReplaySection
