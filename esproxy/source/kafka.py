"""The replay role: a Kafka consumer group whose messages are replayed into the primaries.

Delivery is at-least-once: offsets are committed only after every message before them in the
partition was applied (or deliberately skipped). Each poll's records are replayed partition by
partition in parallel on a greenlet pool, in offset order within a partition, so writes keyed to
one partition keep their order.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import gevent
from gevent.pool import Pool
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from ..bean import Bean, BeanError
from ..config import KafkaSource
from ..dest.elastic import Aborted, Elastic, backoff, replay
from ..stats import STATS

log = logging.getLogger("esproxy.replay")

ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "rr": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor,
}


class _AssignmentLogger(ConsumerRebalanceListener):
    def __init__(self, group: str) -> None:
        self.group = group

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("kafka consumer group %s revoked partitions %s", self.group, _names(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("kafka consumer group %s assigned partitions %s", self.group, _names(assigned))


def _names(partitions: Any) -> str:
    return "[" + ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(partitions)) + "]"


class KafkaReplay:
    def __init__(self, cfg: KafkaSource, primaries: list[Elastic]) -> None:
        self.cfg = cfg
        self.primaries = primaries
        self.stopping = False
        self._consumer: Optional[KafkaConsumer] = None
        self._greenlet: Optional[gevent.Greenlet] = None

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
            "max_poll_records": 500,
        }

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _connect(self) -> bool:
        attempt = 0
        while not self.stopping:
            try:
                consumer = KafkaConsumer(**self.consumer_config())
                consumer.subscribe(self.cfg.topics, listener=_AssignmentLogger(self.cfg.group))
                self._consumer = consumer
                log.info(
                    "kafka consumer group %s subscribed to %s on %s",
                    self.cfg.group,
                    ",".join(self.cfg.topics),
                    ",".join(self.cfg.brokers),
                )
                return True
            except KafkaError as e:
                delay = backoff(attempt, base=0.5, cap=10)
                attempt += 1
                log.warning("kafka %s unreachable (%s); retrying in %.1fs", ",".join(self.cfg.brokers), e, delay)
                gevent.sleep(delay)
        return False

    def _run(self) -> None:
        if not self._connect():
            return
        assert self._consumer is not None
        pool = Pool(self.cfg.concurrency)
        while not self.stopping:
            try:
                batch = self._consumer.poll(timeout_ms=500)
            except KafkaError as e:
                log.warning("kafka poll failed: %s", e)
                gevent.sleep(1)
                continue
            if not batch:
                continue
            jobs = {tp: pool.spawn(self._replay_partition, records) for tp, records in batch.items()}
            pool.join()
            done = {tp: OffsetAndMetadata(job.value + 1, "", -1) for tp, job in jobs.items() if job.value is not None}
            self._commit(done)
            for tp, job in jobs.items():
                if job.value is None or job.value < batch[tp][-1].offset:
                    # Stopping mid-batch: what is not committed is replayed by whoever takes over.
                    next_offset = batch[tp][0].offset if job.value is None else job.value + 1
                    self._consumer.seek(tp, next_offset)

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as e:
            # The group rebalanced under us; the new owner replays from the last commit (at-least-once).
            log.warning("kafka commit failed, messages will be replayed again: %s", e)
        except KafkaError as e:
            log.warning("kafka commit failed: %s", e)

    def _replay_partition(self, records: list[Any]) -> Optional[int]:
        """Replay records in order; return the offset of the last one done (None if none)."""
        last = None
        for record in records:
            try:
                self._replay_record(record)
            except Aborted as e:
                log.info("replay of %s-%d@%d interrupted: %s", record.topic, record.partition, record.offset, e)
                return last
            except Exception:  # a message that breaks the replay must not be retried forever
                log.exception("replay of %s-%d@%d failed; skipped", record.topic, record.partition, record.offset)
            last = record.offset
        return last

    def _replay_record(self, record: Any) -> None:
        where = f"{record.topic}-{record.partition}@{record.offset}"
        value = record.value or b""
        STATS.replay_message(len(value))
        level = logging.WARNING if len(value) >= self.cfg.warnSize else logging.DEBUG
        log.log(level, "kafka.claimed group: %s, len: %d, at %s", self.cfg.group, len(value), where)
        try:
            bean = Bean.from_json(value)
        except BeanError as e:
            # A dead-letter destination comes later; until then the message is in this line.
            log.error("skipping message %s that is not a bean (%s): %r", where, e, value[:2000])
            STATS.replayed("/(not a bean)", len(value), ok=False)
            return
        if self.cfg.labels:
            bean.labels = dict(self.cfg.labels)
        for primary in self.primaries:
            if primary.cluster_id and primary.cluster_id in bean.clusterIds:
                log.debug("%s already applied to cluster %s, skipped", where, primary.cluster_id)
                continue
            if not primary.matches(bean.labels):
                continue
            started = time.perf_counter()
            r = replay(primary, bean, lambda: self.stopping)
            STATS.replayed(bean.requestUri, len(value), r.status < 300)
            if r.status >= 300:
                log.warning(
                    "replay %s %s %s answered %d, skipped: %s",
                    where,
                    bean.method,
                    primary.target(bean.requestUri),
                    r.status,
                    r.body[:1000].decode("utf-8", "replace"),
                )
            else:
                log.debug("replayed %s in %.1fms", where, (time.perf_counter() - started) * 1000)

    def stop(self, timeout: float) -> None:
        """Finish or abandon the batch in flight, commit what was applied, leave the group."""
        self.stopping = True
        if self._greenlet is not None:
            self._greenlet.join(timeout=timeout)
            self._greenlet.kill(block=True, timeout=1)
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except KafkaError as e:
                log.warning("kafka consumer close: %s", e)
