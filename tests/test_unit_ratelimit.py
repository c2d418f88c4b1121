"""ratelimit.py: documents and bytes per second, on a fake clock."""

from __future__ import annotations

import pytest

from esproxy.ratelimit import RateLimit
from esproxy.retry import Aborted


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("batch", [1, 10, 50])
def test_docs_per_second_holds_within_ten_percent(batch):
    t = FakeTime()
    limit = RateLimit(docs_per_second=100, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(2000 // batch):
        limit.take(batch, 0)
        t.now += 0.001  # the send itself
    elapsed = t.now - start + batch / 100  # the last send's own share
    assert abs(2000 / elapsed - 100) <= 10, elapsed
    assert limit.throttled == pytest.approx(t.now - start - 0.001 * (2000 // batch), abs=1e-6)


def test_bytes_per_second_and_the_stricter_limit_wins():
    t = FakeTime()
    limit = RateLimit(docs_per_second=1000, bytes_per_second=1000, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(100):
        limit.take(1, 100)  # 100 bytes each: 10 per second by bytes, 1000 by docs
    assert 9 <= t.now - start <= 11


def test_idle_time_earns_only_a_short_burst():
    t = FakeTime()
    limit = RateLimit(docs_per_second=10, burst=0.2, clock=t.clock, sleep=t.sleep)
    limit.take(1, 0)
    t.now += 3600  # an idle hour
    waited = [limit.take(1, 0) for _ in range(10)]
    assert sum(waited) == pytest.approx(0.9 - 0.2)  # nine sends paid for after it, less the 0.2 s burst
    assert waited[0] == 0


def test_unlimited_never_waits_and_stop_interrupts():
    assert RateLimit().take(10**6, 10**9) == 0
    t = FakeTime()
    limit = RateLimit(docs_per_second=1, clock=t.clock, sleep=t.sleep)
    limit.take(100, 0)
    with pytest.raises(Aborted):
        limit.take(1, 0, stopping=lambda: t.now > 1010)
