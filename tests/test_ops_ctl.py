"""ops/ctl on a supervisord of its own (a generated supervisord.conf in tmp, free ports): `status`
prints `elasticproxy started, pid=N` as the seed's `./ctl status` does, N being esproxy's pid."""

from __future__ import annotations

import os
import re
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


def test_ctl_status_prints_the_pid(cluster, tmp_path):
    if not (Path(sys.executable).parent / "supervisord").exists():
        pytest.skip("supervisord is not installed beside this python")
    var = tmp_path / "var"
    port = free_port()
    conf = tmp_path / "conf1.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "source": {"proxies": [{"port": port, "host": "127.0.0.1"}]},
                "destination": {"primaries": [{"url": cluster}]},
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
        # the working directory is the program's `directory`: where jj.cpu / cpu.profile go
        assert os.readlink(f"/proc/{health['pid']}/cwd") == str(var / "elasticproxy")
        assert ctl("stop").returncode == 0
        assert "elasticproxy not running" in ctl("status").stdout
    finally:
        down = ctl("down")
        assert down.returncode == 0, down.stdout + down.stderr
    assert "esproxy stopped" in (var / "log" / "elasticproxy.log").read_text()
