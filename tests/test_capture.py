"""Write capture: successful writes through the proxy become beans in Kafka; nothing else does."""

from __future__ import annotations

import gzip
import json
import re

import pytest
import requests
from support.basics import wait_until
from support.beans import doc_writes, writes_of
from support.configs import proxy_config
from support.elastic import es_cluster_id
from support.kafka import count_messages, read_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def beans(kafka: str, topic: str) -> list:
    return [json.loads(r.value) for r in read_topic(kafka, topic)]


def wait_for_doc(kafka: str, topic: str, index: str, doc_id: str, timeout: float = 15.0) -> list:
    """Wait until a bean writing index/doc_id is in topic; return all beans."""

    def found():
        all_beans = beans(kafka, topic)
        return all_beans if any(w[1:3] == (index, doc_id) for w in doc_writes(all_beans)) else None

    return wait_until(found, timeout=timeout, interval=0.2, msg=f"bean for {index}/{doc_id} in {topic}")


@pytest.fixture
def capture(esproxy, es_a, kafka, names, port):
    """A proxy in front of A capturing into a fresh topic: (base URL, topic, index, process)."""
    topic = names.topic()
    proc = esproxy(proxy_config(port, es_a, kafka, topic, labels={"SRC": "PROXY", "team": "qa"}))
    return f"http://127.0.0.1:{port}", topic, names.index(), proc


def test_writes_become_messages(capture, kafka):
    base, topic, index, _ = capture
    bulk = (
        f'{{"index":{{"_index":"{index}","_id":"b1"}}}}\n{{"n":1}}\n'
        f'{{"index":{{"_index":"{index}","_id":"b2"}}}}\n{{"n":2}}\n'
    ).encode()
    writes = [
        ("PUT", f"/{index}", {"json": {"mappings": {"properties": {"n": {"type": "long"}}}}}),
        ("PUT", f"/{index}/_doc/1", {"json": {"n": 1}}),
        ("POST", f"/{index}/_doc/2", {"json": {"n": 2}}),
        ("POST", f"/{index}/_doc", {"json": {"n": 3}}),
        ("POST", f"/{index}/_update/1", {"json": {"doc": {"n": 10}}}),
        ("POST", "/_bulk", {"data": bulk, "headers": NDJSON}),
        ("PUT", f"/{index}/_create/3", {"json": {"n": 3}}),
        ("DELETE", f"/{index}/_doc/2", {}),
    ]
    answers = []
    for method, path, kw in writes:
        r = requests.request(method, base + path, timeout=10, **kw)
        assert 200 <= r.status_code < 300, f"{method} {path} -> {r.status_code} {r.text[:300]}"
        answers.append(r.json())
    assert requests.put(base + f"/{index}/_doc/sentinel", json={"n": 0}, timeout=10).status_code == 201
    wait_for_doc(kafka, topic, index, "sentinel")
    # The sentinel may overtake earlier writes in the producer: wait for the full count, then re-read.
    wait_until(lambda: count_messages(kafka, topic) >= len(writes) + 1, timeout=10, msg="all writes captured")
    got = beans(kafka, topic)
    assert len(got) == len(writes) + 1, [writes_of(b) for b in got]
    auto_id = answers[3]["_id"]
    # Document writes arrive as the document's final state on A, with A's ids (auto-id included);
    # the index creation is replayed as sent.
    assert sorted(map(repr, doc_writes(got))) == sorted(
        map(
            repr,
            [
                ("PUT", f"/{index}"),
                ("index", index, "1", {"n": 1}),
                ("index", index, "2", {"n": 2}),
                ("index", index, auto_id, {"n": 3}),
                ("index", index, "1", {"n": 10}),
                ("index", index, "b1", {"n": 1}),
                ("index", index, "b2", {"n": 2}),
                ("index", index, "3", {"n": 3}),
                ("delete", index, "2", None),
                ("index", index, "sentinel", {"n": 0}),
            ],
        )
    )


def test_reads_produce_no_message(capture, kafka):
    base, topic, index, _ = capture
    assert requests.put(f"{base}/{index}/_doc/1?refresh=true", json={"n": 1}, timeout=10).status_code == 201
    scroll = requests.post(f"{base}/{index}/_search?scroll=1m", json={"size": 1}, timeout=10)
    assert scroll.status_code == 200, scroll.text
    scroll_id = scroll.json().get("_scroll_id")
    reads = [
        ("GET", "/", {}),
        ("GET", f"/{index}/_doc/1", {}),
        ("HEAD", f"/{index}/_doc/1", {}),
        ("HEAD", f"/{index}", {}),
        ("GET", f"/{index}/_search", {}),
        ("POST", f"/{index}/_search", {"json": {"query": {"match_all": {}}}}),
        ("POST", f"/{index}/_count", {"json": {"query": {"match_all": {}}}}),
        ("POST", "/_mget", {"json": {"docs": [{"_index": index, "_id": "1"}]}}),
        ("POST", f"/{index}/_mget", {"json": {"ids": ["1"]}}),
        (
            "POST",
            "/_msearch",
            {"data": f'{{"index":"{index}"}}\n{{"query":{{"match_all":{{}}}}}}\n', "headers": NDJSON},
        ),
        ("POST", "/_analyze", {"json": {"analyzer": "standard", "text": "Hello World"}}),
        ("POST", "/_search/scroll", {"json": {"scroll": "1m", "scroll_id": scroll_id or "x"}}),
        ("GET", f"/{index}/_field_caps?fields=n", {}),
        ("POST", f"/{index}/_field_caps", {"json": {"fields": ["n"]}}),
    ]
    for method, path, kw in reads:
        r = requests.request(method, base + path, timeout=10, **kw)
        assert r.status_code < 500, f"{method} {path} -> {r.status_code} {r.text[:300]}"
    assert requests.put(f"{base}/{index}/_doc/sentinel", json={"n": 0}, timeout=10).status_code == 201
    wait_for_doc(kafka, topic, index, "sentinel")
    got = doc_writes(beans(kafka, topic))
    assert got == [("index", index, "1", {"n": 1}), ("index", index, "sentinel", {"n": 0})], got


def test_rejected_write_produces_no_message(capture, kafka):
    base, topic, index, _ = capture
    rejected = [
        ("PUT", f"/{index}/_doc/1", {"data": b'{"broken": ', "headers": JSON}),  # 400 parse error
        ("DELETE", f"/{index}-missing/_doc/1", {}),  # 404 no such index
        ("PUT", f"/{index}/_create/dup", {"json": {"n": 1}}),  # first: 201 (counted below)
        ("PUT", f"/{index}/_create/dup", {"json": {"n": 2}}),  # second: 409 version conflict
    ]
    statuses = []
    for method, path, kw in rejected:
        statuses.append(requests.request(method, base + path, timeout=10, **kw).status_code)
    assert statuses[0] == 400 and statuses[1] == 404 and statuses[2] == 201 and statuses[3] == 409, statuses
    assert requests.put(f"{base}/{index}/_doc/sentinel", json={"n": 0}, timeout=10).status_code == 201
    wait_for_doc(kafka, topic, index, "sentinel")
    got = doc_writes(beans(kafka, topic))
    assert got == [("index", index, "dup", {"n": 1}), ("index", index, "sentinel", {"n": 0})], got


def test_bean_fields(capture, kafka, es_a, port):
    base, topic, index, _ = capture
    body = '{"name": "Zoë 中文", "n": 5}'
    uri = f"/{index}/_doc/bean-1?refresh=true"
    r = requests.put(
        base + uri,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json", "X-Test-Header": "hello"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    [bean] = wait_for_doc(kafka, topic, index, "bean-1")
    assert bean["labels"] == {"SRC": "PROXY", "team": "qa"}
    assert bean["host"] == f"127.0.0.1:{port}"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", bean["remoteAddr"]), bean["remoteAddr"]
    # A document write travels as a _bulk of its final state, keyed by its index.
    assert bean["method"] == "POST" and bean["requestUri"] == "/_bulk"
    assert bean["kind"] == "docs" and bean["index"] == index
    assert isinstance(bean["header"], dict)
    assert all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in bean["header"].values())
    hdr = {k.lower(): v for k, v in bean["header"].items()}
    assert hdr.get("content-type") == ["application/x-ndjson"], bean["header"]
    assert "x-test-header" not in hdr  # beans carry Content-Type only, as the Go original's do
    assert isinstance(bean["body"], str)
    assert writes_of(bean) == [("index", index, "bean-1", json.loads(body))]
    assert body in bean["body"]  # the source line travels byte for byte
    cluster_id = wait_until(lambda: es_cluster_id(es_a), timeout=5, msg="A's clusterid document")
    assert bean["clusterIds"] == [cluster_id]


def test_gzip_request_body_is_captured_decoded(capture, kafka):
    """A gzip-encoded write reaches A and its bean carries a body the replay can re-send."""
    base, topic, index, _ = capture
    doc = {"name": "gz", "n": 9}
    uri = f"/{index}/_doc/gz"
    r = requests.put(
        base + uri,
        data=gzip.compress(json.dumps(doc).encode()),
        headers={**JSON, "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    [bean] = wait_for_doc(kafka, topic, index, "gz")
    hdr = {k.lower(): v for k, v in bean["header"].items()}
    assert "content-encoding" not in hdr, bean
    assert writes_of(bean) == [("index", index, "gz", doc)], bean


# Kafka record batch attribute bits for each codec.
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("codec", list(CODEC_IDS))
def test_capture_codecs(esproxy, es_a, kafka, names, port, codec, monkeypatch):
    topic = names.topic(codec)
    index = names.index(codec)
    esproxy(proxy_config(port, es_a, kafka, topic, codec=codec))
    base = f"http://127.0.0.1:{port}"
    sent = {}
    for i in range(5):
        doc = {"i": i, "codec": codec, "pad": "abc" * 50}
        assert requests.put(f"{base}/{index}/_doc/{i}", json=doc, timeout=10).status_code == 201
        sent[str(i)] = doc
    wait_until(lambda: count_messages(kafka, topic) >= 5, timeout=15, interval=0.2, msg=f"5 beans ({codec})")

    # Note the compression of every record batch the test's own consumer decodes (Tansu stores
    # batches as produced), so a codec setting that is silently ignored fails here.
    from kafka.record.default_records import DefaultRecordBatch

    seen = set()
    original = DefaultRecordBatch._maybe_uncompress

    def spy(batch):
        seen.add(batch.compression_type)
        return original(batch)

    monkeypatch.setattr(DefaultRecordBatch, "_maybe_uncompress", spy)
    got = {doc_id: source for _, _, doc_id, source in doc_writes(beans(kafka, topic))}
    assert got == sent
    assert seen == {CODEC_IDS[codec]}, f"record batches compressed with {seen}, expected {codec}"
