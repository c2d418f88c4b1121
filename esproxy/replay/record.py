"""A Kafka record as the replay sees it: ``Record``, the fields it reads of kafka-python's ``ConsumerRecord``,
and ``Standin``, a record the replay makes itself where there is no single one to name (a bean carried in
chunks, read at its last chunk's offset; the dead letter of a chunk set never completed, at its first).

Example: the third and last chunk of a bean at ``writes-2@41`` completes it; the bean is then replayed, and
dead-lettered if it must be, as ``Standin("writes", 2, 41, key, <the whole bean's JSON>, <its timestamp>)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol


class Record(Protocol):
    """A consumed Kafka record: kafka-python's ``ConsumerRecord`` or a ``Standin``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch; -1 (or None) on a pre-0.10 message format."""
        ...

    @property
    def key(self) -> Optional[bytes]: ...
    @property
    def value(self) -> Optional[bytes]:
        """The message's bytes: a bean, a chunk of one, or a chunk set's abort (core/messages.py)."""
        ...


class Standin(NamedTuple):
    """A record made by the replay (see the module's docstring); a ``Record``."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    timestamp: int


def where(record: Record) -> str:
    """``topic-partition@offset``: how logs name a record."""
    return f"{record.topic}-{record.partition}@{record.offset}"
