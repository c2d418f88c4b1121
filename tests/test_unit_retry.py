"""The retry loop: transient failures are retried with growing waits, a stop ends the waiting."""

from __future__ import annotations

import time

import gevent
import pytest

from esproxy.core.retry import Aborted, Backoff, backoff, interruptible, retry, sleep


def test_backoff_grows_within_its_cap() -> None:
    for attempt in range(12):
        delay = backoff(attempt, base=0.5, cap=10)
        assert 0.5 <= delay <= min(10, 0.5 * 2**attempt)


def test_backoff_starts_over_after_progress() -> None:
    waits = Backoff(base=0.01, cap=0.01 * 2**10)
    for _ in range(5):
        waits.next()
    assert waits.attempts == 5
    waits.reset()
    assert waits.next() == pytest.approx(0.01) and waits.attempts == 1


def test_retry_returns_once_the_transient_failures_stop() -> None:
    outcomes: list[object] = [OSError("down"), OSError("still down"), "up"]
    told: list[tuple[str, int]] = []

    def attempt() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = retry(attempt, (OSError,), lambda e, n, delay: told.append((str(e), n)), base=0.001, cap=0.002)
    assert result == "up"
    assert told == [("down", 1), ("still down", 2)]


def test_retry_lets_other_errors_through() -> None:
    def attempt() -> None:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        retry(attempt, (OSError,), lambda e, n, delay: None)


def test_a_stop_ends_the_wait_with_aborted() -> None:
    def attempt() -> None:
        raise OSError("down")

    started = time.monotonic()
    with pytest.raises(Aborted, match="gave up: stopping") as raised:
        retry(
            attempt,
            (OSError,),
            lambda e, n, delay: None,
            base=30,
            cap=60,
            stopping=lambda: True,
            aborted="gave up: stopping",
        )
    assert time.monotonic() - started < 5  # not the 30 s wait
    assert raised.value.__context__ is None  # the outage is logged by on_retry, not chained to the abort


def test_sleep_without_a_stop_sleeps() -> None:
    started = time.monotonic()
    sleep(0.05, lambda: False, "unused")
    assert time.monotonic() - started >= 0.05


def test_interruptible_gives_the_calls_result_or_its_error() -> None:
    def down() -> None:
        raise OSError("down")

    assert interruptible(lambda: "up", lambda: False, "stopping") == "up"
    with pytest.raises(OSError, match="down"):
        interruptible(down, lambda: False, "stopping")


def test_a_stop_interrupts_a_blocking_call() -> None:
    """As kafka-python's constructor waiting for a broker: the caller gets Aborted, the call is killed."""
    ended: list[str] = []

    def blocking() -> None:
        try:
            gevent.sleep(30)  # cooperative, as every wait is in a monkey-patched role
            ended.append("returned")
        except gevent.GreenletExit:
            ended.append("killed")
            raise

    stop_at = time.monotonic() + 0.3
    with pytest.raises(Aborted, match="stopping before Kafka"):
        interruptible(blocking, lambda: time.monotonic() > stop_at, "stopping before Kafka")
    assert ended == ["killed"]
