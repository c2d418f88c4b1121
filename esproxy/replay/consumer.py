"""The replay role: a Kafka consumer group whose messages are replayed into the primaries.

Delivery is at-least-once: offsets are committed only after every message before them in the
partition was applied, or written as a dead letter when it can never apply (deadletters.py).
Each partition's records are replayed in offset order by its lane (lanes.py), partitions in parallel,
so writes keyed to one partition keep their order; the consumer greenlet meanwhile fetches the next
records (until a lane has two batches queued), commits what the lanes applied, and after a replay that
stopped short fetches the partition again from there, after a pause.

A lane's turn is the chain of steps in steps.py (decode, assemble, batch, flush), with chunked beans put
together by assembly.py and the writes into B (rate-limit splitting included) in writes.py; the group's
membership (assignors, rebalances, a stop during a join) is rebalance.py's. This module is what is left: the
consumer greenlet (connect, poll, hand records to lanes, commit, seek), the lag figures and the stop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from esproxy.clients import kafkasecurity
from esproxy.clients.elastic import Elastic
from esproxy.clients.kafkaconnect import connect_kwargs
from esproxy.core.config import KafkaSource
from esproxy.core.retry import Aborted, interruptible, retry

from .assembly import Assembly
from .deadletters import DeadLetters
from .follow import Rules
from .followcreate import IndexCreator
from .groupwatch import GroupWatch
from .holdback import Board, Holdback
from .lanes import Lane
from .ratelimit import RateLimit
from .rebalance import ASSIGNORS, LEAVE_GROUP_TIMEOUT, Rebalances, finish_join
from .record import Record
from .steps import Steps
from .writes import Writes

log = logging.getLogger("esproxy.replay")

# A commit waits no longer than this (seconds): a coordinator that answers does so in milliseconds. With
# Kafka gone, kafka-python would look for one for its request_timeout_ms (30 s), holding up the replay loop
# and a stop past its own deadline. A commit that timed out is made again at the loop's next turn; what a
# stop could not commit is replayed again by the next owner (at-least-once).
COMMIT_TIMEOUT = 3.0


class KafkaReplay:
    """One ``source.kafkas[]`` entry: its consumer group member, its lanes, and what they share.

    State (the consumer greenlet's, but ``_lanes`` and ``_fetch_from`` also the rebalance listener's, which
    runs within its polls): ``_lanes``: a lane per partition handed records since the last rebalance;
    ``_fetch_from``: the next offset the consumer fetches per partition, once known (for ``lag``);
    ``_rebalances``: how many revocations so far (a poll that saw one drops what it fetched before);
    ``_progress``: set by a lane after each turn, to wake the consumer greenlet; ``_gate``: bounds how many
    partitions replay at once (``concurrency``)."""

    def __init__(
        self,
        cfg: KafkaSource,
        primaries: list[Elastic],
        rules: Optional[Rules] = None,
        source: Optional[Elastic] = None,
        watch_group: bool = False,
        board: Optional[Board] = None,
    ) -> None:
        self.cfg = cfg
        self.primaries = primaries
        rules = rules if rules is not None else Rules([])  # none: every write replayed as it is
        self.stopping = False
        self.dead_letters = DeadLetters(cfg)
        rate = RateLimit(cfg.maxDocsPerSecond, cfg.maxBytesPerSecond)
        # follow.source (cluster A): a followed index B lacks is created from A before its first write
        writes = Writes(primaries, rate, IndexCreator(source, rules), self.dead_letters)
        self.assembly = Assembly(cfg, self.dead_letters)  # per partition: chunk sets read in part
        self._gate = Semaphore(cfg.concurrency)
        # the sync rules' own lanes: writes they delay or hold (holdback.py); the board: operators' decisions
        self.holdback = Holdback(board if board is not None else Board(), cfg.group, self._gate, lambda: self.stopping)
        self.steps = Steps(cfg, primaries, rules, writes, self.dead_letters, self.assembly, self.holdback)
        self._consumer: Optional[KafkaConsumer] = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self._lanes: dict[TopicPartition, Lane] = {}
        self._progress = Event()  # a lane finished a replay
        self._rebalances = 0
        self._fetch_from: dict[TopicPartition, int] = {}  # next offset the consumer fetches, once known
        self._rebalancing = Rebalances(cfg.group, self._revoked)  # knows whether a group join is under way
        # the partitions of its topics that have writes waiting and that no replay of the group applies (health)
        self.watch = GroupWatch(cfg, self._held) if watch_group else None

    def consumer_config(self) -> dict[str, Any]:
        session_ms = int(self.cfg.sessionTimeout * 1000)
        return {
            "bootstrap_servers": self.cfg.brokers,
            "group_id": self.cfg.group,
            "client_id": "esproxy",
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if self.cfg.newest else "earliest",
            "partition_assignment_strategy": [ASSIGNORS[self.cfg.assignor]],
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": min(3000, max(100, session_ms // 3)),
            "max_poll_records": max(500, self.cfg.batchSize),
            # A message bigger than these still comes (brokers >= 0.10.1 return at least one record
            # batch, KIP-74); they only bound how much one fetch brings.
            "max_partition_fetch_bytes": max(1024 * 1024, self.cfg.batchBytes),
            "fetch_max_bytes": max(50 * 1024 * 1024, self.cfg.batchBytes),
            **connect_kwargs(self.cfg, KafkaConsumer),
        }

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        if self.watch is not None:
            self.watch.start()

    def _held(self) -> set[tuple[str, int]]:
        """The partitions the consumer holds now (none before it joined its group)."""
        consumer = self._consumer
        if consumer is None:
            return set()
        try:
            return {(tp.topic, tp.partition) for tp in consumer.assignment()}
        except Exception:  # noqa: BLE001 - a consumer being closed
            return set()

    def unassigned(self) -> list[dict[str, Any]]:
        """The partitions of its topics this replay does not hold, that have writes waiting and that no replay of
        its group has committed on since (``waiting_seconds``); empty without the watch (health.maxUnassigned: 0)."""
        return self.watch.rows() if self.watch is not None else []

    def _connect(self) -> bool:
        def subscribe() -> KafkaConsumer:
            # its constructor waits up to 30 s for a broker: a stop must not wait for it (nothing to commit yet)
            consumer = interruptible(
                lambda: KafkaConsumer(**self.consumer_config(), **kafkasecurity.client_kwargs(self.cfg)),
                lambda: self.stopping,
                "stopping before Kafka was reachable",
            )
            consumer.subscribe(self.cfg.topics, listener=self._rebalancing)
            return consumer

        def unreachable(e: BaseException, attempts: int, delay: float) -> None:
            log.warning("kafka %s unreachable (%s); retrying in %.1fs", ",".join(self.cfg.brokers), e, delay)

        if self.stopping:
            return False
        try:
            self._consumer = retry(
                subscribe,
                (KafkaError, kafkasecurity.TlsFileError),
                unreachable,
                base=0.5,
                cap=10,
                stopping=lambda: self.stopping,
            )
        except Aborted:
            log.info("kafka consumer group %s: stopping before Kafka was reachable; nothing to commit", self.cfg.group)
            return False
        log.info(
            "kafka consumer group %s subscribed to %s on %s",
            self.cfg.group,
            ",".join(self.cfg.topics),
            ",".join(self.cfg.brokers),
        )
        return True

    def _run(self) -> None:
        if not self._connect():
            return
        assert self._consumer is not None
        try:
            while not self.stopping:
                self._commit_applied()
                if any(lane.full() or lane.held_until for lane in self._lanes.values()):
                    # Fetch no further until the lane has room or its pause is over. (Not with
                    # consumer.pause(): kafka-python 3.0 may never hand back a resumed partition's records.)
                    self._progress.wait(timeout=0.2)
                    continue
                try:
                    batch = self._poll()
                except KafkaError as e:
                    log.warning("kafka poll failed: %s", e)
                    gevent.sleep(1)
                    continue
                for tp, records in batch.items():
                    self._lane(tp).push(records)
                    if records:
                        self._fetch_from[tp] = records[-1].offset + 1
        finally:
            self._close_lanes(list(self._lanes))
            self.holdback.close()  # after the lanes: none hands it a write any more
            self._commit_applied()

    def _lane(self, tp: TopicPartition) -> Lane:
        lane = self._lanes.get(tp)
        if lane is None:
            lane = self._lanes[tp] = Lane(
                tp,
                self.steps.replay,
                self._gate,
                self._progress,
                lambda: self.stopping,
                max_records=2 * self.cfg.batchSize,
                max_bytes=2 * self.cfg.batchBytes,
            )
        return lane

    def _commit_applied(self) -> None:
        """Commit what the lanes applied; fetch a failed partition again (after a pause) where it failed."""
        assert self._consumer is not None
        self._progress.clear()
        now = time.monotonic()
        done: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, lane in list(self._lanes.items()):
            if lane.applied is not None:
                upto = lane.applied + 1
                held = self.assembly.of(tp.topic, tp.partition).low_water()
                if held is not None:
                    upto = min(upto, held)  # a chunk set is held: it is read again from its first chunk
                waits = self.holdback.low_water(tp.topic, tp.partition)
                if waits is not None:
                    upto = min(upto, waits)  # a rule lane holds a write: it is read again from there
                if upto - 1 > (-1 if lane.committed is None else lane.committed):
                    done[tp] = OffsetAndMetadata(upto, "", -1)
            if lane.failed_at is not None and not lane.held_until:
                # What is not committed is replayed again: by us after a pause, or by whoever takes over.
                self._consumer.seek(tp, lane.failed_at)
                self._fetch_from[tp] = lane.failed_at
                lane.held_until = now + 1
            elif lane.held_until and now >= lane.held_until:
                lane.held_until = 0.0
                lane.retry()
        if done and self._commit(done):
            for tp, meta in done.items():
                if tp in self._lanes:
                    self._lanes[tp].committed = meta.offset - 1
                self.holdback.committed(tp.topic, tp.partition, meta.offset)

    def _close_lanes(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            lane = self._lanes.get(tp)
            if lane is not None:
                lane.close()

    def _revoked(self, partitions: set[TopicPartition]) -> None:
        """Rebalance: the lanes of partitions taken away end their replay in flight before the group moves
        on, so the next owner never applies a message while we still do. What they applied since the last
        commit is not committed (a commit cannot be made from within the rebalance): the next owner
        replays it again, in order (at-least-once)."""
        self._rebalances += 1
        self._close_lanes(list(partitions))
        for tp in partitions:
            self._lanes.pop(tp, None)
            self.assembly.forget(tp.topic, tp.partition)
            self.holdback.forget(tp.topic, tp.partition)
            self._fetch_from.pop(tp, None)

    def lag(self) -> list[dict[str, Any]]:
        """Per assigned partition: how far the replay is behind, read without a network call.

        ``lag``: offsets from the oldest record not yet applied (else the next to fetch) to the high
        watermark of the last fetch, None until both are known (approximate on brokers whose high
        watermark counts record batches, as Tansu's does); ``lag_seconds``: now minus the Kafka
        timestamp of the oldest record fetched and not yet applied, 0 when none waits;
        ``stalled_seconds``: how long records have waited with none applied, 0 when none waits or a
        paused sync rule holds them (``paused_by``: that rule).
        """
        consumer = self._consumer
        if consumer is None:
            return []
        try:
            assigned = sorted(consumer.assignment())
        except Exception:  # noqa: BLE001 - a consumer being closed
            return []
        now, wall = time.monotonic(), time.time()
        rows = []
        for tp in assigned:
            lane = self._lanes.get(tp)
            waiting = lane.waiting if lane is not None else None
            highwater = consumer.highwater(tp)
            start = waiting[0] if waiting is not None else self._fetch_from.get(tp)
            paused_by = self.steps.pauses.paused_by(tp.topic, tp.partition, now)
            rows.append(
                {
                    "group": self.cfg.group,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "lag": None if highwater is None or start is None else max(0, highwater - start),
                    "lag_seconds": round(max(0.0, wall - waiting[1]), 3) if waiting is not None else 0.0,
                    "stalled_seconds": (
                        round(now - lane.progress_at, 3)
                        if lane is not None and waiting is not None and not paused_by
                        else 0.0
                    ),
                    "paused_by": paused_by,
                    "oldest_offset": waiting[0] if waiting is not None else None,
                }
            )
        return rows

    def rule_lanes(self) -> list[dict[str, Any]]:
        """Per sync rule and partition with writes waiting in the rule's lane (delayed or held): Holdback.rows."""
        return self.holdback.rows()

    def _poll(self) -> dict[TopicPartition, list[Record]]:
        """One poll, topped up for up to `linger` while it holds fewer than batchSize records."""
        assert self._consumer is not None
        batch = self._consumer.poll(timeout_ms=500)
        deadline = time.monotonic() + self.cfg.linger
        while batch and time.monotonic() < deadline:
            if sum(len(r) for r in batch.values()) >= self.cfg.batchSize:
                break
            rebalances = self._rebalances
            more = self._consumer.poll(timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)))
            if self._rebalances != rebalances:
                return more  # fetched from the committed offsets again: what came before is stale
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
        return batch

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        if not offsets or self._consumer is None:
            return False
        try:
            self._consumer.commit(offsets, timeout_ms=int(COMMIT_TIMEOUT * 1000))
            return True
        except CommitFailedError as e:
            # The group rebalanced under us; the new owner replays from the last commit (at-least-once).
            log.warning("kafka commit failed, messages will be replayed again: %s", e)
        except KafkaTimeoutError:
            log.warning(
                "kafka commit failed: group %s's coordinator did not answer within %.0fs",
                self.cfg.group,
                COMMIT_TIMEOUT,
            )
        except KafkaError as e:
            log.warning("kafka commit failed: %s", e)
        return False

    def stop(self, timeout: float) -> None:
        """Finish or abandon the batch in flight, commit what was applied, leave the group."""
        deadline = time.monotonic() + timeout
        self.stopping = True
        if self._greenlet is not None:
            self._greenlet.join(timeout=timeout)
            self._greenlet.kill(block=True, timeout=1)
        if self.watch is not None:
            self.watch.stop()
        if self._consumer is not None:
            finish_join(self._consumer, self._rebalancing, deadline)
            # Leaving the group waits for the coordinator: a few seconds at most (a coordinator that
            # answers does so in milliseconds; one that does not lets the group move on after sessionTimeout).
            leave = min(LEAVE_GROUP_TIMEOUT, max(0.1, deadline - time.monotonic()))
            try:
                self._consumer.close(autocommit=False, timeout_ms=int(leave * 1000))
            except KafkaError as e:
                log.warning("kafka consumer close: %s", e)
        self.dead_letters.close()
