"""A proxy in front of a follower (followerReadOnly): followed indices refuse writes, the rest is as usual."""

from __future__ import annotations

import gzip
import json

import pytest
import requests
from support.basics import wait_until
from support.beans import doc_writes
from support.configs import proxy_config
from support.elastic import es_doc, is_es_error
from support.kafka import read_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def follower_proxy(esproxy, es_b, kafka, names, port):
    """A capturing proxy in front of B whose rules follow A's `<prefix>-logs-*` as `...-replica`:
    (base URL, topic, A's followed index, its B name, a free index)."""
    prefix = names.index("x").rsplit("-", 1)[0]
    topic = names.topic()
    config = proxy_config(port, es_b, kafka, topic)
    config["source"]["proxies"][0]["followerReadOnly"] = True
    config["follow"] = {
        "rules": [
            {"name": "other", "indices": [f"{prefix}-other"]},
            {"name": "logs", "indices": [f"{prefix}-logs-*"], "rename": "{{remote_index}}-replica"},
        ]
    }
    esproxy(config)
    return f"http://127.0.0.1:{port}", topic, f"{prefix}-logs-1", f"{prefix}-logs-1-replica", f"{prefix}-free"


def test_followed_index_refuses_writes_other_indices_take_them(follower_proxy, es_b):
    base, _, a_name, b_name, free = follower_proxy
    # the replay (straight to B, not through the proxy) has written the followed index
    assert requests.put(f"{es_b}/{b_name}/_doc/1?refresh=true", json={"n": 1}, timeout=10).status_code in (200, 201)

    r = requests.put(f"{base}/{b_name}/_doc/2", json={"n": 2}, timeout=10)
    assert r.status_code == 403
    body = r.json()
    assert is_es_error(body, 403)
    assert body["error"]["type"] == "esproxy_follower_index_read_only_exception"
    reason = body["error"]["reason"]
    assert f"[{b_name}]" in reason and 'follow.rules[1] "logs"' in reason and f"[{a_name}]" in reason
    assert es_doc(es_b, b_name, "2") is None  # not forwarded
    assert requests.delete(f"{base}/{b_name}", timeout=10).status_code == 403
    # a compressed body is read as the primary would read it
    line = f'{{"index":{{"_index":"{b_name}","_id":"z"}}}}\n{{"n":1}}\n'.encode()
    zipped = {**NDJSON, "Content-Encoding": "gzip"}
    r = requests.post(f"{base}/_bulk", data=gzip.compress(line), headers=zipped, timeout=10)
    assert r.status_code == 403 and "item 1 of 1" in r.json()["error"]["reason"]
    r = requests.post(f"{base}/_bulk", data=b"not gzip", headers=zipped, timeout=10)
    assert r.status_code == 403 and "does not decompress" in r.json()["error"]["reason"]

    # reads pass
    assert requests.get(f"{base}/{b_name}/_doc/1", timeout=10).json()["_source"] == {"n": 1}
    found = requests.post(f"{base}/{b_name}/_search", json={"query": {"match_all": {}}}, timeout=10).json()
    assert [h["_id"] for h in found["hits"]["hits"]] == ["1"]
    assert requests.post(f"{base}/{b_name}/_refresh", timeout=10).status_code == 200

    # other indices (A's own name too: B's copy is the renamed one) take writes
    for index in (free, a_name):
        r = requests.put(f"{base}/{index}/_doc/1", json={"n": 3}, timeout=10)
        assert r.status_code in (200, 201), r.text
        assert es_doc(es_b, index, "1")["_source"] == {"n": 3}


def test_mixed_bulk_is_refused_whole_and_nothing_captured(follower_proxy, es_b, kafka):
    base, topic, _, b_name, free = follower_proxy
    mixed = (
        f'{{"index":{{"_index":"{free}","_id":"m1"}}}}\n{{"n":1}}\n'
        f'{{"index":{{"_index":"{b_name}","_id":"m2"}}}}\n{{"n":2}}\n'
    )
    r = requests.post(f"{base}/_bulk", data=mixed.encode(), headers=NDJSON, timeout=10)
    assert r.status_code == 403
    reason = r.json()["error"]["reason"]
    assert "item 2 of 2" in reason and "whole _bulk is refused" in reason and b_name in reason

    # a write after it is captured; the refused one before it is not (captures keep their order)
    clean = f'{{"index":{{"_index":"{free}","_id":"after"}}}}\n{{"n":3}}\n'
    assert requests.post(f"{base}/_bulk", data=clean.encode(), headers=NDJSON, timeout=10).status_code == 200

    def captured() -> list:
        writes = doc_writes([json.loads(m.value) for m in read_topic(kafka, topic)])
        return writes if any(w[1:3] == (free, "after") for w in writes) else None

    writes = wait_until(captured, timeout=15, interval=0.2, msg="the accepted _bulk captured")
    assert {w[2] for w in writes} == {"after"}
    assert es_doc(es_b, free, "m1") is None and es_doc(es_b, b_name, "m2") is None


def test_every_worker_refuses(esproxy, es_b, names, port):
    """workers: 2: each pre-forked worker has the rules (new connections go to either)."""
    prefix = names.index("x").rsplit("-", 1)[0]
    config = proxy_config(port, es_b)
    config["workers"] = 2
    config["source"]["proxies"][0]["followerReadOnly"] = True
    config["follow"] = {"rules": [{"name": "logs", "indices": [f"{prefix}-logs-*"], "rename": "b-{{remote_index}}"}]}
    proc = esproxy(config)
    proc.wait_log("worker serving", count=2)
    base = f"http://127.0.0.1:{port}"
    for i in range(10):
        close = {"Connection": "close"}
        r = requests.put(f"{base}/b-{prefix}-logs-1/_doc/{i}", json={"i": i}, headers=close, timeout=10)
        assert r.status_code == 403 and 'follow.rules[0] "logs"' in r.json()["error"]["reason"]
        r = requests.put(f"{base}/{prefix}-free/_doc/{i}", json={"i": i}, headers=close, timeout=10)
        assert r.status_code in (200, 201), r.text
