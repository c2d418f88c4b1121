"""What a schedule runs against: clusters A and B, the broker (stand-ins or real engines), the proxy (2 pre-fork
workers, write-ahead spool on a small tmpfs) and the replay, each restartable; what the nemesis acts on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import requests
from support.basics import free_port
from support.configs import replay_config
from support.process import Esproxy
from support.servers import DemoServer

from .relay import DelayRelay

# Health thresholds of both roles, short so that a fault shows within a schedule; checker.HEALTH_GRACE is
# measured against the longest of them (maxUnassigned, plus the 5 s between the replay's group readings).
PROXY_HEALTH = {"maxShipDelay": "5s", "maxProduceFailing": "5s"}
REPLAY_HEALTH = {"maxReplayStall": "5s", "maxReplayLag": "20s", "maxUnassigned": "10s"}
PRIMARY_TIMEOUT = "5s"  # a write A holds longer is answered 504 (unknown outcome) and settled 10 s later
SPOOL_TMPFS = "16m"
PARTITIONS = 3


def wait_for(fn: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll fn() until it is truthy (exceptions count as no); False on timeout (never fails a test by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if fn():
                return True
        except Exception:  # noqa: BLE001 - polled: not yet
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Engines:
    """A, B and the broker: their addresses, their process groups, what can be done to them."""

    a_url: str
    b_url: str
    kafka: str
    broker_restart_skipped: Optional[str] = None  # why the broker cannot be restarted here, if it cannot
    description = ""

    def pids(self) -> dict[str, int]:
        raise NotImplementedError

    def restart_broker(self, down: float) -> None:
        raise NotImplementedError

    def resume_all(self) -> None:
        for pid in self.pids().values():
            signal_group(pid, signal.SIGCONT)

    def close(self) -> None:
        pass


class StandIns(Engines):
    """osmem for A and B, Tansu for the broker: started for one schedule, so that pausing them harms no one."""

    broker_restart_skipped = "Tansu keeps its log in memory only: a restarted Tansu is an empty broker"
    description = "osmem (A, B) + Tansu"

    def __init__(self, workdir: Path) -> None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.servers = [DemoServer("osmem", workdir), DemoServer("osmem", workdir), DemoServer("tansu", workdir)]
        self.a_url, self.b_url, self.kafka = self.servers[0].url, self.servers[1].url, self.servers[2].addr

    def pids(self) -> dict[str, int]:
        return {name: s.proc.pid for name, s in zip(("a", "b", "broker"), self.servers)}

    def close(self) -> None:
        self.resume_all()
        for s in self.servers:
            s.stop()


class RealEngines(Engines):
    """Apache Kafka, Elasticsearch and OpenSearch (tests/engines), started once for a whole campaign;
    each schedule keeps to its own topic, group and indices."""

    def __init__(self, workdir: Path, pair: str = "es-os") -> None:
        import engines

        if not engines.tools_present():
            raise SystemExit("--engines real needs java, javac and mvn on PATH")
        engines.kill_leftovers()
        es, os_ = "elasticsearch", "opensearch"
        kinds = ["kafka", es, os_] if pair == "es-os" else ["kafka", os_, es]
        self.running = engines.start_all(kinds, [workdir / f"real-{k}" for k in ("kafka", "a", "b")])
        self.broker, a, b = self.running
        self.a_url, self.b_url, self.kafka = a.url, b.url, self.broker.addr
        self.description = "; ".join(f"{role}={e.describe()}" for role, e in zip(("kafka", "A", "B"), self.running))

    def pids(self) -> dict[str, int]:
        return {name: e.proc.pid for name, e in zip(("broker", "a", "b"), self.running)}

    def restart_broker(self, down: float) -> None:
        signal_group(self.broker.proc.pid, signal.SIGCONT)
        self.broker.stop()  # SIGTERM: a controlled shutdown; its log dir stays
        time.sleep(down)
        self.broker.start()  # the same ports, the same log dir

    def close(self) -> None:
        self.resume_all()
        for e in self.running:
            e.stop()


def mount_tmpfs(path: Path, size: str) -> Optional[str]:
    """Mount a tmpfs of ``size`` on path; None, or why it could not be done."""
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return "no mount command"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {(done.stderr or done.stdout).strip()}"
    return None


class World:
    """One schedule's topic, group, indices and esproxy processes, on the given engines."""

    def __init__(self, engines: Engines, workdir: Path, tag: str) -> None:
        self.engines, self.workdir, self.tag = engines, Path(workdir), tag
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topic, self.group = f"{tag}-topic", f"{tag}-group"
        self.doc_indices = [f"{tag}-d0", f"{tag}-d1"]
        self.auto_index, self.canary_index = f"{tag}-auto", f"{tag}-canary"
        self.port, self.admin_port = free_port(), free_port()
        self.proxy_url = f"http://127.0.0.1:{self.port}"
        self.replay_url = f"http://127.0.0.1:{self.admin_port}"
        self.spool_dir = self.workdir / "spool"
        self.spool_full_skipped = mount_tmpfs(self.spool_dir, SPOOL_TMPFS)
        self.relay = DelayRelay(engines.a_url.removeprefix("http://"))
        self.proxy: Optional[Esproxy] = None
        self.replay: Optional[Esproxy] = None
        self.starts = {"proxy": 0, "replay": 0}

    @property
    def indices(self) -> list[str]:
        return [*self.doc_indices, self.auto_index, self.canary_index]

    # ------------------------------------------------------------------ esproxy processes

    def proxy_config(self) -> dict:
        return {
            "workers": 2,
            "health": PROXY_HEALTH,
            "spool": {"dir": str(self.spool_dir)},
            "source": {"proxies": [{"port": self.port, "host": "127.0.0.1", "durability": "spool"}]},
            "destination": {
                "primaries": [{"url": f"http://{self.relay.addr}", "timeout": PRIMARY_TIMEOUT}],
                "kafkas": [{"topic": self.topic, "brokers": [self.engines.kafka]}],
            },
        }

    def replay_config(self) -> dict:
        conf = replay_config(self.engines.kafka, self.topic, self.group, self.engines.b_url)
        return {**conf, "health": REPLAY_HEALTH, "admin": {"port": self.admin_port}}

    def start_proxy(self, timeout: float = 60) -> bool:
        self.starts["proxy"] += 1
        self.proxy = Esproxy(self.proxy_config(), self.workdir, name=f"proxy{self.starts['proxy']}")
        return wait_for(lambda: "proxy listening on" in self.proxy.log() or self.proxy.proc.poll() is not None, timeout)

    def start_replay(self, wait: str = "assigned partitions", timeout: float = 60) -> bool:
        self.starts["replay"] += 1
        self.replay = Esproxy(self.replay_config(), self.workdir, name=f"replay{self.starts['replay']}")
        if not wait:
            return True
        return wait_for(lambda: wait in self.replay.log() or self.replay.proc.poll() is not None, timeout)

    @staticmethod
    def alive(proc: Optional[Esproxy]) -> bool:
        return proc is not None and proc.proc.poll() is None

    def stop(self, proc: Optional[Esproxy], sig: int, timeout: float = 40) -> None:
        """Send sig to the process (SIGKILL: its whole group); wait until it is gone (SIGKILL after timeout)."""
        if proc is None or proc.proc.poll() is not None:
            return
        if sig == signal.SIGKILL:
            signal_group(proc.pid, sig)
        else:
            proc.proc.send_signal(sig)
        try:
            proc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.proc.wait(timeout=10)
        proc.terminate()  # gone already: closes its log

    def worker_pids(self) -> list[int]:
        return list(requests.get(f"{self.proxy_url}/_esproxy/stats", timeout=5).json()["workers"])

    # ------------------------------------------------------------------ the schedule's life

    def start(self) -> None:
        from support.kafka import create_topic

        create_topic(self.engines.kafka, self.topic, partitions=PARTITIONS)
        if not self.start_replay():
            raise RuntimeError(f"the replay did not join its group:\n{self.replay.log_tail()}")
        if not self.start_proxy() or not self.alive(self.proxy):
            raise RuntimeError(f"the proxy did not start:\n{self.proxy.log_tail()}")
        # The indices through the proxy with explicit mappings: their creation is replayed as sent, so B's
        # mappings are A's (what the checker compares).
        props = {f: {"type": "long"} for f in ("c", "v", "cnt", "ubq", "n")}
        props.update({f: {"type": "keyword"} for f in ("w", "p", "tok")})
        for index in self.indices:
            body = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": {"properties": props}}
            r = requests.put(f"{self.proxy_url}/{index}", json=body, timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"PUT /{index}: {r.status_code} {r.text[:300]}")

    def heal(self, timeout: float = 90) -> list[str]:
        """Undo whatever a fault left: every engine resumed, the delay off, both roles running. What it did."""
        done = []
        self.engines.resume_all()
        self.relay.delay = 0.0
        ballast = self.spool_dir / "ballast"
        if ballast.exists():
            ballast.unlink()
            done.append("ballast removed")
        if not self.alive(self.proxy):
            self.start_proxy(timeout)
            done.append("proxy started")
        if not self.alive(self.replay):
            self.start_replay(timeout=timeout)
            done.append("replay started")
        return done

    def close(self) -> None:
        self.engines.resume_all()
        for proc in (self.proxy, self.replay):
            if proc is not None:
                proc.terminate()
        self.relay.close()
        if self.spool_full_skipped is None:
            subprocess.run(["umount", "-l", str(self.spool_dir)], capture_output=True, check=False)
