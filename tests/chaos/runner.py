"""One schedule end to end: the world up, the clients and the monitor running, the nemesis's faults at their
times; then the heal, B given time to catch up, and the checker's verdict. A campaign is several schedules."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import requests

from .checker import Snapshot, Verdict, check, differences, snapshot
from .generator import Client, Features, History
from .monitor import Monitor
from .nemesis import Fault, Nemesis, draw
from .world import Engines, RealEngines, StandIns, World

TABLE_HEAD = (
    "| seed | faults | operations | acknowledged | unknown | lost | divergent | duplicated | health truthful |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---|"
)


@dataclass
class Settings:
    load: float = 30.0  # seconds of load (and of faults) per schedule
    clients: int = 6
    max_ops: int = 1500  # per client
    converge: float = 120.0  # seconds B is given to catch up after the heal


@dataclass
class Result:
    seed: int
    faults: list[Fault]
    verdict: Verdict
    workdir: Path
    heal: list[str] = field(default_factory=list)
    error: str = ""
    features: Features = field(default_factory=Features)

    @property
    def ok(self) -> bool:
        return not self.error and self.verdict.ok

    def row(self) -> str:
        v = self.verdict
        kinds = ", ".join(f.kind + (" (skipped)" if f.note.startswith("skipped") else "") for f in self.faults)
        truthful = "yes" if not v.health_lies else f"**no** ({len(v.health_lies)})"
        return (
            f"| {self.seed} | {kinds} | {v.operations} | {v.acknowledged} | {v.unknown} | {len(v.lost)} |"
            f" {len(v.divergent)} | {len(v.duplicated)} | {truthful} |"
        )

    def report(self) -> str:
        v = self.verdict
        lines = [f"schedule seed={self.seed}: {'ok' if self.ok else 'FAILED'} (logs in {self.workdir})"]
        lines.append(
            f"fault timeline (t = seconds after the load started; replay it with --seed {self.seed} --schedules 1):"
        )
        lines += [f.line() for f in self.faults]
        if self.heal:
            lines.append(f"  heal: {', '.join(self.heal)}")
        f = self.features
        lines.append(
            f"  scripted counters {'on' if f.incr else 'off'}, _update_by_query "
            + ("with a script" if f.ubq_script else "without a script" if f.ubq else "off")
            + " (what A and B run)"
        )
        caught_up = "NEVER" if v.converged_after is None else f"after {v.converged_after:.0f} s"
        lines.append(
            f"  {v.operations} operations: {v.acknowledged} acknowledged, {v.refused} refused, {v.unknown} unknown;"
            f" B equal to A {caught_up}; health not 200 in {v.unhealthy} of {v.samples} samples"
        )
        if self.error:
            lines.append(f"  ERROR: {self.error}")
        for name in ("lost", "divergent", "duplicated", "health_lies"):
            found = getattr(v, name)
            if found:
                lines.append(f"  {name}: {len(found)}")
                lines += [f"    {x}" for x in found[:12]]
                if len(found) > 12:
                    lines.append(f"    ... {len(found) - 12} more")
        return "\n".join(lines)


def features(a_url: str, b_url: str, index: str) -> Features:
    """What A and B run (on a probe index of their own): painless, `_update_by_query`."""
    found = []
    for url in (a_url, b_url):
        requests.put(f"{url}/{index}/_doc/probe", json={"cnt": 0}, params={"refresh": "true"}, timeout=30)
        script = {"script": {"source": "ctx._source.cnt = 1"}}
        painless = requests.post(f"{url}/{index}/_update/probe", json=script, timeout=30).status_code == 200
        ubq = requests.post(f"{url}/{index}/_update_by_query", json={}, timeout=30).status_code == 200
        requests.delete(f"{url}/{index}", timeout=30)
        found.append((painless, ubq))
    (a_painless, a_ubq), (b_painless, b_ubq) = found
    return Features(incr=a_painless, ubq=a_ubq and b_ubq, ubq_script=a_ubq and b_ubq and a_painless and b_painless)


def converge(world: World, timeout: float) -> tuple[Optional[float], Snapshot, Snapshot]:
    """Compare A and B until they are equal (or timeout): the seconds it took (None: never) and the snapshots."""
    began = time.monotonic()
    while True:
        try:
            a = snapshot(world.engines.a_url, world.indices)
            b = snapshot(world.engines.b_url, world.indices)
            if not differences(a, b):
                return time.monotonic() - began, a, b
        except requests.RequestException:
            a = b = Snapshot({}, {})
        if time.monotonic() - began > timeout:
            return None, a, b
        time.sleep(2)


def run_schedule(seed: int, engines: Engines, workdir: Path, settings: Settings) -> Result:
    tag = f"chaos-{seed}-{uuid.uuid4().hex[:4]}"
    world = World(engines, workdir, tag)
    faults = draw(seed, settings.load)
    verdict = Verdict()
    result = Result(seed, faults, verdict, workdir)
    try:
        world.start()
        result.features = features(engines.a_url, engines.b_url, f"{tag}-probe")
        history = History()
        monitor = Monitor(world.proxy_url, world.replay_url, engines.b_url, world.canary_index)
        t0 = monitor.t0 = time.time()
        until = t0 + settings.load
        clients = [
            Client(
                c,
                seed,
                world.proxy_url,
                world.doc_indices,
                world.auto_index,
                history,
                until,
                settings.max_ops,
                result.features,
            )
            for c in range(settings.clients)
        ]
        nemesis = Nemesis(world, faults, t0)
        monitor.start()
        for c in clients:
            c.start()
        nemesis.start()
        for c in clients:
            c.join(timeout=max(1.0, until - time.time()) + 60)
        nemesis.join()
        monitor.writing = False
        result.heal = world.heal()
        converged, a, b = converge(world, settings.converge)
        monitor.stop()
        result.verdict = check(history.ops, a, b, world.doc_indices, world.auto_index, monitor)
        result.verdict.converged_after = converged
    except Exception as e:  # noqa: BLE001 - a schedule that could not run is reported, the campaign goes on
        result.error = f"{type(e).__name__}: {e}"
    finally:
        world.close()
    return result


def run_campaign(
    seeds: list[int], engines: str, workdir: Path, settings: Settings, pair: str = "es-os", echo=print
) -> list[Result]:
    workdir.mkdir(parents=True, exist_ok=True)
    real: Optional[RealEngines] = RealEngines(workdir, pair) if engines == "real" else None
    if real:
        echo(f"real engines: {real.description}")
    results = []
    try:
        for seed in seeds:
            schedule_dir = workdir / f"seed-{seed}"
            stand_ins = None if real else StandIns(schedule_dir)
            try:
                result = run_schedule(seed, real or stand_ins, schedule_dir, settings)
            finally:
                if stand_ins:
                    stand_ins.close()
            results.append(result)
            echo(result.report())
            echo(TABLE_HEAD.splitlines()[0])
            echo(result.row())
    finally:
        if real:
            real.close()
    return results
