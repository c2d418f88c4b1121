"""The nemesis: a schedule of faults drawn from the seed, then carried out at their times.

The schedule is a pure function of (seed, load seconds): the same seed draws the same faults, times and
parameters on any machine. A fault this machine cannot do (a broker restart on the stand-ins, a full spool
disk without tmpfs) is still drawn, and carried out as "skipped: <reason>". Faults on the same target wait for
each other; faults on different targets may overlap.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .world import World, signal_group, wait_for

# kind -> target (faults of one target run one after the other)
KINDS = {
    "kill-proxy": "proxy",
    "term-proxy": "proxy",
    "kill-worker": "proxy",
    "term-worker": "proxy",
    "kill-replay": "replay",
    "term-replay": "replay",
    "kill-replay-joining": "replay",
    "term-replay-joining": "replay",
    "pause-a": "a",
    "pause-b": "b",
    "pause-broker": "broker",
    "restart-broker": "broker",
    "fill-spool": "spool",
    "slow-a": "a",
}
# After a fault on A (paused, slow), A runs this long before the next one: a write A holds past the primary's
# timeout is settled (read back from A) that timeout plus 5 s after it was sent, which assumes that A is done with
# it by then (docs/operations.md, "Sizing the queue and the spool"). Two pauses back to back held writes longer
# (seed 15 on the real engines, docs/reliability.md): outside what the proxy promises, so the schedules keep to it.
A_RECOVERY = 10.0
NETEM_SKIPPED = (
    "tc netem: skipped. On this machine a qdisc on the host's loopback would slow every process on it (other"
    " helpers' tests, CI), and a network namespace of the test's own needs a veth pair with non-loopback"
    " addresses, which the machine's rules forbid; slow-a (a delaying TCP relay between the proxy and A)"
    " stands in for it"
)


@dataclass
class Fault:
    at: float  # seconds after the load started
    kind: str
    params: dict = field(default_factory=dict)
    began: Optional[float] = None  # seconds after the load started, as carried out
    ended: Optional[float] = None
    note: str = ""

    def line(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        done = f"ran {self.began:.1f}-{self.ended:.1f}s" if self.began is not None and self.ended is not None else ""
        return f"  t={self.at:5.1f}s  {self.kind:20} {params:28} {done:16} {self.note}".rstrip()


def draw(seed: int, load_seconds: float) -> list[Fault]:
    """The schedule of a seed: 1 fault per ~7 s of load (at least 3), at uniform times, with their parameters."""
    rng = random.Random(f"{seed}/nemesis")
    count = max(3, int(load_seconds / 7))
    faults = []
    for _ in range(count):
        kind = rng.choice(sorted(KINDS))
        at = round(rng.uniform(2.0, max(3.0, load_seconds - 4.0)), 1)
        params: dict = {}
        if kind in ("kill-proxy", "term-proxy", "kill-replay", "term-replay", "restart-broker"):
            params["down"] = round(rng.uniform(0.5, 5.0), 1)
        elif kind.endswith("-joining"):
            params["after"] = round(rng.uniform(0.0, 1.5), 2)  # after the join began
            params["down"] = round(rng.uniform(0.5, 3.0), 1)
        elif kind.endswith("-worker"):
            params["pick"] = rng.randrange(2)
        elif kind.startswith("pause-"):
            params["for"] = round(rng.uniform(2.0, 8.0), 1)
        elif kind == "fill-spool":
            params["for"] = round(rng.uniform(2.0, 8.0), 1)
        elif kind == "slow-a":
            params["delay"] = round(rng.uniform(0.2, 1.5), 2)
            params["for"] = round(rng.uniform(3.0, 10.0), 1)
        faults.append(Fault(at, kind, params))
    return sorted(faults, key=lambda f: f.at)


class Nemesis:
    def __init__(self, world: World, faults: list[Fault], t0: float) -> None:
        self.world, self.faults, self.t0 = world, faults, t0
        self.locks = {target: threading.Lock() for target in set(KINDS.values())}
        self.threads = [threading.Thread(target=self._run, args=(f,), daemon=True) for f in faults]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    def now(self) -> float:
        return time.time() - self.t0

    def _run(self, fault: Fault) -> None:
        time.sleep(max(0.0, fault.at - self.now()))
        with self.locks[KINDS[fault.kind]]:
            fault.began = self.now()
            try:
                fault.note = getattr(self, "do_" + fault.kind.replace("-", "_"))(**fault.params) or ""
            except Exception as e:  # noqa: BLE001 - a fault that could not be carried out is noted, not fatal
                fault.note = f"failed: {type(e).__name__}: {e}"
            fault.ended = self.now()
            if KINDS[fault.kind] == "a":
                time.sleep(A_RECOVERY)

    # ------------------------------------------------------------------ the proxy

    def _restart_proxy(self, sig: int, down: float) -> str:
        w = self.world
        w.stop(w.proxy, sig)
        rc = w.proxy.proc.returncode if w.proxy else None
        time.sleep(down)
        up = w.start_proxy()
        return f"exit {rc}" + ("" if up else "; NOT listening again within 60 s")

    def do_kill_proxy(self, down: float) -> str:
        return self._restart_proxy(signal.SIGKILL, down)

    def do_term_proxy(self, down: float) -> str:
        return self._restart_proxy(signal.SIGTERM, down)

    def _worker(self, sig: int, pick: int) -> str:
        w = self.world
        pids = w.worker_pids()
        victim = pids[pick % len(pids)]
        os.kill(victim, sig)
        replaced = wait_for(lambda: victim not in w.worker_pids() and len(w.worker_pids()) == 2, 20)
        return f"worker {victim}" + ("" if replaced else "; NOT replaced within 20 s")

    def do_kill_worker(self, pick: int) -> str:
        return self._worker(signal.SIGKILL, pick)

    def do_term_worker(self, pick: int) -> str:
        return self._worker(signal.SIGTERM, pick)

    # ------------------------------------------------------------------ the replay

    def _restart_replay(self, sig: int, down: float) -> str:
        w = self.world
        w.stop(w.replay, sig)
        rc = w.replay.proc.returncode if w.replay else None
        time.sleep(down)
        up = w.start_replay(timeout=30)
        return f"exit {rc}" + ("" if up else "; no `assigned partitions` within 30 s")

    def do_kill_replay(self, down: float) -> str:
        return self._restart_replay(signal.SIGKILL, down)

    def do_term_replay(self, down: float) -> str:
        return self._restart_replay(signal.SIGTERM, down)

    def _joining(self, sig: int, after: float, down: float) -> str:
        """A restart (SIGTERM, start again), then sig while the new replay joins its group, then a start."""
        w = self.world
        w.stop(w.replay, signal.SIGTERM)
        w.start_replay(wait="subscribed to", timeout=30)
        time.sleep(after)
        joined = "assigned partitions" in w.replay.log()
        w.stop(w.replay, sig)
        rc = w.replay.proc.returncode
        time.sleep(down)
        up = w.start_replay(timeout=30)
        when = "after its join completed" if joined else "during its join"
        return f"signalled {when}, exit {rc}" + ("" if up else "; no `assigned partitions` within 30 s")

    def do_kill_replay_joining(self, after: float, down: float) -> str:
        return self._joining(signal.SIGKILL, after, down)

    def do_term_replay_joining(self, after: float, down: float) -> str:
        return self._joining(signal.SIGTERM, after, down)

    # ------------------------------------------------------------------ engines

    def _pause(self, target: str, seconds: float) -> str:
        pid = self.world.engines.pids()[target]
        signal_group(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            signal_group(self.world.engines.pids()[target], signal.SIGCONT)
        return ""

    def do_pause_a(self, **p: float) -> str:
        return self._pause("a", p["for"])

    def do_pause_b(self, **p: float) -> str:
        return self._pause("b", p["for"])

    def do_pause_broker(self, **p: float) -> str:
        return self._pause("broker", p["for"])

    def do_restart_broker(self, down: float) -> str:
        reason = self.world.engines.broker_restart_skipped
        if reason:
            return f"skipped: {reason}"
        began = time.monotonic()
        self.world.engines.restart_broker(down)
        return f"up again after {time.monotonic() - began:.1f} s"

    # ------------------------------------------------------------------ the spool's disk, the network to A

    def do_fill_spool(self, **p: float) -> str:
        w = self.world
        if w.spool_full_skipped:
            return f"skipped: {w.spool_full_skipped}"
        ballast = w.spool_dir / "ballast"
        written = 0
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            chunk = b"\0" * 65536
            while True:
                written += os.write(fd, chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        time.sleep(p["for"])
        ballast.unlink(missing_ok=True)
        return f"disk full for {p['for']} s ({written // 1024} KiB of ballast)"

    def do_slow_a(self, delay: float, **p: float) -> str:
        self.world.relay.delay = delay
        try:
            time.sleep(p["for"])
        finally:
            self.world.relay.delay = 0.0
        return ""
