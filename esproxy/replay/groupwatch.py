"""Partitions of the replay's topics that have writes waiting and that no replay of its group applies.

A replay's own figures (KafkaReplay.lag) cover the partitions it holds. A replay that holds none — its group
cannot form (a broker that lost the group's leader, members that keep restarting mid-join), every other
member of the group gone, or a member holding partitions without consuming them — would have none, and
its health would say 200 while writes pile up. The watch reads, every ``WATCH_INTERVAL`` seconds and for
the partitions this replay does not hold only, the topic's end offsets and the group's committed offsets
(from a client of its own that joins no group: a few small requests, nothing on the replay's path; no
offset request while the replay holds every partition, only the client's metadata refresh every 5 min).
A partition counts as unconsumed from the first reading
that shows writes waiting (committed offset below the end offset), until a reading shows it caught up,
held by this replay, or its committed offset moved: some replay of the group applies it, which is the
case of several replay processes sharing the group (each holds some of the partitions).

The replay's health turns 503 once a partition has been unconsumed longer than ``health.maxUnassigned``
(esproxy.admin.health).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, NamedTuple, Optional

import gevent
from gevent.event import Event

from esproxy.clients import kafkasecurity
from esproxy.clients.kafkaconnect import connect_kwargs
from esproxy.core.config import KafkaSource

log = logging.getLogger("esproxy.replay")

# How often the watch reads the offsets of the partitions this replay does not hold (seconds).
WATCH_INTERVAL = 5.0

# A reading waits no longer than this for the brokers (milliseconds); a reading that fails is tried again
# at the next interval, and the partitions keep the age they had. (The client's request timeout is above
# kafka-python 2's default session timeout, as that version requires.)
WATCH_REQUEST_TIMEOUT_MS = 10_000
WATCH_CLIENT_TIMEOUT_MS = 15_000

Key = tuple[str, int]  # (topic, partition)


class Unconsumed(NamedTuple):
    committed: Optional[int]  # the group's committed offset (None: never committed)
    since: float  # time.monotonic() of the first reading with writes waiting at this committed offset
    lag: int  # end offset - committed offset at the last reading


def observe(
    previous: dict[Key, Unconsumed], now: float, end: dict[Key, int], committed: dict[Key, Optional[int]]
) -> dict[Key, Unconsumed]:
    """The unconsumed partitions after a reading of ``end`` (the partitions this replay does not hold) and
    ``committed`` (the group's offsets). A partition never committed counts from offset 0; on brokers whose
    end offset counts record batches (Tansu) the offset committed after the last record still reaches it."""
    out: dict[Key, Unconsumed] = {}
    for key, last in end.items():
        done = committed.get(key)
        lag = last - (done or 0)
        if lag <= 0:
            continue
        before = previous.get(key)
        since = before.since if before is not None and before.committed == done else now
        out[key] = Unconsumed(done, since, lag)
    return out


class GroupWatch:
    """Reads, in a greenlet of its own, the offsets of the partitions ``held()`` does not name."""

    def __init__(self, cfg: KafkaSource, held: Callable[[], set[Key]], interval: float = WATCH_INTERVAL) -> None:
        self.cfg = cfg
        self.held = held
        self.interval = interval
        self._unconsumed: dict[Key, Unconsumed] = {}
        self._read_at = 0.0  # time.monotonic() of the last reading
        self._client: Any = None
        self._stopped = Event()
        self._greenlet: Optional[gevent.Greenlet] = None
        self._failing = ""

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopped.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as e:  # noqa: BLE001 - a client being closed at exit: nothing left to do
                log.debug("group watch: closing its client: %s", e)

    def rows(self) -> list[dict[str, Any]]:
        """The unconsumed partitions at the last reading: how far behind, for how long (``waiting_seconds``, as
        of that reading: a partition whose committed offset moves at every reading stays at 0 however long
        its lag lasts, one whose offset does not move grows by ``interval`` per reading)."""
        return [
            {
                "group": self.cfg.group,
                "topic": topic,
                "partition": partition,
                "lag": u.lag,
                "committed": u.committed,
                "waiting_seconds": round(self._read_at - u.since, 3),
            }
            for (topic, partition), u in sorted(self._unconsumed.items())
        ]

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.read()
            except Exception as e:  # noqa: BLE001 - brokers unreachable, a client that cannot be built: next time
                reason = f"{type(e).__name__}: {e}"
                if reason != self._failing:
                    log.warning(
                        "kafka consumer group %s: cannot read its offsets (%s); retrying", self.cfg.group, reason
                    )
                self._failing = reason
                continue
            if self._failing:
                log.info("kafka consumer group %s: its offsets are read again", self.cfg.group)
                self._failing = ""

    def read(self) -> None:
        """One reading: the partitions not held, their end offsets and the group's committed offsets."""
        from kafka import TopicPartition

        client = self._connect()
        held = self.held()
        unheld = [
            TopicPartition(topic, p)
            for topic in self.cfg.topics
            for p in sorted(client.partitions_for_topic(topic) or ())
            if (topic, p) not in held
        ]
        if not unheld:
            self._unconsumed, self._read_at = {}, time.monotonic()
            return
        end = {(tp.topic, tp.partition): n for tp, n in client.end_offsets(unheld).items()}
        waiting = [tp for tp in unheld if end.get((tp.topic, tp.partition), 0) > 0]
        committed = {
            (tp.topic, tp.partition): client.committed(tp, timeout_ms=WATCH_REQUEST_TIMEOUT_MS) for tp in waiting
        }
        now = time.monotonic()
        self._unconsumed, self._read_at = observe(self._unconsumed, now, end, committed), now

    def _connect(self) -> Any:
        if self._client is None:
            from kafka import KafkaConsumer

            # group_id for the committed offsets; it never subscribes, so it never joins the group
            self._client = KafkaConsumer(
                bootstrap_servers=self.cfg.brokers,
                group_id=self.cfg.group,
                client_id="esproxy-watch",
                enable_auto_commit=False,
                request_timeout_ms=WATCH_CLIENT_TIMEOUT_MS,
                **connect_kwargs(self.cfg, KafkaConsumer),
                **kafkasecurity.client_kwargs(self.cfg),
            )
        return self._client
