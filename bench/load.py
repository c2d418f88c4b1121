"""The load generator: wrk (Debian's package) driven by ``lua/load.lua``, with its own CPU measured.

A run is either timed (``duration``) or counted (``quota`` answers in total, split over the threads;
the Lua script marks each thread that is done and the harness then interrupts wrk, whose main
thread would otherwise sleep for the whole ``-d``). Requests in flight when a thread stops are cut
off: the server may still have executed up to ``connections`` of them, so counted runs compare
the servers' own counts, not the number sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LUA = Path(__file__).resolve().parent / "lua" / "load.lua"


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing (needs root, as on these machines)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk not found; installing it with apt-get (Debian package 'wrk')", flush=True)
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(apt, stdout=subprocess.DEVNULL, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, timeout=600, check=False)
        subprocess.run(apt, stdout=subprocess.DEVNULL, timeout=600, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install wrk")
    return found


@dataclass
class LoadResult:
    label: str
    url: str
    connections: int
    threads: int
    elapsed: float  # seconds, wrk's own measure
    answered: int  # responses received (all statuses)
    statuses: dict[str, int]
    errors: dict[str, int]
    bytes_read: int
    bytes_written: int
    latency_us: dict[str, float]  # min, mean, stdev, max
    percentiles_us: list[tuple[float, int]]  # (percentile, microseconds)
    client_cpu: float  # wrk's user+system CPU seconds

    @property
    def rps(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    @property
    def client_cpu_pct(self) -> float:
        """wrk's CPU as a percentage of one core over the run."""
        return 100 * self.client_cpu / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float) -> float:
        """Latency (ms) at percentile ``p`` (the nearest one recorded at or above it)."""
        for q, us in self.percentiles_us:
            if q >= p:
                return us / 1000
        return self.percentiles_us[-1][1] / 1000

    def ok(self) -> int:
        return sum(v for k, v in self.statuses.items() if k.startswith("2"))


def run_wrk(
    label: str,
    base_url: str,
    path: str,
    workdir: Path,
    *,
    method: str = "GET",
    lines: Optional[Path] = None,
    body: Optional[Path] = None,
    content_type: str = "application/json",
    connections: int = 100,
    threads: int = 2,
    duration: float = 10.0,
    quota: int = 0,
    timeout: str = "30s",
    think_ms: int = 0,
) -> LoadResult:
    """One wrk run against ``base_url + path``. With ``quota`` (total answers), ``duration`` is only
    the upper bound of the run. With ``think_ms``, each connection waits that long after an answer
    before its next request (a paced load rather than as fast as the server answers)."""
    wrk = ensure_wrk()
    threads = max(1, min(threads, connections))
    out = workdir / f"wrk-{label}.json"
    for stale in [out, *workdir.glob(out.name + ".done.*")]:
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        BENCH_METHOD=method,
        BENCH_PATH=path,
        BENCH_LINES=str(lines or ""),
        BENCH_BODY=str(body or ""),
        BENCH_CTYPE=content_type,
        BENCH_QUOTA=str(-(-quota // threads) if quota else 0),
        BENCH_THREADS=str(threads),
        BENCH_OUT=str(out),
        BENCH_THINK_MS=str(think_ms),
    )
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", f"--timeout={timeout}"]
    argv += ["-s", str(LUA), base_url]
    with open(workdir / f"wrk-{label}.txt", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            rusage = _wait(proc, out, threads if quota else 0, deadline=time.monotonic() + duration + 30)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if not out.exists():
        raise RuntimeError(f"wrk {label} wrote no result; see {workdir / f'wrk-{label}.txt'}")
    data = json.loads(out.read_text())
    return LoadResult(
        label=label,
        url=base_url + path,
        connections=connections,
        threads=threads,
        elapsed=data["duration_us"] / 1e6,
        answered=data["answered"],
        statuses=data["statuses"],
        errors=data["errors"],
        bytes_read=data["bytes_read"],
        bytes_written=data["bytes_written"],
        latency_us=data["latency_us"],
        percentiles_us=[(float(p), int(us)) for p, us in data["percentiles_us"]],
        client_cpu=rusage.ru_utime + rusage.ru_stime,
    )


def _wait(proc: subprocess.Popen, out: Path, marks: int, deadline: float):
    """Reap wrk and return its resource usage; interrupt it once ``marks`` threads are done."""
    interrupted = False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return rusage
        done = marks and len(list(out.parent.glob(out.name + ".done.*"))) >= marks
        if not interrupted and (done or time.monotonic() > deadline):
            proc.send_signal(signal.SIGINT)  # wrk stops its threads and prints/writes its summary
            interrupted = True
        elif interrupted and time.monotonic() > deadline + 30:
            proc.kill()
        time.sleep(0.01)
