"""ops/ctl on a supervisord of its own (a generated supervisord.conf in tmp, free ports): `status`
prints `elasticproxy started, pid=N` as the seed's `./ctl status` does, N being esproxy's pid, then
the health verdict of the running roles, with the reasons when unhealthy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from support.basics import REPO, free_port, wait_until
from support.servers import DemoServer

CTL = REPO / "ops" / "ctl"
PROGRAM = """\
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

[program:elasticproxy]
command={python} -m esproxy -c {conf}
directory={var}/elasticproxy
autostart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=30
environment=PYTHONUNBUFFERED="1"
redirect_stderr=true
stdout_logfile={var}/log/elasticproxy.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=5
"""


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
    sup.write_text(PROGRAM.format(var=var, python=sys.executable, conf=conf))
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
