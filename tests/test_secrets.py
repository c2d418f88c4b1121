"""Credentials given as `${ENV}` and `file:` reach the clusters and the proxy's client check, and never
show: not in a log, an answer, the stats, the metrics, a dead letter, Kafka, or `--check`'s output."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from support.authgate import AuthGate
from support.basics import free_port, wait_until
from support.configs import replay_config
from support.elastic import es_doc, is_es_error
from support.kafka import read_topic


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


class Secrets:
    """This test's credentials (random), and the environment that carries some of them."""

    def __init__(self, tmp_path: Path) -> None:
        token = uuid.uuid4().hex
        self.client = basic("app", f"client-{token[:10]}")  # the proxy's client header: Basic ${...}
        self.a_password = f"a-pass-{token[10:20]}"  # cluster A's Authorization: file:
        self.a_key = f"a-key-{token[20:30]}"  # cluster A's second header: ${...}
        self.wrong = basic("elastic", f"wrong-{token[:8]}")  # a proxy entry with a wrong password: ${...}
        self.b_password = f"b-pass-{token[8:18]}"  # cluster B's password, inside its URL: ${...}
        self.b_key = f"b-key-{token[18:28]}"  # cluster B's second header: file:
        self.admin = f"admin-{token[4:14]}"  # the replay's admin listener header: ${...}
        self.a_file = tmp_path / "secrets" / "a.cred"
        self.b_file = tmp_path / "secrets" / "b.key"
        self.a_file.parent.mkdir()
        self.a_file.write_text(f"Basic {basic('elastic', self.a_password)}\n")
        self.b_file.write_text(self.b_key + "\n")
        self.env = {
            "ESPROXY_T_CLIENT": self.client,
            "ESPROXY_T_A_KEY": self.a_key,
            "ESPROXY_T_WRONG": f"Basic {self.wrong}",
            "ESPROXY_T_B_PW": self.b_password,
            "ESPROXY_T_ADMIN": self.admin,
        }

    def values(self) -> dict[str, str]:
        """Every secret, and the forms it travels in."""
        return {
            "client token": self.client,
            "A password": self.a_password,
            "A credential": basic("elastic", self.a_password),
            "A key": self.a_key,
            "wrong credential": self.wrong,
            "B password": self.b_password,
            "B credential": basic("elastic", self.b_password),
            "B key": self.b_key,
            "admin token": self.admin,
        }


def check(conf: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ESPROXY_T_")}
    return subprocess.run(
        [sys.executable, "-m", "esproxy", "-c", str(conf), "--check"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def gates(es_a, osmem_factory, tmp_path):
    secrets = Secrets(tmp_path)
    es_b = osmem_factory()
    gate_a = AuthGate(es_a, {"Authorization": f"Basic {basic('elastic', secrets.a_password)}", "X-Key": secrets.a_key})
    gate_b = AuthGate(es_b, {"Authorization": f"Basic {basic('elastic', secrets.b_password)}", "X-Key": secrets.b_key})
    yield secrets, gate_a, gate_b, es_b
    gate_a.stop()
    gate_b.stop()


def test_secrets_from_the_environment_and_files_work_and_never_show(esproxy, gates, es_a, kafka, names, tmp_path):
    secrets, gate_a, gate_b, es_b = gates
    topic, group = names.topic(), names.group()
    good, bad = names.index("good"), names.index("bad")
    port, wrong_port, admin_port = free_port(), free_port(), free_port()
    a_header = {"Authorization": f"file:{secrets.a_file}", "X-Key": "${ESPROXY_T_A_KEY}"}
    proxy_conf = {
        "source": {
            "proxies": [
                {
                    "port": port,
                    "host": "127.0.0.1",
                    "accesslog": True,
                    "header": {"Authorization": "Basic ${ESPROXY_T_CLIENT}"},
                    "labels": {"side": "right"},
                },
                {"port": wrong_port, "host": "127.0.0.1", "accesslog": True, "labels": {"side": "wrong"}},
            ]
        },
        "destination": {
            "primaries": [
                {"url": gate_a.url, "labelEval": "side==right", "header": a_header},
                {
                    "url": gate_a.url,
                    "labelEval": "side==wrong",
                    "header": {**a_header, "Authorization": "${ESPROXY_T_WRONG}"},
                },
            ],
            "kafkas": [{"topic": topic, "brokers": [kafka]}],
        },
    }
    b_url = f"http://elastic:${{ESPROXY_T_B_PW}}@127.0.0.1:{gate_b.port}"
    replay_conf = replay_config(kafka, topic, group, b_url, deadLetterFile="dead.jsonl")
    replay_conf["destination"]["primaries"][0].update(header={"X-Key": f"file:{secrets.b_file}"}, accesslog=True)
    replay_conf["admin"] = {"port": admin_port, "header": {"X-Admin-Token": "${ESPROXY_T_ADMIN}"}}

    # B maps `n` as a number: a document A accepts with a string there becomes a dead letter.
    assert requests.put(f"{es_b}/{bad}", json={"mappings": {"properties": {"n": {"type": "long"}}}}, timeout=10).ok
    replay = esproxy(replay_conf, env=secrets.env)
    proxy = esproxy(proxy_conf, env=secrets.env)
    base, wrong_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{wrong_port}"
    client = {"Authorization": f"Basic {secrets.client}"}
    outputs: dict[str, str] = {}

    def keep(name: str, r: requests.Response) -> requests.Response:
        outputs[name] = f"{r.status_code} {r.headers} {r.text}"
        return r

    assert (
        keep("write", requests.put(f"{base}/{good}/_doc/1", json={"n": 1}, headers=client, timeout=10)).status_code
        == 201
    )
    r = keep("refused write", requests.put(f"{base}/{bad}/_doc/1", json={"n": "text"}, headers=client, timeout=10))
    assert r.status_code == 201, r.text
    r = keep("no client header", requests.put(f"{base}/{good}/_doc/2", json={"n": 2}, timeout=10))
    assert r.status_code == 401 and is_es_error(r.json(), 401)
    r = keep("wrong cluster password", requests.put(f"{wrong_base}/{good}/_doc/3", json={"n": 3}, timeout=10))
    assert r.status_code == 401 and r.json()["error"]["type"] == "security_exception", r.text  # A's, relayed
    assert gate_a.refused >= 1
    keep("wrong cluster read", requests.get(f"{wrong_base}/{good}/_search", timeout=10))

    wait_until(lambda: es_doc(es_b, good, "1"), timeout=30, msg="the write replayed into B through its gate")
    dead = tmp_path / "dead.jsonl"
    wait_until(lambda: dead.exists() and bad in dead.read_text(), timeout=30, msg="the refused write's dead letter")
    assert es_doc(es_a, good, "3") is None

    for path in ("stats", "metrics", "health"):
        keep(f"proxy {path}", requests.get(f"{base}/_esproxy/{path}", headers=client, timeout=10))
        admin = requests.get(
            f"http://127.0.0.1:{admin_port}/_esproxy/{path}", headers={"X-Admin-Token": secrets.admin}, timeout=10
        )
        assert keep(f"replay {path}", admin).status_code in (200, 503), admin.text
    assert requests.get(f"http://127.0.0.1:{admin_port}/_esproxy/stats", timeout=10).status_code == 401

    for conf in (proxy.conf_path, replay.conf_path):
        ran = check(conf, secrets.env)
        outputs[f"--check {conf.name}"] = ran.stdout + ran.stderr
        assert ran.returncode == 0, ran.stderr
    ran = check(proxy.conf_path, {k: v for k, v in secrets.env.items() if k != "ESPROXY_T_CLIENT"})
    outputs["--check without a variable"] = ran.stdout + ran.stderr
    assert ran.returncode == 2
    assert (
        "config error: source.proxies[0].header.Authorization: environment variable ESPROXY_T_CLIENT is not set"
        in ran.stderr
    )
    unreadable = yaml.safe_load(proxy.conf_path.read_text())
    unreadable["destination"]["primaries"][0]["header"]["X-Key"] = f"file:{tmp_path}/absent"
    unreadable["destination"]["primaries"][1]["url"] = "${ESPROXY_T_A_KEY}"  # not a URL: the error must not quote it
    bad_conf = tmp_path / "bad.yml"
    bad_conf.write_text(yaml.safe_dump(unreadable))
    ran = check(bad_conf, secrets.env)
    outputs["--check unreadable file"] = ran.stdout + ran.stderr
    assert ran.returncode == 2
    assert f"destination.primaries[0].header.X-Key: file {tmp_path}/absent unreadable" in ran.stderr
    del unreadable["destination"]["primaries"][0]["header"]["X-Key"]
    bad_conf.write_text(yaml.safe_dump(unreadable))
    ran = check(bad_conf, secrets.env)
    outputs["--check bad value"] = ran.stdout + ran.stderr
    assert ran.returncode == 2 and 'destination.primaries[1].url: "***" is not an http(s) URL' in ran.stderr

    proxy.terminate()
    replay.terminate()
    outputs["kafka"] = "\n".join(rec.value.decode("utf-8", "replace") for rec in read_topic(kafka, topic))
    files = [f for f in tmp_path.rglob("*") if f.is_file() and f.parent.name != "secrets"]
    assert any(f.name == "dead.jsonl" for f in files) and any(f.suffix == ".log" for f in files)
    outputs.update({str(f): f.read_bytes().decode("utf-8", "replace") for f in files})
    assert "access log:" in outputs[str(proxy.log_path)] and "access log:" in outputs[str(replay.log_path)]
    leaks = [
        (what, name) for what, value in secrets.values().items() for name, text in outputs.items() if value in text
    ]
    assert not leaks, leaks
