"""replay/ratelimit.py: documents and bytes per second, paid before each send, on a fake clock."""

from __future__ import annotations

import pytest

from esproxy.core.retry import Aborted
from esproxy.replay.ratelimit import RateLimit


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def send_all(limit: RateLimit, t: FakeTime, sizes: list[int], merged: int) -> list[tuple[float, int, int]]:
    """Send documents of these sizes in merged batches of ``merged``, each batch split as the replay
    does; the (time, docs, bytes) of every send."""
    sent = []
    for at in range(0, len(sizes), merged):
        for run in limit.split(sizes[at : at + merged], lambda n: n):
            limit.take(len(run), sum(run))
            sent.append((t.now, len(run), sum(run)))
            t.now += 0.001  # the send itself
    return sent


def most_in_window(sent: list[tuple[float, int, int]], window: float, field: int) -> int:
    return max(sum(s[field] for s in sent if start <= s[0] < start + window) for start, *_ in sent)


@pytest.mark.parametrize("merged", [1, 10, 50, 1000])
def test_docs_per_second_holds_in_every_window_whatever_the_merged_batch(merged):
    t = FakeTime()
    limit = RateLimit(docs_per_second=50, clock=t.clock, sleep=t.sleep)
    start = t.now
    sent = send_all(limit, t, [100] * 600, merged)
    assert sum(s[1] for s in sent) == 600
    assert max(s[1] for s in sent) <= 10  # 0.2 s of 50/s
    assert sent[-1][0] - start >= 600 / 50 - 0.2 - 1e-6  # the last send is paid for before it goes
    assert sent[-1][0] - start <= 600 / 50  # (plus the fake sends' own 1 ms each)
    for window in (0.5, 1.0, 2.0, 5.0):
        assert most_in_window(sent, window, 1) <= 50 * (window + 0.2) + 1e-6, window


def test_bytes_per_second_split_and_held_and_the_stricter_limit_wins():
    t = FakeTime()
    limit = RateLimit(docs_per_second=1000, bytes_per_second=10_000, clock=t.clock, sleep=t.sleep)
    start = t.now
    sizes = [100 + (i % 7) * 30 for i in range(500)]
    sent = send_all(limit, t, sizes, 1000)
    assert max(s[2] for s in sent) <= 2000  # 0.2 s of 10,000 bytes/s
    assert sent[-1][0] - start >= sum(sizes) / 10_000 - 0.2 - 1e-6
    for window in (1.0, 2.0):
        assert most_in_window(sent, window, 2) <= 10_000 * (window + 0.2) + 1e-6, window


def test_split_keeps_the_order_and_at_least_one_item_per_send():
    limit = RateLimit(docs_per_second=50, bytes_per_second=1000)  # at most 10 documents and 200 bytes a send
    items = [50, 50, 50, 50, 500, 10, 10, 150, 60, 5]
    runs = limit.split(items, lambda n: n)
    assert [n for run in runs for n in run] == items
    assert runs == [[50, 50, 50, 50], [500], [10, 10, 150], [60, 5]]  # the one bigger than 200 bytes goes alone
    assert RateLimit(docs_per_second=50).split(list(range(25)), lambda n: 1) == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    assert RateLimit(docs_per_second=2).split([1, 2, 3], lambda n: 1) == [[1], [2], [3]]  # 0.4 documents: one


def test_idle_time_earns_only_a_short_burst():
    t = FakeTime()
    limit = RateLimit(docs_per_second=10, burst=0.2, clock=t.clock, sleep=t.sleep)
    limit.take(1, 0)
    t.now += 3600  # an idle hour
    waited = [limit.take(1, 0) for _ in range(10)]
    assert waited[:2] == [0, 0]  # the 0.2 s burst: two documents at once
    assert sum(waited) == pytest.approx(1.0 - 0.2)  # each of the others waits for its own 0.1 s


def test_a_send_bigger_than_the_burst_waits_until_its_cost_accrued():
    t = FakeTime()
    limit = RateLimit(bytes_per_second=1000, clock=t.clock, sleep=t.sleep)
    assert limit.take(1, 1200) == pytest.approx(1.2 - 0.2)  # after idle time: its cost less the burst
    assert limit.take(1, 100) == pytest.approx(0.1)  # the next one pays for itself only
    t.now += 10
    assert limit.take(1, 200) == 0  # a burst's worth goes at once


def test_unlimited_never_waits_nor_splits_and_stop_interrupts():
    unlimited = RateLimit()
    assert unlimited.take(10**6, 10**9) == 0
    items = list(range(5000))
    assert unlimited.split(items, lambda n: 10**6)[0] is items
    t = FakeTime()
    limit = RateLimit(docs_per_second=1, clock=t.clock, sleep=t.sleep)
    limit.take(100, 0)
    with pytest.raises(Aborted):
        limit.take(1, 0, stopping=lambda: t.now > 1010)
