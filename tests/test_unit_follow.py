"""replay/follow.py (sync rules) and replay/followed.py (what the replay sends B under them): pure logic."""

from __future__ import annotations

import json

import pytest

from esproxy import configfile
from esproxy.core.bean import Bean
from esproxy.core.bulk import DocOp, split_actions
from esproxy.core.config import ConfigError, FollowRule, FollowSettings, parse
from esproxy.replay.follow import Rules, covers, intersect, matches, name_problem
from esproxy.replay.followcontrol import FollowControl
from esproxy.replay.followed import (
    TEMPLATES,
    deletes_index,
    document_indices,
    flatten_settings,
    follow_docs,
    follow_raw,
)


def rules(*specs: dict) -> Rules:
    return Rules.from_config(FollowSettings(rules=[FollowRule(**spec) for spec in specs]))


LOGS = {"name": "logs", "indices": ["logs-*"], "exclude": ["logs-tmp-*"], "rename": "{{remote_index}}-sync"}
USERS = {"name": "users", "indices": ["users"], "settings": True, "aliases": True}


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        ("logs-*", "logs-1", True),
        ("logs-*", "logs-", True),
        ("logs-*", "log-1", False),
        ("*", ".kibana", False),  # a wildcard without a dot matches no dot-name, as in Elasticsearch
        (".k*", ".kibana", True),
        ("users", "users", True),
        ("users", "users2", False),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy", False),
    ],
)
def test_matches(pattern, name, expected):
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ("logs-*", "logs-app-*", True),
        ("logs-*", "*-app", True),  # logs-app
        ("logs-*", "metrics-*", False),
        ("a*", "*b", True),
        ("ab", "a*", True),
        ("ab", "a*c", False),
        ("*", ".kibana", False),
        (".k*", ".*a", True),
        ("x", "x", True),
        ("x", "y", False),
    ],
)
def test_intersect(a, b, expected):
    assert intersect(a, b) is expected
    assert intersect(b, a) is expected


@pytest.mark.parametrize(
    "outer,inner,expected",
    [
        ("logs-*", "logs-app-*", True),
        ("logs-app-*", "logs-*", False),
        ("*", "anything*", True),
        ("*-tmp", "logs-*-tmp", True),
        ("*", ".kibana", False),
        ("x", "x", True),
        ("x*", "x", True),
    ],
)
def test_covers(outer, inner, expected):
    assert covers(outer, inner) is expected


@pytest.mark.parametrize("name", ["", ".", "..", "Upper", "-a", "_a", "+a", "a b", "a,b", "a*", "a#", "a" * 256])
def test_invalid_index_names(name):
    assert name_problem(name) is not None


# --------------------------------------------------------------------------- targets


def test_targets():
    r = rules(LOGS, USERS)
    assert r.target("logs-1").index == "logs-1-sync"
    assert r.target("logs-1").rule.name == "logs"
    assert r.target("logs-tmp-1") is None  # excluded
    assert r.target("users").index == "users"
    assert r.target("users2") is None
    assert r.target(".kibana") is None


def test_no_rules_follow_everything_as_it_is():
    r = Rules([])
    assert not r.active
    assert r.target("anything").index == "anything"


# --------------------------------------------------------------------------- config errors


def _error(*specs: dict) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        rules(*specs)
    return e.value


@pytest.mark.parametrize(
    "specs,path,words",
    [
        ([LOGS, {**USERS, "name": "logs"}], "follow.rules[1].name", "already the name"),
        (
            [LOGS, {"name": "b", "indices": ["logs-app-*"], "rename": "b-{{remote_index}}"}],
            "follow.rules[1].indices",
            "both match",
        ),
        (
            [LOGS, {"name": "b", "indices": ["*"], "rename": "b-{{remote_index}}"}],
            "follow.rules[1].indices",
            "both match",
        ),
        (
            [{"name": "a", "indices": ["x"], "rename": "y"}, {"name": "b", "indices": ["y"]}],
            "follow.rules[1].rename",
            "onto one",
        ),
        (
            [
                {"name": "a", "indices": ["a-*"], "rename": "{{remote_index}}-s"},
                {"name": "b", "indices": ["b"], "rename": "a-1-s"},
            ],
            "follow.rules[1].rename",
            "onto one",
        ),
        ([{"name": "a", "indices": ["logs-*"], "rename": "all-logs"}], "follow.rules[0].rename", "one B index"),
        ([{"name": "a", "indices": ["x", "y"], "rename": "z"}], "follow.rules[0].rename", "one B index"),
        (
            [{"name": "a", "indices": ["x"], "rename": "{{index}}-sync"}],
            "follow.rules[0].rename",
            "unknown placeholder",
        ),
        ([{"name": "a", "indices": ["x"], "rename": "{{remote_index}}-Sync"}], "follow.rules[0].rename", "upper case"),
        ([{"name": "a", "indices": ["x"], "rename": "_{{remote_index}}"}], "follow.rules[0].rename", "starts with"),
        ([{"name": "a", "indices": ["x"], "rename": "{{remote_index}}/b"}], "follow.rules[0].rename", "contains"),
        ([{"name": "a", "indices": ["x"], "rename": "{remote_index}"}], "follow.rules[0].rename", "brace"),
        ([{"name": "a", "indices": ["logs-?"]}], "follow.rules[0].indices[0]", "syntax"),
        ([{"name": "a", "indices": ["<logs-{now/d}>"]}], "follow.rules[0].indices[0]", "syntax"),
        ([{"name": "a", "indices": ["Logs"]}], "follow.rules[0].indices[0]", "upper case"),
        ([{"name": "a", "indices": ["x"], "exclude": ["-y"]}], "follow.rules[0].exclude[0]", "exclude"),
        ([{"name": "a", "indices": []}], "follow.rules[0].indices", "names no index"),
    ],
)
def test_config_errors_name_the_key(specs, path, words):
    e = _error(*specs)
    assert e.path == path, str(e)
    assert words in e.reason, str(e)


def test_disjoint_by_exclude_is_accepted():
    r = rules(LOGS, {"name": "tmp", "indices": ["logs-tmp-*"], "rename": "tmp-{{remote_index}}"})
    assert r.target("logs-tmp-1").index == "tmp-logs-tmp-1"
    assert r.target("logs-1").index == "logs-1-sync"


def test_constant_rename_of_one_exact_index_is_accepted():
    assert rules({"name": "a", "indices": ["old"], "rename": "new"}).target("old").index == "new"


def test_config_parse_reads_follow_section():
    cfg = parse(
        """
source:
  kafkas: [{brokers: [127.0.0.1:9092], topics: [t], group: g}]
destination:
  primaries: [{url: "http://127.0.0.1:9200"}]
follow:
  rules:
    - {name: logs, indices: "logs-*", rename: "{{remote_index}}-sync",
       settings: true, settingsExclude: [refresh_interval]}
"""
    )
    rule = Rules.from_config(cfg.follow).rules[0]
    assert rule.indices == ("logs-*",)
    assert rule.settings_exclude == ("index.refresh_interval",)


def test_a_config_file_with_bad_rules_is_refused_naming_the_key():
    """The settings declaration (core/config.py) does not know the rules; the config file as esproxy loads
    it (esproxy/configfile.py) checks them here, in replay/follow.py."""
    text = """
source:
  kafkas: [{brokers: [127.0.0.1:9092], topics: [t], group: g}]
destination:
  primaries: [{url: "http://127.0.0.1:9200"}]
follow:
  rules:
    - {name: logs, indices: "logs-*"}
    - {name: logs, indices: "users"}
"""
    assert len(parse(text).follow.rules) == 2  # the declaration alone: the shape is right
    with pytest.raises(ConfigError) as e:
        configfile.parse(text)
    assert e.value.path == "follow.rules[1].name" and "already the name" in str(e.value)


# --------------------------------------------------------------------------- settings filter


def test_settings_filter():
    r = rules(
        {"name": "on", "indices": ["on"], "settings": True, "settingsExclude": ["index.refresh_interval"]},
        {"name": "off", "indices": ["off"]},
        {"name": "rep", "indices": ["rep"], "settings": True, "replicas": True, "settingsInclude": ["number_of_*"]},
    )
    on, off, rep = (r.target(i).rule for i in ("on", "off", "rep"))
    assert on.setting_synced("index.number_of_shards")
    assert not on.setting_synced("index.number_of_replicas")  # never unless replicas: true
    assert not on.setting_synced("index.refresh_interval")
    assert not on.setting_synced("index.uuid")
    assert off.setting_synced("index.analysis.analyzer.a.type")  # mappings may need it
    assert not off.setting_synced("index.number_of_shards")
    assert rep.setting_synced("index.number_of_replicas")
    assert not rep.setting_synced("index.refresh_interval")


def test_flatten_settings():
    nested = {
        "index": {"number_of_shards": 2, "analysis": {"analyzer": {"a": {"type": "standard"}}}},
        "refresh_interval": "1s",
    }
    assert flatten_settings(nested) == {
        "index.number_of_shards": 2,
        "index.analysis.analyzer.a.type": "standard",
        "index.refresh_interval": "1s",
    }


# --------------------------------------------------------------------------- document beans


def test_follow_docs_renames_and_drops():
    body = (
        DocOp("index", "logs-1", "a", 3, b'{"n":1}').lines()
        + DocOp("delete", "logs-tmp-1", "b", 4).lines()
        + DocOp("index", "other", "c", 5, b'{"n":2}').lines()
    )
    kept, skipped, paused = follow_docs(rules(LOGS), split_actions(body))
    assert paused == ""
    assert skipped == ["logs-tmp-1", "other"]
    assert len(kept) == 1
    head, source = kept[0].rstrip(b"\n").split(b"\n")
    assert json.loads(head) == {
        "index": {"_index": "logs-1-sync", "_id": "a", "version": 3, "version_type": "external_gte"}
    }
    assert source == b'{"n":1}'


# --------------------------------------------------------------------------- raw beans


def raw(method: str, uri: str, body: object = b"") -> Bean:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Bean(method=method, requestUri=uri, body=data, header={"Content-Type": ["application/json"]})


R = rules(LOGS, USERS)


def sent(outcome) -> list[tuple[str, str, object]]:
    out = []
    for b in outcome.beans:
        try:
            body = json.loads(b.body) if b.body.strip() else None
        except ValueError:
            body = b.body.decode()
        out.append((b.method, b.requestUri, body))
    return out


def test_single_document_path_renamed():
    o = follow_raw(R, raw("PUT", "/logs-1/_doc/7?refresh=true", {"a": 1}))
    assert sent(o) == [("PUT", "/logs-1-sync/_doc/7?refresh=true", {"a": 1})]


def test_unfollowed_write_skipped():
    o = follow_raw(R, raw("PUT", "/other/_doc/7", {"a": 1}))
    assert o.beans == [] and o.skipped == ["other"] and not o.problem


def test_bulk_items_by_their_own_index():
    body = (
        b'{"index":{"_index":"logs-1","_id":"1"}}\n{"a":1}\n'
        b'{"delete":{"_index":"other","_id":"2"}}\n'
        b'{"update":{"_id":"3"}}\n{"doc":{"b":2}}\n'
    )
    o = follow_raw(R, raw("POST", "/users/_bulk?refresh=wait_for", body))
    assert o.skipped == ["other"]
    (b,) = o.beans
    assert b.requestUri == "/_bulk?refresh=wait_for"
    lines = [json.loads(line) for line in b.body.splitlines()]
    assert lines == [
        {"index": {"_index": "logs-1-sync", "_id": "1"}},
        {"a": 1},
        {"update": {"_id": "3", "_index": "users"}},
        {"doc": {"b": 2}},
    ]


def test_bulk_of_unfollowed_default_index_only_keeps_followed_items():
    body = b'{"index":{"_id":"1"}}\n{"a":1}\n{"index":{"_index":"logs-2","_id":"2"}}\n{"a":2}\n'
    o = follow_raw(R, raw("POST", "/other/_bulk", body))
    assert o.skipped == ["other"]
    assert [json.loads(x) for x in o.beans[0].body.splitlines()][0] == {"index": {"_index": "logs-2-sync", "_id": "2"}}


def test_index_creation_filters_settings_and_aliases():
    create = {
        "settings": {
            "number_of_shards": 2,
            "number_of_replicas": 0,
            "analysis": {"analyzer": {"a": {"type": "standard"}}},
        },
        "mappings": {"properties": {"t": {"type": "text", "analyzer": "a"}}},
        "aliases": {"current": {}},
    }
    ((_, uri, body),) = sent(follow_raw(R, raw("PUT", "/logs-1", create)))  # settings off, aliases off
    assert uri == "/logs-1-sync"
    assert body == {"settings": {"index.analysis.analyzer.a.type": "standard"}, "mappings": create["mappings"]}
    ((_, uri, body),) = sent(follow_raw(R, raw("PUT", "/users", create)))  # settings on, aliases on
    assert body["settings"] == {"index.number_of_shards": 2, "index.analysis.analyzer.a.type": "standard"}
    assert body["aliases"] == {"current": {}}


def test_settings_updates():
    assert follow_raw(R, raw("PUT", "/logs-1/_settings", {"index": {"refresh_interval": "5s"}})).skipped == ["logs-1"]
    o = follow_raw(R, raw("PUT", "/users/_settings", {"index": {"refresh_interval": "5s", "number_of_replicas": 2}}))
    assert sent(o) == [("PUT", "/users/_settings", {"index.refresh_interval": "5s"})]
    only_replicas = follow_raw(R, raw("PUT", "/users/_settings", {"number_of_replicas": 2}))
    assert only_replicas.beans == [] and only_replicas.skipped == ["users"]


def test_multi_index_paths_rename_followed_drop_others():
    o = follow_raw(R, raw("POST", "/logs-1,other,users/_delete_by_query", {"query": {"match_all": {}}}))
    assert sent(o) == [("POST", "/logs-1-sync,users/_delete_by_query", {"query": {"match_all": {}}})]
    assert o.skipped == ["other"]
    assert sent(follow_raw(R, raw("DELETE", "/logs-1"))) == [("DELETE", "/logs-1-sync", None)]
    assert sent(follow_raw(R, raw("PUT", "/logs-1/_mapping", {"properties": {}}))) == [
        ("PUT", "/logs-1-sync/_mapping", {"properties": {}})
    ]


def test_wildcards_and_date_math():
    assert "wildcard" in follow_raw(R, raw("POST", "/logs-*/_update_by_query")).problem
    assert "wildcard" in follow_raw(R, raw("DELETE", "/_all")).problem
    assert follow_raw(R, raw("DELETE", "/metrics-*")).skipped == ["metrics-*"]  # can match no followed index
    assert "date math" in follow_raw(R, raw("PUT", "/%3Clogs-%7Bnow%2Fd%7D%3E")).problem


def test_aliases():
    actions = {
        "actions": [
            {"add": {"index": "users", "alias": "u"}},
            {"add": {"index": "logs-1", "alias": "l"}},  # aliases off for logs
            {"remove_index": {"index": "logs-2"}},  # an index deletion: followed
            {"add": {"indices": ["users", "other"], "alias": "v"}},
        ]
    }
    o = follow_raw(R, raw("POST", "/_aliases", actions))
    assert sent(o) == [
        (
            "POST",
            "/_aliases",
            {
                "actions": [
                    {"add": {"index": "users", "alias": "u"}},
                    {"remove_index": {"index": "logs-2-sync"}},
                    {"add": {"indices": ["users"], "alias": "v"}},
                ]
            },
        )
    ]
    assert sorted(o.skipped) == ["logs-1", "other"]
    assert follow_raw(R, raw("PUT", "/logs-1/_alias/l")).skipped == ["logs-1"]
    assert sent(follow_raw(R, raw("PUT", "/users/_alias/u"))) == [("PUT", "/users/_alias/u", None)]


def test_templates_skipped_cluster_writes_pass():
    assert follow_raw(R, raw("PUT", "/_index_template/t", {"index_patterns": ["logs-*"]})).skipped == [TEMPLATES]
    assert follow_raw(R, raw("PUT", "/_template/t", {"index_patterns": ["logs-*"]})).skipped == [TEMPLATES]
    pipeline = raw("PUT", "/_ingest/pipeline/p", {"processors": []})
    assert follow_raw(R, pipeline).beans == [pipeline]


def test_reindex():
    o = follow_raw(R, raw("POST", "/_reindex", {"source": {"index": "logs-1"}, "dest": {"index": "users"}}))
    assert sent(o) == [("POST", "/_reindex", {"source": {"index": "logs-1-sync"}, "dest": {"index": "users"}})]
    assert follow_raw(R, raw("POST", "/_reindex", {"source": {"index": "x"}, "dest": {"index": "y"}})).skipped == ["y"]
    assert (
        "not followed"
        in follow_raw(R, raw("POST", "/_reindex", {"source": {"index": "x"}, "dest": {"index": "users"}})).problem
    )


def test_resize_needs_both_followed():
    assert sent(follow_raw(R, raw("POST", "/logs-1/_clone/logs-2"))) == [
        ("POST", "/logs-1-sync/_clone/logs-2-sync", None)
    ]
    assert "not followed" in follow_raw(R, raw("POST", "/logs-1/_clone/other")).problem


# --------------------------------------------------------------------------- runtime control


def test_control_add_pause_stop_delete_persist(tmp_path):
    state = tmp_path / "follow-state.json"
    settings = FollowSettings(rules=[FollowRule(**LOGS)])
    control = FollowControl(settings, state)
    live = control.rules
    assert [r["name"] for r in control.list()] == ["logs"]

    assert control.handle("POST", ["rules"], json.dumps(USERS).encode())[0] == 200
    assert live.target("users").index == "users"
    status, doc = control.handle("POST", ["rules"], json.dumps({**USERS, "name": "again"}).encode())
    assert status == 400 and "both match" in doc["error"]["reason"]
    assert control.handle("POST", ["rules"], json.dumps(USERS).encode())[0] == 409

    assert control.handle("POST", ["rules", "logs", "_pause"], b"") == (200, {"acknowledged": True, "state": "paused"})
    assert live.paused(live.target("logs-1"))
    assert follow_raw(live, raw("PUT", "/logs-1/_doc/1", {"a": 1})).paused == "logs"
    assert follow_docs(live, split_actions(DocOp("index", "logs-1", "a", 1, b"{}").lines()))[2] == "logs"
    control.set_state("logs", "resume")
    assert not live.paused(live.target("logs-1"))
    control.set_state("users", "stop")
    assert live.target("users") is None
    assert control.handle("POST", ["rules", "users", "_resume"], b"")[0] == 409

    again = FollowControl(settings, state)  # a restart keeps the changes
    assert [(r["name"], r["state"], r["from"]) for r in again.list()] == [
        ("logs", "following", "config"),
        ("users", "stopped", "added"),
    ]
    assert again.handle("DELETE", ["rules", "logs"], b"")[0] == 200
    assert again.rules.target("logs-1") is None
    assert again.handle("DELETE", ["rules", "users"], b"")[0] == 200
    assert again.rules.active and again.rules.target("users") is None  # no rule left: nothing followed
    assert FollowControl(settings, state).list() == []
    assert again.handle("DELETE", ["rules", "nope"], b"")[0] == 404


def test_control_without_rules_keeps_todays_behaviour(tmp_path):
    control = FollowControl(FollowSettings(), tmp_path / "follow-state.json")
    assert not control.rules.active
    assert not (tmp_path / "follow-state.json").exists()


# --------------------------------------------------------------------------- indices a write may create in B


@pytest.mark.parametrize(
    "method,uri,body,expected",
    [
        ("PUT", "/logs-1/_doc/7?refresh=true", {"a": 1}, ["logs-1"]),
        ("POST", "/logs-1/_doc", {"a": 1}, ["logs-1"]),
        ("PUT", "/logs-1/_create/7", {"a": 1}, ["logs-1"]),
        ("POST", "/logs-1/_update/7", {"doc": {"a": 1}, "doc_as_upsert": True}, ["logs-1"]),
        ("PUT", "/logs-1/doc/7", {"a": 1}, ["logs-1"]),  # Elasticsearch 6.x typed paths
        ("POST", "/logs-1/doc/7/_update", {"doc": {"a": 1}}, ["logs-1"]),
        ("POST", "/logs-1/doc", {"a": 1}, ["logs-1"]),
        ("DELETE", "/logs-1/_doc/7", None, []),  # a delete creates nothing
        ("PUT", "/logs-1", {"mappings": {}}, []),  # index creation: replayed as it is
        ("PUT", "/logs-1/_mapping", {"properties": {}}, []),
        ("POST", "/logs-1/_update_by_query", {}, []),
        ("PUT", "/logs-1/_doc", {"a": 1}, []),  # PUT without an id is no document write
        ("POST", "/logs-*/_doc", {"a": 1}, []),
        ("PUT", "/_cluster/settings", {}, []),
    ],
)
def test_document_indices_of_a_write_replayed_as_sent(method, uri, body, expected):
    assert document_indices(raw(method, uri, body)) == expected


def test_document_indices_of_a_bulk_are_its_actions_indices_but_deletes():
    body = (
        b'{"index":{"_index":"logs-1","_id":"1"}}\n{"a":1}\n'
        b'{"delete":{"_index":"gone","_id":"1"}}\n'
        b'{"create":{"_id":"2"}}\n{"a":2}\n'
        b'{"update":{"_index":"logs-1","_id":"3"}}\n{"doc":{"a":3}}\n'
    )
    bean = Bean(method="POST", requestUri="/users/_bulk", body=body)
    assert document_indices(bean) == ["logs-1", "users"]
    assert document_indices(Bean(method="POST", requestUri="/_bulk", body=b"not ndjson")) == []


def test_deletes_index():
    assert deletes_index(raw("DELETE", "/logs-1-sync"))
    assert deletes_index(raw("DELETE", "/logs-1,logs-2?ignore_unavailable=true"))
    assert not deletes_index(raw("DELETE", "/logs-1/_doc/1"))
    assert deletes_index(raw("POST", "/_aliases", {"actions": [{"remove_index": {"index": "logs-1"}}]}))
    assert not deletes_index(raw("POST", "/_aliases", {"actions": [{"add": {"index": "l", "alias": "a"}}]}))
