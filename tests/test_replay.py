"""Replay: beans in Kafka are re-sent to cluster B (end to end, Go beans, poison messages)."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import pytest
import requests
from support.basics import wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafka import create_topic, produce_raw

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

GO_BEANS = Path(__file__).resolve().parent / "go-beans.jsonl"
JSON = {"Content-Type": "application/json"}

# Every document the three Go beans address (index, id).
GO_DOCS = [
    ("person", "29bGScTpHCQboxtWDsRhhoZK7g9"),
    ("person", "28SMVg28QLnm8zCM0wGCLsZzT6J"),
    ("test", "28jr6LKsyySD86DrIwUONkUGswA"),
    ("test", "28jr6NCcbfEiTjSBAIyRa0f3zjX"),
]


def source_of(base: str, index: str, doc_id: str):
    doc = es_doc(base, index, doc_id)
    return None if doc is None else doc["_source"]


def wait_source(base: str, index: str, doc_id: str, expected, timeout: float = 20.0) -> None:
    wait_until(
        lambda: source_of(base, index, doc_id) == expected,
        timeout=timeout,
        interval=0.1,
        msg=f"{base}/{index}/_doc/{doc_id} to have _source {expected!r}",
    )


def roundtrip(proxy_base: str, es_b: str, index: str) -> None:
    """Writes through the proxy show up in B; a delete removes the doc from B."""
    doc = {"title": "hello", "n": 1, "tags": ["a", "b"], "text": "中文 ünïcode"}
    r = requests.put(f"{proxy_base}/{index}/_doc/1", json=doc, timeout=10)
    assert r.status_code == 201, r.text
    wait_source(es_b, index, "1", doc)

    r = requests.post(f"{proxy_base}/{index}/_update/1", json={"doc": {"n": 2}}, timeout=10)
    assert r.status_code == 200, r.text
    wait_source(es_b, index, "1", {**doc, "n": 2})

    bulk = (
        f'{{"index":{{"_index":"{index}","_id":"b1"}}}}\n{{"n":11}}\n'
        f'{{"index":{{"_index":"{index}","_id":"b2"}}}}\n{{"n":12}}\n'
    )
    r = requests.post(f"{proxy_base}/_bulk", data=bulk, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
    assert r.status_code == 200 and not r.json()["errors"], r.text
    wait_source(es_b, index, "b1", {"n": 11})
    wait_source(es_b, index, "b2", {"n": 12})

    r = requests.put(f"{proxy_base}/{index}/_doc/a%2Fb", json={"slash": True}, timeout=10)
    assert r.status_code == 201, r.text
    wait_source(es_b, index, "a/b", {"slash": True})

    r = requests.put(f"{proxy_base}/{index}/_doc/%E4%B8%AD%E6%96%87", json={"lang": "zh"}, timeout=10)
    assert r.status_code == 201, r.text
    wait_source(es_b, index, "中文", {"lang": "zh"})

    gz = gzip.compress(json.dumps({"packed": "gzip"}).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = requests.put(f"{proxy_base}/{index}/_doc/gz", data=gz, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    wait_source(es_b, index, "gz", {"packed": "gzip"})

    r = requests.delete(f"{proxy_base}/{index}/_doc/1", timeout=10)
    assert r.status_code == 200, r.text
    wait_until(lambda: es_doc(es_b, index, "1") is None, timeout=20, msg=f"{index}/1 deleted from B")
    assert source_of(es_b, index, "b1") == {"n": 11}


def test_end_to_end_two_processes(esproxy, es_a, es_b, kafka, names, port):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, group, es_b))
    esproxy(proxy_config(port, es_a, kafka, topic))
    roundtrip(f"http://127.0.0.1:{port}", es_b, index)
    # A has what the client wrote, too.
    assert source_of(es_a, index, "b2") == {"n": 12}


def test_end_to_end_one_process_both_roles(esproxy, es_a, es_b, kafka, names, port):
    """Both roles in one config file, routed with labels like the Go original's samples."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=3)
    conf = {
        "chanSize": 100,
        "source": {
            "proxies": [{"port": port, "host": "127.0.0.1", "labels": {"SRC": "PROXY"}}],
            "kafkas": [
                {
                    "brokers": [kafka],
                    "topics": [topic],
                    "group": group,
                    "sessionTimeout": "6s",
                    "labels": {"SRC": "KAFKA"},
                }
            ],
        },
        "destination": {
            "primaries": [
                {"url": es_a, "labelEval": "SRC==PROXY"},
                {"url": es_b, "labelEval": "SRC==KAFKA"},
            ],
            "kafkas": [{"topic": topic, "brokers": [kafka], "labelEval": "SRC==PROXY"}],
        },
    }
    proc = esproxy(conf)
    roundtrip(f"http://127.0.0.1:{port}", es_b, index)
    assert source_of(es_a, index, "b2") == {"n": 12}
    assert proc.proc.poll() is None, proc.log_tail()


def reference_sources(base: str, lines: list) -> dict:
    """Send each Go bean's request directly to a pristine cluster; return what it then holds."""
    for raw in lines:
        bean = json.loads(raw)
        body = bean["body"]
        data = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
        headers = {k: v[0] for k, v in bean["header"].items()}
        requests.request(bean["method"], base + bean["requestUri"], data=data, headers=headers, timeout=10)
    requests.post(base + "/_refresh", timeout=10)
    return {(i, d): source_of(base, i, d) for i, d in GO_DOCS}


def test_go_beans_replay(esproxy, osmem_factory, kafka, names):
    lines = [line for line in GO_BEANS.read_bytes().split(b"\n") if line.strip()]
    assert len(lines) == 3
    expected = reference_sources(osmem_factory(), lines)
    # What the spec expects osmem to hold when these requests are sent directly:
    assert expected[("person", "29bGScTpHCQboxtWDsRhhoZK7g9")]["name"] == "闻人猶穽"
    assert expected[("test", "28jr6LKsyySD86DrIwUONkUGswA")]["idcard"] == "825491199903301279"
    assert expected[("test", "28jr6NCcbfEiTjSBAIyRa0f3zjX")]["idcard"] == "131471199102232071"
    # osmem has no `/{index}/{type}/{id}` route (400 "no handler found"): nothing is stored there.
    assert expected[("person", "28SMVg28QLnm8zCM0wGCLsZzT6J")] is None

    es_b = osmem_factory()
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    produce_raw(kafka, topic, lines)
    proc = esproxy(replay_config(kafka, topic, group, es_b))
    for (index, doc_id), src in expected.items():
        if src is not None:
            wait_source(es_b, index, doc_id, src)
    got = {(i, d): source_of(es_b, i, d) for i, d in GO_DOCS}
    assert got == expected
    assert proc.proc.poll() is None, proc.log_tail()


@pytest.mark.parametrize(
    "poison",
    [b"this is not json {", b"\xff\xfe\x00binary", b"[1, 2, 3]", b'{"method": "PUT"}', b""],
    ids=["text", "binary", "json-array", "no-uri", "empty"],
)
def test_poison_message_does_not_stop_replay(esproxy, es_b, kafka, names, poison):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    produce_raw(kafka, topic, [poison, make_bean("PUT", f"/{index}/_doc/after-poison", '{"ok": true}')])
    proc = esproxy(replay_config(kafka, topic, group, es_b))
    wait_source(es_b, index, "after-poison", {"ok": True})
    assert proc.proc.poll() is None, proc.log_tail()
    # The poison message is logged (as a warning or an error naming where it came from).
    flagged = [line for line in proc.log().splitlines() if re.search(r"\[(WARN|ERROR)", line) and topic in line]
    assert flagged, proc.log_tail()


def test_replay_continues_after_rejected_write(esproxy, es_b, kafka, names):
    """A bean B answers with 4xx is logged and skipped; the next one still replays."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)

    bad = make_bean("PUT", f"/{index}/_doc/bad", '{"broken": ')
    produce_raw(kafka, topic, [bad, make_bean("PUT", f"/{index}/_doc/good", '{"g":1}')])
    proc = esproxy(replay_config(kafka, topic, group, es_b))
    wait_source(es_b, index, "good", {"g": 1})
    assert es_doc(es_b, index, "bad") is None
    assert proc.proc.poll() is None, proc.log_tail()


def test_auto_id_write_replayed_once(esproxy, es_a, es_b, kafka, names, port):
    """POST /{index}/_doc (server-generated id) reaches B exactly once, with A's `_id` and `_source`."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    esproxy(replay_config(kafka, topic, group, es_b))
    esproxy(proxy_config(port, es_a, kafka, topic))
    doc = {"marker": index, "n": 1}
    r = requests.post(f"http://127.0.0.1:{port}/{index}/_doc", json=doc, timeout=10)
    assert r.status_code == 201, r.text

    def hits():
        requests.post(f"{es_b}/{index}/_refresh", timeout=5)
        res = requests.post(f"{es_b}/{index}/_search", json={"query": {"match_all": {}}}, timeout=5)
        return res.json()["hits"]["hits"] if res.status_code == 200 else []

    found = wait_until(hits, timeout=20, interval=0.2, msg="auto-id doc in B")
    # A sentinel behind it proves the replay moved on; then there must still be one copy only.
    assert requests.put(f"http://127.0.0.1:{port}/{index}-s/_doc/s", json={}, timeout=10).status_code == 201
    wait_until(lambda: es_doc(es_b, f"{index}-s", "s"), timeout=20, msg="sentinel in B")
    found = hits()
    assert [h["_source"] for h in found] == [doc], found
    assert [h["_id"] for h in found] == [r.json()["_id"]], found


def test_replay_stopped_during_its_group_join_leaves_a_group_the_next_member_joins(
    esproxy, es_b, kafka, names, engine_kinds
):
    """SIGTERM while the replay's consumer is joining its group (a restart right after a start): the stop lets
    the join complete, then leaves the group, so the next member gets every partition. (Leaving in the middle
    of the join left the demo broker, Tansu, with a group leader that was gone: no member ever got partitions.)"""
    from kafka import KafkaConsumer

    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=3)
    replay = esproxy(replay_config(kafka, topic, group, es_b), ready=[("subscribed to", 1)])
    time.sleep(0.3)  # its JoinGroup is out (Tansu answers it after about 3 s)
    assert replay.terminate() == 0, replay.log_tail()
    if engine_kinds["kafka"][0] == "tansu":
        assert "stopping during the group join; completing it first" in replay.log(), replay.log_tail()
    assert "esproxy stopped" in replay.log()
    consumer = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False, session_timeout_ms=6000)
    try:
        consumer.subscribe([topic])
        wait_until(
            lambda: consumer.poll(timeout_ms=200) is not None and len(consumer.assignment()) == 3,
            timeout=20,
            msg="the next member of the group assigned every partition",
        )
    finally:
        consumer.close()
