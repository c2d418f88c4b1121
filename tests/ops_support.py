"""Helpers of the operations tests (profiling, stats/metrics, ops/ctl): real demo servers (osmem,
Tansu) and real esproxy processes on free ports. Nothing is mocked. Kept apart from the shared
fixtures so the two can evolve independently; same approach (ops/demo-server, `python -m esproxy`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO_SERVER = REPO / "ops" / "demo-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, msg: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - polled callables may fail transiently
            last = exc
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {msg or fn}; last: {last!r}")
        time.sleep(interval)


class DemoServer:
    """ops/demo-server osmem|tansu on 127.0.0.1:<free port>."""

    def __init__(self, kind: str, log_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self._log = open(Path(log_dir) / f"{kind}-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO_SERVER), kind, self.addr],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(self._ready, timeout=20, msg=f"{kind} on {self.addr}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
        if self.kind == "osmem":
            return requests.get(self.url + "/", timeout=1).status_code == 200
        from kafka import KafkaConsumer

        c = KafkaConsumer(bootstrap_servers=self.addr, request_timeout_ms=3000)
        try:
            c.topics()
            return True
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self._log.close()


class Esproxy:
    """`python -m esproxy -c conf.yml` with cwd=workdir, output captured into workdir/<name>.log."""

    def __init__(self, config: dict, workdir: Path, name: str = "esproxy", env: Optional[dict] = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / f"{name}.yml"
        self.log_path = self.workdir / f"{name}.log"
        self.conf_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esproxy", "-c", str(self.conf_path)],
            cwd=str(self.workdir),
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(needle) < count:
            if self.proc.poll() is not None:
                pytest.fail(f"esproxy exited ({self.proc.returncode}) before logging {needle!r}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"esproxy did not log {needle!r} within {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._logf.close()
        return self.proc.returncode


# ------------------------------------------------------------------------------ Prometheus text

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf'^({_NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\}})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict:
    """Parse the Prometheus text exposition format strictly enough to catch mistakes.

    Returns {(name, frozenset(labels.items())): value}; fails on a line that is not a HELP, TYPE or
    sample line, on a sample whose family has no TYPE, or on a value that is not a float.
    """
    types: dict = {}
    samples: dict = {}
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"second TYPE line for {name}"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} without a TYPE line"
        key = (name, frozenset(_LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """The value of one sample (0.0 when absent: counters that never moved have no labelled sample)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
