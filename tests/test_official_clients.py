"""The official Python clients as users run them, through the proxy, replicated into B.

elasticsearch-py 8 sends `Content-Type: application/vnd.elasticsearch+json; compatible-with=8` (`+x-ndjson` for
`_bulk`), and elasticsearch-py 7 does so with `compatible-with=7` when ELASTIC_CLIENT_APIVERSIONING=true (the
upgrade path to Elasticsearch 8). Elasticsearch 7.11+ understands those; OpenSearch, older Elasticsearch and osmem
answer 406, so the replay into such a B sends the plain media type (esproxy/core/mediatype.py). The clients need a real
Elasticsearch 8 as A; the replay of such beans runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import requests
from support.basics import REPO, wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic, produce_raw

pytestmark = pytest.mark.real

COMPAT_JSON = "application/vnd.elasticsearch+json; compatible-with=8"
COMPAT_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
# `make test-real` installs elasticsearch-py 7 here: one virtualenv cannot hold two major versions of a package.
ES7_PYTHON = os.environ.get("ESPROXY_ES7_PYTHON", str(REPO / ".venv" / "es7" / "bin" / "python"))


def _understands_compatibility_media_types(kind: str, version: str) -> bool:
    return kind == "elasticsearch" and tuple(int(x) for x in version.split(".")[:2]) >= (7, 11)


def test_beans_with_compatibility_media_types_replay_into_any_b(esproxy, es_b, kafka, names, engine_kinds):
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    mapping = {"mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}}}
    produce_raw(
        kafka,
        topic,
        [
            make_bean("PUT", f"/{index}", json.dumps(mapping), COMPAT_JSON),
            make_bean("PUT", f"/{index}/_doc/1", json.dumps({"n": 1, "tag": "a"}), COMPAT_JSON),
            make_bean("POST", f"/{index}/_bulk", '{"index":{"_id":"2"}}\n{"n":2,"tag":"b"}\n', COMPAT_NDJSON),
        ],
    )
    replay = esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "2"), timeout=30, msg="the last bean replayed")
    assert es_doc(es_b, index, "1")["_source"] == {"n": 1, "tag": "a"}
    properties = requests.get(f"{es_b}/{index}/_mapping", timeout=10).json()[index]["mappings"]["properties"]
    assert properties["tag"]["type"] == "keyword", properties  # the index was created from the first bean
    assert replay.count_in_log("dead letter") == 0, replay.log_tail()
    # Sent as captured (with the Accept the client sent along) where B understands it, else translated once.
    translated = 0 if _understands_compatibility_media_types(*engine_kinds["b"]) else 1
    assert replay.count_in_log("refuses Content-Type") == translated, replay.log_tail()


def _needs_elasticsearch_8_as_a(engine_kinds) -> None:
    kind, version = engine_kinds["a"]
    if kind != "elasticsearch" or int(version.split(".")[0]) < 8:
        pytest.skip(f"the official clients 8 talk to Elasticsearch 8 only; A is {kind} {version}".rstrip())


def _replicating_proxy(esproxy, es_a, es_b, kafka, names, port) -> str:
    topic = names.topic()
    create_topic(kafka, topic, partitions=2)
    esproxy(replay_config(kafka, topic, names.group(), es_b))
    esproxy(proxy_config(port, es_a, kafka, topic))
    return f"http://127.0.0.1:{port}"


# The same workload for both clients: an index with a mapping, index (own and auto ids), update, delete, and
# helpers.bulk with index and delete actions.
WORKLOAD = textwrap.dedent(
    """
    import sys
    from elasticsearch import Elasticsearch, helpers

    proxy, index = sys.argv[1], sys.argv[2]
    es = Elasticsearch(proxy)
    major = int(__import__("elasticsearch").__version__[0])
    mapping = {"properties": {"n": {"type": "long"}, "text": {"type": "text"}}}
    if major >= 8:
        es.indices.create(index=index, mappings=mapping)
        es.index(index=index, id="1", document={"n": 1, "text": "中文 ünïcode"})
        es.index(index=index, document={"n": 2})
        es.update(index=index, id="1", doc={"n": 10})
    else:
        es.indices.create(index=index, body={"mappings": mapping})
        es.index(index=index, id="1", body={"n": 1, "text": "中文 ünïcode"})
        es.index(index=index, body={"n": 2})
        es.update(index=index, id="1", body={"doc": {"n": 10}})
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": f"b{i}", "n": i} for i in range(50)))
    assert ok == 50 and not errors, errors
    helpers.bulk(es, [{"_op_type": "delete", "_index": index, "_id": "b0"}])
    es.delete(index=index, id="b1")
    print("done")
    """
)


def _check_replicated(es_a: str, es_b: str, names, index: str) -> None:
    compare_until_equal(es_a, es_b, names.pattern())
    assert es_doc(es_b, index, "1")["_source"] == {"n": 10, "text": "中文 ünïcode"}
    assert es_doc(es_b, index, "b2")["_source"] == {"n": 2}
    assert es_doc(es_b, index, "b0") is None and es_doc(es_b, index, "b1") is None
    requests.post(f"{es_b}/{index}/_refresh", timeout=10)
    assert requests.get(f"{es_b}/{index}/_count", timeout=10).json()["count"] == 1 + 1 + 48


def test_elasticsearch_py_8_through_the_proxy_replicates(esproxy, es_a, es_b, kafka, names, port, engine_kinds):
    client = pytest.importorskip("elasticsearch", reason="elasticsearch-py 8: the test-real extra")
    if client.__version__[0] != 8:
        pytest.skip(f"elasticsearch-py {client.__versionstr__} installed, not 8")
    _needs_elasticsearch_8_as_a(engine_kinds)
    proxy = _replicating_proxy(esproxy, es_a, es_b, kafka, names, port)
    index = names.index()
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", WORKLOAD, proxy, index],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stdout + done.stderr
    _check_replicated(es_a, es_b, names, index)


def test_elasticsearch_py_7_in_compatibility_mode_through_the_proxy_replicates(
    esproxy, es_a, es_b, kafka, names, port, engine_kinds
):
    if not os.path.exists(ES7_PYTHON):
        pytest.skip(f"no elasticsearch-py 7 at {ES7_PYTHON} (`make test-real` installs it)")
    _needs_elasticsearch_8_as_a(engine_kinds)
    proxy = _replicating_proxy(esproxy, es_a, es_b, kafka, names, port)
    index = names.index()
    done = subprocess.run(
        [ES7_PYTHON, "-c", WORKLOAD, proxy, index],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ELASTIC_CLIENT_APIVERSIONING": "true"},
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stdout + done.stderr
    _check_replicated(es_a, es_b, names, index)
