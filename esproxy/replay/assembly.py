"""Beans carried in chunks, put together again: a bean too big for one Kafka message is sent as a chunk set
(core/messages.py), each chunk a record of one partition, and replayed once its last chunk is read, at that
chunk's offset. The partition's offsets are committed no further than the first chunk of a set still held
(``low_water``), so that a restart reads the whole set again.

Example: a 25 MB bean sent as chunks 1/3, 2/3 and 3/3 at writes-2@39, @40 and @41, other beans between them.
39 and 40 are held (``take`` returns None: nothing to apply yet) and the commit stops at 39; 41 completes
the set: ``whole`` gives the bean, to replay as the record ``Standin(writes, 2, 41, ...)``. A set whose other
chunks do not come within chunkTimeout (or CHUNK_MAX_RECORDS records) is dead-lettered by ``expire``, as a
letter at its first chunk's offset saying where its chunks are.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional, Union

from esproxy.core.bean import Bean, BeanError
from esproxy.core.config import KafkaSource
from esproxy.core.messages import Abort, Assembler, Chunk, ChunkSet

from .deadletters import DeadLetters
from .record import Record, Standin, where

log = logging.getLogger("esproxy.replay")

# An incomplete chunk set is given up after this many records of its partition (see chunkTimeout).
CHUNK_MAX_RECORDS = 1_000_000

# What a record carries (core/messages.py's decode); None: not a bean (dead-lettered by the decode step).
Item = Optional[Union[Bean, Chunk, Abort]]


class Assembly:
    """The chunk sets each partition holds, and what completing or giving them up does."""

    def __init__(self, cfg: KafkaSource, letters: DeadLetters) -> None:
        self.cfg = cfg
        self.letters = letters
        self._assemblers: dict[tuple[str, int], Assembler] = {}  # per partition: chunk sets read in part

    def of(self, topic: str, partition: int) -> Assembler:
        """The partition's assembler (made at its first use)."""
        assembler = self._assemblers.get((topic, partition))
        if assembler is None:
            assembler = self._assemblers[(topic, partition)] = Assembler()
        return assembler

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its next owner reads its chunk sets again from their first chunks."""
        self._assemblers.pop((topic, partition), None)

    def take(self, assembler: Assembler, record: Record, item: Chunk | Abort) -> Optional[ChunkSet]:
        """Hold a chunk (or drop the set its producer gave up); the set it completes, if it does."""
        if isinstance(item, Chunk):
            return assembler.add(item, record.offset, record.timestamp)
        dropped = assembler.abort(item.id)
        if dropped is not None:
            log.warning(
                "chunk set %s of index %s given up by its producer (%s) at %s: %s dropped",
                item.id,
                item.index,
                item.reason[:1000],
                where(record),
                dropped.describe(),
            )
        return None

    def whole(self, record: Record, complete: ChunkSet, stop: Callable[[], bool]) -> tuple[Standin, Optional[Bean]]:
        """The bean a complete chunk set carries, and the record it stands for (at the last chunk);
        None (once its dead letter is written) if it is not a bean."""
        value = complete.bean_json()
        whole = Standin(record.topic, record.partition, record.offset, record.key, value, record.timestamp)
        log.debug(
            "chunk set %s complete at %s: %d bytes, %s", complete.id, where(record), len(value), complete.describe()
        )
        try:
            bean = Bean.from_json(value)
        except BeanError as e:
            says = f"chunk set {complete.id} completed at {where(record)} is not a bean ({e}): {value[:2000]!r}"
            reason = f"chunks {complete.id} put together are not a bean: {e}"
            self.letters.dead_letter(whole, reason, stop, index="(not a bean)", size=len(value), says=says)
            return whole, None
        if self.cfg.labels:
            bean.labels = dict(self.cfg.labels)
        return whole, bean

    def expire(self, assembler: Assembler, record: Record, item: Item, stop: Callable[[], bool]) -> None:
        """Give up the chunk sets that ``record`` shows will not complete: to the dead letters. Not the
        set ``record`` is a chunk of: its producer is shipping it again (after a long broker outage)."""
        max_age_ms = int(self.cfg.chunkTimeout * 1000)
        for held in assembler.expired(record.offset, record.timestamp, max_age_ms, CHUNK_MAX_RECORDS):
            if isinstance(item, Chunk) and item.id == held.id:
                continue
            what = held.describe()
            says = (
                f"chunk set {held.id} of index {held.index} in {record.topic}-{record.partition}: {what},"
                f" the rest not seen by {where(record)}; to the dead letters"
            )
            # The chunks themselves stay in the topic (until its retention): the letter says where.
            info = {
                "id": held.id,
                "count": held.count,
                "seqs": sorted(held.parts),
                "offsets": sorted(held.offsets.values()),
            }
            value = json.dumps({"kind": "chunk", "index": held.index, "chunk": info}).encode()
            letter = Standin(record.topic, record.partition, held.first_offset, record.key, value, held.first_timestamp)
            reason = f"incomplete write carried in chunks {held.id}: {what}"
            size = sum(len(p) for p in held.parts.values())
            self.letters.dead_letter(letter, reason, stop, index=held.index or "(chunks)", size=size, says=says)
            assembler.release(held.id)
