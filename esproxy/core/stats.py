"""Counters of one esproxy process, rendered as JSON (``/_esproxy/stats``) and Prometheus text
(``/_esproxy/metrics``) by :mod:`esproxy.admin.server`.

The hot-path hooks are attribute increments on the module-level :data:`STATS`: under gevent the
process runs one greenlet at a time, so no locks. Nothing here parses request or response bodies.
Gauges that live elsewhere (queue depth, upstream pools, consumer lag) are read when scraped, from
the objects :class:`esproxy.roles.Roles` holds (see :mod:`esproxy.admin.server`).

``spool_records`` / ``spool_bytes`` are set by the spool (esproxy/proxy/spool.py) as its backlog moves;
``dead_letters`` is incremented (``STATS.dead_letters += 1``) once a dead letter is written, by the
replay (:mod:`esproxy.replay.deadletters`) or the proxy's shipper; each increment's time is kept for
``health.deadLetterWindow`` (:mod:`esproxy.admin.health`).
"""

from __future__ import annotations

import copy
import time
from bisect import bisect_left
from collections import deque
from typing import Any, Callable, Iterable

# Upper bounds (seconds) of the request latency histogram; +Inf is implicit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
RATE_WINDOW = 10  # seconds over which replay_messages_per_second is averaged
DEAD_LETTER_TIMES = 10000  # the times of the last this many dead letters are kept (health's window)
DEAD_LETTER_REASONS = 5  # the latest dead letters' reasons kept for the console (esproxy.admin.console)
FOLLOWED_INDICES = 1000  # follower indices counted by name in `followed`; the rest as "(other)"
SKIPPED_BY_RULES_INDICES = 1000  # indices counted by name in replay_skipped_by_rules; the rest as "(other)"


class FollowedIndex:
    """What the replay applied to one follower index (B's name) under a sync rule."""

    __slots__ = (
        "source",
        "rule",
        "docs",
        "bytes",
        "failures",
        "last_applied",
        "lag_seconds",
        "delay_seconds",
        "lag_beyond_delay_seconds",
    )

    def __init__(self, source: str, rule: str) -> None:
        self.source, self.rule = source, rule
        self.docs = self.bytes = self.failures = 0
        self.last_applied = 0.0  # time.time() of the last write applied
        self.lag_seconds = 0.0  # its Kafka timestamp (capture on A) to its application on B
        self.delay_seconds = 0.0  # the rule's delay when it was applied (follow.rules[].delay)
        self.lag_beyond_delay_seconds = 0.0  # lag_seconds less the delay: how late it was

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        # proxy role
        self.requests: dict[tuple[str, int], int] = {}
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.latency_count = 0
        self.writes_captured = 0
        self.connections = 0  # client connections accepted
        self.inflight_refused = 0  # requests refused 429 over maxInFlightBytes (esproxy.proxy.inflight)
        self.reads: dict[str, int] = {}  # cluster (URL, password redacted) -> reads it answered
        self.read_fallbacks: dict[str, int] = {}  # reason -> reads the leader answered instead of a follower
        self.kafka_produced: dict[str, int] = {}
        self.kafka_failed: dict[tuple[str, str], int] = {}  # (topic, reason) -> messages not taken
        # topic -> (time.monotonic() of its first and of its last failure since its last success, last reason)
        self.produce_failing: dict[str, tuple[float, float, str]] = {}
        # set by the spool: records / bytes not yet taken by Kafka
        self.spool_records = 0
        self.spool_bytes = 0
        # replay role
        self.replay_messages = 0
        self.replay_bytes = 0
        self.replay_by_index: dict[str, list[int]] = {}  # index -> [writes applied, bytes]
        self.replay_skipped: dict[str, int] = {}  # index -> writes B refused (4xx) or broken messages
        self.replay_skipped_by_rules: dict[str, int] = {}  # A's index -> writes no sync rule follows
        self.replay_throttled_seconds = 0.0  # time the replay waited for its rate limit
        self.followed: dict[str, FollowedIndex] = {}  # B's index name -> what the sync rules applied to it
        self.sync_decided = 0  # writes an operator rejected or skipped (dead letters, not failures): replay/holdback.py
        self._dead_letters = 0
        self.dead_letter_times: deque[float] = deque(maxlen=DEAD_LETTER_TIMES)  # time.monotonic() of each
        self.dead_letter_reasons: deque[tuple[float, str]] = deque(maxlen=DEAD_LETTER_REASONS)  # (time.time(), why)
        self._rate: deque[list[int]] = deque(maxlen=RATE_WINDOW + 2)  # [second, messages]

    # ------------------------------------------------------------------ hooks (hot path: cheap)

    def track(
        self, handle: Callable[[dict, Callable], Iterable[bytes]], environ: dict, start_response: Callable
    ) -> Iterable[bytes]:
        """Run a WSGI handler, counting its request by method and status and timing it."""
        started = time.perf_counter()
        seen: list[str] = []

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            seen.append(status)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            return handle(environ, start)
        finally:
            status = int(seen[-1][:3]) if seen and seen[-1][:3].isdigit() else 500
            self.observe_request(environ.get("REQUEST_METHOD", ""), status, time.perf_counter() - started)

    def observe_request(self, method: str, status: int, seconds: float) -> None:
        key = (method if method in KNOWN_METHODS else "OTHER", status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_sum += seconds
        self.latency_count += 1
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds, else +Inf

    def read_by(self, cluster: str) -> None:
        """A read (followers configured) answered by ``cluster``."""
        self.reads[cluster] = self.reads.get(cluster, 0) + 1

    def read_fallback(self, reason: str) -> None:
        """A read the leader answered instead of a follower (esproxy.proxy.readroute.FALLBACK_REASONS)."""
        self.read_fallbacks[reason] = self.read_fallbacks.get(reason, 0) + 1

    @property
    def dead_letters(self) -> int:
        """Dead letters written; ``STATS.dead_letters += 1`` also notes when (see dead_letter_times)."""
        return self._dead_letters

    @dead_letters.setter
    def dead_letters(self, value: int) -> None:
        now = time.monotonic()
        self.dead_letter_times.extend(now for _ in range(value - self._dead_letters))
        self._dead_letters = value

    def dead_letter_reason(self, reason: str) -> None:
        """Why the dead letter just counted was written (the latest few are kept: the console shows them)."""
        self.dead_letter_reasons.append((time.time(), reason[:500]))

    def produced(self, topic: str) -> None:
        self.kafka_produced[topic] = self.kafka_produced.get(topic, 0) + 1
        if self.produce_failing:
            self.produce_failing.pop(topic, None)

    def produce_failed(self, topic: str, reason: str = "unknown") -> None:
        """A message the broker did not take; ``reason``: the exception's class name, or why it was refused."""
        key = (topic, reason)
        self.kafka_failed[key] = self.kafka_failed.get(key, 0) + 1
        now = time.monotonic()
        first = self.produce_failing[topic][0] if topic in self.produce_failing else now
        self.produce_failing[topic] = (first, now, reason)

    def replay_message(self, nbytes: int) -> None:
        """One message consumed by the replay (whatever becomes of it)."""
        self.replay_messages += 1
        self.replay_bytes += nbytes
        now = int(time.monotonic())
        if self._rate and self._rate[-1][0] == now:
            self._rate[-1][1] += 1
        else:
            self._rate.append([now, 1])

    def replayed(self, index: str, nbytes: int, ok: bool) -> None:
        """One write into ``index`` applied to (ok) or refused by a target cluster."""
        if ok:
            entry = self.replay_by_index.setdefault(index, [0, 0])
            entry[0] += 1
            entry[1] += nbytes
        else:
            self.replay_skipped[index] = self.replay_skipped.get(index, 0) + 1

    def skipped_by_rules(self, index: str) -> None:
        """One write (or `_bulk` action) into ``index`` skipped: no sync rule follows the index."""
        counts = self.replay_skipped_by_rules
        key = index if index in counts or len(counts) < SKIPPED_BY_RULES_INDICES else "(other)"
        counts[key] = counts.get(key, 0) + 1

    def follow_applied(
        self, target: str, source: str, rule: str, docs: int, nbytes: int, timestamp_ms: int, delay: float = 0.0
    ) -> None:
        """``docs`` writes of A's ``source`` applied to B's ``target`` under ``rule``; ``timestamp_ms``: Kafka's;
        ``delay``: the rule's (its lag counts it, ``lag_beyond_delay_seconds`` does not)."""
        entry = self._followed(target, source, rule)
        entry.docs += docs
        entry.bytes += nbytes
        entry.last_applied = time.time()
        entry.delay_seconds = delay
        if timestamp_ms > 0:
            entry.lag_seconds = max(0.0, entry.last_applied - timestamp_ms / 1000)
            entry.lag_beyond_delay_seconds = max(0.0, entry.lag_seconds - delay)

    def follow_failed(self, target: str) -> None:
        """A write into follower index ``target`` that B refused (to the dead letters)."""
        if target in self.followed:
            self.followed[target].failures += 1

    def _followed(self, target: str, source: str, rule: str) -> FollowedIndex:
        entry = self.followed.get(target)
        if entry is None:
            if len(self.followed) >= FOLLOWED_INDICES:
                target, source, rule = "(other)", "(other)", "(other)"
                entry = self.followed.get(target)
            if entry is None:
                entry = self.followed[target] = FollowedIndex(source, rule)
        return entry

    # ------------------------------------------------------------------ pre-fork workers

    def proxy_report(self) -> dict[str, Any]:
        """What a worker sends its master (esproxy.proxy.prefork) every second: its request counters."""
        return {
            "requests": dict(self.requests),
            "latency_buckets": list(self.latency_buckets),
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "writes_captured": self.writes_captured,
            "connections": self.connections,
            "inflight_refused": self.inflight_refused,
            "reads": dict(self.reads),
            "read_fallbacks": dict(self.read_fallbacks),
        }

    def with_reports(self, reports: Iterable[dict[str, Any]]) -> Stats:
        """A copy of these counters plus the workers' last reports (the master's /_esproxy/ view)."""
        out = copy.copy(self)
        out.requests = dict(self.requests)
        out.latency_buckets = list(self.latency_buckets)
        out.reads = dict(self.reads)
        out.read_fallbacks = dict(self.read_fallbacks)
        for r in reports:
            for key, n in r["requests"].items():
                out.requests[key] = out.requests.get(key, 0) + n
            out.latency_buckets = [a + b for a, b in zip(out.latency_buckets, r["latency_buckets"])]
            out.latency_sum += r["latency_sum"]
            out.latency_count += r["latency_count"]
            out.writes_captured += r["writes_captured"]
            out.connections += r.get("connections", 0)
            out.inflight_refused += r.get("inflight_refused", 0)
            for field in ("reads", "read_fallbacks"):
                mine = getattr(out, field)
                for key, n in r.get(field, {}).items():
                    mine[key] = mine.get(key, 0) + n
        return out

    # ------------------------------------------------------------------ derived values

    def uptime(self) -> float:
        return time.time() - self.started

    def replay_rate(self) -> float:
        """Messages per second over the last RATE_WINDOW whole seconds."""
        now = int(time.monotonic())
        recent = sum(n for sec, n in self._rate if now - RATE_WINDOW <= sec < now)
        return recent / RATE_WINDOW


STATS = Stats()
