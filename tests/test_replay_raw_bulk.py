"""A `_bulk` replayed as sent (a Go original's bean, or capture's fallback) has its items read on B: the good
ones are applied, each one B refuses for good is a dead letter of its own, 429/5xx items are sent again alone,
and the replay goes on with the next message. Never counted applied for what B did not apply."""

from __future__ import annotations

import json
import re
from typing import Iterator

import pytest
import requests
from support.basics import free_port, wait_until
from support.beans import make_bean
from support.configs import replay_config
from support.elastic import es_doc
from support.kafka import create_topic, produce_raw
from support.mangled import ItemsFailOnceB

JSON = {"Content-Type": "application/json"}
NDJSON = "application/x-ndjson"
# A document that does not fit the mapping: mapper_parsing_exception, or since Elasticsearch 8.8
# document_parsing_exception.
PARSING_ERROR = re.compile(r"(mapper|document)_parsing_exception")


def ndjson(*lines: dict) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def replay_stats(admin: str) -> dict:
    return requests.get(f"{admin}/stats", timeout=5).json()["replay"]


@pytest.mark.real  # the same test runs on the real engines (make test-real)
def test_refused_items_are_dead_letters_of_their_own_the_rest_applied(esproxy, es_b, kafka, names, tmp_path):
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=1)
    # B maps n as an integer: a text n is refused there (A may have taken it: another mapping, or none)
    r = requests.put(f"{es_b}/{index}", json={"mappings": {"properties": {"n": {"type": "integer"}}}}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.put(f"{es_b}/{index}/_doc/exists", json={"n": 7}, headers=JSON, timeout=10)
    assert r.status_code in (200, 201), r.text
    bad_action = ndjson({"index": {"_id": "bad"}}, {"n": "text"})
    body = (
        ndjson({"index": {"_id": "good"}}, {"n": 1})
        + bad_action
        + ndjson({"create": {"_id": "exists"}}, {"n": 8})  # 409, already there: a redelivery, done
        + ndjson({"delete": {"_id": "missing"}})  # 404, nothing to delete: done
    )
    # as capture's fallback keeps it: under A's filter_path, whose answer says no item's status
    bulk = make_bean("POST", f"/{index}/_bulk?filter_path=items.*._id", body, NDJSON)
    after = make_bean("PUT", f"/{index}/_doc/after", '{"n": 2}')
    produce_raw(kafka, topic, [bulk, after])
    dead = tmp_path / "dead.jsonl"
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), es_b, deadLetterFile=str(dead))
    conf["admin"] = {"port": admin_port}
    replay = esproxy(conf)
    admin = f"http://127.0.0.1:{admin_port}/_esproxy"

    wait_until(lambda: es_doc(es_b, index, "after"), timeout=30, msg="the message after the _bulk replayed")
    assert es_doc(es_b, index, "good")["_source"] == {"n": 1}
    assert es_doc(es_b, index, "bad") is None
    assert es_doc(es_b, index, "exists")["_source"] == {"n": 7}
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(letters) == 1, letters
    letter = letters[0]
    info = letter.pop("deadLetter")
    # a bean holding just the refused action, requeueable alone
    assert letter["body"] == bad_action and letter["requestUri"] == f"/{index}/_bulk?filter_path=items.*._id"
    assert info["status"] == 400 and (info["topic"], info["offset"]) == (topic, 0), info
    assert info["reason"].startswith(f"index {index}/bad refused (400): ") and PARSING_ERROR.search(info["reason"])
    assert PARSING_ERROR.search(info["error"]["type"]), info
    log = replay.log()
    assert re.search(rf"WARN.*refused index {index}/bad \(400\).*to the dead letters", log), replay.log_tail()
    applied = lambda: replay_stats(admin)["by_index"].get(index, {}).get("writes") == 2  # noqa: E731
    wait_until(applied, timeout=10, msg="the _bulk and the write after it counted applied")
    stats = replay_stats(admin)
    # the _bulk and the write after it applied; the refused action counted as such, nothing else
    assert stats["by_index"][index]["writes"] == 2 and stats["skipped"] == {index: 1}, stats
    assert stats["dead_letters"] == 1, stats
    assert "Traceback" not in log, replay.log_tail()


@pytest.fixture
def busy_b() -> Iterator[ItemsFailOnceB]:
    b = ItemsFailOnceB({"b": 429, "c": 503})
    yield b
    b.stop()


def test_items_answered_429_or_5xx_are_sent_again_alone_until_applied(esproxy, kafka, names, busy_b, tmp_path):
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=1)
    body = "".join(ndjson({"index": {"_index": index, "_id": i}}, {"id": i}) for i in "abc")
    uri = "/_bulk?refresh=wait_for"
    produce_raw(kafka, topic, [make_bean("POST", uri, body, NDJSON), make_bean("PUT", f"/{index}/_doc/after", "{}")])
    dead = tmp_path / "dead.jsonl"
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), busy_b.url, deadLetterFile=str(dead))
    conf["admin"] = {"port": admin_port}
    replay = esproxy(conf)
    admin = f"http://127.0.0.1:{admin_port}/_esproxy"

    def after_replayed() -> bool:
        return ("PUT", f"/{index}/_doc/after", b"{}") in list(busy_b.requests)

    wait_until(after_replayed, timeout=30, msg="the message after the _bulk replayed")
    assert busy_b.applied == {"a": [{"id": "a"}], "b": [{"id": "b"}], "c": [{"id": "c"}]}, "each applied once"
    first, again = busy_b.bulk_requests
    assert first == (uri, body.encode())
    # only the items answered 429/503, as the client sent them, to the same path and query
    assert again == (uri, "".join(ndjson({"index": {"_index": index, "_id": i}}, {"id": i}) for i in "bc").encode())
    assert f"POST {busy_b.url}{uri} failed (attempt 1): 2 of 3 actions answered 429, 503;" in replay.log()
    wait_until(lambda: index in replay_stats(admin)["by_index"], timeout=10, msg="the write after counted applied")
    stats = replay_stats(admin)
    assert stats["by_index"] == {"_bulk": {"writes": 1, "bytes": len(body)}, index: {"writes": 1, "bytes": 2}}, stats
    assert stats["skipped"] == {} and stats["dead_letters"] == 0 and not dead.exists(), stats
