"""Dead-letter records and their settings (pure logic, no servers)."""

from __future__ import annotations

import json

import pytest
from support.beans import make_bean

from esproxy.core.config import ConfigError, parse
from esproxy.core.deadletters import make_record, original


def test_record_of_a_bean_keeps_its_fields_and_requeues_without_dead_letter():
    value = make_bean("PUT", "/i/_doc/1", '{"n": "x"}', extra="kept", Index="i")
    rec = make_record(value, "answered 400", "t", 2, 41, target="http://b:9200", status=400, error={"type": "x"})
    assert rec["deadLetter"] == {
        "reason": "answered 400",
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "time": rec["deadLetter"]["time"],
        "target": "http://b:9200",
        "status": 400,
        "error": {"type": "x"},
    }
    assert rec["extra"] == "kept" and rec["Index"] == "i" and rec["body"] == '{"n": "x"}'
    assert json.loads(original(rec)) == json.loads(value)


def test_record_of_one_refused_action_replaces_the_body():
    bulk = '{"index":{"_index":"i","_id":"1"}}\n{"n":1}\n{"index":{"_index":"i","_id":"2"}}\n{"n":"x"}\n'
    value = make_bean("POST", "/_bulk", bulk, Body="shadow", kind="docs")
    chunk = b'{"index":{"_index":"i","_id":"2"}}\n{"n":"x"}\n'
    rec = make_record(value, "refused", "t", 0, 3, body=chunk)
    assert rec["body"] == chunk.decode() and "Body" not in rec and rec["kind"] == "docs"
    assert json.loads(original(rec))["body"] == chunk.decode()


@pytest.mark.parametrize("value", [b"not json", b"\xff\xfe", b"[1]", b'{"method": "PUT"}', b""])
def test_record_of_a_message_that_is_not_a_bean_keeps_its_bytes(value):
    rec = make_record(value, "not a bean", "t", 0, 0)
    if rec.get("valueEncoding") == "base64":
        import base64

        assert base64.b64decode(rec["value"]) == value
    else:
        assert rec["value"] == value.decode()
    assert original(rec) is None


def test_dead_letter_topic_must_differ_from_the_consumed_topics():
    conf = """
source: {kafkas: [{brokers: [k:9092], topics: [a, b], group: g, deadLetterTopic: "b"}]}
destination: {primaries: [{url: "http://b:9200"}]}
"""
    with pytest.raises(ConfigError, match="deadLetterTopic"):
        parse(conf)
    ok = parse(conf.replace('deadLetterTopic: "b"', 'deadLetterTopic: "dead.{topic}"'))
    assert ok.source.kafkas[0].dead_letter_topic("a") == "dead.a"
    assert parse(conf.replace('deadLetterTopic: "b"', "deadLetterFile: x.jsonl")).source.kafkas[0].deadLetterFile
