"""A cluster B whose 2xx `_bulk` answers cannot be trusted (a proxy or load balancer in front of it
mangling or cutting them, a server that is not Elasticsearch): the replay cannot tell which writes B
applied, so it sends the whole batch again with its backoff, says so, and loses nothing."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
import requests
from support.basics import free_port, wait_until
from support.beans import make_bean
from support.configs import replay_config
from support.kafka import create_topic, produce_raw
from support.mangled import BAD_ANSWERS, MangledB


@pytest.fixture
def mangled_b() -> Iterator[MangledB]:
    b = MangledB()
    yield b
    b.stop()


def test_a_bulk_answer_b_mangles_is_retried_whole_and_nothing_is_lost(esproxy, kafka, names, mangled_b):
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic)
    sent = []
    beans = []
    for n in range(3):
        lines = b""
        for doc in range(2):
            doc_id, version = f"d{n}-{doc}", 10 + n
            meta = {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte"}
            lines += json.dumps({"index": meta}).encode() + b"\n" + json.dumps({"n": n}).encode() + b"\n"
            sent.append(("index", index, doc_id, version))
        beans.append(make_bean("POST", "/_bulk", lines.decode(), "application/x-ndjson", index=index, kind="docs"))
    produce_raw(kafka, topic, beans)
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), mangled_b.url)
    conf["admin"] = {"port": admin_port}
    conf["health"] = {"maxReplayStall": "1s"}
    replay = esproxy(conf)
    admin = f"http://127.0.0.1:{admin_port}/_esproxy"

    def stalled() -> bool:
        r = requests.get(f"{admin}/health", timeout=5)
        return r.status_code == 503 and any(x["check"] == "replay_stalled" for x in r.json()["reasons"])

    wait_until(lambda: len(mangled_b.bulks) >= len(BAD_ANSWERS), timeout=30, msg="B answered each mangled answer")
    wait_until(stalled, timeout=30, msg="health: the replay is stalled")
    # nothing counted as applied, nothing dead-lettered or skipped: the batch is sent again, whole
    stats = requests.get(f"{admin}/stats", timeout=5).json()["replay"]
    assert stats["by_index"] == {} and stats["skipped"] == {}, stats
    first, *again = mangled_b.actions(good=False)
    assert first and all(batch == first for batch in again), "each retry sends the same batch"
    log = replay.log()
    for reason in (
        f"status 200, but the _bulk answer has 1 items for {len(first)} actions",
        "status 200, but _bulk answer is not JSON: '<html><body>OK</body></html>'",
        "status 200, but _bulk answer is a JSON list, not an object",
        "status 200, but _bulk answer item 1 has no HTTP status ('created')",
    ):
        assert f"POST {mangled_b.url}/_bulk failed (attempt" in log and reason in log, (reason, replay.log_tail())
    assert "Traceback" not in log, replay.log_tail()

    mangled_b.heal()
    written = lambda: sorted(a for batch in mangled_b.actions(good=True) for a in batch)  # noqa: E731
    wait_until(lambda: written() == sorted(sent), timeout=60, msg="every write applied once B answers well")
    wait_until(lambda: requests.get(f"{admin}/health", timeout=5).status_code == 200, timeout=30, msg="healthy")
    stats = requests.get(f"{admin}/stats", timeout=5).json()["replay"]
    assert stats["by_index"][index]["writes"] == 3 and stats["skipped"] == {}, stats
    assert replay.proc.poll() is None, replay.log_tail()
