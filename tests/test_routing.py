"""Routing options: rest backups, upstream headers, labelEval, disabled entries, newest, chanSize 0,
sync producers, and the replay's loop guard (clusterIds)."""

from __future__ import annotations

import json

import pytest
import requests
from support.basics import wait_until
from support.beans import doc_writes, make_bean, writes_of
from support.configs import proxy_config, replay_config
from support.elastic import es_cluster_id, es_doc
from support.kafka import count_messages, create_topic, produce_raw, read_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def test_rest_backup_gets_writes_only(esproxy, es_a, kafka, names, port, recorder):
    rest = recorder()
    index = names.index()
    conf = proxy_config(port, es_a, kafka, names.topic())
    conf["destination"]["rests"] = [{"url": rest.url, "header": {"X-Backup": "yes"}}]
    esproxy(conf)
    base = f"http://127.0.0.1:{port}"
    assert requests.put(f"{base}/{index}/_doc/1", json={"n": 1}, timeout=10).status_code == 201
    assert requests.get(f"{base}/{index}/_doc/1", timeout=10).status_code == 200
    assert requests.post(f"{base}/{index}/_search", json={}, timeout=10).status_code == 200
    [(method, path, headers, body)] = wait_until(
        lambda: rest.matching("POST", "/_bulk"), timeout=15, msg="write replayed to the rest backup"
    )
    bean = {"kind": "docs", "body": body.decode() if isinstance(body, bytes) else body}
    assert writes_of(bean) == [("index", index, "1", {"n": 1})]
    assert lower(headers).get("x-backup") == "yes", headers
    assert not [r for r in rest.requests if r[1] != "/_bulk" and "meta.elasticproxy" not in r[1]], rest.requests


def test_primary_header_and_pass_headers_sent_upstream(esproxy, kafka, names, port, recorder):
    primary = recorder()
    conf = proxy_config(port, primary.url, kafka, names.topic())
    conf["destination"]["primaries"][0]["header"] = {"Authorization": "Basic Zm9vOmJhcg=="}
    conf["source"]["proxies"][0]["passHeaders"] = ["X-Custom"]
    esproxy(conf)
    r = requests.get(f"http://127.0.0.1:{port}/probe/_doc/1", headers={"X-Custom": "c1"}, timeout=10)
    assert r.status_code == 200, r.text
    [(_, _, headers, _)] = primary.matching("GET", "/probe/")
    assert lower(headers).get("authorization") == "Basic Zm9vOmJhcg==", headers
    assert lower(headers).get("x-custom") == "c1", headers


def test_kafka_label_eval_and_disabled(esproxy, es_a, kafka, names, port):
    t_match, t_other, t_disabled = names.topic("match"), names.topic("other"), names.topic("disabled")
    index = names.index()
    conf = proxy_config(port, es_a, labels={"SRC": "PROXY"})
    conf["destination"]["kafkas"] = [
        {"topic": t_match, "brokers": [kafka], "labelEval": "SRC==PROXY"},
        {"topic": t_other, "brokers": [kafka], "labelEval": "SRC==KAFKA"},
        {"topic": t_disabled, "brokers": [kafka], "disabled": True},
    ]
    proc = esproxy(conf)
    assert requests.put(f"http://127.0.0.1:{port}/{index}/_doc/1", json={"n": 1}, timeout=10).status_code == 201
    wait_until(lambda: count_messages(kafka, t_match) == 1, timeout=15, interval=0.2, msg="bean in matching topic")
    assert proc.terminate() == 0, proc.log_tail()  # a graceful stop flushes every producer
    assert count_messages(kafka, t_other) == 0
    assert count_messages(kafka, t_disabled) == 0


def test_chan_size_zero_direct_handoff(esproxy, es_a, kafka, names, port):
    topic, index = names.topic(), names.index()
    esproxy(proxy_config(port, es_a, kafka, topic, chan_size=0))
    for i in range(5):
        assert requests.put(f"http://127.0.0.1:{port}/{index}/_doc/{i}", json={"i": i}, timeout=10).status_code == 201
    wait_until(lambda: count_messages(kafka, topic) >= 5, timeout=15, interval=0.2, msg="5 beans")
    got = doc_writes([json.loads(r.value) for r in read_topic(kafka, topic)])
    assert sorted(doc_id for _, _, doc_id, _ in got) == [str(i) for i in range(5)]


def test_sync_producer_wait_for_all(esproxy, es_a, kafka, names, port):
    topic, index = names.topic(), names.index()
    conf = proxy_config(port, es_a, kafka, topic, sync=True)
    conf["destination"]["kafkas"][0]["requiredAcks"] = "WaitForAll"
    proc = esproxy(conf)
    for i in range(3):
        assert requests.put(f"http://127.0.0.1:{port}/{index}/_doc/{i}", json={"i": i}, timeout=10).status_code == 201
    wait_until(lambda: count_messages(kafka, topic) == 3, timeout=15, interval=0.2, msg="3 beans")
    # One broker cannot tell acks=1 from acks=all on the wire: the producer says what it asked for.
    assert proc.count_in_log(f"kafka producer for topic {topic} connected to {kafka} (acks=all)") == 1, proc.log_tail()


def test_newest_true_skips_backlog(esproxy, es_b, kafka, names):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/old", '{"v":"old"}')])
    esproxy(replay_config(kafka, topic, group, es_b, newest=True))
    produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/new", '{"v":"new"}')])
    wait_until(lambda: es_doc(es_b, index, "new"), timeout=20, msg="new bean replayed")
    assert es_doc(es_b, index, "old") is None, "newest: true must not replay the backlog"


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "rr", "sticky"])
def test_newest_false_replays_backlog(esproxy, es_b, kafka, names, assignor):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=2)
    produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/p0", '{"v":0}')], partition=0)
    produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/p1", '{"v":1}')], partition=1)
    esproxy(replay_config(kafka, topic, group, es_b, newest=False, assignor=assignor))
    wait_until(lambda: es_doc(es_b, index, "p0") and es_doc(es_b, index, "p1"), timeout=20, msg="backlog replayed")


def test_replay_skips_beans_already_applied_to_target(esproxy, osmem_factory, kafka, names):
    """Loop guard: a bean whose clusterIds already holds B's id is not applied to B again."""
    b = osmem_factory()
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    proc = esproxy(replay_config(kafka, topic, group, b))
    b_id = wait_until(lambda: es_cluster_id(b), timeout=10, msg="B's cluster id")
    produce_raw(
        kafka,
        topic,
        [
            make_bean("PUT", f"/{index}/_doc/loop", '{"v":1}', clusterIds=["a-cluster", b_id]),
            make_bean("PUT", f"/{index}/_doc/fresh", '{"v":2}', clusterIds=["a-cluster"]),
        ],
    )
    wait_until(lambda: es_doc(b, index, "fresh"), timeout=20, msg="fresh bean replayed")
    assert es_doc(b, index, "loop") is None, proc.log_tail()
