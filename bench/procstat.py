"""What /proc says about a process: resident memory, CPU time, TCP connections to a port."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

_TICK = os.sysconf("SC_CLK_TCK")
_ESTABLISHED = "01"


def _status_mb(pid: int, key: str) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb(pid: int) -> Optional[float]:
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> Optional[float]:
    """The process's peak resident memory so far (VmHWM), whatever the samples saw."""
    return _status_mb(pid, "VmHWM:")


def _stat(pid: int) -> Optional[list[str]]:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, the state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """Live child processes (a pre-fork master's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[1] == str(pid):
                out.append(int(entry))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and of its live children so far (0 once it is gone)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        fields = _stat(p)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)
    return total


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def connections_to(pid: int, port: int) -> int:
    """ESTABLISHED TCP connections the process holds to remote ``port`` (like netstat -atpn | grep)."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == _ESTABLISHED and int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                        count += 1
        except OSError:
            continue
    return count


@dataclass
class Sample:
    t: float
    rss_mb: Optional[float]
    upstream: int


@dataclass
class Sampler:
    """Samples a process's RSS and its connections to ``upstream_port`` every ``interval`` seconds."""

    pid: int
    upstream_port: int
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _take(self) -> Sample:
        return Sample(time.monotonic() - self._t0, rss_mb(self.pid), connections_to(self.pid, self.upstream_port))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self._take())

    def start(self) -> Sample:
        first = self._take()
        self.samples.append(first)
        self._thread.start()
        return first

    def stop(self) -> Sample:
        self._stop.set()
        self._thread.join(timeout=5)
        last = self._take()
        self.samples.append(last)
        return last

    def middle(self) -> Sample:
        half = self.samples[-1].t / 2
        return min(self.samples, key=lambda s: abs(s.t - half))

    def upstream_during(self) -> list[int]:
        return [s.upstream for s in self.samples[1:-1]] or [s.upstream for s in self.samples]
