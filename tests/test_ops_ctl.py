"""ops/ctl on a supervisord of its own (a generated supervisord.conf in tmp, free ports): `status`
prints `elasticproxy started, pid=N` as the seed's `./ctl status` does, N being esproxy's pid, then
the health verdict of the running roles, with the reasons when unhealthy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from support.basics import REPO, free_port, wait_until
from support.configs import proxy_config
from support.elastic import es_doc
from support.kafka import create_topic
from support.servers import DemoServer

CTL = REPO / "ops" / "ctl"
SUPERVISOR = """\
[unix_http_server]
file={var}/supervisor.sock

[supervisord]
logfile={var}/log/supervisord.log
pidfile={var}/supervisord.pid
childlogdir={var}/log
directory={var}
nodaemon=false

[supervisorctl]
serverurl=unix://{var}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

"""

# supervisord.conf's way to run a role ({name}: elasticproxy or kafka2elastic), under a supervisord of the test's own
PROGRAM = (
    SUPERVISOR
    + """\
[program:{name}]
command={python} -m esproxy -c {conf}
directory={var}/{name}
autostart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=30
environment=PYTHONUNBUFFERED="1"
redirect_stderr=true
stdout_logfile={var}/log/{name}.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=5
"""
)


@pytest.fixture
def cluster(tmp_path):
    srv = DemoServer("osmem", tmp_path)
    yield srv.url
    srv.stop()


@pytest.fixture
def broker(own_server):
    return own_server("tansu")


def test_ctl_status_prints_the_pid_and_the_health(cluster, broker, tmp_path):
    if not (Path(sys.executable).parent / "supervisord").exists():
        pytest.skip("supervisord is not installed beside this python")
    var = tmp_path / "var"
    port = free_port()
    conf = tmp_path / "conf1.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "health": {"maxShipDelay": "1s"},
                "source": {"proxies": [{"port": port, "host": "127.0.0.1"}]},
                "destination": {
                    "primaries": [{"url": cluster}],
                    "kafkas": [{"topic": "ctl-health", "brokers": [broker.addr]}],
                },
            }
        )
    )
    sup = tmp_path / "supervisord.conf"
    sup.write_text(PROGRAM.format(var=var, python=sys.executable, conf=conf, name="elasticproxy"))
    env = {
        **os.environ,
        "SUPERVISORD_CONF": str(sup),
        "ESPROXY_VAR": str(var),
        "ESPROXY_VENV": str(Path(sys.executable).parent.parent),
        "PROXY_PORT": str(port),
    }

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CTL), *args], env=env, capture_output=True, text=True, timeout=120)

    try:
        started = ctl("start")
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"http://127.0.0.1:{port}/_esproxy/health"
        health = wait_until(lambda: requests.get(url, timeout=1).json(), timeout=30, msg="esproxy under supervisord")
        status = ctl("status")
        assert status.returncode == 0, status.stderr
        m = re.search(r"^elasticproxy started, pid=(\d+)$", status.stdout, re.M)
        assert m, status.stdout
        assert int(m.group(1)) == health["pid"]
        assert status.stdout.splitlines()[0] == m.group(0)  # first, as the original's, for old scripts
        assert "\nelasticproxy health: ok\n" in status.stdout
        os.killpg(broker.proc.pid, signal.SIGSTOP)  # captured writes now wait in the spool
        r = requests.put(f"http://127.0.0.1:{port}/ctl-health/_doc/1", json={"n": 1}, timeout=10)
        assert r.status_code == 201

        def status_when(needle: str) -> str:
            out = ctl("status").stdout
            return out if needle in out else ""

        unhealthy = wait_until(
            lambda: status_when("elasticproxy health: unhealthy (HTTP 503"), timeout=20, interval=0.5, msg="the 503"
        )
        assert re.search(r"^  - ship_delay: captured writes wait .*health\.maxShipDelay", unhealthy, re.M), unhealthy
        assert unhealthy.splitlines()[0] == m.group(0)
        os.killpg(broker.proc.pid, signal.SIGCONT)
        wait_until(lambda: status_when("elasticproxy health: ok"), timeout=30, interval=0.5, msg="ok again")
        # the working directory is the program's `directory`: where jj.cpu / cpu.profile go
        assert os.readlink(f"/proc/{health['pid']}/cwd") == str(var / "elasticproxy")
        assert ctl("stop").returncode == 0
        assert "elasticproxy not running" in ctl("status").stdout
    finally:
        down = ctl("down")
        assert down.returncode == 0, down.stdout + down.stderr
    assert "esproxy stopped" in (var / "log" / "elasticproxy.log").read_text()


@pytest.mark.real
def test_replay_restarted_twice_during_its_group_join_converges(
    esproxy, es_a, es_b, kafka, names, port, tmp_path, engine_kinds
):
    """`ops/ctl restart kafka2elastic` twice within 2 s, the second while the new replay joins its group (as
    right after a deploy): within 30 s of the last restart B holds what A holds, or the replay's health
    answers 503 naming the partitions no replay applies (the issue's stall: health said 200 throughout)."""
    if not (Path(sys.executable).parent / "supervisord").exists():
        pytest.skip("supervisord is not installed beside this python")
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=3)
    var, admin = tmp_path / "var", free_port()
    conf = tmp_path / "conf2.yml"
    replay = {"brokers": [kafka], "topics": [topic], "group": group, "sessionTimeout": "6s"}
    conf.write_text(
        yaml.safe_dump(
            {
                "admin": {"port": admin},
                "health": {"maxUnassigned": "20s"},
                "source": {"kafkas": [replay]},
                "destination": {"primaries": [{"url": es_b}]},
            }
        )
    )
    sup = tmp_path / "supervisord.conf"
    sup.write_text(PROGRAM.format(var=var, python=sys.executable, conf=conf, name="kafka2elastic"))
    env = {
        **os.environ,
        "SUPERVISORD_CONF": str(sup),
        "ESPROXY_VAR": str(var),
        "ESPROXY_VENV": str(Path(sys.executable).parent.parent),
        "REPLAY_ADMIN_PORT": str(admin),
    }
    log = var / "log" / "kafka2elastic.log"

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CTL), *args], env=env, capture_output=True, text=True, timeout=120)

    def subscribed(pid: str) -> bool:
        return any(f" {pid} " in line and "subscribed to" in line for line in log.read_text().splitlines())

    def pid() -> str:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(sup), "pid", "kafka2elastic"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        return out if out.isdigit() and out != "0" else ""

    proxy = f"http://127.0.0.1:{port}"
    esproxy(proxy_config(port, es_a, kafka, topic))
    expected = {}

    def write(n: int) -> None:
        lines = "".join(f'{{"index":{{"_index":"{index}","_id":"{n}-{i}"}}}}\n{{"n":{n},"i":{i}}}\n' for i in range(5))
        r = requests.post(f"{proxy}/_bulk", data=lines, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
        assert r.status_code == 200 and not r.json()["errors"], r.text
        expected.update({f"{n}-{i}": {"n": n, "i": i} for i in range(5)})

    try:
        up = ctl("up")
        assert up.returncode == 0, up.stdout + up.stderr
        write(1)
        first = ctl("restart", "kafka2elastic")
        assert first.returncode == 0, first.stdout + first.stderr
        write(2)
        new = wait_until(pid, timeout=10, msg="the restarted replay's pid")
        wait_until(lambda: subscribed(new), timeout=10, interval=0.05, msg="the restarted replay joining its group")
        second = ctl("restart", "kafka2elastic")  # its group join is under way
        assert second.returncode == 0, second.stdout + second.stderr
        last_restart = time.monotonic()
        write(3)

        def converged_or_503() -> str:
            if all((es_doc(es_b, index, i) or {}).get("_source") == src for i, src in expected.items()):
                return "B == A"
            r = requests.get(f"http://127.0.0.1:{admin}/_esproxy/health", timeout=5)
            reasons = [x["reason"] for x in r.json()["reasons"] if x["check"] == "replay_unassigned"]
            return f"503: {reasons[0]}" if r.status_code == 503 and reasons and f"{topic}-" in reasons[0] else ""

        outcome = wait_until(converged_or_503, timeout=30, interval=0.5, msg="B == A, or 503 naming the partitions")
        print(f"{time.monotonic() - last_restart:.1f}s after the last restart: {outcome}")
        assert all(es_doc(es_a, index, i)["_source"] == src for i, src in expected.items())  # what A holds
        if engine_kinds["kafka"][0] == "tansu":  # its join takes 3 s: the second restart came during it
            assert "stopping during the group join; completing it first" in log.read_text()
    finally:
        down = ctl("down")
        assert down.returncode == 0, down.stdout + down.stderr
