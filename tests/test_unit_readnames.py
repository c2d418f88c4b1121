"""proxy/readnames.py: a read in B's index names, and B's answer back in A's: faithful or None."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esproxy.core.config import FollowRule, FollowSettings
from esproxy.proxy.readnames import Rewritten, follower_request
from esproxy.replay.follow import Rules, name_problem

LOGS = {"name": "logs", "indices": ["logs-*"], "exclude": ["logs-tmp-*"], "rename": "{{remote_index}}-replica"}
USERS = {"name": "users", "indices": ["users"]}  # followed under its own name
RULES = Rules.from_config(FollowSettings(rules=[FollowRule(**LOGS), FollowRule(**USERS)]))


def request(method: str, uri: str, body: object = b"", rules: Rules = RULES) -> Rewritten | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return follower_request(rules, method, uri, raw)


def ndjson(*lines: dict) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


# --------------------------------------------------------------------------- requests rewritten


@pytest.mark.parametrize(
    "method,uri,expected",
    [
        ("GET", "/logs-1/_doc/1", "/logs-1-replica/_doc/1"),
        ("HEAD", "/logs-1/_doc/1", "/logs-1-replica/_doc/1"),
        ("GET", "/logs-1/_doc/a%2Fb?routing=x", "/logs-1-replica/_doc/a%2Fb?routing=x"),
        ("GET", "/logs-1/_source/1", "/logs-1-replica/_source/1"),
        ("GET", "/users/_doc/1", "/users/_doc/1"),
        ("GET", "/logs-1/_search", "/logs-1-replica/_search"),
        ("POST", "/logs-1,users/_search?size=3&q=msg:hi", "/logs-1-replica,users/_search?size=3&q=msg:hi"),
        ("POST", "/logs-1%2Cusers/_count", "/logs-1-replica,users/_count"),
        ("GET", "/users/_count", "/users/_count"),
    ],
)
def test_paths_renamed(method, uri, expected):
    r = request(method, uri)
    assert r is not None and r.uri == expected and r.body == b""


def test_search_body_passes_as_sent():
    body = b'{"query": {"match": {"msg": "hi"}}, "sort": [{"n": "asc"}], "size": 2}'
    r = request("POST", "/logs-1/_search", body)
    assert r is not None and r.body == body


def test_mget_docs_renamed():
    r = request("POST", "/_mget", {"docs": [{"_index": "logs-1", "_id": "1"}, {"_index": "users", "_id": "2"}]})
    assert r is not None and r.uri == "/_mget"
    assert json.loads(r.body) == {"docs": [{"_index": "logs-1-replica", "_id": "1"}, {"_index": "users", "_id": "2"}]}
    r = request("POST", "/logs-1/_mget", {"ids": ["1", "2"]})
    assert r is not None and r.uri == "/logs-1-replica/_mget" and json.loads(r.body) == {"ids": ["1", "2"]}
    r = request("POST", "/logs-1/_mget", {"docs": [{"_id": "1"}, {"_index": "logs-2", "_id": "2"}]})
    assert r is not None and json.loads(r.body)["docs"] == [{"_id": "1"}, {"_index": "logs-2-replica", "_id": "2"}]


def test_msearch_headers_renamed_bodies_kept():
    body = ndjson({"index": "logs-1"}, {"query": {"match_all": {}}}, {"index": ["users", "logs-2"]}, {"size": 1})
    r = request("POST", "/_msearch", body)
    assert r is not None
    lines = r.body.split(b"\n")
    assert json.loads(lines[0]) == {"index": "logs-1-replica"}
    assert json.loads(lines[2]) == {"index": "users,logs-2-replica"}
    assert lines[1] == b'{"query": {"match_all": {}}}' and lines[3] == b'{"size": 1}'
    r = request("POST", "/logs-1/_msearch", ndjson({}, {"size": 1}))
    assert r is not None and r.uri == "/logs-1-replica/_msearch" and r.body == b'{}\n{"size": 1}\n'


def test_without_rules_every_exact_name_is_followed_as_it_is():
    r = request("POST", "/anything/_search", {"size": 1}, rules=Rules([]))
    assert r is not None and r.uri == "/anything/_search"


# --------------------------------------------------------------------------- requests left to the leader


@pytest.mark.parametrize(
    "method,uri,body",
    [
        # index names that B cannot answer for as A would
        ("GET", "/logs-*/_search", b""),
        ("GET", "/_all/_search", b""),
        ("GET", "/*/_search", b""),
        ("GET", "/logs-1,-logs-2/_search", b""),
        ("GET", "/%3Clogs-%7Bnow%2Fd%7D%3E/_search", b""),
        ("GET", "/remote:logs-1/_search", b""),
        ("GET", "/other/_search", b""),  # not followed: B has no copy
        ("GET", "/logs-1,other/_search", b""),
        ("GET", "/logs-tmp-1/_doc/1", b""),  # excluded from its rule
        # no index, or an API not known
        ("GET", "/_search", b""),
        ("GET", "/_count", b""),
        ("GET", "/_cat/indices", b""),
        ("GET", "/_cluster/health/logs-1", b""),
        ("GET", "/_nodes/stats", b""),
        ("GET", "/logs-1", b""),
        ("GET", "/logs-1/_mapping", b""),
        ("GET", "/logs-1/_field_caps?fields=*", b""),
        ("GET", "/logs-1/_explain/1", b""),
        ("POST", "/_search/scroll", {"scroll_id": "x"}),
        ("POST", "/logs-1/_pit?keep_alive=1m", b""),
        ("GET", "/logs-1/doc/1", b""),  # Elasticsearch 6 typed paths
        ("GET", "/logs-1,users/_doc/1", b""),
        # writes are never reads
        ("PUT", "/logs-1/_doc/1", {"n": 1}),
        ("POST", "/logs-1/_doc", {"n": 1}),
        # parameters
        ("GET", "/logs-1/_search?scroll=1m", b""),
        ("GET", "/logs-1/_search?ignore_unavailable=true", b""),
        ("GET", "/logs-1/_search?q=_index:logs-1", b""),
        ("GET", "/logs-1/_search?sort=_index:asc", b""),
        ("GET", "/logs-1/_doc/1?explain=true", b""),
        # bodies naming indices, or that may read the index name
        ("POST", "/logs-1/_search", {"query": {"terms": {"u": {"index": "users", "id": "1", "path": "u"}}}}),
        ("POST", "/logs-1/_search", {"query": {"more_like_this": {"like": [{"_index": "users", "_id": "1"}]}}}),
        ("POST", "/logs-1/_search", {"query": {"term": {"_index": "logs-1"}}}),
        ("POST", "/logs-1/_search", {"aggs": {"by": {"terms": {"field": "_index"}}}}),
        ("POST", "/logs-1/_search", {"sort": ["_index"]}),
        ("POST", "/logs-1/_search", {"indices_boost": [{"logs-1": 2}]}),
        ("POST", "/logs-1/_search", {"pit": {"id": "x"}}),
        ("POST", "/logs-1/_search", {"script_fields": {"f": {"script": "1"}}}),
        ("POST", "/logs-1/_search", {"query": {"script_score": {"query": {}, "script": {"id": "s"}}}}),
        ("POST", "/logs-1/_search", {"runtime_mappings": {"f": {"type": "keyword"}}}),
        ("POST", "/logs-1/_search", {"profile": True}),
        ("POST", "/logs-1/_search", {"explain": True}),
        ("POST", "/logs-1/_search", b"not json"),
        ("POST", "/logs-1/_search", b"[1]"),
        # _mget and _msearch bodies esproxy cannot read faithfully
        ("POST", "/_mget", {"ids": ["1"]}),
        ("POST", "/_mget", {"docs": [{"_id": "1"}]}),
        ("POST", "/_mget", {"docs": [{"_index": "other", "_id": "1"}]}),
        ("POST", "/_mget", {"docs": [{"_index": "logs-1", "_id": "1", "unknown": 1}]}),
        ("POST", "/_mget", b"{"),
        ("POST", "/_msearch", ndjson({}, {"size": 1})),  # no index: all of B's
        ("POST", "/_msearch", ndjson({"index": "logs-*"}, {})),
        ("POST", "/_msearch", ndjson({"index": "logs-1", "ignore_unavailable": True}, {})),
        ("POST", "/_msearch", ndjson({"index": "logs-1"}, {"query": {"term": {"_index": "x"}}})),
        ("POST", "/_msearch", ndjson({"index": "logs-1"})),
        ("POST", "/_msearch", b"nope\n{}\n"),
    ],
)
def test_left_to_the_leader(method, uri, body):
    assert request(method, uri, body) is None


# --------------------------------------------------------------------------- answers


def test_search_answer_back_in_a_names_data_untouched():
    r = request("POST", "/logs-1,users/_search")
    hit = '{"_index":"logs-1-replica","_id":"1","_score":1.50,"_source":{"index":"logs-1-replica","n":1.0E2}}'
    hit2 = '{"_index":"users","_id":"2","_score":1.0,"_source":{}}'
    answer = f'{{"took":1,"_shards":{{"total":2}},"hits":{{"total":{{"value":2}},"hits":[{hit},{hit2}]}}}}'
    out = r.answer(200, answer.encode()).decode()
    assert out == answer.replace('{"_index":"logs-1-replica"', '{"_index":"logs-1"')
    assert '"_source":{"index":"logs-1-replica","n":1.0E2}' in out  # the client's data byte for byte


def test_doc_and_mget_answers():
    r = request("GET", "/logs-1/_doc/1")
    assert json.loads(r.answer(404, b'{"_index":"logs-1-replica","_id":"1","found":false}')) == {
        "_index": "logs-1",
        "_id": "1",
        "found": False,
    }
    r = request("POST", "/_mget", {"docs": [{"_index": "logs-1", "_id": "1"}, {"_index": "logs-2", "_id": "2"}]})
    answer = (
        b'{"docs":[{"_index":"logs-1-replica","_id":"1","found":true,"_source":{"a":1}},'
        b'{"_index":"logs-2-replica","_id":"2","found":false}]}'
    )
    assert [d["_index"] for d in json.loads(r.answer(200, answer))["docs"]] == ["logs-1", "logs-2"]


def test_source_answer_is_the_document_itself():
    r = request("GET", "/logs-1/_source/1")
    doc = b'{"_index": "logs-1-replica", "reason": "[logs-1-replica]"}'
    assert r.answer(200, doc) == doc


def test_error_answer_names_and_reasons():
    r = request("POST", "/logs-1/_search")
    failure = {
        "error": {
            "root_cause": [
                {"type": "query_shard_exception", "reason": "failed on [logs-1-replica]", "index": "logs-1-replica"}
            ],
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "failed_shards": [
                {"shard": 0, "index": "logs-1-replica", "reason": {"type": "x", "reason": "in [logs-1-replica]"}}
            ],
        },
        "status": 400,
    }
    out = json.loads(r.answer(400, json.dumps(failure).encode()))
    assert "logs-1-replica" not in json.dumps(out)
    assert out["error"]["root_cause"][0] == {
        "type": "query_shard_exception",
        "reason": "failed on [logs-1]",
        "index": "logs-1",
    }
    assert out["error"]["failed_shards"][0]["index"] == "logs-1"


def test_answers_that_cannot_stand_for_a():
    r = request("GET", "/logs-1/_search")
    cause = b'{"type":"index_not_found_exception","reason":"no such index [logs-1-replica]","index":"logs-1-replica"}'
    missing = b'{"error":{"root_cause":[' + cause + b'],"type":"index_not_found_exception"},"status":404}'
    assert r.answer(404, missing) is None  # not created in B yet, or an alias in A: the leader answers
    assert r.answer(200, b'{"hits":{"hits":[{"_index":"elsewhere","_id":"1"}]}}') is None
    assert r.answer(200, b"plain text") is None
    assert r.answer(200, b'{"hits":{') is None
    assert r.answer(200, b"\xff") is None
    head = request("HEAD", "/logs-1/_doc/1")
    assert head.answer(404, b"") is None and head.answer(200, b"") == b""


def test_same_names_are_passed_through():
    r = request("GET", "/users/_search")
    answer = b'{"hits":{"hits":[{"_index":"users","_id":"1"}]}}'
    assert r.answer(200, answer) == answer


# JSON a client may store: its bytes must come back as B sent them, whatever they hold.
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(
    source=st.dictionaries(
        st.sampled_from(["_index", "index", "reason", "indices", "x"]) | st.text(max_size=6), _json_values, max_size=5
    ),
    indent=st.sampled_from([None, 2]),
)
def test_answer_rewrites_index_places_only(source, indent):
    r = request("POST", "/logs-1/_search")
    source = {**source, "also": "logs-1-replica"}
    answer = {"hits": {"hits": [{"_index": "logs-1-replica", "_id": "1", "_source": source}]}}
    text = json.dumps(answer, indent=indent, ensure_ascii=False)
    expected = {"hits": {"hits": [{"_index": "logs-1", "_id": "1", "_source": source}]}}
    assert r.answer(200, text.encode()).decode() == json.dumps(expected, indent=indent, ensure_ascii=False)


_names = st.text(alphabet="abclogs-*.1_:<A", min_size=1, max_size=12) | st.sampled_from(["logs-<", "logs-1", "users"])


@given(parts=st.lists(_names, min_size=1, max_size=3))
def test_a_read_goes_to_b_only_when_every_name_is_followed_exactly(parts):
    r = request("GET", "/" + ",".join(parts) + "/_search")
    targets = [RULES.target(p) for p in parts]
    exact = all(name_problem(p) is None and ":" not in p for p in parts)
    if not exact or None in targets:
        assert r is None
        return
    assert r is not None and r.uri == "/" + ",".join(t.index for t in targets) + "/_search"
    for part, target in zip(parts, targets):
        assert r.names[target.index] == part
        assert RULES.source(target.index).index == part  # the write guard's inverse agrees
