"""Retrying what may succeed later: backoff, a sleep and a call that a stop interrupts, and the retry loop.

Sleeps use ``time.sleep``: cooperative in the roles (gevent's monkey patching makes it yield to
the hub), a plain blocking sleep in the commands that run without it (``esproxy dlq``).
"""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

import gevent

T = TypeVar("T")
Stopping = Callable[[], bool]
# How often a sleep looks at ``stopping()``: how late a stop can be noticed.
POLL = 0.2


def never() -> bool:
    return False


class Aborted(Exception):
    """A retry loop gave up because the process is stopping; what it retried was not done."""


def backoff(attempt: int, base: float = 0.1, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter: the wait after failed attempt number ``attempt`` (from 0)."""
    return random.uniform(base, min(cap, base * 2**attempt))


def sleep(seconds: float, stopping: Stopping, aborted: str) -> None:
    """Sleep ``seconds``; raise Aborted(``aborted``) as soon as ``stopping()`` turns true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stopping():
            raise Aborted(aborted)
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def interruptible(call: Callable[[], T], stopping: Stopping, aborted: str) -> T:
    """``call()``'s result (or its exception), run in a greenlet that a stop kills: Aborted(``aborted``)
    within POLL seconds of ``stopping()`` turning true. For a call that blocks long on the network,
    such as kafka-python's client constructors (their bootstrap waits up to 30 s for a broker).
    Without gevent's monkey patching the call simply runs to its end."""
    greenlet = gevent.spawn(call)
    while not greenlet.ready():
        if stopping():
            greenlet.kill(block=True, timeout=1)
            raise Aborted(aborted)
        greenlet.join(timeout=POLL)
    return greenlet.get()


class Backoff:
    """The waits of one retry loop: each longer than the last, from the shortest again after progress."""

    def __init__(self, base: float = 0.1, cap: float = 30.0, stopping: Stopping = never) -> None:
        self.base, self.cap, self.stopping = base, cap, stopping
        self.attempts = 0  # failed attempts since the last progress

    def next(self) -> float:
        """Count a failed attempt; the wait before the next one."""
        delay = backoff(self.attempts, self.base, self.cap)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0

    def sleep(self, seconds: float, aborted: str) -> None:
        """A sleep interrupted by a stop (Aborted(``aborted``))."""
        sleep(seconds, self.stopping, aborted)


def retry(
    attempt: Callable[[], T],
    transient: tuple[type[BaseException], ...],
    on_retry: Callable[[BaseException, int, float], None],
    *,
    base: float = 0.1,
    cap: float = 30.0,
    stopping: Stopping = never,
    aborted: str = "stopping",
) -> T:
    """``attempt()``'s result, calling it again after a backoff while it raises one of ``transient``.

    ``on_retry(error, attempts, delay)`` is told of each failure before the wait (to log it);
    Aborted(``aborted``) if ``stopping()`` turns true during a wait.
    """
    waits = Backoff(base, cap, stopping)
    while True:
        try:
            return attempt()
        except transient as e:
            error = e
        delay = waits.next()
        on_retry(error, waits.attempts, delay)
        waits.sleep(delay, aborted)
