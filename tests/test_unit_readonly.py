"""follow.Rules.source (B's name back to A's) and proxy/readonly.py (the writes a follower's proxy refuses)."""

from __future__ import annotations

import json

import pytest

from esproxy.core.config import FollowRule, FollowSettings, parse
from esproxy.proxy.readonly import refusal
from esproxy.replay.follow import Rule, Rules

LOGS = {"name": "logs", "indices": ["logs-*"], "exclude": ["logs-tmp-*"], "rename": "{{remote_index}}-replica"}
USERS = {"name": "users", "indices": ["users"]}  # followed under its own name
ONE = {"name": "one", "indices": ["orders"], "rename": "orders-copy"}  # a constant name
DOUBLE = {"name": "double", "indices": ["m-*"], "rename": "x-{{remote_index}}-{{ remote_index }}"}


def rules(*specs: dict) -> Rules:
    return Rules.from_config(FollowSettings(rules=[FollowRule(**spec) for spec in specs]))


RULES = rules(LOGS, USERS, ONE, DOUBLE)


@pytest.mark.parametrize(
    "b_name,a_name,rule",
    [
        ("logs-1-replica", "logs-1", "logs"),
        ("logs--replica", "logs-", "logs"),
        ("users", "users", "users"),
        ("orders-copy", "orders", "one"),
        ("x-m-1-m-1", "m-1", "double"),
        # not targets
        ("logs-1", None, None),  # A's name, not B's
        ("logs-tmp-1-replica", None, None),  # logs-tmp-* is excluded
        ("other-replica", None, None),  # "other" is no rule's
        ("-replica", None, None),  # would be A's "" (not an index name)
        ("users-replica", None, None),
        ("orders", None, None),
        ("x-m-1-m-2", None, None),  # both placeholders must be one name
        ("x-m-1-m-1x", None, None),
    ],
)
def test_source_is_the_inverse_of_target(b_name, a_name, rule):
    origin = RULES.source(b_name)
    if a_name is None:
        assert origin is None
        return
    assert origin is not None and (origin.index, origin.rule.name) == (a_name, rule)
    target = RULES.target(a_name)
    assert target is not None and target.index == b_name


def test_source_of_a_name_an_earlier_rule_follows_is_not_the_later_rules():
    # logs-* follows logs-x; a later rule renaming "logs-x" onto "logs-x-replica" cannot be valid config,
    # but Rules built by hand: the first rule that follows A's name decides, as in target().
    manual = Rules(
        [Rule("a", ("logs-*",), rename="{{remote_index}}-r"), Rule("b", ("logs-x",), rename="b-{{remote_index}}")]
    )
    assert manual.source("b-logs-x") is None
    assert manual.source("logs-x-r").rule.name == "a"


def test_dot_names_only_for_dot_patterns():
    r = rules({"name": "all", "indices": ["*"], "rename": "f-{{remote_index}}"})
    assert r.source("f-.kibana") is None  # "*" does not follow .kibana
    assert r.source("f-app").index == "app"


def test_without_rules_every_index_is_its_own_origin():
    assert Rules([]).source("anything").index == "anything"


def test_may_be_target():
    assert RULES.may_be_target("logs-*")
    assert RULES.may_be_target("*-replica")
    assert RULES.may_be_target("*")
    assert not RULES.may_be_target("metrics-*")
    assert Rules([]).may_be_target("metrics-*")


# --------------------------------------------------------------------------- writes refused


def bulk(*items: dict) -> bytes:
    out = []
    for item in items:
        out.append(json.dumps(item))
        if "delete" not in item:
            out.append('{"f": 1}')
    return ("\n".join(out) + "\n").encode()


def refused(method: str, uri: str, body: object = b"", r: Rules = RULES) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    found = refusal(r, method, uri, raw)
    return found.reason if found else ""


@pytest.mark.parametrize(
    "method,uri,body,words",
    [
        (
            "PUT",
            "/logs-1-replica/_doc/1",
            {"f": 1},
            ["[logs-1-replica]", 'follow.rules[0] "logs"', '"logs-*"', "[logs-1]"],
        ),
        ("POST", "/logs-1-replica/_doc", {"f": 1}, ["follow.rules[0]"]),
        ("DELETE", "/users", b"", ["[users]", 'follow.rules[1] "users"', '"users"']),
        ("PUT", "/logs-2-replica", {}, ["the path"]),
        ("PUT", "/logs-2-replica/_mapping", {}, ["logs-2-replica"]),
        ("POST", "/users/_update/1", {"doc": {}}, ["users"]),
        ("POST", "/a,users/_delete_by_query", {"query": {}}, ["users"]),
        ("POST", "/users/_close", b"", ["users"]),
        ("PUT", "/_settings", {"index": {}}, ["every index", '"*"']),
        ("POST", "/_all/_close", b"", ['"_all"']),
        ("DELETE", "/logs-*", b"", ['"logs-*"']),
        ("DELETE", "/%3Clogs-%7Bnow%2Fd%7D%3E", b"", ["date math"]),
        (
            "POST",
            "/_bulk",
            bulk({"index": {"_index": "free"}}, {"index": {"_index": "orders-copy"}}),
            ["item 2 of 2", "whole _bulk", "orders-copy"],
        ),
        (
            "POST",
            "/users/_bulk",
            bulk({"index": {"_index": "free"}}, {"delete": {"_id": "1"}}),
            ["item 2 of 2", "[users]"],
        ),
        ("POST", "/_bulk", b"not json\n", ["cannot read", "cannot tell"]),
        ("POST", "/_reindex", {"source": {"index": "free"}, "dest": {"index": "users"}}, ["_reindex dest.index"]),
        ("POST", "/_reindex", {"source": {"index": "free"}}, ["without dest.index"]),
        (
            "POST",
            "/_aliases",
            {"actions": [{"add": {"index": "free", "alias": "a"}}, {"add": {"indices": ["users"], "alias": "b"}}]},
            ["_aliases action 2 (add)"],
        ),
        ("POST", "/_aliases", {"actions": [{"remove_index": {"index": "logs-*"}}]}, ['"logs-*"']),
        ("POST", "/_aliases", b"[1]", ["not a JSON object"]),
        ("POST", "/free/_clone/logs-3-replica", b"", ["_clone target"]),
        ("POST", "/alias/_rollover", b"", ["_rollover without a new index name"]),
        ("POST", "/alias/_rollover/users", b"", ["_rollover target"]),
        ("POST", "/_snapshot/repo/snap/_restore", b"", ["restore"]),
        ("PUT", "/_data_stream/users", b"", ["users"]),
    ],
)
def test_writes_naming_followed_indices_are_refused(method, uri, body, words):
    reason = refused(method, uri, body)
    assert reason, f"{method} {uri} was not refused"
    for word in words:
        assert word in reason


@pytest.mark.parametrize(
    "method,uri,body",
    [
        ("GET", "/logs-1-replica/_doc/1", b""),
        ("POST", "/logs-1-replica/_search", {"query": {"match_all": {}}}),
        ("POST", "/_msearch", b'{"index":"users"}\n{}\n'),
        ("POST", "/users/_refresh", b""),
        ("POST", "/_refresh", b""),
        ("POST", "/users/_flush", b""),
        ("PUT", "/free/_doc/1", {"f": 1}),
        ("PUT", "/logs-1/_doc/1", {"f": 1}),  # A's name is not followed on B
        ("PUT", "/logs-tmp-1-replica/_doc/1", {"f": 1}),  # excluded
        ("DELETE", "/metrics-*", b""),
        ("POST", "/_bulk", bulk({"index": {"_index": "free"}}, {"delete": {"_index": "other", "_id": "1"}})),
        ("POST", "/users/_bulk", bulk({"index": {"_index": "free"}})),  # the path index is only a default
        ("PUT", "/_cluster/settings", {"persistent": {}}),
        ("PUT", "/_index_template/t", {"index_patterns": ["logs-*"]}),
        ("PUT", "/_ingest/pipeline/p", {}),
        ("POST", "/_reindex", {"source": {"index": "users"}, "dest": {"index": "free"}}),
        ("POST", "/_aliases", {"actions": [{"add": {"index": "free", "alias": "users-alias"}}]}),
    ],
)
def test_other_requests_pass(method, uri, body):
    assert refused(method, uri, body) == ""


def test_without_rules_every_index_is_read_only_but_cluster_writes_pass():
    none = Rules([])
    reason = refused("PUT", "/anything/_doc/1", {"f": 1}, none)
    assert "no follow.rules" in reason and "[anything]" in reason
    assert refused("PUT", "/_cluster/settings", {"persistent": {}}, none) == ""


def test_percent_encoded_names_are_decoded():
    assert "users" in refused("PUT", "/%75sers/_doc/1", {"f": 1})


# --------------------------------------------------------------------------- config


def _config(proxy: dict, follow: dict | None = None) -> str:
    lines = ["source:", "  proxies:", "    - port: 9200"]
    lines += [f"      {k}: {json.dumps(v)}" for k, v in proxy.items()]
    lines += ["destination:", "  primaries:", "    - url: http://127.0.0.1:9201/"]
    if follow is not None:
        lines.append(f"follow: {json.dumps(follow)}")
    return "\n".join(lines) + "\n"


def test_config_warnings_for_the_follow_section_and_followerreadonly():
    follow = {"rules": [LOGS]}
    ignored = parse(_config({}, follow)).warnings
    assert any(w.startswith("follow: applies to the replay role and to proxies with followerReadOnly") for w in ignored)
    used = parse(_config({"followerReadOnly": True}, follow))
    assert used.proxies()[0].followerReadOnly
    assert not any(w.startswith("follow:") or "followerReadOnly" in w for w in used.warnings)
    bare = parse(_config({"followerReadOnly": True})).warnings
    assert any("followerReadOnly: no follow.rules: every write naming an index is refused" in w for w in bare)
