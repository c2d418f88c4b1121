"""Client check: `source.proxies[].header` lists headers every request must carry (401 otherwise)."""

from __future__ import annotations

import json

import pytest
import requests
from support.basics import wait_until
from support.beans import doc_writes
from support.configs import proxy_config
from support.elastic import is_es_error
from support.kafka import count_messages, read_topic

AUTH = "Basic dXNlcjpwYXNz"  # user:pass


@pytest.fixture
def guarded(esproxy, es_a, kafka, names, port):
    topic = names.topic()
    esproxy(proxy_config(port, es_a, kafka, topic, header={"Authorization": AUTH}))
    return f"http://127.0.0.1:{port}", topic, names.index()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic d3Jvbmc6cGFzcw=="}, {"Authorization": AUTH.lower()}],
    ids=["missing", "wrong", "wrong-case-value"],
)
def test_unauthorised_gets_401(guarded, headers):
    base, _, _ = guarded
    r = requests.get(base + "/", headers=headers, timeout=10)
    assert r.status_code == 401, r.text
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), dict(r.headers)
    assert "json" in r.headers.get("Content-Type", ""), dict(r.headers)
    assert is_es_error(r.json(), 401), r.text


def test_authorised_passes(guarded, es_a):
    base, _, _ = guarded
    r = requests.get(base + "/", headers={"Authorization": AUTH}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == requests.get(es_a + "/", timeout=10).json()


def test_requests_auth_helper_passes(guarded):
    base, _, _ = guarded
    r = requests.get(base + "/", auth=("user", "pass"), timeout=10)
    assert r.status_code == 200, r.text


def test_unauthorised_write_not_forwarded_nor_captured(guarded, es_a, kafka):
    base, topic, index = guarded
    r = requests.put(f"{base}/{index}/_doc/denied", json={"x": 1}, timeout=10)
    assert r.status_code == 401
    ok = requests.put(f"{base}/{index}/_doc/allowed", json={"x": 2}, headers={"Authorization": AUTH}, timeout=10)
    assert ok.status_code == 201, ok.text
    wait_until(lambda: count_messages(kafka, topic) >= 1, timeout=15, interval=0.2, msg="one bean")
    got = doc_writes([json.loads(rec.value) for rec in read_topic(kafka, topic)])
    assert got == [("index", index, "allowed", {"x": 2})]
    assert requests.get(f"{es_a}/{index}/_doc/denied", timeout=10).json().get("found") is False
