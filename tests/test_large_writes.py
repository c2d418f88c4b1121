"""Writes of any size reach B: a bean bigger than one Kafka message is split or chunked (core/messages.py).

Tansu accepts messages of any size (checked: 20 MB), so on it the producer's limit
(`destination.kafkas[].maxMessageBytes`, kafka-python's max_request_size) is what keeps messages
within what a real broker takes; every test checks that limit on what is in the topic.
"""

from __future__ import annotations

import json
import re
import time
from typing import Optional

import pytest
import requests
from support.basics import wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic, produce_raw, read_topic
from support.process import esproxy_cli

from esproxy.core.bean import Bean
from esproxy.core.messages import RECORD_OVERHEAD, abort_messages, encode

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

LIMIT = 1024 * 1024  # the default maxMessageBytes


def bulk_body(index: str, count: int, doc_bytes: int) -> bytes:
    filler = "x" * doc_bytes
    lines = []
    for i in range(count):
        lines.append(json.dumps({"index": {"_index": index, "_id": str(i)}}))
        lines.append(json.dumps({"n": i, "text": filler}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def pipeline(esproxy, osmem_factory, kafka, names, port):
    """start(**proxy_settings): fresh clusters A and B, a topic of 3 partitions, the proxy and the replay."""

    def start(durability: str = "spool", spool: Optional[dict] = None) -> tuple[str, str, str, str]:
        a, b = osmem_factory(), osmem_factory()
        topic = names.topic()
        create_topic(kafka, topic, partitions=3)
        esproxy(replay_config(kafka, topic, names.group(), b))
        conf = proxy_config(port, a, kafka, topic)
        conf["source"]["proxies"][0]["durability"] = durability
        if spool:
            conf["spool"] = spool
        esproxy(conf)
        return a, b, topic, f"http://127.0.0.1:{port}"

    return start


def small_writes(base: str, index: str, n: int = 20) -> None:
    with requests.Session() as s:
        for i in range(n):
            assert s.put(f"{base}/{index}/_doc/{i}", json={"i": i}, timeout=10).status_code == 201


def check_topic(kafka: str, topic: str, big_index: str) -> list:
    """Every message is within the limit; returns the big index's messages."""
    records = read_topic(kafka, topic, timeout=60)
    assert records
    for r in records:
        assert len(r.key) + len(r.value) + RECORD_OVERHEAD <= LIMIT, (r.key, len(r.value))
    return [r for r in records if r.key == big_index.encode()]


@pytest.mark.parametrize(
    "count, doc_bytes",
    [(3000, 1000), (500, 100_000)],  # 3 MB of 1 KB documents; 50 MB of 100 KB documents
    ids=["3MB", "50MB"],
)
def test_a_large_bulk_reaches_b(pipeline, kafka, names, count, doc_bytes):
    a, b, topic, base = pipeline()
    big, small = names.index("big"), names.index("small")
    body = bulk_body(big, count, doc_bytes)
    started = time.monotonic()
    r = requests.post(f"{base}/_bulk", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=120)
    assert r.status_code == 200 and r.json()["errors"] is False, r.text[:500]
    print(f"{len(body) / 1e6:.1f} MB _bulk through the proxy in {time.monotonic() - started:.1f}s")
    small_writes(base, small)
    compare_until_equal(a, b, names.pattern(), timeout=120)
    print(f"B equal to A {time.monotonic() - started:.1f}s after the _bulk was sent")
    messages = check_topic(kafka, topic, big)
    beans = [json.loads(m.value) for m in messages]
    assert len(beans) > len(body) // LIMIT and all(bean["kind"] == "docs" for bean in beans)
    ids = [json.loads(line)["index"]["_id"] for bean in beans for line in bean["body"].splitlines()[::2]]
    assert ids == [str(i) for i in range(count)]  # every action once, in order


@pytest.mark.parametrize("durability", ["spool", "none"])
def test_a_document_larger_than_a_message_reaches_b(pipeline, kafka, names, durability):
    a, b, topic, base = pipeline(durability)
    big, small = names.index("big"), names.index("small")
    doc = {"text": "é" * (2_500_000)}  # 5 MB of UTF-8
    body = json.dumps(doc, ensure_ascii=False).encode()
    started = time.monotonic()
    r = requests.put(f"{base}/{big}/_doc/huge", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 201
    small_writes(base, small)
    compare_until_equal(a, b, names.pattern(), timeout=120)
    print(f"B equal to A {time.monotonic() - started:.1f}s after the 5 MB document was sent")
    assert es_doc(b, big, "huge")["_source"] == doc
    messages = check_topic(kafka, topic, big)
    kinds = [json.loads(m.value)["kind"] for m in messages]
    assert len(kinds) > 5 and set(kinds) == {"chunk"}


def test_writes_larger_than_the_spool_pass(pipeline, kafka, names):
    """A write bigger than spool.maxBytes is taken when the spool has room, and the next waits for it to ship."""
    a, b, topic, base = pipeline(spool={"maxBytes": 1024 * 1024})
    index = names.index("big")
    for part in range(2):
        body = bulk_body(index, 2000, 1000).replace(b'"_id": "', b'"_id": "%d-' % part)
        r = requests.post(f"{base}/_bulk", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=60)
        assert r.status_code == 200 and r.json()["errors"] is False, r.text[:500]
    small_writes(base, names.index("small"))
    compare_until_equal(a, b, names.pattern(), timeout=120)
    check_topic(kafka, topic, index)


def test_the_committed_offset_waits_for_the_last_chunk_across_a_restart(esproxy, es_b, kafka, names):
    """A chunk set read in part holds the commit at its first chunk (writes after it are applied
    meanwhile), so a replay started later completes it."""
    from kafka import KafkaConsumer, TopicPartition

    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    doc = "y" * 3_000_000
    big = Bean.from_json(make_bean("PUT", f"/{index}/_doc/big", json.dumps({"t": doc})))
    chunks = [m.value for m in encode(big, LIMIT)]
    assert len(chunks) >= 3
    produce_raw(kafka, topic, chunks[:-1] + [make_bean("PUT", f"/{index}/_doc/after", '{"a": 1}')])
    replay = esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "after"), timeout=30, msg="the write after the first chunks")

    def committed():
        c = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
        try:
            return c.committed(TopicPartition(topic, 0))
        finally:
            c.close()

    # Nothing to wait for here: the replay would commit within a poll (0.5 s) of applying "after".
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert committed() is None  # the set began at offset 0
        time.sleep(0.2)
    assert es_doc(es_b, index, "big") is None
    replay.terminate()  # a restart: the next replay reads the set again from its first chunk
    produce_raw(kafka, topic, chunks[-1:])
    esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "big"), timeout=30, msg="the chunked write, once complete")
    assert es_doc(es_b, index, "big")["_source"] == {"t": doc}
    wait_until(lambda: committed() == len(chunks) + 1, timeout=15, msg="the commit past the last chunk")


def test_a_chunk_set_that_never_completes_goes_to_the_dead_letters(esproxy, es_b, kafka, names, tmp_path):
    from kafka import KafkaProducer

    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    lost = [m.value for m in encode(Bean("PUT", f"/{index}/_doc/lost", b'{"t":"' + b"z" * 2_500_000 + b'"}'), LIMIT)]
    aborted = Bean("PUT", f"/{index}/_doc/aborted", b'{"t":"' + b"w" * 2_500_000 + b'"}')
    shipped_again = [
        m.value for m in encode(Bean("PUT", f"/{index}/_doc/again", b'{"t":"' + b"a" * 2_500_000 + b'"}'), LIMIT)
    ]
    now = int(time.time() * 1000)
    later = now + 11 * 60 * 1000  # chunkTimeout: 10m
    producer = KafkaProducer(bootstrap_servers=kafka, max_request_size=2 * LIMIT)
    try:
        sends = [(v, now) for v in lost[:2]]  # its producer died and never came back
        sends += [(m.value, now) for m in encode(aborted, LIMIT)[:1]]
        sends += [(m.value, now + 1) for m in abort_messages(aborted, LIMIT, "refused for good")]
        sends += [(v, now + 2) for v in shipped_again[:2]]  # then the broker was away for 11 minutes:
        sends += [(v, later) for v in shipped_again]  # the proxy ships the whole bean again
        sends += [(make_bean("PUT", f"/{index}/_doc/later", '{"a": 1}'), later)]
        for value, ts in sends:
            producer.send(topic, value=value, partition=0, timestamp_ms=ts).get(timeout=10)
    finally:
        producer.close()
    path = tmp_path / "dead.jsonl"
    replay = esproxy(replay_config(kafka, topic, group, es_b, deadLetterFile=str(path)))
    wait_until(lambda: es_doc(es_b, index, "later"), timeout=30, msg="the write after the incomplete sets")
    replay.wait_log("given up by its producer (refused for good)", timeout=10)
    letters = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(letters) == 1 and letters[0]["deadLetter"]["offset"] == 0, letters
    held = json.loads(letters[0]["value"])
    assert held["chunk"]["seqs"] == [0, 1] and held["chunk"]["offsets"] == [0, 1]
    assert "incomplete write carried in chunks" in letters[0]["deadLetter"]["reason"]
    assert es_doc(es_b, index, "lost") is None and es_doc(es_b, index, "aborted") is None
    assert es_doc(es_b, index, "again")["_source"] == {"t": "a" * 2_500_000}


def test_a_large_dead_letter_is_chunked_listed_and_requeued(esproxy, es_b, kafka, names):
    """A chunked write that B refuses is a dead letter bigger than a message: chunked too, and `esproxy dlq`
    puts it together to list and requeue it."""
    topic, group, index = names.topic(), names.group(), names.index()
    dlq = f"{topic}.dlq"
    create_topic(kafka, topic, partitions=1)
    mapping = {"mappings": {"properties": {"n": {"type": "long"}}}}
    assert requests.put(f"{es_b}/{index}", json=mapping, timeout=10).status_code == 200
    doc = {"n": "not a number", "t": "q" * 3_000_000}
    bean = Bean.from_json(make_bean("PUT", f"/{index}/_doc/1", json.dumps(doc)))
    produce_raw(kafka, topic, [m.value for m in encode(bean, LIMIT)])
    esproxy(replay_config(kafka, topic, group, es_b))

    def listed():
        out = esproxy_cli("dlq", "list", "--brokers", kafka, "--topic", dlq)
        return out if "1 dead letter(s)" in out.stderr else None

    out = wait_until(listed, timeout=60, msg="the dead letter listed")
    # Elasticsearch 8.8+ calls it document_parsing_exception
    assert re.search(r"(mapper|document)_parsing_exception", out.stdout) and f"{topic}-0@" in out.stdout, out.stdout
    stored = read_topic(kafka, dlq)
    assert len(stored) > 3 and all(len(r.key or b"") + len(r.value) + RECORD_OVERHEAD <= LIMIT for r in stored)

    assert requests.delete(f"{es_b}/{index}", timeout=10).status_code == 200  # the operator fixes B
    done = esproxy_cli("dlq", "requeue", "--brokers", kafka, "--topic", dlq, "--all")
    assert done.returncode == 0 and f"requeued 1 to topic {topic}" in done.stdout, done.stdout + done.stderr
    wait_until(lambda: es_doc(es_b, index, "1"), timeout=30, msg="the requeued write in B")
    assert es_doc(es_b, index, "1")["_source"] == doc
