"""What the commands that read and write whole indices share on the command line: the pace of
`--rate`, the progress line (a redrawn bar on a terminal), sizes and durations, positive numbers."""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import Any, Callable, Optional, TextIO


class Pace:
    """At most ``rate`` documents per second (None: unbounded), smoothly: each one waits its turn."""

    def __init__(self, rate: Optional[float]) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    def take(self) -> None:
        if not self.rate:
            return
        self.count += 1
        ahead = self.start + self.count / self.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


class Progress:
    """Documents read, examined and written (bytes when counted), rate and ETA: a redrawn bar on a
    terminal, else a plain line now and then. Safe to step from several threads."""

    def __init__(self, total: int, out: TextIO, interval: float = 10.0, label: str = "repair") -> None:
        self.total, self.out, self.label = total, out, label  # documents to read
        self.tty = out.isatty()
        self.interval = 0.2 if self.tty else interval
        self.read = self.examined = self.written = self.bytes = 0
        self.index = ""
        self.start = self.last = time.monotonic()
        self._lock = threading.Lock()

    def step(self, read: int = 0, examined: int = 0, written: int = 0, size: int = 0) -> None:
        with self._lock:
            self.read += read
            self.examined += examined
            self.written += written
            self.bytes += size
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self._show(now)

    def _show(self, now: float) -> None:
        rate = self.read / max(now - self.start, 1e-6)
        left = max(self.total - self.read, 0)
        eta = duration(math.ceil(left / rate)) if rate > 0 else "?"
        examined = f" {self.examined} examined," if self.examined else ""
        size = f" {megabytes(self.bytes)}," if self.bytes else ""
        text = f"{self.read}/{self.total} read,{examined} {self.written} written,{size} {rate:.0f} docs/s, ETA {eta}"
        if self.tty:
            width = 24
            filled = width * min(self.read, self.total) // max(1, self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}]"
            self.out.write(f"\r{bar} {text} {self.index[:30]:<30}")
        else:
            self.out.write(f"{self.label}: {self.index}: {text}\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self._show(time.monotonic())
            self.out.write("\n")
            self.out.flush()


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
        return value

    return parse
