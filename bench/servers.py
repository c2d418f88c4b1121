"""Every process the bench starts, on free loopback ports, and stopped again whatever happens.

:class:`Stack` owns them: the embedded clusters (osmem), the Kafka broker (Tansu), esproxy roles
with generated configs, and the bare gevent server. ``Stack.close()`` (called from a ``finally``
and on SIGTERM/SIGINT) stops each process group it started, and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO_SERVER = REPO / "ops" / "demo-server"
DEMO_PORTS = {2900, 9200, 9201, 9092}  # the demo's (`make run`): never ours
READY_TIMEOUT = 30.0


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in DEMO_PORTS:
            return port


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """One started process (its own session, so the whole group can be signalled)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        port: int = 0,
        graceful: bool = False,
        env: Optional[dict[str, str]] = None,
        side_log: Optional[Path] = None,
    ) -> None:
        self.name = name
        self.port = port
        self.graceful = graceful  # SIGTERM first (esproxy), else SIGKILL at once (demo servers)
        self.log_path = workdir / f"{name}.log"
        self.side_log = side_log  # a log file the process writes itself (the Go peer's golog file)
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=str(workdir),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        if self.side_log and self.side_log.exists():
            text += self.side_log.read_text(encoding="utf-8", errors="replace")
        return text

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def wait_for(self, ready, what: str, timeout: float = READY_TIMEOUT) -> float:
        """Poll ``ready()`` until true; seconds it took. Raises if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - self.started

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """Stop the process group; the exit code after a graceful SIGTERM, or None if it was killed."""
        rc: Optional[int] = None
        if self.alive() and self.graceful:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                rc = None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created, whatever is left of it
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()
        return rc


class Stack:
    """The processes of one bench run, in ``workdir``."""

    def __init__(self, workdir: Path, real_pair: str = "") -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.real_pair = real_pair  # "es-os" / "os-es": real engines (bench/engines.py), else the stand-ins
        self.real: tuple = ()  # (A, B, Kafka) once started; shared by every scenario

    def _real(self, index: int):
        if not self.real:
            from . import engines

            self.real = engines.start(self.real_pair)
        return self.real[index]

    def cluster(self, role: str, name: str):
        """Cluster A or B (``role``): a fresh osmem ``name``, or with real engines the one JVM of that role."""
        if self.real_pair:
            return self._real(0 if role == "A" else 1)
        return self.osmem(name)

    def broker(self):
        return self._real(2) if self.real_pair else self.tansu()

    def engines_line(self) -> str:
        if not self.real:
            return ""
        a, b, kafka = self.real
        return f"A = {a.describe()}, B = {b.describe()}, Kafka = {kafka.describe()} (real engines, tests/engines)"

    def _start(self, name: str, argv: list[str], port: int = 0, graceful: bool = False, **kw: Any) -> Proc:
        p = Proc(name, argv, self.workdir, port, graceful, **kw)
        self.procs.append(p)
        return p

    def osmem(self, name: str) -> Proc:
        port = free_port()
        p = self._start(name, [sys.executable, str(DEMO_SERVER), "osmem", f"127.0.0.1:{port}"], port)
        p.wait_for(lambda: _http_ok(p.url + "/"), "HTTP 200 on /")
        return p

    def tansu(self, name: str = "tansu") -> Proc:
        port = free_port()
        p = self._start(name, [sys.executable, str(DEMO_SERVER), "tansu", f"127.0.0.1:{port}"], port)
        p.wait_for(lambda: _tcp_open(port), "TCP listener")
        p.wait_for(lambda: _kafka_ready(f"127.0.0.1:{port}"), "Kafka metadata")
        return p

    def esproxy(self, name: str, config: dict, ready: str, count: int = 1, port: int = 0) -> Proc:
        """Start ``python -m esproxy -c <name>.yml``; wait until its log shows ``ready`` ``count`` times."""
        conf = self.workdir / f"{name}.yml"
        conf.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        p = self._start(name, [sys.executable, "-m", "esproxy", "-c", str(conf)], port, graceful=True)
        p.wait_for(lambda: p.log().count(ready) >= count, repr(ready))
        return p

    def peer(self, name: str, binary: Path, config: dict, port: int) -> Proc:
        """The Go original, ``binary -c <name>.yml``, its golog file in the run's directory; ready once it
        relays A's root (it listens after its Kafka producer is up)."""
        conf = self.workdir / f"{name}.yml"
        conf.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        golog = self.workdir / f"{name}.golog.log"
        env = {**os.environ, "GOLOG_FILE": str(golog)}  # else golog writes into /var/log/<cwd's name>/
        p = self._start(name, [str(binary), "-c", str(conf)], port, graceful=True, env=env, side_log=golog)
        p.wait_for(lambda: _http_ok(p.url + "/"), "HTTP 200 on / (A's root, relayed)")
        return p

    def bare(self, name: str, body_file: Path, nodelay: bool = False) -> Proc:
        port = free_port()
        script = Path(__file__).resolve().parent / "bare_server.py"
        argv = [sys.executable, str(script), str(port), str(body_file)] + (["nodelay"] if nodelay else [])
        p = self._start(name, argv, port)
        p.wait_for(lambda: _http_ok(p.url + "/"), "HTTP 200 on /")
        return p

    def bare_forwarder(self, name: str, upstream: str) -> Proc:
        port = free_port()
        script = Path(__file__).resolve().parent / "bare_forwarder.py"
        p = self._start(name, [sys.executable, str(script), str(port), upstream], port)
        p.wait_for(lambda: _http_ok(p.url + "/"), "HTTP 200 on / (A's root, forwarded)")
        return p

    def stop(self, p: Proc) -> Optional[int]:
        if p in self.real:  # shared by the whole run: stopped in close()
            return None
        rc = p.stop()
        if p in self.procs:
            self.procs.remove(p)
        return rc

    def close(self) -> None:
        for p in reversed(self.procs):  # the roles first, then the servers they talk to
            p.stop()
        self.procs.clear()
        for e in self.real:
            e.stop()


def _kafka_ready(bootstrap: str) -> bool:
    from kafka import KafkaConsumer

    try:
        c = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    try:
        c.topics()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        c.close()


def check_config(workdir: Path, name: str, config: dict) -> tuple[bool, str]:
    """Does ``esproxy --check`` accept this config? (accepted, its one-line answer)."""
    conf = workdir / f"{name}.yml"
    conf.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "esproxy", "-c", str(conf), "--check"], capture_output=True, text=True, timeout=60
    )
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return r.returncode == 0, lines[-1] if lines else ""
