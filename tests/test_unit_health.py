"""The health verdict (esproxy.admin.health) and the figures it reads: ages in the spool and the queue,
produce failures by reason, dead-letter times (pure logic, real files and greenlets, no servers)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import gevent

from esproxy.admin.health import problems
from esproxy.clients.refusals import ProxyDeadLetters
from esproxy.core.bean import Bean
from esproxy.core.config import HealthSettings
from esproxy.core.schema import Duration
from esproxy.core.stats import Stats
from esproxy.proxy.fanout import Fanout
from esproxy.proxy.spool import Spool
from esproxy.replay.groupwatch import Unconsumed, observe

SETTINGS = HealthSettings(
    maxShipDelay=Duration(2),
    maxProduceFailing=Duration(2),
    maxReplayStall=Duration(2),
    maxReplayLag=Duration(5),
    deadLetterWindow=Duration(10),
    maxUnassigned=Duration(30),
)


def _checks(**figures) -> list[str]:
    base = dict(now=1000.0, ship_age=0.0, backlog=0, produce_failing={}, lags=[], dead_letter_times=[])
    return [p.check for p in problems(SETTINGS, **{**base, **figures})]


def _lag(stalled: float = 0.0, behind: float = 0.0) -> dict:
    return {
        "group": "g",
        "topic": "t",
        "partition": 0,
        "lag": 1,
        "lag_seconds": behind,
        "stalled_seconds": stalled,
        "oldest_offset": 7,
    }


def test_each_check_fires_above_its_setting_only() -> None:
    assert _checks() == []
    assert _checks(ship_age=1.9, backlog=3) == []
    assert _checks(ship_age=2.5, backlog=3) == ["ship_delay"]
    assert _checks(lags=[_lag(stalled=1.0, behind=4.0)]) == []
    assert _checks(lags=[_lag(stalled=3.0, behind=6.0)]) == ["replay_stalled", "replay_lag"]
    assert _checks(dead_letter_times=[985.0]) == []  # older than the window: healthy again
    assert _checks(dead_letter_times=[985.0, 995.0]) == ["dead_letters"]


def test_producer_failing_needs_waiting_writes_or_recent_failures() -> None:
    failing_long = {"t": (990.0, 999.5, "KafkaTimeoutError")}
    assert _checks(produce_failing=failing_long) == ["producer_failing"]  # failures keep coming
    once = {"t": (990.0, 990.0, "refused")}  # one write refused for good, moved aside, nothing waits
    assert _checks(produce_failing=once) == []
    assert _checks(produce_failing=once, backlog=1) == ["producer_failing"]  # it still waits: no success since
    assert _checks(produce_failing={"t": (999.0, 999.5, "x")}) == []  # failing for 1s only


def test_zero_turns_a_check_off() -> None:
    off = dataclasses.replace(SETTINGS, **{f.name: Duration(0) for f in dataclasses.fields(HealthSettings)})
    found = problems(
        off,
        now=1000.0,
        ship_age=1e6,
        backlog=5,
        produce_failing={"t": (0.0, 999.0, "x")},
        lags=[_lag(stalled=1e6, behind=1e6)],
        dead_letter_times=[999.0],
    )
    assert found == []


def test_stats_keep_failures_by_reason_and_dead_letter_times() -> None:
    s = Stats()
    s.produce_failed("t", "KafkaTimeoutError")
    s.produce_failed("t", "KafkaTimeoutError")
    s.produce_failed("t", reason="MessageSizeTooLargeError")
    s.produce_failed("u")
    assert s.kafka_failed == {("t", "KafkaTimeoutError"): 2, ("t", "MessageSizeTooLargeError"): 1, ("u", "unknown"): 1}
    first, last, reason = s.produce_failing["t"]
    assert first <= last and reason == "MessageSizeTooLargeError"
    s.produced("t")
    assert list(s.produce_failing) == ["u"]  # a success ends the topic's failing streak
    before = time.monotonic()
    s.dead_letters += 1
    s.dead_letters += 2
    assert s.dead_letters == 3
    assert len(s.dead_letter_times) == 3 and all(t >= before for t in s.dead_letter_times)


def _bean(i: int) -> Bean:
    return Bean("PUT", f"/i/_doc/{i}", b'{"n":%d}' % i, index="i")


def test_spool_age_of_the_oldest_unshipped_write_and_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, fsync=False)
    spool.open()
    assert spool.oldest_age() == 0.0
    spool.done(spool.intent("PUT", "/i/_doc/1", b""), [_bean(1)])
    gevent.sleep(0.2)
    spool.done(spool.intent("PUT", "/i/_doc/2", b""), [_bean(2)])
    assert spool.oldest_age() >= 0.2
    spool.ack(1)
    assert spool.oldest_age() < 0.2
    spool.close()
    # Recovered beans are as old as their segment's last append (its mtime): a lower bound.
    segment = next(tmp_path.glob("*.log"))
    an_hour_ago = time.time() - 3600
    os.utime(segment, (an_hour_ago, an_hour_ago))
    again = Spool(tmp_path, max_bytes=10_000, fsync=False)
    again.open()
    assert 3599 < again.oldest_age() < 3700
    again.ack(1)
    assert again.oldest_age() == 0.0
    again.close()


def test_queue_age_counts_from_put_until_the_producer_took_the_write(tmp_path: Path) -> None:
    dead_letters = ProxyDeadLetters(tmp_path / "deadletters.jsonl")
    fanout = Fanout(chan_size=4, kafkas=[], rests=[], spool=None, dead_letters=dead_letters)  # durability: none
    fanout.put(_bean(1))
    gevent.sleep(0.1)
    assert fanout.unshipped() == 1 and fanout.oldest_unshipped_age() >= 0.1
    fanout.start()
    gevent.sleep(0.05)
    assert fanout.unshipped() == 0 and fanout.oldest_unshipped_age() == 0.0
    fanout.stop(timeout=1)


def test_lane_waiting_is_the_oldest_record_not_applied() -> None:
    from collections import namedtuple

    from gevent.event import Event
    from gevent.lock import Semaphore

    from esproxy.replay.lanes import Lane

    Record = namedtuple("Record", "offset timestamp value")
    applies_up_to = [1]  # the cluster takes offsets up to this one, then stops short

    def apply(records, stop):
        done = [r.offset for r in records if r.offset <= applies_up_to[0]]
        return done[-1] if done else None

    lane = Lane("t-0", apply, Semaphore(1), Event(), lambda: False, max_records=100, max_bytes=10_000)
    assert lane.waiting is None
    lane.push([Record(o, 1_000_000 + o, b"x") for o in range(4)])
    assert lane.waiting == (0, 1000.0)  # Kafka timestamps are in ms
    gevent.sleep(0.01)
    assert lane.applied == 1 and lane.failed_at == 2
    assert lane.waiting == (2, 1000.002)  # stopped short: offset 2 still waits
    lane.retry()
    applies_up_to[0] = 9
    lane.push([Record(o, 1_000_000 + o, b"x") for o in range(2, 4)])
    gevent.sleep(0.01)
    assert lane.applied == 3 and lane.waiting is None
    lane.close()


_BASE = dict(now=1000.0, ship_age=0.0, backlog=0, produce_failing={}, lags=[], dead_letter_times=[])


def _unassigned(partition: int, waiting: float, lag: int = 4, group: str = "g") -> dict:
    return {
        "group": group,
        "topic": "t",
        "partition": partition,
        "lag": lag,
        "committed": 2,
        "waiting_seconds": waiting,
    }


def test_replay_unassigned_names_every_partition_past_the_setting_with_its_lag() -> None:
    assert _checks(unassigned=[_unassigned(0, 29.0)]) == []
    found = problems(
        SETTINGS,
        now=1000.0,
        ship_age=0.0,
        backlog=0,
        produce_failing={},
        lags=[],
        dead_letter_times=[],
        unassigned=[_unassigned(0, 31.0, lag=5), _unassigned(1, 10.0), _unassigned(2, 45.0, lag=7)],
    )
    assert [p.check for p in found] == ["replay_unassigned"]
    reason = found[0].reason
    assert "t-0 (lag 5), t-2 (lag 7)" in reason and "t-1" not in reason
    assert "45.0s" in reason and "group g" in reason and "health.maxUnassigned: 30.0s" in reason
    off = dataclasses.replace(SETTINGS, maxUnassigned=Duration(0))
    assert problems(off, **{**_BASE, "unassigned": [_unassigned(0, 999.0)]}) == []


def test_unconsumed_partitions_age_while_their_committed_offset_stands_still() -> None:
    end = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7}
    first = observe({}, 100.0, end, {("t", 0): 4, ("t", 1): 5, ("t", 2): None})
    # t-1 caught up (committed >= end, as on a broker whose end offset counts batches); never committed = from 0
    assert first == {("t", 0): Unconsumed(4, 100.0, 6), ("t", 2): Unconsumed(None, 100.0, 7)}
    second = observe(first, 105.0, {**end, ("t", 0): 12}, {("t", 0): 4, ("t", 1): 5, ("t", 2): 3})
    # t-0: more writes, nothing committed: it keeps its age; t-2: a replay of the group committed: age 0 again
    assert second == {("t", 0): Unconsumed(4, 100.0, 8), ("t", 2): Unconsumed(3, 105.0, 4)}
    # a partition this replay now holds is no longer read (not in end): forgotten
    assert observe(second, 110.0, {("t", 2): 7}, {("t", 2): 3}) == {("t", 2): Unconsumed(3, 105.0, 4)}
    assert observe(second, 110.0, {("t", 2): 7}, {("t", 2): 7}) == {}


def test_a_lane_whose_replay_lands_part_of_its_records_is_not_stalled() -> None:
    """A rate-limited hand-off goes as several sends (replay/writes.py calls progressed after each): the lane's
    progress_at follows each part, so a slow but moving replay never reads as stalled; one that lands nothing
    keeps its old progress_at."""
    import time
    from collections import namedtuple

    from gevent.event import Event
    from gevent.lock import Semaphore

    from esproxy.replay.lanes import Lane, progressed

    Record = namedtuple("Record", "offset timestamp value")
    seen: list[float] = []

    def apply(records, stop):
        for _ in range(3):  # three parts, each landing after a pause (the rate limit's wait)
            gevent.sleep(0.05)
            progressed(stop)
            seen.append(lane.progress_at)
        return records[-1].offset

    lane = Lane("t-0", apply, Semaphore(1), Event(), lambda: False, max_records=100, max_bytes=10_000)
    lane.push([Record(o, 1_000_000 + o, b"x") for o in range(4)])
    started = lane.progress_at
    gevent.sleep(0.2)
    assert len(seen) == 3 and started < seen[0] < seen[1] < seen[2] <= time.monotonic()
    assert lane.applied == 3
    lane.close()

    stuck = Lane("t-1", lambda records, stop: None, Semaphore(1), Event(), lambda: False, 100, 10_000)
    stuck.push([Record(0, 1_000_000, b"x")])
    before = stuck.progress_at
    gevent.sleep(0.05)
    assert stuck.progress_at == before and stuck.applied is None
    progressed(lambda: False)  # a replay outside a lane (a plain callable): nothing to tell, no error
    stuck.close()
