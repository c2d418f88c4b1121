"""The replay role: a Kafka consumer group whose messages are replayed into the primaries.

Delivery is at-least-once: offsets are committed only after every message before them in the
partition was applied, or written as a dead letter when it can never apply (see kafka_deadletters.py).
Each partition's records are replayed in offset order by its lane (lanes.py), partitions in parallel,
so writes keyed to one partition keep their order; the consumer greenlet meanwhile fetches the next
records (until a lane has two batches queued), commits what the lanes applied, and after a replay that
stopped short fetches the partition again from there, after a pause.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, NamedTuple, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from esproxy.clients import kafkasecurity
from esproxy.clients.elastic import Elastic, replay_as_sent, replay_docs
from esproxy.clients.kafkaconnect import connect_kwargs
from esproxy.core.bean import DOCS_KIND, Bean, BeanError
from esproxy.core.bulk import Item, split_actions
from esproxy.core.config import KafkaSource
from esproxy.core.messages import Abort, Assembler, Chunk, ChunkSet, decode
from esproxy.core.retry import Aborted, interruptible, retry
from esproxy.core.stats import STATS

from .deadletters import DeadLetters
from .follow import Rules
from .followcreate import IndexCreator
from .followed import deletes_index, document_indices, follow_docs, follow_raw
from .groupwatch import GroupWatch
from .lanes import Lane
from .ratelimit import RateLimit
from .rebalance import ASSIGNORS, LEAVE_GROUP_TIMEOUT, Rebalances, finish_join

log = logging.getLogger("esproxy.replay")


def _where(record: Any) -> str:
    return f"{record.topic}-{record.partition}@{record.offset}"


# A partition a paused sync rule held this recently is waiting on purpose, not stalled (it is retried every second).
PAUSE_HOLD_SECONDS = 5.0

# A commit waits no longer than this (seconds): a coordinator that answers does so in milliseconds. With
# Kafka gone, kafka-python would look for one for its request_timeout_ms (30 s), holding up the replay loop
# and a stop past its own deadline. A commit that timed out is made again at the loop's next turn; what a
# stop could not commit is replayed again by the next owner (at-least-once).
COMMIT_TIMEOUT = 3.0

# An incomplete chunk set is given up after this many records of its partition (see chunkTimeout).
CHUNK_MAX_RECORDS = 1_000_000


class _Assembled(NamedTuple):
    """Stands for the record a chunked bean would have been: read at its last chunk's offset."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    timestamp: int


class _Batch:
    """Document actions gathered from consecutive records, per target cluster."""

    def __init__(self, primaries: list[Elastic], assembler: Assembler) -> None:
        self.primaries = primaries
        self.assembler = assembler
        self.clear()

    def clear(self) -> None:
        self.records: list[Any] = []
        self.sets: list[str] = []  # chunk sets whose beans are in the batch: released once it is applied
        self.beans: list[Bean] = []
        self.chunks: dict[Elastic, list[bytes]] = {p: [] for p in self.primaries}
        self.origin: dict[int, Any] = {}  # id(chunk) -> the record it came from
        self.followed: list[tuple[str, str, str, int, int, int]] = []  # target, source, rule, docs, bytes, ts
        self.actions = 0
        self.bytes = 0

    def fits(self, actions: int, size: int, cfg: KafkaSource) -> bool:
        return self.actions + actions <= cfg.batchSize and self.bytes + size <= cfg.batchBytes

    def add(self, record: Any, bean: Bean, chunks: list[bytes], targets: list[Elastic]) -> None:
        self.records.append(record)
        self.beans.append(bean)
        for chunk in chunks:
            self.origin[id(chunk)] = record
        for target in targets:
            self.chunks[target].extend(chunks)
        self.actions += len(chunks)
        self.bytes += len(bean.body)

    def carry(self, record: Any) -> None:
        """A record with nothing to apply (a chunk): done when the batch is."""
        self.records.append(record)

    def applied(self) -> None:
        for chunk_id in self.sets:
            self.assembler.release(chunk_id)


def _error_text(error: Any) -> str:
    """An Elasticsearch error in one line: `type: reason`, else its JSON or text (shortened)."""
    if isinstance(error, dict) and error.get("type"):
        return f"{error['type']}: {error.get('reason', '')}"[:1000]
    return (error if isinstance(error, str) else json.dumps(error, ensure_ascii=False))[:1000]


class KafkaReplay:
    def __init__(
        self,
        cfg: KafkaSource,
        primaries: list[Elastic],
        rules: Optional[Rules] = None,
        source: Optional[Elastic] = None,
        watch_group: bool = False,
    ) -> None:
        self.cfg = cfg
        self.primaries = primaries
        self.rules = rules if rules is not None else Rules([])  # none: every write replayed as it is
        # follow.source (cluster A): a followed index B lacks is created from A before its first write
        self.creator = IndexCreator(source, self.rules)
        self._paused_at: dict[str, tuple[str, int, int]] = {}  # rule -> where it last held a partition
        # (topic, partition) -> (time.monotonic(), rule) a paused rule last held it: not a stall for health
        self._held_by_pause: dict[tuple[str, int], tuple[float, str]] = {}
        self.rate = RateLimit(cfg.maxDocsPerSecond, cfg.maxBytesPerSecond)
        self.stopping = False
        self.dead_letters = DeadLetters(cfg)
        self._consumer: Optional[KafkaConsumer] = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self._lanes: dict[TopicPartition, Lane] = {}
        self._assemblers: dict[tuple[str, int], Assembler] = {}  # per partition: chunk sets read in part
        self._gate = Semaphore(cfg.concurrency)
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
            self._commit_applied()

    def _lane(self, tp: TopicPartition) -> Lane:
        lane = self._lanes.get(tp)
        if lane is None:
            lane = self._lanes[tp] = Lane(
                tp,
                self._replay_partition,
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
                held = self._assembler(tp.topic, tp.partition).low_water()
                if held is not None:
                    upto = min(upto, held)  # a chunk set is held: it is read again from its first chunk
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
            self._assemblers.pop((tp.topic, tp.partition), None)
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
            held = self._held_by_pause.get((tp.topic, tp.partition))
            paused_by = held[1] if held is not None and now - held[0] < PAUSE_HOLD_SECONDS else ""
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

    def _poll(self) -> dict[TopicPartition, list[Any]]:
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

    def _assembler(self, topic: str, partition: int) -> Assembler:
        assembler = self._assemblers.get((topic, partition))
        if assembler is None:
            assembler = self._assemblers[(topic, partition)] = Assembler()
        return assembler

    def _replay_partition(self, records: list[Any], stop: Callable[[], bool]) -> Optional[int]:
        """Replay records in offset order; return the offset of the last one done (None if none).

        Consecutive document beans are sent as one `_bulk` (up to batchSize actions / batchBytes; under a
        rate limit, as several of at most its burst: _flush); any other bean is a barrier, replayed on
        its own once the batch before it is applied. A bean carried in chunks (core/messages.py) is replayed
        at its last chunk's offset.
        """
        last: Optional[int] = None
        assembler = self._assembler(records[0].topic, records[0].partition)
        batch = _Batch(self.primaries, assembler)
        try:
            for record in records:
                item = self._decode(record, stop)
                if assembler.sets:
                    self._expire(assembler, record, item, stop)
                complete: Optional[ChunkSet] = None
                if isinstance(item, (Chunk, Abort)):
                    complete = self._take_chunk(assembler, record, item)
                    if complete is None:  # nothing to apply yet: done once what comes before is
                        if batch.records:
                            batch.carry(record)
                        else:
                            last = record.offset
                        continue
                    record, item = self._assembled(record, complete, stop)
                bean = item if isinstance(item, Bean) else None
                if bean is not None and bean.kind == DOCS_KIND:
                    chunks = split_actions(bean.body)
                    if self.rules.active:
                        chunks, paused = self._follow_docs(record, bean, chunks, stop)
                        if paused:
                            if batch.records:
                                last = self._flush(batch, stop)
                            self._wait_paused(record, paused)
                            break
                    if not chunks:  # nothing followed: done once what comes before is
                        if complete is not None:
                            assembler.release(complete.id)
                        if batch.records:
                            batch.carry(record)
                        else:
                            last = record.offset
                        continue
                    if batch.records and not batch.fits(len(chunks), len(bean.body), self.cfg):
                        last = self._flush(batch, stop)
                    targets = self._targets(record, bean)
                    if self.creator.wanted and bean.index:  # a document bean's actions are all of its index
                        for primary in targets:
                            self.creator.ensure(primary, bean.index, stop)
                    batch.add(record, bean, chunks, targets)
                    if self.rules.active:
                        self._note_followed(batch, record, bean.index_key(), len(chunks), sum(map(len, chunks)))
                    if complete is not None:
                        batch.sets.append(complete.id)
                    continue
                if batch.records:
                    last = self._flush(batch, stop)
                paused = self._replay_raw(record, bean, stop) if bean is not None else ""
                if paused:
                    self._wait_paused(record, paused)
                    break
                if complete is not None:
                    assembler.release(complete.id)
                last = record.offset
            if batch.records:
                last = self._flush(batch, stop)
        except Aborted as e:
            log.info("replay interrupted at %s: %s", _where(records[0]) if last is None else last, e)
        except Exception:  # a bug: do not retry the same messages forever, do not skip them silently
            log.exception("replay of %s..%d failed; not committed", _where(records[0]), records[-1].offset)
        if last != records[-1].offset:  # read again from there (lanes.py): so are the chunks read there
            assembler.rewind(records[0].offset if last is None else last + 1)
        return last

    def _decode(self, record: Any, stop: Callable[[], bool]) -> Optional[Bean | Chunk | Abort]:
        """What the record carries; None (once its dead letter is written) for a message that is not a bean."""
        value = record.value or b""
        STATS.replay_message(len(value))
        level = logging.WARNING if len(value) >= self.cfg.warnSize else logging.DEBUG
        log.log(level, "kafka.claimed group: %s, len: %d, at %s", self.cfg.group, len(value), _where(record))
        try:
            item = decode(value)
        except BeanError as e:
            log.error("message %s is not a bean (%s): %r", _where(record), e, value[:2000])
            STATS.replayed("(not a bean)", len(value), ok=False)
            self.dead_letters.write(record, f"not a bean: {e}", stop)
            return None
        if isinstance(item, Bean) and self.cfg.labels:
            item.labels = dict(self.cfg.labels)
        return item

    def _take_chunk(self, assembler: Assembler, record: Any, item: Chunk | Abort) -> Optional[ChunkSet]:
        """Hold a chunk; the set it completes, if it does."""
        if isinstance(item, Chunk):
            return assembler.add(item, record.offset, record.timestamp)
        dropped = assembler.abort(item.id)
        if dropped is not None:
            log.warning(
                "chunk set %s of index %s given up by its producer (%s) at %s: %s dropped",
                item.id,
                item.index,
                item.reason[:1000],
                _where(record),
                dropped.describe(),
            )
        return None

    def _assembled(self, record: Any, complete: ChunkSet, stop: Callable[[], bool]) -> tuple[Any, Optional[Bean]]:
        """The bean a complete chunk set carries, and the record it stands for (at the last chunk);
        None (once its dead letter is written) if it is not a bean."""
        value = complete.bean_json()
        whole = _Assembled(record.topic, record.partition, record.offset, record.key, value, record.timestamp)
        log.debug(
            "chunk set %s complete at %s: %d bytes, %s", complete.id, _where(record), len(value), complete.describe()
        )
        try:
            bean = Bean.from_json(value)
        except BeanError as e:
            log.error(
                "chunk set %s completed at %s is not a bean (%s): %r", complete.id, _where(record), e, value[:2000]
            )
            STATS.replayed("(not a bean)", len(value), ok=False)
            self.dead_letters.write(whole, f"chunks {complete.id} put together are not a bean: {e}", stop)
            return whole, None
        if self.cfg.labels:
            bean.labels = dict(self.cfg.labels)
        return whole, bean

    def _expire(self, assembler: Assembler, record: Any, item: Any, stop: Callable[[], bool]) -> None:
        """Give up the chunk sets that ``record`` shows will not complete: to the dead letters. Not the
        set ``record`` is a chunk of: its producer is shipping it again (after a long broker outage)."""
        max_age_ms = int(self.cfg.chunkTimeout * 1000)
        for held in assembler.expired(record.offset, record.timestamp, max_age_ms, CHUNK_MAX_RECORDS):
            if isinstance(item, Chunk) and item.id == held.id:
                continue
            what = held.describe()
            log.error(
                "chunk set %s of index %s in %s-%d: %s, the rest not seen by %s; to the dead letters",
                held.id,
                held.index,
                record.topic,
                record.partition,
                what,
                _where(record),
            )
            # The chunks themselves stay in the topic (until its retention): the letter says where.
            info = {
                "id": held.id,
                "count": held.count,
                "seqs": sorted(held.parts),
                "offsets": sorted(held.offsets.values()),
            }
            value = json.dumps({"kind": "chunk", "index": held.index, "chunk": info}).encode()
            letter = _Assembled(
                record.topic, record.partition, held.first_offset, record.key, value, held.first_timestamp
            )
            self.dead_letters.write(letter, f"incomplete write carried in chunks {held.id}: {what}", stop)
            STATS.replayed(held.index or "(chunks)", sum(len(p) for p in held.parts.values()), ok=False)
            assembler.release(held.id)

    def _targets(self, record: Any, bean: Bean) -> list[Elastic]:
        targets = []
        for primary in self.primaries:
            if primary.cluster_id and primary.cluster_id in bean.clusterIds:
                log.debug("%s already applied to cluster %s, skipped", _where(record), primary.cluster_id)
            elif primary.matches(bean.labels):
                targets.append(primary)
        return targets

    def _flush(self, batch: _Batch, stop: Callable[[], bool]) -> int:
        for primary, chunks in batch.chunks.items():
            if not chunks:
                continue
            # Rate-limited: in sends of at most the limit's burst, each paid for before it goes (replay/ratelimit.py).
            for send in self.rate.split(chunks, len) if self.rate.limited else (chunks,):
                self._throttle(len(send), sum(map(len, send)), stop)
                for chunk, item in replay_docs(primary, send, stop):
                    self._refused_action(batch.origin[id(chunk)], primary, chunk, item, stop)
            for bean in batch.beans:
                STATS.replayed(bean.index, len(bean.body), ok=True)
        for target, source, rule, docs, nbytes, timestamp in batch.followed:
            STATS.follow_applied(target, source, rule, docs, nbytes, timestamp)
        batch.applied()
        last = batch.records[-1].offset
        batch.clear()
        return last

    def _refused_action(
        self, record: Any, primary: Elastic, chunk: bytes, item: Item, stop: Callable[[], bool]
    ) -> None:
        """One `_bulk` action B refused for good: its own dead letter (a bean holding just that action)."""
        STATS.replayed(item.index, len(chunk), ok=False)
        STATS.follow_failed(item.index)
        error = _error_text(item.error)
        log.warning(
            "replay %s into %s refused %s %s/%s (%d): %s; to the dead letters: %s",
            _where(record),
            primary.target(""),
            item.verb,
            item.index,
            item.id,
            item.status,
            error[:1000],
            chunk[:1000].decode("utf-8", "replace"),
        )
        self.dead_letters.write(
            record,
            f"{item.verb} {item.index}/{item.id} refused ({item.status}): {error}",
            stop,
            target=primary.target(""),
            status=item.status,
            body=chunk,
            error=item.error,
        )

    def _follow_docs(
        self, record: Any, bean: Bean, chunks: list[bytes], stop: Callable[[], bool]
    ) -> tuple[list[bytes], str]:
        """The actions the sync rules follow, renamed, and the paused rule one names; none (once its
        dead letter is written) for a document bean whose actions cannot be read."""
        try:
            kept, skipped, paused = follow_docs(self.rules, chunks)
        except (ValueError, AttributeError, StopIteration) as e:
            reason = f"sync rules: a document bean whose actions cannot be read: {e}"
            log.error("replay %s: %s", _where(record), reason)
            STATS.replayed(bean.index_key(), len(bean.body), ok=False)
            self.dead_letters.write(record, reason, stop)
            return [], ""
        if paused:
            return kept, paused
        self._skipped(record, skipped)
        return kept, ""

    def _wait_paused(self, record: Any, rule: str) -> None:
        """A write of a paused rule: the partition stops before it and is replayed again from it (lanes.py)."""
        where = (record.topic, record.partition, record.offset)
        self._held_by_pause[(record.topic, record.partition)] = (time.monotonic(), rule)
        if self._paused_at.get(rule) != where:
            self._paused_at[rule] = where
            log.info("replay of %s waits: sync rule %s is paused", _where(record), rule)

    def _skipped(self, record: Any, indices: list[str]) -> None:
        for index in indices:
            STATS.skipped_by_rules(index)
        if indices and log.isEnabledFor(logging.DEBUG):
            log.debug("replay %s: not followed, skipped: %s", _where(record), ", ".join(sorted(set(indices))))

    def _replay_raw(self, record: Any, bean: Bean, stop: Callable[[], bool]) -> str:
        """Replay a bean as sent (under the sync rules); the paused rule it waits for, else ""."""
        creates = document_indices(bean) if self.creator.wanted else []  # A's indices it writes documents into
        if not self.rules.active:
            self._replay_one(record, bean, stop, creates)
            return ""
        outcome = follow_raw(self.rules, bean)
        if outcome.paused:
            return outcome.paused
        self._skipped(record, outcome.skipped)
        if outcome.problem:
            reason = f"sync rules: {outcome.problem}"
            log.error("replay %s: %s; to the dead letters", _where(record), reason)
            STATS.replayed(bean.index_key(), len(bean.body), ok=False)
            self.dead_letters.write(record, reason, stop)
            return ""
        for followed in outcome.beans:
            self._replay_one(record, followed, stop, creates)
        for source in bean.index_key().split(",") if outcome.beans else ():
            target = self.rules.target(source) if "*" not in source and source[:1] not in ("_", "") else None
            if target is not None:
                timestamp = getattr(record, "timestamp", 0) or 0
                STATS.follow_applied(target.index, source, target.rule.name, 1, len(bean.body), timestamp)
        return ""

    def _note_followed(self, batch: _Batch, record: Any, source: str, docs: int, nbytes: int) -> None:
        target = self.rules.target(source)
        if target is not None and docs:
            timestamp = getattr(record, "timestamp", 0) or 0
            batch.followed.append((target.index, source, target.rule.name, docs, nbytes, timestamp))

    def _throttle(self, docs: int, nbytes: int, stop: Callable[[], bool]) -> None:
        if self.rate.limited:
            STATS.replay_throttled_seconds += self.rate.take(docs, nbytes, stop)

    def _replay_one(
        self, record: Any, bean: Bean, stop: Callable[[], bool], creates: Optional[list[str]] = None
    ) -> None:
        """Replay a bean as sent into each target; ``creates``: A's indices it puts documents into (B gets
        each of them from A first if it lacks it: followcreate.py)."""
        for primary in self._targets(record, bean):
            for index in creates or ():
                self.creator.ensure(primary, index, stop)
            self._throttle(1, len(bean.body), stop)
            outcome = replay_as_sent(primary, bean, stop)
            if outcome.applied and deletes_index(bean):
                self.creator.forget()
            if outcome.applied:
                refused_bytes = sum(len(chunk) for chunk, _ in outcome.refused_actions)
                STATS.replayed(bean.index_key(), len(bean.body) - refused_bytes, ok=True)
            for chunk, item in outcome.refused_actions:
                self._refused_action(record, primary, chunk, item, stop)
            r = outcome.refused
            if r is not None:
                STATS.replayed(bean.index_key(), len(bean.body), ok=False)
                answer = r.body[:4000].decode("utf-8", "replace")
                log.warning(
                    "replay %s %s %s answered %d, to the dead letters: %s",
                    _where(record),
                    bean.method,
                    primary.target(bean.requestUri),
                    r.status,
                    answer[:1000],
                )
                error = r.json().get("error") or answer
                self.dead_letters.write(
                    record,
                    f"{bean.method} {bean.requestUri.split('?', 1)[0]} answered {r.status}: {_error_text(error)}",
                    stop,
                    target=primary.target(""),
                    status=r.status,
                    error=error,
                )

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
