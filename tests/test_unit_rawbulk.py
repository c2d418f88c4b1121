"""A `_bulk` replayed as sent: which items are done, sent again or refused; its actions' own lines; its query."""

from __future__ import annotations

import pytest

from esproxy.clients.elastic import _bulk_outcome, _without_filter_path
from esproxy.core.bulk import Action, Item, is_bulk_uri, parse_request

BODY = (
    b'{"index":{"_index":"i","_id":"1"}}\n{"n":1}\n'
    b'{ "delete" : { "_index" : "i", "_id" : "2" } }\r\n'
    b'{"create":{"_index":"i","_id":"3"}}\n{"n": 3}'
)


def test_each_action_keeps_its_lines_as_the_client_sent_them() -> None:
    actions = parse_request(BODY)
    assert [a.lines() for a in actions] == [
        b'{"index":{"_index":"i","_id":"1"}}\n{"n":1}\n',
        b'{ "delete" : { "_index" : "i", "_id" : "2" } }\n',
        b'{"create":{"_index":"i","_id":"3"}}\n{"n": 3}\n',
    ]
    assert parse_request(b"".join(a.lines() for a in actions)) == actions


@pytest.mark.parametrize(
    "uri, bulk",
    [
        ("/_bulk", True),
        ("/_bulk?refresh=true", True),
        ("/idx/_bulk", True),
        ("/idx/doc/_bulk?routing=x", True),
        ("/idx/_doc/_bulk", True),  # Elasticsearch reads it as a typed `_bulk` too
        ("/a/b/c/_bulk", False),
        ("/idx/_doc/1", False),
        ("/_bulkx", False),
        ("/idx", False),
    ],
)
def test_which_uris_are_a_bulk(uri: str, bulk: bool) -> None:
    assert is_bulk_uri(uri) is bulk


@pytest.mark.parametrize(
    "uri, sent",
    [
        ("/_bulk", "/_bulk"),
        ("/_bulk?filter_path=items.*._id", "/_bulk"),
        ("/i/_bulk?refresh=true&filter_path=items.*._id&routing=r", "/i/_bulk?refresh=true&routing=r"),
        ("/_bulk?filter_paths=x&pretty", "/_bulk?filter_paths=x&pretty"),
    ],
)
def test_filter_path_is_left_out_of_the_query(uri: str, sent: str) -> None:
    assert _without_filter_path(uri) == sent


def _action(line: bytes) -> Action:
    return parse_request(line + b"\n{}\n" if b"delete" not in line else line)[0]


@pytest.mark.parametrize(
    "line, verb, status, outcome",
    [
        (b'{"index":{"_id":"1"}}', "index", 201, "done"),
        (b'{"delete":{"_id":"1"}}', "delete", 404, "done"),  # nothing to delete: B has what A has
        (b'{"create":{"_id":"1"}}', "create", 409, "done"),  # exists: a redelivery
        # B already has that version or a newer one
        (b'{"index":{"_id":"1","version":5,"version_type":"external"}}', "index", 409, "done"),
        (b'{"delete":{"_id":"1","version":5,"version_type":"external_gte"}}', "delete", 409, "done"),
        # A's numbers checked against B's: the conflict says nothing about which write is newer
        (b'{"index":{"_id":"1","if_seq_no":7,"if_primary_term":1}}', "index", 409, "refused"),
        (b'{"update":{"_id":"1","if_seq_no":7,"if_primary_term":1}}', "update", 409, "refused"),
        (b'{"index":{"_id":"1","version":3}}', "index", 409, "refused"),
        (b'{"index":{"_id":"1","op_type":"create"}}', "index", 409, "done"),
        (b'{"update":{"_id":"1"}}', "update", 409, "retry"),  # a concurrent write on B: again
        (b'{"index":{"_id":"1"}}', "index", 409, "refused"),  # no reason to expect it: not held up for it
        (b'{"index":{"_id":"1"}}', "index", 429, "retry"),
        (b'{"index":{"_id":"1"}}', "index", 503, "retry"),
        (b'{"index":{"_id":"1"}}', "index", 400, "refused"),
        (b'{"update":{"_id":"1"}}', "update", 404, "refused"),  # the document is missing on B
    ],
)
def test_what_an_item_means(line: bytes, verb: str, status: int, outcome: str) -> None:
    assert _bulk_outcome(_action(line), Item(verb, status)) == outcome


def test_items_of_a_body_that_cannot_be_split_stand_together() -> None:
    assert _bulk_outcome(None, Item("index", 200)) == "done"
    assert _bulk_outcome(None, Item("create", 409)) == "done"
    assert _bulk_outcome(None, Item("index", 409)) == "refused"
    assert _bulk_outcome(None, Item("index", 429)) == "retry"
    assert _bulk_outcome(None, Item("index", 400)) == "refused"
