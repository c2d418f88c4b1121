"""SIGUSR1 profiling as the seed documents it: jj.cpu -> cpu.profile, jj.mem -> mem.profile."""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from support.basics import free_port, wait_until
from support.process import Esproxy
from support.servers import DemoServer

from esproxy.admin import profiling


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    srv = DemoServer("osmem", tmp_path_factory.mktemp("osmem"))
    yield srv.url
    srv.stop()


@pytest.fixture
def proxy(cluster, tmp_path):
    started = []

    def start(env=None):
        port = free_port()
        conf = {
            "source": {"proxies": [{"port": port, "host": "127.0.0.1"}]},
            "destination": {"primaries": [{"url": cluster}]},
        }
        p = Esproxy(conf, tmp_path / f"wd{len(started)}", env=env)
        started.append(p)
        p.wait_log("proxy listening on")
        p.url = f"http://127.0.0.1:{port}"
        return p

    yield start
    for p in started:
        p.terminate()


class Traffic:
    """Writes through the proxy from a thread until stopped; records every status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list = []
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s = requests.Session()
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                r = s.put(f"{self.url}/prof/_doc/{i}", json={"n": i}, timeout=5)
                self.statuses.append(r.status_code)
            except requests.RequestException as e:
                self.errors.append(e)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _functions(path) -> set:
    return {(os.path.basename(f[0]), f[2]) for f in pstats.Stats(str(path)).stats}


def test_cpu_profile_with_duration(proxy):
    p = proxy()
    wd = p.workdir
    traffic = Traffic(p.url)
    try:
        wait_until(lambda: len(traffic.statuses) >= 5, timeout=10, msg="traffic")
        (wd / "jj.cpu").write_text("2s\n")
        os.kill(p.pid, signal.SIGUSR1)
        p.wait_log("cpu.profile started", timeout=10)
        served_before = len(traffic.statuses)
        p.wait_log("cpu.profile collected", timeout=15)
        served_during = len(traffic.statuses) - served_before
    finally:
        traffic.stop()
    log = p.log()
    assert "after 2s, cpu.profile will be generated" in log
    assert not (wd / "jj.cpu").exists()
    assert (wd / "cpu.profile").exists()
    funcs = _functions(wd / "cpu.profile")
    # the request handler runs in the server's greenlets, not in the one that enabled the profiler
    assert ("handler.py", "_handle") in funcs, sorted(funcs)[:50]
    assert ("elastic.py", "request") in funcs
    # requests kept being served while profiling and while the profile was written
    assert served_during > 0
    assert traffic.errors == []
    assert set(traffic.statuses) <= {200, 201}, set(traffic.statuses)


def test_cpu_profile_toggle(proxy):
    p = proxy()
    wd = p.workdir
    (wd / "jj.cpu").write_text("")  # no duration: the next USR1 stops it
    os.kill(p.pid, signal.SIGUSR1)
    p.wait_log("cpu.profile started", timeout=10)
    p.wait_log("send USR1 again to stop; after 5m, cpu.profile will be generated", timeout=5)
    assert not (wd / "jj.cpu").exists()
    for i in range(20):
        assert requests.put(f"{p.url}/toggle/_doc/{i}", json={"i": i}, timeout=5).status_code in (200, 201)
    assert "cpu.profile collected" not in p.log()
    os.kill(p.pid, signal.SIGUSR1)  # no trigger file at all: toggles off
    p.wait_log("cpu.profile collected", timeout=10)
    assert ("handler.py", "_handle") in _functions(wd / "cpu.profile")


def test_mem_profile_window(proxy):
    p = proxy()
    wd = p.workdir
    (wd / "jj.mem").write_text("1s")
    os.kill(p.pid, signal.SIGUSR1)
    p.wait_log("after 1s, mem.profile will be generated", timeout=10)
    for i in range(10):
        requests.put(f"{p.url}/mem/_doc/{i}", json={"i": i}, timeout=5)
    p.wait_log("mem.profile collected", timeout=15)
    assert not (wd / "jj.mem").exists()
    text = (wd / "mem.profile").read_text()
    assert text.startswith("# mem.profile of pid")
    assert len([line for line in text.splitlines() if not line.startswith("#")]) > 0
    assert "cpu.profile" not in p.log()  # jj.mem alone starts no CPU profile


def test_mem_profile_traced_since_start(proxy):
    p = proxy(env={"PYTHONTRACEMALLOC": "1"})
    (p.workdir / "jj.mem").touch()  # exactly as in the seed
    os.kill(p.pid, signal.SIGUSR1)
    p.wait_log("mem.profile collected", timeout=15)
    assert "mem.profile will be generated" not in p.log()  # written at once
    assert "traced since start" in (p.workdir / "mem.profile").read_text()


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_merge_profiles_and_cli(tmp_path):
    paths = []
    for i in range(2):
        prof = cProfile.Profile()
        prof.enable()
        _busy(10000)
        prof.disable()
        path = tmp_path / f"cpu.profile.{1000 + i}"
        prof.dump_stats(str(path))
        paths.append(path)
    out = profiling.merge_profiles(paths, tmp_path / "cpu.profile")
    merged = pstats.Stats(str(out)).stats
    busy = [v for k, v in merged.items() if k[2] == "_busy"]
    assert busy and busy[0][1] == 2  # called once in each process

    r = subprocess.run(
        [sys.executable, "-m", "esproxy", "profile", str(out), "--top", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "_busy" in r.stdout and "tottime" in r.stdout
    dot = profiling.call_graph_dot(pstats.Stats(str(out)), 10)
    assert dot.startswith("digraph") and "_busy" in dot


def test_short_durations():
    assert [profiling._short(s) for s in (2, 30, 300, 3600, 1.5)] == ["2s", "30s", "5m", "1h", "1.5s"]
