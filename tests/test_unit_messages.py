"""core/messages.py: beans to Kafka messages within a size limit, and back."""

from __future__ import annotations

import json
import random

import pytest
from support.beans import reassembled

from esproxy.core.bean import DOCS_KIND, Bean, BeanError
from esproxy.core.bulk import DocOp, split_actions
from esproxy.core.messages import (
    RECORD_OVERHEAD,
    Abort,
    Assembler,
    Chunk,
    abort_messages,
    decode,
    encode,
    partition_key,
)

LIMIT = 16 * 1024


def docs_bean(index: str, sizes: list[int], seed: int = 1) -> Bean:
    rnd = random.Random(seed)
    body = b""
    for n, size in enumerate(sizes):
        if size == 0:
            body += DocOp("delete", index, f"d{n}", n).lines()
        else:
            text = "".join(rnd.choice('ab"\\\n\té中') for _ in range(size))
            source = json.dumps({"n": n, "text": text}, ensure_ascii=False).encode()
            body += DocOp("index", index, f"d{n}", n, source).lines()
    return Bean(
        "POST", "/_bulk", body, {"Content-Type": ["application/x-ndjson"]}, "h:1", "r:2", None, ["A"], index, DOCS_KIND
    )


def record_size(key: bytes, value: bytes) -> int:
    """The larger of our reckoning and kafka-python's (what it checks against max_request_size)."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    return max(
        len(key) + len(value) + RECORD_OVERHEAD, DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
    )


def reassemble(values: list[bytes]) -> list[Bean]:
    """What the replay gets out of these messages, in order (one partition, one reader)."""
    assembler = Assembler()
    out = reassembled(values, assembler)
    assert assembler.low_water() is None
    return out


def test_a_bean_under_the_limit_is_one_message_exactly_as_before() -> None:
    bean = docs_bean("logs", [100, 0, 200])
    (message,) = encode(bean, LIMIT)
    assert message.value == bean.to_json() and message.key == b"logs" == partition_key(bean)
    raw = Bean("PUT", "/logs/_mapping", b'{"properties":{}}')
    assert [m.value for m in encode(raw, LIMIT)] == [raw.to_json()]


def test_a_docs_bean_is_split_at_action_boundaries_in_order() -> None:
    bean = docs_bean("logs", [700] * 60 + [0, 300, 0] * 10)
    messages = encode(bean, LIMIT)
    assert len(messages) > 3
    assert all(m.key == b"logs" and record_size(m.key, m.value) <= LIMIT for m in messages)
    pieces = [Bean.from_json(m.value) for m in messages]
    assert all(p.kind == DOCS_KIND and p.index == "logs" and p.requestUri == "/_bulk" for p in pieces)
    assert all(p.header == bean.header and p.clusterIds == ["A"] and p.remoteAddr == "r:2" for p in pieces)
    assert b"".join(p.body for p in pieces) == bean.body
    assert [a for p in pieces for a in split_actions(p.body)] == split_actions(bean.body)


def test_pieces_are_filled_up_to_the_limit() -> None:
    bean = docs_bean("logs", [500] * 200)
    messages = encode(bean, LIMIT)
    sizes = [record_size(m.key, m.value) for m in messages]
    action = max(len(a) for a in split_actions(bean.body))
    # every piece but the last is full: one more action (escaped: at most twice its bytes) would not fit
    assert all(LIMIT - 2 * action - 200 < size <= LIMIT for size in sizes[:-1]), sizes


def test_an_action_larger_than_the_limit_is_chunked_and_reassembled_byte_exact() -> None:
    bean = docs_bean("big", [300, 40_000, 300])
    messages = encode(bean, LIMIT)
    assert all(record_size(m.key, m.value) <= LIMIT and m.key == b"big" for m in messages)
    kinds = [json.loads(m.value).get("kind") for m in messages]
    assert kinds[0] == DOCS_KIND and kinds[-1] == DOCS_KIND and set(kinds[1:-1]) == {"chunk"}
    beans = reassemble([m.value for m in messages])
    assert len(beans) == 3
    assert b"".join(b.body for b in beans) == bean.body
    assert beans[1].to_json() == encode_piece_json(bean, 1)


def encode_piece_json(bean: Bean, n: int) -> bytes:
    """The JSON of the document bean holding only the n-th action of ``bean``."""
    import dataclasses

    return dataclasses.replace(bean, body=split_actions(bean.body)[n]).to_json()


@pytest.mark.parametrize("size", [LIMIT, 3 * LIMIT + 7, 20 * LIMIT])
def test_a_raw_bean_is_chunked_and_reassembled_byte_exact(size: int) -> None:
    body = bytes(random.Random(size).randrange(256) for _ in range(size))  # not UTF-8: base64 in the bean
    bean = Bean("POST", "/logs/_bulk?refresh=true", body, {"Content-Type": ["application/x-ndjson"]})
    messages = encode(bean, LIMIT)
    assert len(messages) > 1
    assert all(m.key == b"logs" and record_size(m.key, m.value) <= LIMIT for m in messages)
    (back,) = reassemble([m.value for m in messages])
    assert back.to_json() == bean.to_json() and back.body == body


def test_a_long_key_and_a_go_format_bean_stay_within_the_limit() -> None:
    index = "i" * 255
    bean = Bean("PUT", f"/{index}/_doc/1", ("é" * 30_000).encode(), index=index)
    messages = encode(bean, LIMIT)
    assert all(record_size(m.key, m.value) <= LIMIT for m in messages)
    (back,) = reassemble([m.value for m in messages])
    assert back.body == bean.body


def test_the_chunk_id_is_the_same_for_the_same_bean() -> None:
    bean = Bean("PUT", "/logs/_doc/1", b"x" * 50_000)
    first, again = encode(bean, LIMIT), encode(Bean("PUT", "/logs/_doc/1", b"x" * 50_000), LIMIT)
    assert [m.value for m in first] == [m.value for m in again]
    other = encode(Bean("PUT", "/logs/_doc/1", b"y" * 50_000), LIMIT)
    assert json.loads(first[0].value)["chunk"]["id"] != json.loads(other[0].value)["chunk"]["id"]


def test_duplicates_and_interleaved_sets_are_put_together() -> None:
    a = Bean("PUT", "/logs/_doc/a", b"a" * 40_000)
    b = Bean("PUT", "/logs/_doc/b", b"b" * 40_000)
    ma, mb = [m.value for m in encode(a, LIMIT)], [m.value for m in encode(b, LIMIT)]
    # a's producer shipped two chunks then failed and shipped all again; b's chunks interleave
    stream = ma[:2] + [mb[0]] + ma + mb[1:]
    beans = reassemble(stream)
    assert [x.body for x in beans] == [a.body, b.body]


def test_low_water_holds_the_commit_at_the_first_chunk_until_released() -> None:
    bean = Bean("PUT", "/logs/_doc/a", b"a" * 40_000)
    chunks = [decode(m.value) for m in encode(bean, LIMIT)]
    assembler = Assembler()
    assert assembler.low_water() is None
    for offset, chunk in enumerate(chunks[:-1], start=10):
        assert isinstance(chunk, Chunk)
        assert assembler.add(chunk, offset, 0) is None
        assert assembler.low_water() == 10
    complete = assembler.add(chunks[-1], 10 + len(chunks) - 1, 0)  # type: ignore[arg-type]
    assert complete is not None and assembler.low_water() == 10  # its bean is not applied yet
    assembler.release(complete.id)
    assert assembler.low_water() is None


def test_rewind_forgets_what_is_read_again() -> None:
    bean = Bean("PUT", "/logs/_doc/a", b"a" * 40_000)
    chunks = [decode(m.value) for m in encode(bean, LIMIT)]
    assembler = Assembler()
    for offset, chunk in enumerate(chunks):
        done = assembler.add(chunk, 100 + offset, 0)  # type: ignore[arg-type]
    assert done is not None
    last = 100 + len(chunks) - 1
    assembler.rewind(last)  # the bean's replay failed: read again from its last chunk
    assert assembler.low_water() == 100
    again = assembler.add(chunks[-1], last, 0)  # type: ignore[arg-type]
    assert again is not None and again.bean_json() == bean.to_json()
    assembler.rewind(100)
    assert assembler.low_water() is None


def test_abort_and_expiry() -> None:
    bean = Bean("PUT", "/logs/_doc/a", b"a" * 40_000)
    messages = encode(bean, LIMIT)
    (abort,) = abort_messages(bean, LIMIT, "refused by the broker")
    assert abort.key == b"logs" and abort_messages(Bean("PUT", "/logs/_doc/a", b"{}"), LIMIT, "x") == []
    marker = decode(abort.value)
    assert isinstance(marker, Abort) and marker.reason == "refused by the broker"
    assembler = Assembler()
    assembler.add(decode(messages[0].value), 5, 1_000)  # type: ignore[arg-type]
    assert marker.id in assembler.sets
    dropped = assembler.abort(marker.id)
    assert dropped is not None and assembler.low_water() is None and "1 of" in dropped.describe()

    assembler.add(decode(messages[0].value), 5, 1_000)  # type: ignore[arg-type]
    assert assembler.expired(6, 1_000 + 60_000, max_age_ms=60_000, max_records=100) == []
    assert [s.id for s in assembler.expired(7, 1_000 + 60_001, max_age_ms=60_000, max_records=100)] == [marker.id]
    assert [s.id for s in assembler.expired(106, -1, max_age_ms=60_000, max_records=100)] == [marker.id]
    assert assembler.low_water() == 5  # held until the caller wrote its dead letter and released it


def test_what_is_not_a_bean_nor_a_chunk_is_refused() -> None:
    with pytest.raises(BeanError):
        decode(b'{"kind":"chunk","chunk":{"id":"x","seq":2,"count":2},"data":""}')
    with pytest.raises(BeanError):
        decode(b'{"kind":"chunk","chunk":{"id":"x","seq":0,"count":2},"data":"!!"}')
    with pytest.raises(BeanError):
        decode(b"[1]")
    assert isinstance(decode(b'{"method":"PUT","requestUri":"/a","kind":"chunk"}'), Bean)


CONF = """
source: {proxies: [{port: 9000}], kafkas: [{brokers: ["127.0.0.1:9092"], topics: [t], group: g, chunkTimeout: 90s}]}
destination:
  primaries: [{url: "http://127.0.0.1:9200"}]
  kafkas: [{topic: t, brokers: ["127.0.0.1:9092"], maxMessageBytes: %d}]
"""


def test_max_message_bytes_is_the_producers_max_request_size() -> None:
    from esproxy.clients.producer import KafkaDest
    from esproxy.core.config import ConfigError, parse

    cfg = parse(CONF % 2_000_000)
    assert KafkaDest(cfg.destination.kafkas[0]).producer_config()["max_request_size"] == 2_000_000
    assert cfg.source.kafkas[0].chunkTimeout == 90
    assert parse(CONF.replace(", maxMessageBytes: %d", "")).destination.kafkas[0].maxMessageBytes == 1024 * 1024
    with pytest.raises(ConfigError, match="maxMessageBytes"):
        parse(CONF % 1000)
