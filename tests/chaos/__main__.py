"""`python -m tests.chaos --seed N --schedules K --engines real|stand-ins`: K schedules, seeds N..N+K-1."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import runner
from .nemesis import NETEM_SKIPPED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="the first schedule's seed (the next ones: +1, +2...)")
    p.add_argument("--schedules", type=int, default=3)
    p.add_argument("--engines", choices=("stand-ins", "real"), default="stand-ins")
    p.add_argument("--real-pair", choices=("es-os", "os-es"), default="es-os", help="with --engines real: A-B")
    p.add_argument("--load", type=float, default=30.0, help="seconds of load and faults per schedule")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--max-ops", type=int, default=1500, help="operations per client at most")
    p.add_argument("--converge", type=float, default=120.0, help="seconds B is given to catch up after the heal")
    p.add_argument("--workdir", type=Path, default=None, help="logs and spools (default: a new directory in /tmp)")
    p.add_argument("--table", type=Path, default=None, help="append the results' table (markdown) to this file")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="esproxy-chaos-"))
    settings = runner.Settings(args.load, args.clients, args.max_ops, args.converge)
    seeds = list(range(args.seed, args.seed + args.schedules))
    print(
        f"chaos: {len(seeds)} schedule(s), seeds {seeds[0]}..{seeds[-1]}, engines {args.engines}, "
        f"{args.load:.0f} s of load each; logs in {workdir}",
        flush=True,
    )
    print(NETEM_SKIPPED, flush=True)
    began = time.monotonic()
    results = runner.run_campaign(
        seeds, args.engines, workdir, settings, args.real_pair, echo=lambda s: print(s, flush=True)
    )
    table = "\n".join([runner.TABLE_HEAD, *(r.row() for r in results)])
    failed = [r.seed for r in results if not r.ok]
    print(
        f"\n{table}\n\n{len(results) - len(failed)} of {len(results)} schedule(s) passed in "
        f"{time.monotonic() - began:.0f} s" + (f"; failed seeds: {failed}" if failed else "")
    )
    if args.table:
        with open(args.table, "a") as f:
            f.write(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
