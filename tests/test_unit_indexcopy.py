"""clients/indexcopy.py: which of A's settings B's copy gets, and when two mappings conflict (pure logic)."""

from __future__ import annotations

from esproxy.clients.indexcopy import SettingsChoice, definition, mapping_conflicts
from esproxy.replay.follow import Rule


def test_mappings_compare_in_a_normal_form():
    ours = {"dynamic": "false", "properties": {"t": {"type": "keyword", "ignore_above": 256, "index": True}}}
    theirs = {"dynamic": False, "properties": {"t": {"type": "keyword", "ignore_above": "256", "index": "true"}}}
    assert mapping_conflicts(ours, theirs) == []
    assert mapping_conflicts({"_doc": ours}, theirs) == []  # Elasticsearch 6.x: under its type
    assert mapping_conflicts(ours, {"dynamic": "strict"}) == ["dynamic"]
    dynamic = {"properties": {"t": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}}}
    assert mapping_conflicts(ours, dynamic) == ["properties.t"]


def test_a_field_named_like_a_type_is_not_taken_for_one():
    one_field = {"properties": {"doc": {"type": "keyword"}}}
    assert mapping_conflicts(one_field, {"properties": {"doc": {"type": "text"}}}) == ["properties.doc"]


def test_definition_under_a_rule_keeps_what_the_rule_syncs():
    meta = {
        "mappings": {"properties": {"n": {"type": "long"}}},
        "settings": {"index": {"uuid": "u", "number_of_shards": "2", "number_of_replicas": "3",
                               "refresh_interval": "5s", "routing": {"allocation": {"include": {"_tier": "hot"}}}}},
        "aliases": {"all": {}},
    }  # fmt: skip
    plain = Rule("r", ("x",))
    d = definition(meta, SettingsChoice(synced=plain.setting_synced), plain.aliases)
    assert d.mappings == meta["mappings"] and d.settings == {} and d.aliases == {}
    synced = Rule("r", ("x",), settings=True, settings_exclude=("index.refresh_interval",), aliases=True)
    d = definition(meta, SettingsChoice(synced=synced.setting_synced), synced.aliases)
    assert d.settings == {"index.number_of_shards": "2"} and d.aliases == {"all": {}}
