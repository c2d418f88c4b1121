"""Profiling on SIGUSR1, as the Go original does it, in the process's working directory:

    echo 5m > jj.cpu; kill -USR1 <pid>   CPU profile for 5 minutes -> cpu.profile (pstats format)
    touch jj.mem;     kill -USR1 <pid>   allocations by line        -> mem.profile (text)

``jj.cpu`` / ``jj.mem`` are removed once read. ``jj.cpu`` holds a duration (``30s``, ``5m``,
``1h``); empty, or no trigger file at all, means "until the next USR1" (a toggle), stopped anyway
after :data:`DEFAULT_CPU_SECONDS`. ``jj.mem`` may hold the tracing window (default
:data:`DEFAULT_MEM_SECONDS`); when the process runs with ``PYTHONTRACEMALLOC=N`` allocations are
traced since start and ``mem.profile`` is written at once.

One ``cProfile.Profile`` enabled from a greenlet sees every greenlet of the thread: greenlet (>= 2)
carries the thread's profile function across switches (verified by tests/test_ops_profiling.py,
which finds ``ProxyApp._handle`` in the profile). Time spent in a greenlet that switched away is
charged to whatever ran meanwhile, so read ``tottime`` rather than ``cumtime`` for blocking calls.
The dump (pstats snapshot and marshal) and the allocation statistics run in gevent's thread pool,
so the hub keeps serving requests meanwhile.

With ``workers: N`` the master reads the trigger files and passes the duration to its workers
(esproxy.proxy.prefork); each worker writes ``cpu.profile.<pid>`` / ``mem.profile.<pid>`` and the master
merges them into ``cpu.profile`` with :func:`merge_profiles` (``pstats.Stats.add``) and appends
them to ``mem.profile``.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Optional, Protocol

from esproxy.core.schema import format_duration, parse_duration

log = logging.getLogger("esproxy.profile")

CPU_TRIGGER, MEM_TRIGGER = "jj.cpu", "jj.mem"
CPU_OUT, MEM_OUT = "cpu.profile", "mem.profile"
DEFAULT_CPU_SECONDS = 300.0  # a toggled profile nobody stops ends after 5 minutes
DEFAULT_MEM_SECONDS = 10.0
MEM_TOP = 50


def _short(seconds: float) -> str:
    """``300`` -> ``5m``, ``30`` -> ``30s`` (the seed's spelling), else Go's duration format."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return format_duration(seconds)


def _read_trigger(path: Path) -> Optional[str]:
    """The trigger file's text (stripped), removing the file; None if there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s: %s", path, e)
        text = ""
    try:
        path.unlink()
    except OSError as e:
        log.warning("cannot remove %s: %s", path, e)
    return text


def _duration(text: str, what: str, default: float) -> Optional[float]:
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        log.warning("%s: %r is not a duration (like 30s, 5m, 1h); using %s", what, text, _short(default))
        return default
    return seconds if seconds > 0 else None


class Workers(Protocol):
    """A pre-fork master's workers as the profiler drives them (esproxy.proxy.prefork.WorkerPool, handed over
    by esproxy.roles): the admin floor names no proxy module, the proxy's pool merges with :func:`merge_profiles`."""

    def command(self, op: str, *args: object) -> None:
        """Send every worker ``cpu_start(seconds)``, ``cpu_stop()`` or ``mem(seconds)``."""
        ...

    def gather_cpu(self, own: Optional[Path]) -> None:
        """Stop the workers' CPU profiles and merge them with ``own`` into cpu.profile."""
        ...

    def gather_mem(self, own: Optional[Path]) -> None:
        """Append the workers' memory profiles to ``own``."""
        ...


class Profiler:
    def __init__(self, workdir: Optional[str] = None, out_name: str = CPU_OUT, mem_name: str = MEM_OUT) -> None:
        self.workdir = Path(workdir or os.getcwd())
        self.out_name = out_name
        self.mem_name = mem_name
        self.workers: Optional[Workers] = None  # a pre-fork master profiles its workers too
        self._cpu: Optional[cProfile.Profile] = None
        self._cpu_timer = None
        self._mem_busy = False

    @property
    def cpu_running(self) -> bool:
        return self._cpu is not None

    def on_signal(self, signum: int = 0) -> None:
        """SIGUSR1 (run by gevent in a greenlet, not in the signal handler itself)."""
        import gevent

        mem_text = _read_trigger(self.workdir / MEM_TRIGGER)
        if mem_text is not None:
            gevent.spawn(self.collect_mem, _duration(mem_text, MEM_TRIGGER, DEFAULT_MEM_SECONDS))
        cpu_text = _read_trigger(self.workdir / CPU_TRIGGER)
        if cpu_text is None and mem_text is not None:
            return  # `touch jj.mem; kill -USR1`: memory only
        if self._cpu is not None:
            self.stop_cpu()  # the toggle: a USR1 while a profile runs ends it
            return
        seconds = _duration(cpu_text or "", CPU_TRIGGER, DEFAULT_CPU_SECONDS)
        self.start_cpu(seconds)

    def start_cpu(self, seconds: Optional[float]) -> None:
        import gevent

        self._cpu = cProfile.Profile()
        self._cpu.enable()
        if self.workers is not None:
            self.workers.command("cpu_start", seconds)
        log.info("cpu.profile started")
        if seconds is None:
            log.info(
                "send USR1 again to stop; after %s, cpu.profile will be generated",
                _short(DEFAULT_CPU_SECONDS),
            )
            seconds = DEFAULT_CPU_SECONDS
        else:
            log.info("after %s, cpu.profile will be generated", _short(seconds))
        self._cpu_timer = gevent.spawn_later(seconds, self.stop_cpu)

    def stop_cpu(self) -> Optional[Path]:
        """Stop the running CPU profile and write it; blocks only the calling greenlet."""
        import gevent

        prof, self._cpu = self._cpu, None
        if prof is None:
            return None
        prof.disable()
        timer, self._cpu_timer = self._cpu_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        path: Optional[Path] = self.workdir / self.out_name
        try:
            gevent.get_hub().threadpool.apply(_dump_cpu, (prof, path))
            log.info("cpu.profile collected: %s", path)
        except OSError as e:
            log.error("cpu.profile: cannot write %s: %s", path, e)
            path = None
        if self.workers is not None:
            self.workers.gather_cpu(path)
        return path

    def collect_mem(self, seconds: Optional[float]) -> Optional[Path]:
        import gevent

        if self._mem_busy:
            log.warning("mem.profile already being collected; ignored")
            return None
        self._mem_busy = True
        started_here = False
        try:
            if self.workers is not None:
                self.workers.command("mem", seconds)
            if not tracemalloc.is_tracing():
                seconds = seconds or DEFAULT_MEM_SECONDS
                tracemalloc.start(1)
                started_here = True
                log.info("mem.profile started")
                log.info("after %s, mem.profile will be generated", _short(seconds))
                gevent.sleep(seconds)
            path = self.workdir / self.mem_name
            gevent.get_hub().threadpool.apply(_dump_mem, (path, started_here))
            log.info("mem.profile collected: %s", path)
            if self.workers is not None:
                self.workers.gather_mem(path)
            return path
        except OSError as e:
            log.error("mem.profile: cannot write: %s", e)
            return None
        finally:
            if started_here:
                tracemalloc.stop()
            self._mem_busy = False


def _dump_cpu(prof: cProfile.Profile, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    prof.dump_stats(str(tmp))
    os.replace(tmp, path)


def _dump_mem(path: Path, window: bool) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>"),
        )
    )
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    scope = "allocated during the tracing window and still alive" if window else "traced since start, still alive"
    lines = [
        f"# mem.profile of pid {os.getpid()} at {when}: memory {scope}",
        f"# total {total / 1024:.1f} KiB in {sum(s.count for s in stats)} blocks; top {MEM_TOP} lines:",
        f"# {'size KiB':>10} {'blocks':>8} {'avg B':>7}  location",
    ]
    for s in stats[:MEM_TOP]:
        frame = s.traceback[0]
        avg = s.size // s.count if s.count else 0
        lines.append(f"  {s.size / 1024:10.1f} {s.count:8d} {avg:7d}  {frame.filename}:{frame.lineno}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def merge_profiles(paths: list[Path], out: Path) -> Path:
    """Merge per-process pstats files (``cpu.profile.<pid>``) into one (pre-fork workers)."""
    if not paths:
        raise ValueError("no profiles to merge")
    merged = pstats.Stats(str(paths[0]))
    for p in paths[1:]:
        merged.add(str(p))
    tmp = out.with_name(out.name + ".tmp")
    merged.dump_stats(str(tmp))
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------- `esproxy profile`


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="esproxy profile",
        description="Print the hottest functions of a cpu.profile (pstats format); optionally draw a call graph.",
    )
    p.add_argument("profile", nargs="+", help="cpu.profile file(s); several are merged")
    p.add_argument("--top", type=int, default=25, help="how many functions to print (default 25)")
    p.add_argument(
        "--sort", default="tottime", choices=("tottime", "cumulative", "ncalls"), help="ordering (default tottime)"
    )
    p.add_argument("--svg", metavar="FILE", help="also write a call graph of the top functions (needs Graphviz `dot`)")
    args = p.parse_args(argv)
    try:
        stats = pstats.Stats(*args.profile, stream=sys.stdout)
    except (OSError, TypeError, ValueError, EOFError) as e:
        print(f"esproxy profile: cannot read {' '.join(args.profile)}: {e}", file=sys.stderr)
        return 1
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    if args.svg:
        dot = shutil.which("dot")
        if dot is None:
            print("esproxy profile: Graphviz `dot` not found; install graphviz for --svg", file=sys.stderr)
            return 1
        source = call_graph_dot(pstats.Stats(*args.profile), args.top)
        done = subprocess.run([dot, "-Tsvg", "-o", args.svg], input=source.encode(), check=False)
        if done.returncode != 0:
            return 1
        print(f"call graph of the top {args.top} functions: {args.svg}")
    return 0


def call_graph_dot(stats: pstats.Stats, top: int) -> str:
    """A Graphviz graph: the ``top`` functions by own time, edges caller -> callee among them."""
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    chosen = sorted(raw, key=lambda f: raw[f][2], reverse=True)[:top]
    ids = {f: f"n{i}" for i, f in enumerate(chosen)}
    lines = ["digraph profile {", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    for f in chosen:
        _cc, nc, tt, ct, _callers = raw[f]
        name = f"{os.path.basename(f[0])}:{f[1]}\\n{f[2]}".replace('"', "'")
        label = f"{name}\\nown {tt:.3f}s ({100 * tt / total:.1f}%)\\ncum {ct:.3f}s, {nc} calls"
        lines.append(f'  {ids[f]} [label="{label}"];')
    for f in chosen:
        for caller, data in raw[f][4].items():
            if caller in ids:
                lines.append(f'  {ids[caller]} -> {ids[f]} [label="{data[0]}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
