"""Randomized fault schedules with a history checker (issue 25), the Jepsen way: a generator of
operations (generator.py), a nemesis of faults (nemesis.py), a checker of the recorded history
(checker.py); world.py starts the clusters, the broker and both roles, runner.py runs one schedule.

    python -m tests.chaos --seed 1 --schedules 3 --engines stand-ins
    make chaos      # 20 schedules on Apache Kafka + Elasticsearch + OpenSearch (tests/engines)

A schedule is fully determined by its seed: the faults, their times and parameters, every client's
operations. A failing schedule prints its seed and its fault timeline. docs/reliability.md has the
fault list, the checker's rules and the runs' tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # tests/support and tests/engines, as conftest.py makes them importable
    sys.path.insert(0, str(TESTS))
