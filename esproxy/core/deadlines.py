"""Timeouts of many greenlets' waits checked by one repeating timer of the hub.

A ``gevent.Timeout`` (what a gevent socket with a timeout starts for each wait) is a libev timer
started and stopped for every wait: two or three per proxied request, a good part of its CPU. Here a
greenlet about to wait is *armed* with a deadline (a dict entry), and one timer per :class:`Deadlines`
throws :class:`TimedOut` into the greenlets past theirs, as a ``gevent.Timeout`` would throw it.

Used for the proxy's readTimeout/idleTimeout (esproxy.proxy.limits) and for the answers of a
cluster (esproxy.clients.lean: its ``timeout``).
"""

from __future__ import annotations

import time
from typing import Any

from gevent import get_hub, getcurrent


class TimedOut(Exception):
    """Thrown by :class:`Deadlines` into a greenlet still armed past its deadline."""


class Deadlines:
    """Deadlines of greenlets, checked every tenth of the shortest of ``timeouts`` (at most every
    second, at least every 10 ms): a deadline is met that much late at most. A greenlet is armed only
    while it waits, so that is where TimedOut can arrive."""

    def __init__(self, *timeouts: float) -> None:
        shortest = min((t for t in timeouts if t > 0), default=1.0)
        self.period = min(1.0, max(0.01, shortest / 10))
        self.armed: dict[Any, float] = {}  # greenlet -> monotonic deadline
        self._timer: Any = None

    def arm(self, seconds: float) -> None:
        """The current greenlet gets TimedOut if it is still armed ``seconds`` from now (0: never)."""
        if seconds > 0:
            self.armed[getcurrent()] = time.monotonic() + seconds
            if self._timer is None:
                self._timer = get_hub().loop.timer(self.period, self.period, ref=False)
                self._timer.start(self._sweep)

    def disarm(self) -> None:
        self.armed.pop(getcurrent(), None)

    def _sweep(self) -> None:
        # Runs in the hub, as a gevent.Timeout's expiry does: the greenlets it throws into wait.
        now = time.monotonic()
        late = [g for g, deadline in self.armed.items() if deadline <= now]
        for g in late:
            del self.armed[g]
            if not g.dead:
                g.throw(TimedOut)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        self.armed.clear()
