"""At most N documents and M bytes per second, shared by the senders (the replay's lanes, the copy's threads).

A token bucket kept as a virtual time: ``_paid_until`` is when everything reserved so far is paid
for, at one second per ``docs_per_second`` documents (or ``bytes_per_second`` bytes, whichever costs
more). The bucket holds at most ``burst`` seconds of credit: idle time earns no more than that.

Every send is paid for *before* it goes: ``take`` waits until the send's own cost has accrued, so in
any window of T seconds at most ``(T + burst) × limit`` goes out. A send may not cost more than the
bucket holds, so a caller cuts what it sends with ``split`` into runs of at most ``burst`` seconds
each (at least one item: a single item costing more than ``burst`` goes alone, after waiting until
its whole cost has accrued). The time spent waiting is counted in ``throttled``.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional, TypeVar

from esproxy.core.retry import Aborted

SLICE = 0.25  # longest single sleep: a stop is noticed within it
BURST = 0.2  # seconds of credit idle time earns: the most that goes at once
EPSILON = 1e-9  # a wait shorter than this is rounding

T = TypeVar("T")


class RateLimit:
    def __init__(
        self,
        docs_per_second: float = 0,
        bytes_per_second: float = 0,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.docs_per_second = docs_per_second
        self.bytes_per_second = bytes_per_second
        self.burst = burst
        self.clock = clock
        self.sleep = sleep or time.sleep  # gevent's once monkey-patched
        self.throttled = 0.0  # seconds senders waited
        self._paid_until = float("-inf")
        # the most one send may carry: burst seconds' worth, at least one document
        self.max_docs = max(1, math.floor(docs_per_second * burst + EPSILON)) if docs_per_second else math.inf
        self.max_bytes = bytes_per_second * burst if bytes_per_second else math.inf

    @property
    def limited(self) -> bool:
        return bool(self.docs_per_second or self.bytes_per_second)

    def split(self, items: list[T], size: Callable[[T], int]) -> list[list[T]]:
        """``items`` in order, cut into runs of at most ``max_docs`` items and ``max_bytes`` bytes
        (``size`` of each): sends that each fit the burst. A run holds at least one item."""
        if len(items) <= self.max_docs and self.max_bytes == math.inf:
            return [items]
        runs: list[list[T]] = []
        start, nbytes = 0, 0
        for i, item in enumerate(items):
            n = size(item)
            if i > start and (i - start >= self.max_docs or nbytes + n > self.max_bytes):
                runs.append(items[start:i])
                start, nbytes = i, 0
            nbytes += n
        if start < len(items):
            runs.append(items[start:])
        return runs

    def take(self, docs: int, nbytes: int, stopping: Callable[[], bool] = lambda: False) -> float:
        """Wait until ``docs`` documents of ``nbytes`` bytes are paid for; return the seconds waited.
        Raises Aborted if ``stopping()`` turns true while waiting."""
        if not self.limited:
            return 0.0
        now = self.clock()
        cost = max(
            docs / self.docs_per_second if self.docs_per_second else 0.0,
            nbytes / self.bytes_per_second if self.bytes_per_second else 0.0,
        )
        start = max(self._paid_until, now - self.burst)  # what was reserved before, or the bucket's credit
        self._paid_until = start + cost
        wait = self._paid_until - now  # this send goes once its own cost has accrued
        if wait <= EPSILON:
            return 0.0
        waited = 0.0
        while waited < wait:
            if stopping():
                raise Aborted("stopping while throttled")
            step = min(SLICE, wait - waited)
            self.sleep(step)
            waited += step
            self.throttled += step
        return waited
