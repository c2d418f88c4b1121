"""Dead letters: messages that can never apply go to `<topic>.dlq` (or a file) with the reason and
their origin, replay continues, and `esproxy dlq list|requeue` shows them and puts them back."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests
from support.basics import wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafka import create_topic, produce_raw, read_topic
from support.process import esproxy_cli

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

JSON = {"Content-Type": "application/json"}
# A document that does not fit the mapping: mapper_parsing_exception, or since Elasticsearch 8.8
# document_parsing_exception.
PARSING_ERROR = re.compile(r"(mapper|document)_parsing_exception")


def compare(a: str, b: str, index: str) -> subprocess.CompletedProcess:
    return esproxy_cli("compare", "--source", a, "--target", b, "--index", index)


def wait_compare_equal(a: str, b: str, index: str, timeout: float = 20) -> None:
    last: list = []

    def equal() -> bool:
        last[:] = [compare(a, b, index)]
        return last[0].returncode == 0

    wait_until(equal, timeout=timeout, interval=0.5, msg=f"compare {index}")
    assert "0 differences" in last[0].stdout or last[0].returncode == 0, last[0].stdout


def test_poison_and_refused_writes_become_dead_letters_then_requeue_converges(
    esproxy, es_a, osmem_factory, kafka, names, port, tmp_path
):
    es_b = osmem_factory()
    topic, group = names.topic(), names.group()
    good, bad = names.index("good"), names.index("bad")
    dlq = f"{topic}.dlq"
    create_topic(kafka, topic, partitions=2)
    # B was given another mapping for `bad`: the documents A accepts (n is a string) are refused there.
    r = requests.put(f"{es_b}/{bad}", json={"mappings": {"properties": {"n": {"type": "long"}}}}, timeout=10)
    assert r.status_code == 200, r.text
    replay = esproxy(replay_config(kafka, topic, group, es_b))
    esproxy(proxy_config(port, es_a, kafka, topic, sync=True))
    proxy = f"http://127.0.0.1:{port}"

    produce_raw(kafka, topic, [b"this is not json {"], partition=0)
    bulk = "".join(
        f'{{"index":{{"_index":"{bad}","_id":"b{i}"}}}}\n{{"n":"text-{i}"}}\n'
        f'{{"index":{{"_index":"{good}","_id":"g{i}"}}}}\n{{"n":{i}}}\n'
        for i in range(3)
    )
    r = requests.post(f"{proxy}/_bulk", data=bulk, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
    assert r.status_code == 200 and not r.json()["errors"], r.text
    # A raw write B refuses for good: B already has `bad` (400 resource_already_exists_exception).
    bad_raw = names.index("raw")
    requests.put(f"{es_b}/{bad_raw}", timeout=10)
    r = requests.put(f"{proxy}/{bad_raw}", json={"settings": {"number_of_shards": 1}}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.put(f"{proxy}/{good}/_doc/after", json={"n": 99}, timeout=10)
    assert r.status_code == 201, r.text

    # Later messages still replay.
    wait_until(lambda: es_doc(es_b, good, "after"), timeout=20, msg="the write after the poison in B")
    for i in range(3):
        assert es_doc(es_b, good, f"g{i}")["_source"] == {"n": i}
        assert es_doc(es_b, bad, f"b{i}") is None
    letters = wait_until(lambda: (lambda v: v if len(v) >= 5 else None)(read_topic(kafka, dlq)), timeout=15)
    records = [json.loads(rec.value) for rec in letters]
    assert len(records) == 5, records  # not JSON + three refused actions + the refused index creation
    for rec in records:
        info = rec["deadLetter"]
        assert info["topic"] == topic and isinstance(info["partition"], int) and isinstance(info["offset"], int)
        assert info["time"].endswith("Z") and info["reason"]
    poison = next(r for r in records if "value" in r)
    assert poison["value"] == "this is not json {" and poison["deadLetter"]["reason"].startswith("not a bean")
    refused = [r for r in records if r.get("kind") == "docs"]
    assert len(refused) == 3
    for rec in refused:  # one action each, so each can be requeued alone
        lines = [line for line in rec["body"].splitlines() if line.strip()]
        assert len(lines) == 2 and bad in lines[0], rec
        assert rec["deadLetter"]["status"] == 400 and rec["deadLetter"]["target"] == es_b
        assert PARSING_ERROR.search(rec["deadLetter"]["reason"]), rec
    raw = [r for r in records if r.get("method") == "PUT" and "kind" not in r]
    assert len(raw) == 1 and raw[0]["requestUri"] == f"/{bad_raw}"
    assert "resource_already_exists" in raw[0]["deadLetter"]["reason"]
    assert replay.proc.poll() is None, replay.log_tail()
    assert replay.count_in_log("dead letter ") >= 5

    # esproxy dlq list shows them: time, origin, reason, preview.
    listed = esproxy_cli("dlq", "list", "--brokers", kafka, "--topic", dlq)
    assert listed.returncode == 0, listed.stderr
    assert "5 dead letter(s)" in listed.stderr
    assert listed.stdout.count(f"{topic}-") == 5 and "not a bean" in listed.stdout
    assert PARSING_ERROR.search(listed.stdout) and "this is not json" in listed.stdout
    conf = tmp_path / "replay-conf.yml"
    conf.write_text(json.dumps(replay_config(kafka, topic, group, es_b)))
    by_conf = esproxy_cli("dlq", "list", "-c", str(conf), "--match", "resource_already_exists")
    assert by_conf.returncode == 0 and by_conf.stdout.count(f"{topic}-") == 1, by_conf

    assert compare(es_a, es_b, f"{good},{bad}").returncode == 1  # B lacks the refused documents

    # The operator fixes the cause (B's index gets A's mapping), then requeues.
    assert requests.delete(f"{es_b}/{bad}", timeout=10).status_code == 200
    assert requests.delete(f"{es_b}/{bad_raw}", timeout=10).status_code == 200
    dry = esproxy_cli("dlq", "requeue", "-c", str(conf), "--all", "--dry-run")
    assert dry.returncode == 0 and "would requeue 4 to topic" in dry.stdout, dry
    done = esproxy_cli("dlq", "requeue", "-c", str(conf), "--all")
    assert done.returncode == 0, done.stderr
    assert f"requeued 4 to topic {topic}" in done.stdout and "skipped 1 that are not beans" in done.stdout
    assert "not a bean" in done.stderr
    wait_compare_equal(es_a, es_b, f"{good},{bad},{bad_raw}")
    assert es_doc(es_b, bad, "b1")["_source"] == {"n": "text-1"}
    requests.post(f"{es_b}/{bad_raw}/_refresh", timeout=10)
    assert requests.head(f"{es_b}/{bad_raw}", timeout=10).status_code == 200
    assert len(read_topic(kafka, dlq)) == 5  # nothing new became a dead letter


def test_dead_letter_file_and_cli_errors(esproxy, es_b, kafka, names, tmp_path):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    path = tmp_path / "dead.jsonl"
    produce_raw(kafka, topic, [b"\xff\xfe binary", make_bean("PUT", f"/{index}/_doc/ok", '{"ok": 1}')])
    esproxy(replay_config(kafka, topic, group, es_b, deadLetterFile=str(path)))
    wait_until(lambda: es_doc(es_b, index, "ok"), timeout=20, msg="the write after the poison")
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["valueEncoding"] == "base64" and rec["deadLetter"]["offset"] == 0
    listed = esproxy_cli("dlq", "list", "--file", str(path))
    assert listed.returncode == 0 and f"{topic}-0@0" in listed.stdout, listed
    assert read_topic(kafka, f"{topic}.dlq") == []  # the file replaces the topic

    # Only non-beans: nothing to requeue (1); bad usage (2); unreachable file (1).
    nothing = esproxy_cli("dlq", "requeue", "--file", str(path), "--brokers", kafka, "--all")
    assert nothing.returncode == 1 and "nothing to requeue" in nothing.stderr, nothing
    assert esproxy_cli("dlq", "requeue", "--file", str(path)).returncode == 2
    assert esproxy_cli("dlq", "list").returncode == 2
    assert esproxy_cli("dlq", "list", "--topic", "x").returncode == 2
    unreadable = esproxy_cli("dlq", "list", "--file", str(tmp_path))
    assert unreadable.returncode == 1 and "cannot read" in unreadable.stderr


def test_a_dead_letter_that_cannot_be_written_holds_the_partition(esproxy, es_b, kafka, names, tmp_path):
    """Nothing is committed past a message whose dead letter is not written yet; it is retried."""
    from kafka import KafkaConsumer, TopicPartition

    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    path = tmp_path / "not-yet" / "dead.jsonl"  # its directory does not exist yet
    produce_raw(kafka, topic, [b"poison", make_bean("PUT", f"/{index}/_doc/after", '{"a": 1}')])
    replay = esproxy(replay_config(kafka, topic, group, es_b, deadLetterFile=str(path)))
    replay.wait_log("not written to file", count=2, timeout=15)
    c = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    try:
        assert c.committed(TopicPartition(topic, 0)) is None
    finally:
        c.close()
    assert es_doc(es_b, index, "after") is None
    path.parent.mkdir()
    wait_until(lambda: es_doc(es_b, index, "after"), timeout=20, msg="the replay going on once the file is writable")
    assert [json.loads(line)["value"] for line in path.read_text().splitlines()] == ["poison"]
