"""Two-way sync: a mirrored set (a proxy in front of each cluster, each producing to a topic replayed into the
other) keeps both clusters equal, and no write travels back: a replayed write is not captured again."""

from __future__ import annotations

import json

import pytest
import requests
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_cluster_id
from support.kafka import count_messages, create_topic, read_topic

pytestmark = pytest.mark.real


def test_two_way_sync_converges_and_nothing_loops(esproxy, es_a, es_b, kafka, names):
    a_to_b, b_to_a = names.topic("ab"), names.topic("ba")
    for topic in (a_to_b, b_to_a):
        create_topic(kafka, topic, partitions=2)
    port_a, port_b = free_port(), free_port()
    procs = [
        esproxy(replay_config(kafka, a_to_b, names.group("ab"), es_b)),
        esproxy(replay_config(kafka, b_to_a, names.group("ba"), es_a)),
        esproxy(proxy_config(port_a, es_a, kafka, a_to_b)),
        esproxy(proxy_config(port_b, es_b, kafka, b_to_a)),
    ]
    proxy_a, proxy_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"

    index = names.index()
    mapping = {"mappings": {"properties": {"n": {"type": "long"}, "side": {"type": "keyword"}}}}
    assert requests.put(f"{proxy_a}/{index}", json=mapping, timeout=10).status_code == 200
    wait_until(lambda: requests.head(f"{es_b}/{index}", timeout=5).status_code == 200, timeout=20, msg="index on B")
    writes = {"a": 1, "b": 0}  # requests captured by each proxy
    for i in range(10):
        for side, proxy in (("a", proxy_a), ("b", proxy_b)):
            r = requests.put(f"{proxy}/{index}/_doc/{side}{i}", json={"n": i, "side": side}, timeout=10)
            assert r.status_code == 201, r.text
            writes[side] += 1
    bulk = "".join(f'{{"index":{{"_index":"{index}","_id":"bulk-b{i}"}}}}\n{{"n":{i},"side":"b"}}\n' for i in range(5))
    r = requests.post(f"{proxy_b}/_bulk", data=bulk, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
    assert r.status_code == 200 and not r.json()["errors"], r.text
    writes["b"] += 1
    for side, proxy in (("a", proxy_a), ("b", proxy_b)):  # each side deletes one of its own
        assert requests.delete(f"{proxy}/{index}/_doc/{side}0", timeout=10).status_code == 200
        writes[side] += 1

    try:
        compare_until_equal(es_a, es_b, names.pattern())
    except AssertionError as e:  # which leg stalled: replays A->B, B->A, proxies A, B
        tails = [f"--- {p.log_path}:\n" + p.log_tail(12) for p in procs]
        counts = f"messages: A->B {count_messages(kafka, a_to_b)}, B->A {count_messages(kafka, b_to_a)}; sent {writes}"
        raise AssertionError("\n".join([str(e), counts, *tails])) from None
    requests.post(f"{es_a}/{index}/_refresh", timeout=10)
    assert requests.get(f"{es_a}/{index}/_count", timeout=10).json()["count"] == 9 + 9 + 5
    # Only the clients' writes were captured, each by the proxy in front of the cluster it was sent to.
    assert count_messages(kafka, a_to_b) == writes["a"]
    assert count_messages(kafka, b_to_a) == writes["b"]
    a_id = wait_until(lambda: es_cluster_id(es_a), timeout=5, msg="A's cluster id")
    b_id = wait_until(lambda: es_cluster_id(es_b), timeout=5, msg="B's cluster id")
    assert a_id != b_id
    assert {tuple(json.loads(r.value)["clusterIds"]) for r in read_topic(kafka, a_to_b)} == {(a_id,)}
    assert {tuple(json.loads(r.value)["clusterIds"]) for r in read_topic(kafka, b_to_a)} == {(b_id,)}
