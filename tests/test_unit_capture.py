"""How captured writes are turned into beans (pure logic: A's answers are given as bytes)."""

from __future__ import annotations

import json

from esproxy.core.bean import DOCS_KIND, Bean
from esproxy.core.bulk import split_actions
from esproxy.proxy.capture import capture


def _template(method: str, uri: str, body: object = b"") -> Bean:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Bean(method, uri, raw, {"Content-Type": ["application/json"]}, clusterIds=["A"])


def _answer(**fields: object) -> bytes:
    return json.dumps({"_primary_term": 1, "_shards": {}, **fields}).encode()


def _actions(bean: Bean) -> list[list[dict]]:
    return [[json.loads(line) for line in chunk.splitlines()] for chunk in split_actions(bean.body)]


def no_fetch(wanted: list) -> dict:
    raise AssertionError(f"unexpected fetch {wanted}")


def test_auto_id_is_replayed_with_the_id_a_chose() -> None:
    answer = _answer(_index="logs", _id="Xy12", _seq_no=7, _version=1, result="created")
    (bean,) = capture(_template("POST", "/logs/_doc?refresh=true", {"m": 1}), answer, no_fetch)
    assert bean.kind == DOCS_KIND and bean.index == "logs" and bean.requestUri == "/_bulk"
    assert _actions(bean) == [
        [{"index": {"_index": "logs", "_id": "Xy12", "version": 7, "version_type": "external_gte"}}, {"m": 1}]
    ]
    assert bean.clusterIds == ["A"]


def test_update_becomes_the_document_read_back_from_a() -> None:
    answer = _answer(_index="i", _id="1", _seq_no=5, _version=3, result="updated")
    asked = []

    def fetch(wanted: list) -> dict:
        asked.extend(wanted)
        return {("i", "1"): (b'{"a":1,"b":2}', 6)}  # a later write already landed: its seq_no wins

    (bean,) = capture(_template("POST", "/i/_update/1?routing=r", {"doc": {"b": 2}}), answer, fetch)
    assert asked == [("i", "1", "r")]
    meta, source = _actions(bean)[0]
    assert meta == {"index": {"_index": "i", "_id": "1", "routing": "r", "version": 6, "version_type": "external_gte"}}
    assert source == {"a": 1, "b": 2}


def test_noop_update_and_vanished_document_produce_nothing() -> None:
    noop = _answer(_index="i", _id="1", _seq_no=5, result="noop")
    assert capture(_template("POST", "/i/_update/1", {"doc": {}}), noop, no_fetch) == []
    updated = _answer(_index="i", _id="1", _seq_no=5, result="updated")
    assert capture(_template("POST", "/i/_update/1", {"doc": {}}), updated, lambda w: {("i", "1"): None}) == []


def test_delete_is_versioned() -> None:
    answer = _answer(_index="i", _id="a/b", _seq_no=9, result="deleted")
    (bean,) = capture(_template("DELETE", "/i/_doc/a%2Fb"), answer, no_fetch)
    assert _actions(bean) == [[{"delete": {"_index": "i", "_id": "a/b", "version": 9, "version_type": "external_gte"}}]]


def test_bulk_keeps_only_applied_items_split_per_index() -> None:
    lines = [
        {"index": {"_id": "1"}},
        {"v": 1},
        {"create": {"_id": "1"}},
        {"v": 2},  # 409 on A
        {"index": {"_index": "other", "routing": "r", "pipeline": "p"}},
        {"v": 3},  # auto id
        {"update": {"_id": "2"}},
        {"doc": {"v": 4}},
        {"update": {"_id": "missing"}},
        {"doc": {"v": 5}},  # 404 on A
        {"delete": {"_id": "3"}},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    items = [
        {"index": {"_index": "i", "_id": "1", "_seq_no": 1, "status": 201, "result": "created"}},
        {"create": {"_index": "i", "_id": "1", "status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"index": {"_index": "other", "_id": "auto1", "_seq_no": 0, "status": 201, "result": "created"}},
        {"update": {"_index": "i", "_id": "2", "_seq_no": 2, "status": 200, "result": "updated"}},
        {"update": {"_index": "i", "_id": "missing", "status": 404, "error": {"type": "document_missing_exception"}}},
        {"delete": {"_index": "i", "_id": "3", "_seq_no": 3, "status": 200, "result": "deleted"}},
    ]
    answer = json.dumps({"errors": True, "items": items}).encode()
    beans = capture(_template("POST", "/i/_bulk", body), answer, lambda w: {("i", "2"): (b'{"v":4,"w":0}', 2)})
    assert [b.index for b in beans] == ["i", "other"]
    first, second = (_actions(b) for b in beans)
    assert [m for m, *_ in first] == [
        {"index": {"_index": "i", "_id": "1", "version": 1, "version_type": "external_gte"}},
        {"index": {"_index": "i", "_id": "2", "version": 2, "version_type": "external_gte"}},
        {"delete": {"_index": "i", "_id": "3", "version": 3, "version_type": "external_gte"}},
    ]
    assert first[1][1] == {"v": 4, "w": 0}
    assert second == [
        [
            {
                "index": {
                    "_index": "other",
                    "_id": "auto1",
                    "routing": "r",
                    "pipeline": "p",
                    "version": 0,
                    "version_type": "external_gte",
                }
            },
            {"v": 3},
        ]
    ]


def test_index_level_writes_are_replayed_as_sent_keyed_by_index() -> None:
    (bean,) = capture(_template("PUT", "/logs-1", {"settings": {}}), b'{"acknowledged":true}', no_fetch)
    assert bean.kind == "" and bean.index == "logs-1" and bean.requestUri == "/logs-1"
    (alias,) = capture(_template("POST", "/_aliases", {"actions": []}), b'{"acknowledged":true}', no_fetch)
    assert alias.index == "_aliases"


def test_an_answer_without_seq_no_falls_back_to_the_request() -> None:
    (bean,) = capture(_template("PUT", "/i/_doc/1", {"a": 1}), b'{"_index":"i","_id":"1","result":"created"}', no_fetch)
    assert bean.kind == "" and bean.requestUri == "/i/_doc/1"


def test_go_original_typed_paths() -> None:
    answer = _answer(_index="person", _type="doc", _id="7", _seq_no=1, result="created")
    (bean,) = capture(_template("PUT", "/person/doc/7", {"n": 1}), answer, no_fetch)
    assert _actions(bean)[0][0]["index"]["_type"] == "doc"


def test_version_is_the_larger_of_seq_no_and_version() -> None:
    # B after a switchover: the document came with external version 40 from A, a client's write made it 41,
    # while B's own sequence numbers are still low. A must take the write as newer than its 40.
    answer = _answer(_index="i", _id="1", _seq_no=3, _version=41, result="updated")
    (bean,) = capture(_template("PUT", "/i/_doc/1", {"n": 1}), answer, no_fetch)
    assert _actions(bean)[0][0]["index"]["version"] == 41
    deleted = _answer(_index="i", _id="1", _seq_no=4, _version=42, result="deleted")
    (bean,) = capture(_template("DELETE", "/i/_doc/1"), deleted, no_fetch)
    assert _actions(bean)[0][0]["delete"]["version"] == 42
    bulk = json.dumps({"items": [{"index": {"_index": "i", "_id": "2", "_seq_no": 9, "_version": 2, "status": 200}}]})
    (bean,) = capture(
        _template("POST", "/_bulk", b'{"index":{"_index":"i","_id":"2"}}\n{"n":2}\n'), bulk.encode(), no_fetch
    )
    assert _actions(bean)[0][0]["index"]["version"] == 9


def test_a_bulk_answer_that_cannot_be_read_replays_the_bulk_as_sent(caplog) -> None:
    """A's 2xx answer mangled (by a proxy in front of A, a server that is not Elasticsearch): nothing
    says which actions A applied, so the client's `_bulk` is replayed as it was sent, and that is logged."""
    body = b'{"index":{"_index":"i","_id":"1"}}\n{"v":1}\n{"delete":{"_index":"i","_id":"2"}}\n'
    for answer in (
        b"<html>OK</html>",
        b'[{"index": {"status": 201}}]',
        b'{"items": [{"index": {"status": "201"}}, {"delete": {"status": 200}}]}',
        b'{"items": [{"index": {"_index": "i", "_id": "1", "_seq_no": 1, "status": 201}}]}',  # too few items
        # `?filter_path=items.*._id`: no status says what A applied (it was read as "none", and nothing captured)
        b'{"items": [{"index": {"_id": "1"}}, {"delete": {"_id": "2"}}]}',
    ):
        caplog.clear()
        (bean,) = capture(_template("POST", "/_bulk", body), answer, no_fetch)
        assert bean.kind == "" and bean.requestUri == "/_bulk" and bean.body == body
        assert "POST /_bulk: replaying as sent" in caplog.text
