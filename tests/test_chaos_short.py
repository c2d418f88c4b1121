"""The short chaos run of `make test`: 3 randomized fault schedules on the stand-ins (osmem, Tansu), each with its
own servers, 15 s of load and 4 faults; the checker's verdict must be clean (tests/chaos, docs/reliability.md).
`make chaos` runs the long one on the real engines. A failure prints the seed and the fault timeline:
`python -m tests.chaos --seed N --schedules 1` replays it."""

from __future__ import annotations

import pytest
from chaos.runner import Settings, run_campaign

# Seeds whose schedules, together, take in the faults of every process: pre-fork workers and the proxy killed,
# the replay stopped during its group join, A and B paused, a full spool disk, a slow A.
SEEDS = [4, 7, 14]


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_schedule_on_the_stand_ins(seed, tmp_path):
    (result,) = run_campaign([seed], "stand-ins", tmp_path, Settings(load=15.0, clients=4, converge=60.0))
    print(result.report())
    assert result.ok, result.report()
    assert result.verdict.acknowledged > 100  # the load ran
