"""`workers: N`: pre-forked proxy workers share the port; the master records every captured write.

Each test ends with what an operator relies on: B converges to A (`esproxy compare`), every
acknowledged write reached Kafka, signals reach the workers.
"""

from __future__ import annotations

import os
import pstats
import re
import signal
import time

import pytest
import requests
from support.basics import wait_until
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal
from support.kafka import count_messages, create_topic
from support.load import Writer


def workers_config(port: int, a: str, kafka: str, topic: str, workers: int = 2, **proxy: object) -> dict:
    # A short primary timeout: a dead worker's writes are settled once it is over (plus a grace).
    conf = proxy_config(port, a, kafka, topic, timeout="5s")
    conf["workers"] = workers
    conf["source"]["proxies"][0].update(proxy)
    return conf


def worker_pids(base: str) -> list[int]:
    return requests.get(f"{base}/_esproxy/stats", timeout=5).json()["workers"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.real
def test_two_workers_serve_one_port_and_b_converges(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic = names.topic()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    proc = esproxy(workers_config(port, a, kafka, topic, accesslog=True))
    base = f"http://127.0.0.1:{port}"
    pids = worker_pids(base)
    assert len(pids) == 2 and proc.pid not in pids
    # Ready (the master's `proxy listening on`) only once every worker serves: a worker up first
    # would take every connection opened meanwhile. Lines of different processes are written in
    # groups, so compare their timestamps, not their order in the file.
    proc.wait_log("worker serving", count=2)
    serving = re.findall(r"^(\S+ \S+) \[INFO \] \d+ --- \[[^]]*\] \[-\]  : worker serving", proc.log(), re.M)
    listening = re.findall(r"^(\S+ \S+) \[INFO \] \d+ --- \[[^]]*\] \[-\]  : proxy listening on", proc.log(), re.M)
    assert len(serving) == 2 and len(listening) == 1 and max(serving) <= listening[0], (serving, listening)
    writers = [Writer(base, names.index(f"w{i}"), 120) for i in range(4)]
    for w in writers:
        w.start()
    # A new connection per request: the kernel hands them to whichever worker accepts first.
    index = names.index("fresh")
    for i in range(40):
        r = requests.put(f"{base}/{index}/_doc/{i}", json={"i": i}, headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 201, r.text
    for w in writers:
        w.join(timeout=60)
        assert w.failed == 0 and len(w.acked) == 120
    served = {int(pid) for pid in re.findall(r"\] (\d+) --- \[[^]]*\] \[-\]  : access log:", proc.log())}
    assert served == set(pids), f"access log lines came from {served}, workers are {pids}"
    assert "no differences" in compare_until_equal(a, b, names.pattern())
    # The master adds up its workers' counters (each reports every second).
    total = 4 * 120 + 40
    wait_until(
        lambda: (
            sum(
                n
                for key, n in requests.get(f"{base}/_esproxy/stats", timeout=5).json()["proxy"]["requests"].items()
                if key.split()[0] in ("PUT", "POST")
            )
            == total
        ),
        timeout=10,
        msg=f"{total} writes counted in /_esproxy/stats",
    )


@pytest.mark.real
def test_a_killed_worker_is_replaced_and_nothing_is_lost(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    proc = esproxy(workers_config(port, a, kafka, topic, accesslog=True))
    base = f"http://127.0.0.1:{port}"
    pids = worker_pids(base)
    writers = [Writer(base, f"{index}-{i}", 100000) for i in range(6)]
    for w in writers:
        w.start()
    wait_until(lambda: sum(len(w.acked) for w in writers) >= 150, timeout=30, msg="writes flowing")
    # The worker that answered last is busy: kill it mid-load, with writes in flight at A.
    victim = int(re.findall(r"\] (\d+) --- \[[^]]*\] \[-\]  : access log:", proc.log())[-1])
    survivor = next(pid for pid in pids if pid != victim)
    os.kill(victim, signal.SIGKILL)
    proc.wait_log("died (exit SIGKILL); starting another", timeout=10)
    wait_until(lambda: len(worker_pids(base)) == 2 and victim not in worker_pids(base), timeout=15, msg="respawn")
    assert survivor in worker_pids(base)
    before = sum(len(w.acked) for w in writers)
    wait_until(lambda: sum(len(w.acked) for w in writers) >= before + 150, timeout=30, msg="writes flowing again")
    for w in writers:
        w.stop = True
    for w in writers:
        w.join(timeout=15)
    # Whatever A applied, acknowledged or cut off by the kill, reaches B: the master settled the
    # dead worker's writes in flight from A's documents.
    assert "no differences" in compare_until_equal(a, b, names.pattern())


@pytest.mark.real
def test_sigterm_reaches_the_workers_and_everything_acknowledged_is_in_kafka(esproxy, es_a, kafka, names, port):
    topic, index = names.topic(), names.index()
    proc = esproxy(workers_config(port, es_a, kafka, topic))
    base = f"http://127.0.0.1:{port}"
    pids = worker_pids(base)
    writers = [Writer(base, f"{index}-{i}", 60) for i in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    acked = sum(len(w.acked) for w in writers)
    assert acked == 180
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=30) == 0, proc.log_tail()
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()
    for pid in pids:
        assert re.search(rf"\] {pid} --- \[[^]]*\] \[-\]  : worker stopped", proc.log()), proc.log_tail()
        assert not alive(pid)
    assert count_messages(kafka, topic) == acked


def test_usr1_profiles_the_workers_into_one_cpu_profile(esproxy, es_a, kafka, names, port, tmp_path):
    proc = esproxy(workers_config(port, es_a, kafka, names.topic()))
    base = f"http://127.0.0.1:{port}"
    worker_pids(base)
    (tmp_path / "jj.cpu").write_text("2s")
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait_log("after 2s, cpu.profile will be generated")
    index = names.index()
    deadline = time.monotonic() + 2.5
    i = 0
    while time.monotonic() < deadline:  # traffic for the workers to profile
        requests.put(f"{base}/{index}/_doc/{i}", json={"i": i}, headers={"Connection": "close"}, timeout=10)
        i += 1
    proc.wait_log("cpu.profile: merged the profiles of 2 worker(s)", timeout=30)
    functions = {f"{name}" for (_file, _line, name) in pstats.Stats(str(tmp_path / "cpu.profile")).stats}
    # Only workers handle requests: their profiles are in the master's cpu.profile.
    assert "_handle" in functions
    assert not list(tmp_path.glob("cpu.profile.*")), list(tmp_path.glob("cpu.profile.*"))


@pytest.mark.parametrize("value", [0, -1])
def test_workers_must_be_positive(tmp_path, value):
    import subprocess
    import sys

    import yaml

    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"workers": value, **proxy_config(9, "http://127.0.0.1:1/")}))
    r = subprocess.run([sys.executable, "-m", "esproxy", "-c", str(conf), "--check"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "workers" in r.stderr and "at least 1" in r.stderr


def test_connections_spread_over_the_workers_and_are_counted_per_worker(esproxy, es_a, port):
    """Each worker listens on a socket of its own (SO_REUSEPORT): kept-alive connections opened
    together land on every worker, and the master's stats count them per worker."""
    conf = proxy_config(port, es_a)
    conf["workers"] = 2
    esproxy(conf)
    base = f"http://127.0.0.1:{port}"
    sessions = [requests.Session() for _ in range(40)]
    for s in sessions:
        assert s.get(base + "/", timeout=10).status_code == 200
    stats_url = f"{base}/_esproxy/stats"

    def rows() -> list[dict]:
        return requests.get(stats_url, timeout=5).json()["proxy"]["workers"]

    # Workers report every second; the stats requests' own connections are counted too.
    wait_until(lambda: sum(w["requests"] for w in rows()) >= 40, timeout=10, msg="the workers' reports")
    found = rows()
    assert [w["slot"] for w in found] == [0, 1] and {w["pid"] for w in found} == set(worker_pids(base))
    assert sum(w["connections"] for w in found) >= 40
    # A hash of 40 connections' ports: fewer than 6 on a worker has odds under 1 in 10^5.
    assert all(w["connections"] >= 6 and w["requests"] >= 6 for w in found), found
    metrics = requests.get(f"{base}/_esproxy/metrics", timeout=5).text
    assert re.search(r'^esproxy_worker_connections_total\{worker="1",pid="\d+"\} \d+$', metrics, re.M)
    for s in sessions:
        s.close()


def test_a_port_in_use_is_refused_with_workers(esproxy, es_a, port):
    """SO_REUSEPORT would let two programs setting it share a port: the master binds it plainly first."""
    conf = proxy_config(port, es_a)
    conf["workers"] = 2
    first = esproxy(conf)
    second = esproxy(conf, wait=False)
    assert second.proc.wait(timeout=30) != 0
    assert "in use" in second.log().lower(), second.log_tail()
    assert first.proc.poll() is None


def test_workers_have_sessions_of_their_own_and_die_with_a_killed_master(esproxy, es_a, port):
    """Each worker is a session of its own (its own scheduling group under sched_autogroup), out of the
    master's process group: a master killed outright (killasgroup's SIGKILL, the OOM killer) takes them
    along all the same (PR_SET_PDEATHSIG), nothing is left serving the port."""
    conf = proxy_config(port, es_a)
    conf["workers"] = 2
    proc = esproxy(conf)
    base = f"http://127.0.0.1:{port}"
    pids = worker_pids(base)
    assert len(pids) == 2
    for pid in pids:
        assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(proc.pid)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10, msg="the workers die with their master")
