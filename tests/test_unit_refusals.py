"""Which produce errors refuse a record for good (pure logic, no servers), and the proxy's dead letters' shape."""

from __future__ import annotations

import json

import pytest
from kafka import errors

from esproxy.clients.refusals import maybe_a_neighbour, reason, refused_for_good
from esproxy.core.bean import Bean
from esproxy.core.config import parse
from esproxy.core.deadletters import LetterFile, original, proxy_file, proxy_record


@pytest.mark.parametrize(
    "error",
    [
        errors.MessageSizeTooLargeError("The message is 3145828 bytes when serialized"),  # send(): max_request_size
        errors.MessageSizeTooLargeError(),  # MESSAGE_TOO_LARGE from the broker (its RecordTooLargeException)
        errors.RecordListTooLargeError(),
        errors.InvalidRecordError("schema validation failed"),
        errors.CorruptRecordError(),
        errors.UnsupportedForMessageFormatError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_about_the_record_itself_are_for_good(error):
    assert refused_for_good(error)


@pytest.mark.parametrize(
    "error",
    [
        errors.KafkaTimeoutError("Failed to update metadata after 10.0 secs."),  # broker down, buffer full
        errors.KafkaConnectionError("socket disconnected"),
        errors.NotLeaderForPartitionError(),
        errors.LeaderNotAvailableError(),
        errors.RequestTimedOutError(),
        errors.NotEnoughReplicasError(),
        errors.NotEnoughReplicasAfterAppendError(),
        errors.UnknownTopicOrPartitionError(),
        errors.TopicAuthorizationFailedError(),  # every record would fail: keep the line, do not empty it
        errors.ClusterAuthorizationFailedError(),
        errors.InvalidTimestampError(),  # the proxy's clock, not the record: every record would fail
        # what kafka-python gives the other records of a batch in which the broker named the bad one
        errors.KafkaError("Failed to append record because it was part of a batch which had one more more invalid"),
        errors.UnknownError(),
        RuntimeError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_retried_in_order(error):
    assert not refused_for_good(error)


def test_the_neighbours_of_a_named_refused_record_are_told_apart():
    neighbour = errors.KafkaError("Failed to append record because it was part of a batch which had one more ...")
    assert maybe_a_neighbour(neighbour) and not refused_for_good(neighbour)
    assert not maybe_a_neighbour(errors.KafkaTimeoutError()) and not maybe_a_neighbour(errors.InvalidRecordError())


def test_reason_names_the_error_class_once():
    assert reason(errors.InvalidRecordError()) == "[Error 87] InvalidRecordError"
    assert reason(errors.MessageSizeTooLargeError("The message is\n 5 bytes")) == (
        "[Error 10] MessageSizeTooLargeError: The message is 5 bytes"
    )
    assert reason(errors.KafkaTimeoutError()) == "KafkaTimeoutError"
    assert reason(OSError("No space left on device")) == "OSError: No space left on device"


def test_proxy_dead_letter_is_the_bean_plus_why_and_requeues_as_the_same_bean():
    bean = Bean("POST", "/_bulk", b'{"index":{"_index":"i","_id":"1"}}\n{"n":1}\n', index="i", kind="docs")
    error = errors.MessageSizeTooLargeError("too big")
    rec = proxy_record(bean, "elastic.backup", error, reason(error))
    info = rec.pop("deadLetter")
    assert info == {
        "reason": "[Error 10] MessageSizeTooLargeError: too big",
        "error": "MessageSizeTooLargeError",
        "topic": "elastic.backup",
        "size": len(bean.to_json()),
        "time": info["time"],
        "source": "proxy",
    }
    assert rec == json.loads(bean.to_json())
    rec["deadLetter"] = info
    assert Bean.from_json(original(rec)) == bean


def test_proxy_dead_letters_live_in_the_spool_dir_whatever_the_durability():
    conf = """
source: {proxies: [{port: 2900, durability: none}]}
destination: {primaries: [{url: "http://127.0.0.1:9200"}], kafkas: [{topic: t, brokers: ["127.0.0.1:9092"]}]}
spool: {dir: /var/lib/esproxy}
"""
    assert str(proxy_file(parse(conf))) == "/var/lib/esproxy/deadletters.jsonl"


def test_letter_file_keeps_a_torn_line_apart_and_is_reopened_after_close(tmp_path):
    path = tmp_path / "deadletters.jsonl"
    path.write_bytes(b'{"whole":1}\n{"torn')  # a crash (or a full disk) in the middle of a line
    letters = LetterFile(path)
    letters.append(b'{"next":2}')
    letters.close()
    letters.append(b'{"after_close":3}')
    letters.close()
    assert path.read_bytes().split(b"\n") == [b'{"whole":1}', b'{"torn', b'{"next":2}', b'{"after_close":3}', b""]
