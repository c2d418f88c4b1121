"""Proxy-assigned ids: the id format, and how auto-id writes are rewritten (proxy/autoids.py)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from itertools import count

import pytest

from esproxy.core.bulk import parse_request
from esproxy.proxy.autoids import IdGenerator, assign, assign_ids
from esproxy.proxy.handler import with_assigned_ids
from esproxy.proxy.request import Request

ID_CHARS = re.compile(r"^[A-Za-z0-9_-]{20}$")


def decode(doc_id: str) -> tuple[int, int, bytes]:
    """(timestamp ms, sequence, node bytes) of an id laid out like Elasticsearch's."""
    b = base64.urlsafe_b64decode(doc_id)
    assert len(b) == 15
    timestamp = b[5] << 40 | b[4] << 32 | b[3] << 24 | b[2] << 16 | b[12] << 8 | b[14]
    sequence = b[1] << 16 | b[13] << 8 | b[0]
    return timestamp, sequence, b[6:12]


def fixed_ids(prefix: str = "ID"):
    numbers = count()
    return lambda: f"{prefix}{next(numbers):018d}"


def test_ids_have_elasticsearchs_format_and_carry_the_time():
    now = 1_764_355_000_123
    gen = IdGenerator(clock=lambda: now)
    ids = [gen.next_id() for _ in range(1000)]
    assert all(ID_CHARS.match(i) for i in ids), ids[:3]
    decoded = [decode(i) for i in ids]
    assert {ts for ts, _, _ in decoded} == {now}
    assert len({node for _, _, node in decoded}) == 1
    sequences = [seq for _, seq, _ in decoded]
    assert all((b - a) % (1 << 24) == 1 for a, b in zip(sequences, sequences[1:]))


def test_ids_are_unique_and_time_never_goes_backwards():
    times = iter([1000, 1000, 999, 1002, 500] + [2000] * 20000)  # the clock jumps back twice
    gen = IdGenerator(clock=lambda: next(times))
    ids = [gen.next_id() for _ in range(20005)]
    assert len(set(ids)) == len(ids)
    stamps = [decode(i)[0] for i in ids]
    assert stamps[:5] == [1000, 1000, 1000, 1002, 1002]
    assert stamps == sorted(stamps)


def test_a_wrapping_sequence_moves_the_clock_on():
    gen = IdGenerator(clock=lambda: 5000)
    gen.next_id()
    gen._sequence = 0xFFFFFE  # the next id has the last sequence number, the one after wraps to 0
    last, wrapped = gen.next_id(), gen.next_id()
    assert decode(last)[:2] == (5000, 0xFFFFFF)
    assert decode(wrapped)[:2] == (5001, 0)


def test_each_process_draws_its_own_node_bytes():
    gen = IdGenerator()
    parent = decode(gen.next_id())[2]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a forked worker would generate
        os.write(write, gen.next_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = decode(os.read(read, 100).decode())[2]
    os.close(read)
    os.close(write)
    assert child != parent
    assert decode(IdGenerator().next_id())[2] != parent  # another proxy process, or a restart


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("/idx/_doc", "/idx/_doc/ID000000000000000000?op_type=create"),
        ("/idx/_doc/", "/idx/_doc/ID000000000000000000?op_type=create"),
        ("/idx/_doc?routing=r1&refresh=true", "/idx/_doc/ID000000000000000000?routing=r1&refresh=true&op_type=create"),
        ("/idx/_doc?op_type=index", "/idx/_doc/ID000000000000000000?op_type=index"),  # the client's choice stays
        ("/idx/tweet", "/idx/tweet/ID000000000000000000?op_type=create"),  # Elasticsearch 6 type
        ("/my%2Cidx/_doc?pipeline=p", "/my%2Cidx/_doc/ID000000000000000000?pipeline=p&op_type=create"),
    ],
)
def test_single_auto_id_document_gets_an_id_and_create_semantics(uri, expected):
    body = b'{"a": 1}\n'
    assert assign_ids("POST", uri, body, fixed_ids()) == (expected, body)


@pytest.mark.parametrize(
    "method,uri",
    [
        ("PUT", "/idx/_doc/1"),
        ("POST", "/idx/_doc/1"),
        ("POST", "/idx/_create/1"),
        ("POST", "/idx/_update/1"),
        ("POST", "/idx/tweet/1/_create"),
        ("DELETE", "/idx/_doc/1"),
        ("PUT", "/idx"),
        ("POST", "/idx/_refresh"),
        ("POST", "/idx/_update_by_query"),
        ("POST", "/_aliases"),
        ("POST", "/idx/_doc?version=3&version_type=external"),  # invalid without an id: A says why
        ("POST", "/idx/_doc?if_seq_no=1&if_primary_term=1"),
    ],
)
def test_writes_that_name_their_documents_are_left_alone(method, uri):
    assert assign_ids(method, uri, b'{"a": 1}', fixed_ids()) is None


def test_bulk_actions_without_id_get_one_and_nothing_else_changes():
    body = (
        b'{"index":{"_index":"a"}}\n{"n": 1}\n'
        b'{ "create" : { "_index" : "b", "routing" : "r" } }\n{"n":2}\n'
        b'{"index":{"_index":"a","_id":"given"}}\n{"n":3}\n'
        b'{"update":{"_index":"a","_id":"given"}}\n{"doc":{"m":1}}\n'
        b'{"delete":{"_index":"a","_id":"gone"}}\n'
        b'{"index":{}}\r\n{"n":4,"s":"caf\xc3\xa9"}\n'  # no index: in the URL
        b'{"index":{"_index":"a","_type":"t"}}\n{"n":5}\n'  # Elasticsearch 6 typed action
    )
    uri, out = assign_ids("POST", "/dflt/_bulk?refresh=wait_for", body, fixed_ids())
    assert uri == "/dflt/_bulk?refresh=wait_for"
    assert out.split(b"\n") == [
        b'{"index":{"_id":"ID000000000000000000","_index":"a"}}',
        b'{"n": 1}',
        b'{ "create" : {"_id":"ID000000000000000001", "_index" : "b", "routing" : "r" } }',
        b'{"n":2}',
        b'{"index":{"_index":"a","_id":"given"}}',
        b'{"n":3}',
        b'{"update":{"_index":"a","_id":"given"}}',
        b'{"doc":{"m":1}}',
        b'{"delete":{"_index":"a","_id":"gone"}}',
        b'{"index":{"_id":"ID000000000000000002"}}\r',
        b'{"n":4,"s":"caf\xc3\xa9"}',
        b'{"index":{"_id":"ID000000000000000003","_index":"a","_type":"t"}}',
        b'{"n":5}',
        b"",
    ]
    actions = parse_request(out)
    assert [a.verb for a in actions] == ["index", "create", "index", "update", "delete", "index", "index"]
    assert all(a.meta.get("_id") for a in actions)


def test_bulk_in_a_typed_url_and_without_index_anywhere():
    body = b'{"index":{}}\n{"n":1}\n'
    uri, out = assign_ids("POST", "/idx/tweet/_bulk", body, fixed_ids())
    assert out == b'{"index":{"_id":"ID000000000000000000"}}\n{"n":1}\n'
    # No index in the action nor the URL: the primary rejects the action, there is nothing to name.
    assert assign_ids("POST", "/_bulk", body, fixed_ids()) is None
    assert assign_ids("PUT", "/_bulk", b'{"index":{"_index":"i"}}\n{}\n', fixed_ids())[1].startswith(
        b'{"index":{"_id":"ID'
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"index":{"_index":"a","_id":"1"}}\n{"n":1}\n',  # every action names its document
        b'{"index":{"_index":"a","version":2,"version_type":"external"}}\n{"n":1}\n',  # invalid without _id
        b'{"index":{"_index":"a"}\n{"n":1}\n',  # not JSON: the primary rejects the whole request
        b'{"upsert":{"_index":"a"}}\n{"n":1}\n',  # unknown action
        b"",
    ],
)
def test_bulk_bodies_that_stay_as_sent(body):
    assert assign_ids("POST", "/_bulk", body, fixed_ids()) is None


def test_gzipped_bulk_is_forwarded_plain_with_its_encoding_dropped():
    plain = b'{"index":{"_index":"a"}}\n{"n":1}\n'
    environ = {"HTTP_CONTENT_ENCODING": "gzip", "CONTENT_TYPE": "application/x-ndjson", "HTTP_HOST": "h"}
    request = Request("POST", "/_bulk", gzip.compress(plain), "gzip")
    out_env = with_assigned_ids(environ, request)
    assert "HTTP_CONTENT_ENCODING" not in out_env and out_env["CONTENT_TYPE"] == "application/x-ndjson"
    assert "HTTP_CONTENT_ENCODING" in environ  # the caller's environ is not modified
    uri, body = request.uri, request.body
    assert uri == "/_bulk" and request.encoding == "" and request.plain is body
    meta = json.loads(body.split(b"\n")[0])["index"]
    assert ID_CHARS.match(meta["_id"]) and meta["_index"] == "a"
    assert body.split(b"\n")[1:] == [b'{"n":1}', b""]


def test_gzipped_single_document_keeps_its_compressed_body():
    sent = gzip.compress(b'{"n":1}')
    environ = {"HTTP_CONTENT_ENCODING": "gzip"}
    request = Request("POST", "/idx/_doc", sent, "gzip")
    out_env = with_assigned_ids(environ, request)
    uri, body = request.uri, request.body
    assert out_env is environ and body == sent and request.encoding == "gzip"
    assert re.match(r"^/idx/_doc/[A-Za-z0-9_-]{20}\?op_type=create$", uri)


def test_a_bulk_given_ids_keeps_its_actions_read_once_and_true_to_the_new_body():
    """The request's actions after the rewrite are what reading the new body would give: the stages
    after autoids (capture) use them as they are, without reading the body again."""
    body = (
        b'\n{"index":{"_index":"a"}}\n{"n": 1}\n\n'
        b'{"delete":{"_index":"a","_id":"d"}}\n'
        b'{ "create" : { "_index" : "b", "routing" : "r" } }\r\n  {"n":2}\n'
        b'{"update":{"_index":"a","_id":"u"}}\n{"doc":{"x":1}}\n'
        b'{"index":{}}\n{"n":3}'
    )
    request = Request("POST", "/dflt/_bulk", body)
    assert assign(request, fixed_ids())
    fresh = parse_request(request.body, views=True)
    assert request.actions == fresh  # verb, meta (with the new _id), source and head of each
    for mine, theirs in zip(request.actions, fresh):
        assert (mine.at, mine.source_at) == (theirs.at, theirs.source_at)
        assert mine.source is None or mine.source.obj is request.body  # views of the body forwarded
    assert [a.meta.get("_id") for a in request.actions] == [
        "ID000000000000000000",
        "d",
        "ID000000000000000001",
        "u",
        "ID000000000000000002",
    ]
