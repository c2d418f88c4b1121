"""The replay's writes into the primaries (cluster B): a ``Batch`` of document actions sent as `_bulk`s (under
a rate limit, in sends of at most its burst, each paid for before it goes: replay/ratelimit.py), or a bean
replayed as sent; each action or request B refuses for good becomes a dead letter of its own.

Example: records writes-0@10..12 carry document beans of 300, 200 and 500 actions, and maxDocsPerSecond is
400 (burst 400). ``flush`` sends the batch's 1000 actions as three `_bulk`s of 400, 400 and 200, each once
the limit allows it; B refuses one action of @11 (a mapping conflict, 400): that action alone is the dead
letter of writes-0@11, the others count as replayed. ``flush`` then returns 12: the batch is done.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

from esproxy.clients.elastic import Elastic, replay_as_sent, replay_docs
from esproxy.core.bean import Bean
from esproxy.core.bulk import Item
from esproxy.core.config import KafkaSource
from esproxy.core.messages import Assembler
from esproxy.core.stats import STATS

from .deadletters import DeadLetters
from .followcreate import IndexCreator
from .followed import deletes_index
from .lanes import progressed
from .ratelimit import RateLimit
from .record import Record, where

log = logging.getLogger("esproxy.replay")


class Batch:
    """Document actions gathered from consecutive records of one partition, per target cluster.

    ``records``: every record the batch makes done once applied, in offset order (those with nothing to
    apply, ``carry``, included); ``chunks``: the `_bulk` action lines to send each primary; ``origin``: the
    record each action line came from (its dead letter's); ``sets``: the chunk sets whose beans are in it."""

    def __init__(self, primaries: list[Elastic], assembler: Assembler) -> None:
        self.primaries = primaries
        self.assembler = assembler
        self.clear()

    def clear(self) -> None:
        self.records: list[Record] = []
        self.sets: list[str] = []  # chunk sets whose beans are in the batch: released once it is applied
        self.beans: list[Bean] = []
        self.chunks: dict[Elastic, list[bytes]] = {p: [] for p in self.primaries}
        self.origin: dict[int, Record] = {}  # id(chunk) -> the record it came from
        # target, source, rule, docs, bytes, Kafka timestamp, the rule's delay
        self.followed: list[tuple[str, str, str, int, int, int, float]] = []
        self.actions = 0
        self.bytes = 0

    def fits(self, actions: int, size: int, cfg: KafkaSource) -> bool:
        return self.actions + actions <= cfg.batchSize and self.bytes + size <= cfg.batchBytes

    def add(self, record: Record, bean: Bean, chunks: list[bytes], targets: list[Elastic]) -> None:
        self.records.append(record)
        self.beans.append(bean)
        for chunk in chunks:
            self.origin[id(chunk)] = record
        for target in targets:
            self.chunks[target].extend(chunks)
        self.actions += len(chunks)
        self.bytes += len(bean.body)

    def carry(self, record: Record) -> None:
        """A record with nothing to apply (a chunk): done when the batch is."""
        self.records.append(record)

    def applied(self) -> None:
        for chunk_id in self.sets:
            self.assembler.release(chunk_id)


def error_text(error: Any) -> str:
    """An Elasticsearch error in one line: `type: reason`, else its JSON or text (shortened)."""
    if isinstance(error, dict) and error.get("type"):
        return f"{error['type']}: {error.get('reason', '')}"[:1000]
    return (error if isinstance(error, str) else json.dumps(error, ensure_ascii=False))[:1000]


class Writes:
    """How one replay writes into its primaries; shared by its partitions' lanes."""

    def __init__(self, primaries: list[Elastic], rate: RateLimit, creator: IndexCreator, letters: DeadLetters) -> None:
        self.primaries = primaries
        self.rate = rate
        self.creator = creator  # a followed index B lacks is created from A before its first write
        self.letters = letters

    def targets(self, record: Record, bean: Bean) -> list[Elastic]:
        """The primaries ``bean`` is for: those its labels match that did not apply it already."""
        targets = []
        for primary in self.primaries:
            if primary.cluster_id and primary.cluster_id in bean.clusterIds:
                log.debug("%s already applied to cluster %s, skipped", where(record), primary.cluster_id)
            elif primary.matches(bean.labels):
                targets.append(primary)
        return targets

    def throttle(self, docs: int, nbytes: int, stop: Callable[[], bool]) -> None:
        if self.rate.limited:
            STATS.replay_throttled_seconds += self.rate.take(docs, nbytes, stop)

    def flush(self, batch: Batch, stop: Callable[[], bool]) -> int:
        """Apply the batch (see the module's example); the offset of its last record, now done."""
        for primary, chunks in batch.chunks.items():
            if not chunks:
                continue
            # Rate-limited: in sends of at most the limit's burst, each paid for before it goes (replay/ratelimit.py).
            for send in self.rate.split(chunks, len) if self.rate.limited else (chunks,):
                self.throttle(len(send), sum(map(len, send)), stop)
                for chunk, item in replay_docs(primary, send, stop):
                    self._refused_action(batch.origin[id(chunk)], primary, chunk, item, stop)
                progressed(stop)
            for bean in batch.beans:
                STATS.replayed(bean.index, len(bean.body), ok=True)
        for target, source, rule, docs, nbytes, timestamp, delay in batch.followed:
            STATS.follow_applied(target, source, rule, docs, nbytes, timestamp, delay)
        batch.applied()
        last = batch.records[-1].offset
        batch.clear()
        return last

    def as_sent(self, record: Record, bean: Bean, stop: Callable[[], bool], creates: Optional[list[str]]) -> None:
        """Replay a bean as sent into each target; ``creates``: A's indices it puts documents into (B gets
        each of them from A first if it lacks it: followcreate.py)."""
        for primary in self.targets(record, bean):
            for index in creates or ():
                self.creator.ensure(primary, index, stop)
            self.throttle(1, len(bean.body), stop)
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
                answer = r.body[:4000].decode("utf-8", "replace")
                says = (
                    f"replay {where(record)} {bean.method} {primary.target(bean.requestUri)} answered {r.status},"
                    f" to the dead letters: {answer[:1000]}"
                )
                error = r.json().get("error") or answer
                reason = f"{bean.method} {bean.requestUri.split('?', 1)[0]} answered {r.status}: {error_text(error)}"
                self.letters.dead_letter(
                    record,
                    reason,
                    stop,
                    index=bean.index_key(),
                    size=len(bean.body),
                    says=says,
                    level=logging.WARNING,
                    target=primary.target(""),
                    status=r.status,
                    error=error,
                )

    def _refused_action(
        self, record: Record, primary: Elastic, chunk: bytes, item: Item, stop: Callable[[], bool]
    ) -> None:
        """One `_bulk` action B refused for good: its own dead letter (a bean holding just that action)."""
        STATS.follow_failed(item.index)
        error = error_text(item.error)
        says = (
            f"replay {where(record)} into {primary.target('')} refused {item.verb} {item.index}/{item.id}"
            f" ({item.status}): {error[:1000]}; to the dead letters: {chunk[:1000].decode('utf-8', 'replace')}"
        )
        self.letters.dead_letter(
            record,
            f"{item.verb} {item.index}/{item.id} refused ({item.status}): {error}",
            stop,
            index=item.index,
            size=len(chunk),
            says=says,
            level=logging.WARNING,
            target=primary.target(""),
            status=item.status,
            body=chunk,
            error=item.error,
        )
