"""At most N documents and M bytes per second, shared by the greenlets that send (the replay's lanes).

Each send is charged before it goes: the limiter keeps the virtual time at which what was sent so
far is "paid for" and makes the sender wait until then. Idle time earns at most ``burst`` seconds of
credit, so a quiet hour is not followed by an unbounded burst. The time spent waiting is counted.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from .retry import Aborted

SLICE = 0.25  # longest single sleep: a stop is noticed within it


class RateLimit:
    def __init__(
        self,
        docs_per_second: float = 0,
        bytes_per_second: float = 0,
        burst: float = 0.2,
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

    @property
    def limited(self) -> bool:
        return bool(self.docs_per_second or self.bytes_per_second)

    def take(self, docs: int, nbytes: int, stopping: Callable[[], bool] = lambda: False) -> float:
        """Wait until ``docs`` documents of ``nbytes`` bytes may be sent; return the seconds waited.
        Raises Aborted if ``stopping()`` turns true while waiting."""
        if not self.limited:
            return 0.0
        now = self.clock()
        cost = max(
            docs / self.docs_per_second if self.docs_per_second else 0.0,
            nbytes / self.bytes_per_second if self.bytes_per_second else 0.0,
        )
        start = max(self._paid_until, now - self.burst)
        self._paid_until = start + cost
        wait = start - now  # what was sent before must be paid for first; this send's own cost comes after
        waited = 0.0
        while waited < wait:
            if stopping():
                raise Aborted("stopping while throttled")
            step = min(SLICE, wait - waited)
            self.sleep(step)
            waited += step
            self.throttled += step
        return waited
