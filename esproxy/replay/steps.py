"""A partition's records replayed as a chain of steps: decode → assemble → batch (or barrier) → flush; the
consumer greenlet then commits (replay/consumer.py: what a lane reports done, no further than a chunk set
still held).

- decode: the record's bytes → a bean, a chunk of one, or a chunk set's abort (core/messages.py); a record
  that is none of them is a dead letter (a barrier then: nothing after it is applied before the batch is).
- assemble: chunks are held until their set completes (replay/assembly.py); the bean they carry then
  stands for the record of the last chunk.
- batch: consecutive document beans (final states of documents) gather into one batch, up to batchSize
  actions / batchBytes, under the sync rules (which rename, drop, or pause them).
- barrier: any other bean (a `_bulk`, a delete-by-query, an index's creation...) is replayed as sent, on its
  own, once the batch before it is applied.
- flush: the batch goes to B as `_bulk`s (replay/writes.py), after which its records are done.

A record is *done* once it is applied or dead-lettered, or has nothing to apply (a held chunk, a bean the
rules do not follow): done at once when no batch is gathered before it, else with that batch (``Turn.done``),
since a commit covers every offset before it.

Example: a lane's turn with records @10..@15 of writes-0: @10 and @11 document beans, @12 a chunk (1 of 2),
@13 a `_bulk` as sent, @14 the last chunk, completing a document bean, @15 not a bean.
@10, @11: into the batch. @12: held, carried by the batch (done with it). @13: a barrier: the batch is
flushed (last = 12), then @13 replayed (last = 13). @14: the set is complete: its bean goes into a new batch.
@15: a dead letter, then a barrier: the batch is flushed (last = 14), then last = 15. The lane reports 15;
the consumer commits offset 16. Had B been down at @13 until a stop, the turn would end (Aborted) with
last = 12: the lane fetches again from @13 (and the assembler rewinds to it) after a pause.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

from gevent.lock import Semaphore

from esproxy.clients.elastic import Elastic
from esproxy.core.bean import DOCS_KIND, Bean, BeanError
from esproxy.core.bulk import split_actions
from esproxy.core.config import KafkaSource
from esproxy.core.messages import Abort, Assembler, Chunk, ChunkSet, decode
from esproxy.core.retry import Aborted
from esproxy.core.stats import STATS

from .assembly import Assembly, Item
from .deadletters import DeadLetters
from .follow import Rules
from .followed import document_indices, follow_docs, follow_raw
from .holdback import REJECT, Board, Entry, Holdback, RuleLane
from .record import Record, where
from .undo import captured_at, due_at, write_kind
from .writes import Batch, Writes

log = logging.getLogger("esproxy.replay")

# A partition a paused sync rule held this recently is waiting on purpose, not stalled (it is retried every second).
PAUSE_HOLD_SECONDS = 5.0


class Pauses:
    """Where paused sync rules hold partitions: a partition stops before a write of a paused rule, and its
    lane fetches it again from there every second (lanes.py) until the rule is resumed."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[str, int, int]] = {}  # rule -> (topic, partition, offset) it last held
        self._held: dict[tuple[str, int], tuple[float, str]] = {}  # (topic, partition) -> (monotonic, rule)

    def hold(self, record: Record, rule: str) -> None:
        """``record`` waits for paused ``rule`` (logged once per rule and place)."""
        place = (record.topic, record.partition, record.offset)
        self._held[(record.topic, record.partition)] = (time.monotonic(), rule)
        if self._at.get(rule) != place:
            self._at[rule] = place
            log.info("replay of %s waits: sync rule %s is paused", where(record), rule)

    def paused_by(self, topic: str, partition: int, now: float) -> str:
        """The rule that held the partition within PAUSE_HOLD_SECONDS of ``now`` (monotonic), else ""."""
        held = self._held.get((topic, partition))
        return held[1] if held is not None and now - held[0] < PAUSE_HOLD_SECONDS else ""


@dataclass
class Turn:
    """A lane's turn: one replay of the records it was handed, all of one partition, in offset order."""

    stop: Callable[[], bool]  # true once the turn must end (a stop, a revoked partition): Aborted
    assembler: Assembler  # the partition's chunk sets (assembly.py)
    batch: Batch  # document actions gathered and not sent yet
    last: Optional[int] = None  # offset of the last record done; None while none is
    held: bool = False  # a rule lane's turn (holdback.py): its writes were routed there already

    def done(self, record: Record) -> None:
        """``record`` has nothing to apply: done now, or with the batch gathered before it (see the module)."""
        if self.batch.records:
            self.batch.carry(record)
        else:
            self.last = record.offset


class Steps:
    """The steps of one replay (one ``source.kafkas[]`` entry), shared by its partitions' lanes."""

    def __init__(
        self,
        cfg: KafkaSource,
        primaries: list[Elastic],
        rules: Rules,
        writes: Writes,
        letters: DeadLetters,
        assembly: Assembly,
        holdback: Optional[Holdback] = None,
    ) -> None:
        self.cfg = cfg
        self.primaries = primaries
        self.rules = rules  # changed in place at runtime (followcontrol.py)
        self.writes = writes
        self.letters = letters
        self.assembly = assembly
        self.pauses = Pauses()
        # the rules' own lanes: delayed and held writes (holdback.py)
        self.holdback = holdback if holdback is not None else Holdback(Board(), cfg.group, Semaphore(), lambda: False)
        self.holdback.apply = self.apply_held
        self.holdback.batch_size = cfg.batchSize

    def replay(self, records: list[Record], stop: Callable[[], bool]) -> Optional[int]:
        """A lane's turn (lanes.Apply): replay ``records``; the offset of the last one done (None if none).
        What is not done is fetched again by the lane, so the partition's chunk sets are read again from there."""
        assembler = self.assembly.of(records[0].topic, records[0].partition)
        turn = Turn(stop, assembler, Batch(self.primaries, assembler))
        try:
            for record in records:
                if not self.step(turn, record):
                    break
            self.flush(turn)
        except Aborted as e:
            log.info("replay interrupted at %s: %s", where(records[0]) if turn.last is None else turn.last, e)
        except Exception:  # a bug: do not retry the same messages forever, do not skip them silently
            log.exception("replay of %s..%d failed; not committed", where(records[0]), records[-1].offset)
        if turn.last != records[-1].offset:
            assembler.rewind(records[0].offset if turn.last is None else turn.last + 1)
        return turn.last

    def step(self, turn: Turn, record: Record) -> bool:
        """One record through the steps; False when the partition stops before it (a paused sync rule)."""
        item = self.decode(record, turn.stop)
        assembled = self.assemble(turn, record, item)
        if assembled is None:  # a chunk held: nothing to apply yet
            turn.done(record)
            return True
        record, bean, complete = assembled
        if bean is not None and not turn.held and (self.rules.undo or self.holdback.lanes or self.holdback.board.skips):
            if self.route(turn, record, bean, complete):
                return True
        if bean is not None and bean.kind == DOCS_KIND:
            return self.batch(turn, record, bean, complete)
        return self.barrier(turn, record, bean, complete)

    def decode(self, record: Record, stop: Callable[[], bool]) -> Item:
        """What the record carries; None (once its dead letter is written) for a message that is not a bean.
        E.g. b'{"index":"logs",...}' -> Bean; a chunk's value -> Chunk; b'hello' -> None, a dead letter."""
        value = record.value or b""
        STATS.replay_message(len(value))
        level = logging.WARNING if len(value) >= self.cfg.warnSize else logging.DEBUG
        log.log(level, "kafka.claimed group: %s, len: %d, at %s", self.cfg.group, len(value), where(record))
        try:
            item = decode(value)
        except BeanError as e:
            says = f"message {where(record)} is not a bean ({e}): {value[:2000]!r}"
            self.letters.dead_letter(record, f"not a bean: {e}", stop, index="(not a bean)", size=len(value), says=says)
            return None
        if isinstance(item, Bean) and self.cfg.labels:
            item.labels = dict(self.cfg.labels)
        return item

    def assemble(
        self, turn: Turn, record: Record, item: Item
    ) -> Optional[tuple[Record, Optional[Bean], Optional[ChunkSet]]]:
        """The record to replay, its bean (None: not a bean) and the chunk set it completes, if any;
        None while a chunk set is incomplete. First, the sets ``record`` shows will never complete are
        dead-lettered (assembly.py)."""
        if turn.assembler.sets:
            self.assembly.expire(turn.assembler, record, item, turn.stop)
        if not isinstance(item, (Chunk, Abort)):
            return record, item, None
        complete = self.assembly.take(turn.assembler, record, item)
        if complete is None:
            return None
        whole, bean = self.assembly.whole(record, complete, turn.stop)
        return whole, bean, complete

    def batch(self, turn: Turn, record: Record, bean: Bean, complete: Optional[ChunkSet]) -> bool:
        """A document bean into the batch (flushed first if it would not fit); False if a paused rule holds it.
        E.g. batchSize 1000 with 900 actions gathered: a bean of 200 flushes the 900, then starts a new batch."""
        chunks, paused = self.followed_actions(record, bean, turn.stop)
        if paused:
            self.flush(turn)
            if not turn.held:  # a rule lane keeps its own pause (holdback.RuleLane.paused), not the partition's
                self.pauses.hold(record, paused)
            return False
        if not chunks:  # nothing followed: done once what comes before is
            if complete is not None:
                turn.assembler.release(complete.id)
            turn.done(record)
            return True
        if turn.batch.records and not turn.batch.fits(len(chunks), len(bean.body), self.cfg):
            self.flush(turn)
        targets = self.writes.targets(record, bean)
        if self.writes.creator.wanted and bean.index:  # a document bean's actions are all of its index
            for primary in targets:
                self.writes.creator.ensure(primary, bean.index, turn.stop)
        turn.batch.add(record, bean, chunks, targets)
        if self.rules.active:
            self.note_followed(turn.batch, record, bean.index_key(), len(chunks), sum(map(len, chunks)))
        if complete is not None:
            turn.batch.sets.append(complete.id)
        return True

    def barrier(self, turn: Turn, record: Record, bean: Optional[Bean], complete: Optional[ChunkSet]) -> bool:
        """Anything but a document bean: replayed as sent once the batch before it is applied (a bean that is
        not one was dead-lettered by decode or assemble: done); False if a paused rule holds it."""
        self.flush(turn)
        paused = self.as_sent(record, bean, turn.stop) if bean is not None else ""
        if paused:
            if not turn.held:  # a rule lane keeps its own pause (holdback.RuleLane.paused), not the partition's
                self.pauses.hold(record, paused)
            return False
        if complete is not None:
            turn.assembler.release(complete.id)
        turn.last = record.offset
        return True

    def route(self, turn: Turn, record: Record, bean: Bean, complete: Optional[ChunkSet]) -> bool:
        """Hand a write to its rule's lane (holdback.py) when the rule delays it, its guard holds it, or the lane
        already holds a write of the partition (the rule's order); a write captured before an operator's skip
        becomes a dead letter. True when done here (the record is then done for this lane)."""
        if self.holdback.seen(record):
            turn.done(record)  # read again after a failure: its rule lane has it already
            return True
        if bean.kind == DOCS_KIND:
            target = self.rules.target(bean.index_key())
            touched = [target.rule] if target is not None else []
        else:
            touched = follow_raw(self.rules, bean).rules
        if not touched:
            return False
        names = tuple(r.name for r in touched)
        captured = captured_at(getattr(record, "timestamp", None))
        skipper, until = self.holdback.board.skip_until(names)
        if skipper and captured < until:
            self.decided(record, bean, _skipped(skipper, until), turn.stop)
            turn.done(record)
            return True
        kind = write_kind(bean)
        guarded = [r for r in touched if kind and kind in r.guard]
        delayed = max(touched, key=lambda r: r.delay)
        waiting = [r for r in touched if self.holdback.waiting(r.name, record.topic, record.partition)]
        lane = guarded[0] if guarded else (delayed if delayed.delay > 0 else (waiting[0] if waiting else None))
        if lane is None:
            return False
        if any(f[2] in names for f in turn.batch.followed):
            self.flush(turn)  # the rule's writes gathered before it are applied first
        entry = Entry(
            record,
            bean,
            complete.first_offset if complete is not None else record.offset,
            captured,
            due_at(captured, delayed.delay),
            names,
            kind if guarded else "",
        )
        if complete is not None:
            turn.assembler.release(complete.id)  # the rule lane's low water keeps the commit before its first chunk
        self.holdback.push(lane.name, entry)
        turn.done(record)
        return True

    def apply_held(self, lane: RuleLane, entries: list[Entry], stop: Callable[[], bool]) -> int:
        """A rule lane's turn (holdback.Apply): apply ``entries`` (of one partition, in offset order) as the
        partition's lane would, or dead-letter what an operator rejected or skipped; how many are done."""
        turn = Turn(stop, Assembler(), Batch(self.primaries, Assembler()), held=True)
        was_paused, lane.paused = lane.paused, False
        try:
            for entry in entries:
                record, bean = entry.record, entry.bean
                skipper, until = self.holdback.board.skip_until(entry.rules)
                decision = self.holdback.board.decision(entry) if entry.guard else None
                if skipper and entry.captured < until:
                    reason = _skipped(skipper, until)
                elif decision is not None and decision[0] == REJECT:
                    why = decision[1] or "no reason given"
                    reason = f"rejected by the operator (sync rule {lane.rule}, guard {entry.guard}): {why}"
                else:
                    reason = ""
                if reason:
                    self.decided(record, bean, reason, stop)
                    turn.done(record)
                    continue
                go = self.batch if bean.kind == DOCS_KIND else self.barrier
                if not go(turn, record, bean, None):
                    if not was_paused:
                        log.info("replay of %s (sync rule %s's lane) waits: it is paused", where(record), lane.rule)
                    lane.paused = True
                    break
            self.flush(turn)
        except Aborted as e:
            log.info("replay of rule %s's writes interrupted at %s: %s", lane.rule, where(entries[0].record), e)
        except Exception:  # a bug: retried after a pause, never skipped silently
            log.exception("replay of rule %s's writes %s.. failed", lane.rule, where(entries[0].record))
        last = turn.last
        return 0 if last is None else sum(1 for e in entries if e.record.offset <= last)

    def decided(self, record: Record, bean: Bean, reason: str, stop: Callable[[], bool]) -> None:
        """An operator's decision not to apply a write: its dead letter, not counted as a failure."""
        self.letters.dead_letter(
            record, reason, stop, index=bean.index_key(), size=len(bean.body), level=logging.WARNING, decided=True
        )

    def flush(self, turn: Turn) -> None:
        """Apply the batch, if one is gathered: its records are then done (writes.py)."""
        if turn.batch.records:
            turn.last = self.writes.flush(turn.batch, turn.stop)

    def followed_actions(self, record: Record, bean: Bean, stop: Callable[[], bool]) -> tuple[list[bytes], str]:
        """A document bean's actions the sync rules follow, renamed, and the paused rule one names; none (once
        its dead letter is written) for a bean whose actions cannot be read. Without rules: all, as they are."""
        chunks = split_actions(bean.body)
        if not self.rules.active:
            return chunks, ""
        try:
            kept, skipped, paused = follow_docs(self.rules, chunks)
        except (ValueError, AttributeError, StopIteration) as e:
            reason = f"sync rules: a document bean whose actions cannot be read: {e}"
            says = f"replay {where(record)}: {reason}"
            self.letters.dead_letter(record, reason, stop, index=bean.index_key(), size=len(bean.body), says=says)
            return [], ""
        if paused:
            return kept, paused
        self.skipped(record, skipped)
        return kept, ""

    def as_sent(self, record: Record, bean: Bean, stop: Callable[[], bool]) -> str:
        """Replay a bean as sent (under the sync rules); the paused rule it waits for, else ""."""
        creates = document_indices(bean) if self.writes.creator.wanted else []  # A's indices it writes docs into
        if not self.rules.active:
            self.writes.as_sent(record, bean, stop, creates)
            return ""
        outcome = follow_raw(self.rules, bean)
        if outcome.paused:
            return outcome.paused
        self.skipped(record, outcome.skipped)
        if outcome.problem:
            self.letters.dead_letter(
                record, f"sync rules: {outcome.problem}", stop, index=bean.index_key(), size=len(bean.body)
            )
            return ""
        for followed in outcome.beans:
            self.writes.as_sent(record, followed, stop, creates)
        for source in bean.index_key().split(",") if outcome.beans else ():
            target = self.rules.target(source) if "*" not in source and source[:1] not in ("_", "") else None
            if target is not None:
                timestamp = getattr(record, "timestamp", 0) or 0
                STATS.follow_applied(
                    target.index, source, target.rule.name, 1, len(bean.body), timestamp, target.rule.delay
                )
        return ""

    def skipped(self, record: Record, indices: list[str]) -> None:
        for index in indices:
            STATS.skipped_by_rules(index)
        if indices and log.isEnabledFor(logging.DEBUG):
            log.debug("replay %s: not followed, skipped: %s", where(record), ", ".join(sorted(set(indices))))

    def note_followed(self, batch: Batch, record: Record, source: str, docs: int, nbytes: int) -> None:
        target = self.rules.target(source)
        if target is not None and docs:
            timestamp = getattr(record, "timestamp", 0) or 0
            batch.followed.append((target.index, source, target.rule.name, docs, nbytes, timestamp, target.rule.delay))


def _skipped(rule: str, until: float) -> str:
    return f"skipped by the operator: sync rule {rule}, writes captured before {_iso(until)}"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"
