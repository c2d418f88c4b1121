"""proxy/readnames.py against real clusters: a read rewritten for B, and B's answer renamed, equal A's answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from esproxy.core.config import FollowRule, FollowSettings
from esproxy.proxy.readnames import follower_request
from esproxy.replay.follow import Rules

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def _without_took(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_took(v) for k, v in value.items() if k != "took"}
    if isinstance(value, list):
        return [_without_took(v) for v in value]
    return value


@pytest.fixture
def twins(es_a, es_b, names):
    """The same documents in A (A's names) and in B (B's names, as the replay writes them); the rules."""
    prefix = names.index("x").rsplit("-", 1)[0]
    rules = Rules.from_config(
        FollowSettings(
            rules=[
                FollowRule(name="logs", indices=[f"{prefix}-logs-*"], rename="{{remote_index}}-replica"),
                FollowRule(name="users", indices=[f"{prefix}-users"]),
            ]
        )
    )
    for base, logs in ((es_a, f"{prefix}-logs-1"), (es_b, f"{prefix}-logs-1-replica")):
        for index, docs in ((logs, 3), (f"{prefix}-users", 2)):
            for n in range(1, docs + 1):
                r = requests.put(f"{base}/{index}/_doc/{n}", json={"n": n, "msg": f"doc {n}"}, timeout=10)
                assert r.status_code in (200, 201), r.text
            requests.post(f"{base}/{index}/_refresh", timeout=10)
    return prefix, rules


def test_rewritten_reads_on_b_answer_as_a_does(twins, es_a, es_b):
    p, rules = twins
    logs, users = f"{p}-logs-1", f"{p}-users"
    reads = [
        ("GET", f"/{logs}/_doc/1", b"", JSON),
        ("GET", f"/{logs}/_doc/404", b"", JSON),
        ("GET", f"/{logs}/_source/2", b"", JSON),
        ("POST", f"/{logs},{users}/_search", json.dumps({"sort": [{"n": "asc"}], "size": 10}).encode(), JSON),
        ("POST", f"/{logs}/_search?size=1", json.dumps({"query": {"match": {"msg": "doc"}}}).encode(), JSON),
        ("POST", f"/{logs}/_count", json.dumps({"query": {"range": {"n": {"gte": 2}}}}).encode(), JSON),
        (
            "POST",
            "/_mget",
            json.dumps({"docs": [{"_index": logs, "_id": "1"}, {"_index": users, "_id": "9"}]}).encode(),
            JSON,
        ),
        ("POST", f"/{users}/_mget", json.dumps({"ids": ["1", "2"]}).encode(), JSON),
        (
            "POST",
            "/_msearch",
            b"".join(
                json.dumps(line).encode() + b"\n"
                for line in ({"index": logs}, {"size": 2, "sort": [{"n": "desc"}]}, {"index": [users]}, {"size": 0})
            ),
            NDJSON,
        ),
    ]
    for method, uri, body, headers in reads:
        on_a = requests.request(method, es_a + uri, data=body, headers=headers, timeout=10)
        rewritten = follower_request(rules, method, uri, body)
        assert rewritten is not None, uri
        assert f"{logs}-replica" in rewritten.uri + rewritten.body.decode() or logs not in uri + body.decode()
        on_b = requests.request(method, es_b + rewritten.uri, data=rewritten.body, headers=headers, timeout=10)
        assert on_b.status_code == on_a.status_code, uri
        answer = rewritten.answer(on_b.status_code, on_b.content)
        assert answer is not None, (uri, on_b.text)
        assert "-replica" not in answer.decode(), uri
        assert _without_took(json.loads(answer)) == _without_took(on_a.json()), uri


def test_an_index_b_lacks_sends_the_read_to_the_leader(twins, es_b):
    p, rules = twins
    for method, uri in (
        ("GET", f"/{p}-logs-2/_search"),
        ("GET", f"/{p}-logs-2/_doc/1"),
        ("HEAD", f"/{p}-logs-2/_doc/1"),
    ):
        rewritten = follower_request(rules, method, uri, b"")
        assert rewritten is not None and f"{p}-logs-2-replica" in rewritten.uri
        on_b = requests.request(method, es_b + rewritten.uri, timeout=10)
        assert on_b.status_code == 404
        assert rewritten.answer(on_b.status_code, on_b.content) is None, on_b.text
