"""The short chaos run of `make test`: 3 randomized fault schedules on the stand-ins (osmem, Tansu), each with its
own servers; the checker's verdict must be clean (tests/chaos, docs/reliability.md). `make chaos` runs the long
one on the real engines. A failure prints the seed and the fault timeline: `python -m tests.chaos --seed N
--schedules 1 --load L` replays it."""

from __future__ import annotations

import pytest
from chaos.runner import Settings, run_campaign

SCHEDULES = [
    # (seed, seconds of load). Seed 7 at 30 s is the schedule that found the full-spool-disk bugs (a dead shipper,
    # a torn record inside a segment, a 500, a write A applied never recorded): docs/reliability.md, bug 1.
    (7, 30.0),  # fill-spool, kill-replay-joining, kill-replay, kill-replay-joining
    (38, 15.0),  # slow-a, pause-broker, kill-proxy
    (40, 15.0),  # pause-b, term-worker, pause-a
]


@pytest.mark.parametrize("seed, load", SCHEDULES)
def test_chaos_schedule_on_the_stand_ins(seed, load, tmp_path):
    (result,) = run_campaign([seed], "stand-ins", tmp_path, Settings(load=load, converge=60.0), echo=lambda s: None)
    print(result.report())
    assert result.ok, result.report()
    assert result.verdict.acknowledged > 100  # the load ran
