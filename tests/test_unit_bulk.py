"""Reading `_bulk` answers: Elasticsearch's shape gives items; anything else one clear error, never a crash."""

from __future__ import annotations

import json

import pytest

from esproxy.core.bulk import Item, UnparsableAnswer, parse_response


def _answer(*items: object) -> bytes:
    return json.dumps({"took": 3, "errors": False, "items": list(items)}).encode()


def test_items_in_order_with_their_status_and_versions() -> None:
    body = _answer(
        {"index": {"_index": "i", "_id": "1", "_version": 2, "_seq_no": 7, "result": "updated", "status": 200}},
        {"delete": {"_index": "i", "_id": "2", "status": 404, "result": "not_found"}},
        {"create": {"_index": "i", "_id": "3", "status": 409, "error": {"type": "version_conflict_engine_exception"}}},
    )
    first, second, third = parse_response(body)
    assert first == Item("index", 200, "i", "1", 7, 2, "updated")
    assert (second.verb, second.status, second.ok, second.seq_no) == ("delete", 404, False, None)
    assert third.error == {"type": "version_conflict_engine_exception"}
    assert parse_response(_answer()) == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "is not JSON"),
        (b"<html><body>502 Bad Gateway</body></html>", "is not JSON"),
        (b'{"took": 3, "items": [{"index": {"status": 201}', "is not JSON"),  # truncated
        (b"\xff\xfe{}", "is not JSON"),
        (b"[" * 100_000, "is not JSON"),  # deeper than the decoder goes
        (b'[{"index": {"status": 201}}]', "is a JSON list, not an object"),
        (b'"ok"', "is a JSON str, not an object"),
        (b"null", "is a JSON NoneType, not an object"),
        (b'{"acknowledged": true}', "has no items list"),
        (b'{"items": {"index": {"status": 201}}}', "has no items list"),
        (b'{"items": [["index", {"status": 201}]]}', "item 1 is not an object of one action"),
        (b'{"items": [{}]}', "item 1 is not an object of one action"),
        (b'{"items": [{"index": {"status": 201}, "delete": {"status": 200}}]}', "item 1 is not an object of one"),
        (b'{"items": [{"error": {"status": 201}}]}', "item 1 is not an index, create, update or delete result"),
        (b'{"items": [{"index": "created"}]}', "item 1 is not an index, create, update or delete result"),
        (b'{"items": [{"index": {"status": 201}}, {"index": {}}]}', "item 2 has no HTTP status (None)"),
        (b'{"items": [{"index": {"status": "201"}}]}', "item 1 has no HTTP status ('201')"),
        (b'{"items": [{"index": {"status": 2.5}}]}', "item 1 has no HTTP status (2.5)"),
        (b'{"items": [{"index": {"status": true}}]}', "item 1 has no HTTP status (True)"),
        (b'{"items": [{"index": {"status": 0}}]}', "item 1 has no HTTP status (0)"),
        (b'{"items": [{"index": {"status": 201, "_seq_no": "7"}}]}', "item 1 has a _seq_no or _version that is not"),
        (b'{"items": [{"index": {"status": 201, "_version": {}}}]}', "item 1 has a _seq_no or _version that is not"),
    ],
)
def test_an_answer_not_shaped_as_elasticsearchs_is_one_clear_error(body: bytes, reason: str) -> None:
    with pytest.raises(UnparsableAnswer) as raised:
        parse_response(body)
    assert str(raised.value).startswith(f"_bulk answer {reason}"), str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_the_error_quotes_the_start_of_the_body_only() -> None:
    body = b"<html>" + b"x" * 5000 + b"</html>"
    with pytest.raises(UnparsableAnswer) as raised:
        parse_response(body)
    message = str(raised.value)
    assert "'<html>xxx" in message and "... (5013 bytes)" in message and len(message) < 300
