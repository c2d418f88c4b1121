"""One lane per Kafka partition of the replay: its own greenlet replays the partition's records in
offset order while the consumer greenlet fetches and queues the next ones, so the fetch, the decoding
and the `_bulk` in flight overlap instead of taking turns.

A lane never touches the KafkaConsumer (it is not safe to share between greenlets): it only says what
it applied (``applied``) and where the partition must be fetched again from after a replay stopped
short (``failed_at``). The consumer greenlet commits, seeks and pauses accordingly.

For the replay's lag and health, a lane also keeps ``waiting``: the offset and Kafka timestamp of the
oldest record it was handed and has not applied yet (None when it is caught up), and ``progress_at``:
when it last applied something or started waiting.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from kafka import TopicPartition

from .record import Record

# (records in offset order, stop) -> offset of the last record applied, None if none was
Apply = Callable[[list[Record], Callable[[], bool]], Optional[int]]


class Lane:
    def __init__(
        self,
        tp: TopicPartition,
        apply: Apply,
        gate: Semaphore,
        progress: Event,
        stopping: Callable[[], bool],
        max_records: int,
        max_bytes: int,
    ) -> None:
        self.tp = tp
        self.applied: Optional[int] = None  # last offset done (applied or dead-lettered)
        self.committed: Optional[int] = None  # the consumer greenlet's: last offset committed
        self.failed_at: Optional[int] = None  # first offset not done after a replay stopped short
        self.held_until = 0.0  # the consumer greenlet's: when to fetch a failed partition again
        self.waiting: Optional[tuple[int, float]] = None  # (offset, timestamp in s) of the oldest record not done
        self.progress_at = time.monotonic()  # last record applied, or the start of `waiting`
        self._apply = apply
        self._gate = gate  # bounds the partitions replayed at once (`concurrency`)
        self._progress = progress  # set after every replay, to wake the consumer greenlet
        self._stopping = stopping
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._queue: deque[Record] = deque()
        self._bytes = 0
        self._closed = False
        self._ready = Event()
        self._greenlet = gevent.spawn(self._loop)

    def full(self) -> bool:
        return len(self._queue) >= self._max_records or self._bytes >= self._max_bytes

    def push(self, records: list[Record]) -> None:
        if self._closed or self.failed_at is not None:
            return  # fetched past a failure: fetched again from `failed_at` once the consumer seeks there
        if records and self.waiting is None:
            self.waiting = _mark(records[0])
            self.progress_at = time.monotonic()
        self._queue.extend(records)
        self._bytes += sum(len(r.value or b"") for r in records)
        self._ready.set()

    def retry(self) -> None:
        """The consumer now fetches from `failed_at` again."""
        self.failed_at = None

    def close(self) -> None:
        """Drop what is queued, give up retrying, wait for the replay in flight to end (its `applied`)."""
        self._closed = True
        self._clear()
        self._ready.set()
        self._greenlet.join()

    def _stop(self) -> bool:
        return self._closed or self._stopping()

    def _clear(self) -> None:
        self._queue.clear()
        self._bytes = 0

    def _loop(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            if self._closed:
                return
            if not self._queue:
                continue
            records = list(self._queue)
            self._clear()
            with self._gate:
                last = self._apply(records, LaneStop(self))
            if last is not None:
                self.applied = last
                self.progress_at = time.monotonic()
            if last != records[-1].offset:
                # What follows is not applied before this is: drop it and fetch it again.
                self.failed_at = records[0].offset if last is None else last + 1
                self._clear()
                self.waiting = next(_mark(r) for r in records if last is None or r.offset > last)
            else:
                self.waiting = _mark(self._queue[0]) if self._queue else None
            self._progress.set()


class LaneStop:
    """What a lane hands its replay as ``stop``: true once the replay must end; and ``progressed()``, which a
    replay calls when part of its records landed (a rate-limited batch goes as several `_bulk` requests, each
    paid for first: at 10 docs/s a hand-off of 2000 records takes 200 s, and the lane is not stalled meanwhile)."""

    __slots__ = ("lane",)

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    def __call__(self) -> bool:
        return self.lane._stop()

    def progressed(self) -> None:
        self.lane.progress_at = time.monotonic()


def progressed(stop: Callable[[], bool]) -> None:
    """Tell the lane behind ``stop`` (if any: a replay run outside a lane has none) that a part landed."""
    if isinstance(stop, LaneStop):
        stop.progressed()


def _mark(record: Record) -> tuple[int, float]:
    """A record's offset and Kafka timestamp in seconds (now when it has none: a pre-0.10 message format)."""
    timestamp = getattr(record, "timestamp", -1)
    return record.offset, timestamp / 1000 if timestamp is not None and timestamp >= 0 else time.time()
