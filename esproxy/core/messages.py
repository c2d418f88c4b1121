"""Beans ⇄ Kafka messages: a write of any size is carried in messages a broker accepts.

A bean whose JSON fits in one message (``destination.kafkas[].maxMessageBytes``, key and record
overhead included) is one message, its value the bean's JSON exactly as the Go original writes it.
A bigger one is carried in several messages, all with the bean's key (its index), so they stay in
one partition, in order:

- a document bean (``kind: docs``, a `_bulk` of versioned actions) is cut at action boundaries into
  several document beans, each within the limit, actions in order; each is an ordinary bean;
- what still does not fit (one document bigger than the limit, or a write replayed as sent) is cut
  into chunks that the replay reassembles::

      {"kind":"chunk","index":"logs","chunk":{"id":"<sha256 of the bean's JSON>","seq":0,"count":3},
       "data":"<base64 of the seq-th slice of the bean's JSON>"}

  The id is the hash of the bean's JSON, so a bean shipped again after a crash completes the same
  set. A producer that gives up on a bean whose chunks were partly produced sends an abort marker
  (``{"kind":"chunk-abort","index":...,"chunk":{"id":...},"reason":...}``, see ``abort_messages``),
  which makes the replay drop what it holds of that set.

``Assembler`` is the replay's side, per partition: it holds incomplete sets, ignores duplicate
chunks, hands back the bean when its last chunk arrives, and says from which offset the partition
must be read again (``low_water``) while it holds a set, so a restart or a rebalance re-reads it.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional, Union

from .bean import DOCS_KIND, Bean, BeanError, loads
from .bulk import Source, action_parts

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
MIN_MAX_MESSAGE_BYTES = 16 * 1024
# A record batch holding one record: batch header (61 bytes) + record overhead (at most 21) + the
# key's and value's lengths (varints); what kafka-python checks against max_request_size and what a
# broker checks against message.max.bytes. Rounded up.
RECORD_OVERHEAD = 128
CHUNK_KIND = "chunk"
ABORT_KIND = "chunk-abort"


def partition_key(bean: Bean) -> bytes:
    """Writes to one index share a key, hence a partition, hence their order in the replay."""
    return bean.index_key().encode("utf-8")


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Chunk:
    id: str
    seq: int
    count: int
    index: str
    data: bytes


@dataclass(frozen=True)
class Abort:
    id: str
    index: str
    reason: str


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def value_room(key: bytes, max_bytes: int) -> int:
    """The largest message value that fits in ``max_bytes`` with this key."""
    return max_bytes - len(key) - RECORD_OVERHEAD


# --------------------------------------------------------------------------- producing


def encode(bean: Bean, max_bytes: int) -> list[Message]:
    """The messages that carry ``bean``, in order; each within ``max_bytes`` (key and overhead included)."""
    return list(iter_encode(bean, max_bytes))


def iter_encode(bean: Bean, max_bytes: int) -> Iterator[Message]:
    """encode() made as it is read: a large bean's messages need not all be in memory at once."""
    key = partition_key(bean)
    for value in _pieces(bean, value_room(key, max_bytes)):
        yield from encode_value(key, value, max_bytes)


def encode_value(key: bytes, value: bytes, max_bytes: int) -> list[Message]:
    """Any JSON ``value`` (a bean's, a dead letter's) as one message, or as chunks if it does not fit."""
    room = value_room(key, max_bytes)
    if len(value) <= room:
        return [Message(key, value)]
    return [Message(key, chunk) for chunk in _chunks(value, key.decode("utf-8", "replace"), room)]


def abort_messages(bean: Bean, max_bytes: int, reason: str) -> list[Message]:
    """Abort markers for every chunk set ``encode(bean, max_bytes)`` makes (none if it makes none):
    for a producer that gives up on a bean some of whose messages may be in the topic already."""
    key = partition_key(bean)
    room = value_room(key, max_bytes)
    index = key.decode("utf-8")
    return [
        Message(key, _dumps({"kind": ABORT_KIND, "index": index, "chunk": {"id": _chunk_id(value)}, "reason": reason}))
        for value in _pieces(bean, room)
        if len(value) > room
    ]


def _pieces(bean: Bean, room: int) -> Iterator[bytes]:
    """The bean's JSON, or for a document bean too big for one message, the JSON of document beans
    holding its actions in order, as many per bean as fit in ``room`` (a bigger action alone).

    A document bean whose body alone exceeds ``room`` is cut without making its whole JSON first (a
    JSON string is never shorter than its UTF-8 bytes), and its actions are read in place: a large
    bean is then in memory about twice (its body, its messages), not four times."""
    if bean.kind != DOCS_KIND or len(bean.body) <= room:
        value = bean.to_json()
        if len(value) <= room or bean.kind != DOCS_KIND:
            yield value
            return
        del value
    if not _is_utf8(bean.body):  # checked first: a piece once yielded cannot be taken back
        yield bean.to_json()  # a base64 body: not cut (its actions are not what the JSON holds)
        return
    base = len(replace(bean, body=b"").to_json())
    actions: list[Source] = []
    size = base
    for parts in action_parts(bean.body):
        # The JSON of a string is the concatenation of its characters' JSON: sizes add up exactly.
        width = sum(len(_dumps(bytes(p).decode("utf-8"))) - 2 for p in parts)
        if actions and size + width > room:
            yield replace(bean, body=b"".join(actions)).to_json()
            actions, size = [], base
        actions += parts
        size += width
    if actions:
        yield replace(bean, body=b"".join(actions)).to_json()


def _is_utf8(data: bytes, step: int = 1 << 20) -> bool:
    """Whether ``data`` is UTF-8, read a slice at a time (not decoded whole into one more copy)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), step):
            decoder.decode(view[start : start + step], final=start + step >= len(data))
    except UnicodeDecodeError:
        return False
    return True


def _chunk_id(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _chunks(value: bytes, index: str, room: int) -> list[bytes]:
    chunk_id = _chunk_id(value)
    count = 2
    while True:
        # The header with the widest numbers this set can have; base64 turns 3 bytes into 4.
        head = len(_chunk_value(chunk_id, count, count, index, b"")) + 1  # +1: a seq < count is no wider
        slice_bytes = (room - head) // 4 * 3
        if slice_bytes < 1:
            raise ValueError(f"maxMessageBytes leaves no room for a chunk of index {index!r}")
        needed = -(-len(value) // slice_bytes)
        if needed <= count:
            break
        count = needed
    count = needed
    return [
        _chunk_value(chunk_id, seq, count, index, value[seq * slice_bytes : (seq + 1) * slice_bytes])
        for seq in range(count)
    ]


def _chunk_value(chunk_id: str, seq: int, count: int, index: str, data: bytes) -> bytes:
    chunk = {"id": chunk_id, "seq": seq, "count": count}
    return _dumps({"kind": CHUNK_KIND, "index": index, "chunk": chunk, "data": base64.b64encode(data).decode()})


# --------------------------------------------------------------------------- consuming


def decode(value: bytes) -> Union[Bean, Chunk, Abort]:
    """What a message carries; BeanError for a message that is none of them."""
    raw = loads(value)
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in (CHUNK_KIND, ABORT_KIND) or "method" in raw:
        return Bean.from_obj(raw)
    info = raw.get("chunk")
    if not isinstance(info, dict) or not isinstance(info.get("id"), str) or not info["id"]:
        raise BeanError(f"{kind} without a chunk id")
    index = str(raw.get("index") or "")
    if kind == ABORT_KIND:
        return Abort(info["id"], index, str(raw.get("reason") or ""))
    seq, count = info.get("seq"), info.get("count")
    if not (isinstance(seq, int) and isinstance(count, int) and 0 <= seq < count):
        raise BeanError(f"chunk {info['id']}: bad seq/count {seq!r}/{count!r}")
    try:
        data = base64.b64decode(raw.get("data") or "", validate=True)
    except ValueError:
        raise BeanError(f"chunk {info['id']}: data is not base64") from None
    return Chunk(info["id"], seq, count, index, data)


@dataclass
class ChunkSet:
    """What the replay holds of one chunked bean."""

    id: str
    count: int
    index: str
    first_offset: int
    first_timestamp: int
    parts: dict[int, bytes] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # seq -> offset it was read at
    complete: bool = False

    def bean_json(self) -> bytes:
        return b"".join(self.parts[i] for i in range(self.count))

    def describe(self) -> str:
        offsets = sorted(self.offsets.values())
        return f"{len(self.parts)} of {self.count} chunks at offsets {offsets[0]}..{offsets[-1]}"


class Assembler:
    """The chunk sets of one partition the replay has read part of, by id."""

    def __init__(self) -> None:
        self.sets: dict[str, ChunkSet] = {}

    def add(self, chunk: Chunk, offset: int, timestamp: int) -> Optional[ChunkSet]:
        """Take a chunk read at ``offset``; the set when this chunk completes it (its bean is then to be
        applied at this offset, and ``release``d once it is), else None. Duplicates are ignored."""
        held = self.sets.get(chunk.id)
        if held is None:
            held = self.sets[chunk.id] = ChunkSet(chunk.id, chunk.count, chunk.index, offset, timestamp)
        if held.complete or chunk.seq in held.parts or chunk.count != held.count:
            return None
        held.parts[chunk.seq] = chunk.data
        held.offsets[chunk.seq] = offset
        if len(held.parts) < held.count:
            return None
        held.complete = True
        return held

    def release(self, chunk_id: str) -> None:
        """The bean of a complete set is applied, or the set is dead-lettered: forget it."""
        self.sets.pop(chunk_id, None)

    def abort(self, chunk_id: str) -> Optional[ChunkSet]:
        held = self.sets.get(chunk_id)
        if held is None or held.complete:
            return None  # nothing held, or its last chunk came first: its bean is applied anyway
        return self.sets.pop(chunk_id)

    def expired(self, offset: int, timestamp: int, max_age_ms: int, max_records: int) -> list[ChunkSet]:
        """The incomplete sets that a record read at ``offset`` / ``timestamp`` (Kafka's, in ms; negative
        if unknown) shows will not complete: it is more than ``max_age_ms`` newer than the set's first
        chunk, or more than ``max_records`` records after it. They stay held until ``release``d."""
        return [
            s
            for s in self.sets.values()
            if not s.complete
            and (
                offset - s.first_offset > max_records
                or (timestamp >= 0 and s.first_timestamp >= 0 and timestamp - s.first_timestamp > max_age_ms)
            )
        ]

    def rewind(self, offset: int) -> None:
        """The partition is read again from ``offset``: forget what was read there and after."""
        for s in list(self.sets.values()):
            if s.first_offset >= offset:
                del self.sets[s.id]
                continue
            for seq in [seq for seq, at in s.offsets.items() if at >= offset]:
                del s.parts[seq]
                del s.offsets[seq]
                s.complete = False

    def low_water(self) -> Optional[int]:
        """The first offset of a set held (incomplete, or complete but its bean not yet applied):
        the partition's committed offset must not pass it."""
        return min((s.first_offset for s in self.sets.values()), default=None)
