"""Property-based tests of bean decoding (ours and the Go original's) and of beans ⇄ Kafka messages (no servers).

Examples per property: the hypothesis profile (tests/conftest.py: "ci" by default, "long" for `make fuzz`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from support.beans import reassembled
from support.fuzz import MAX_INPUT, costly, memory_bound, peak_memory

from esproxy.core.bean import DOCS_KIND, Bean, BeanError
from esproxy.core.bulk import DocOp, split_actions
from esproxy.core.messages import (
    MIN_MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD,
    Abort,
    Assembler,
    Chunk,
    decode,
    encode,
)

GO_BEANS = [json.loads(line) for line in (Path(__file__).parent / "go-beans.jsonl").read_bytes().splitlines()]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
texts = st.text(max_size=30)
# the text a body is made of: JSON escapes, multi-byte characters, line ends
body_alphabet = st.text(st.sampled_from('ab"\\\n\t\x00é中🙂{}'), min_size=1, max_size=12)


@st.composite
def sized_text(draw, max_size: int) -> str:
    """Text of any size up to ``max_size`` characters, cheaply: a drawn pattern repeated."""
    pattern, size = draw(body_alphabet), draw(st.integers(0, max_size))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def raw_bodies(draw) -> bytes:
    if draw(st.booleans()):
        return draw(sized_text(60_000)).encode("utf-8")
    data = draw(st.binary(min_size=1, max_size=64))  # not UTF-8 in general: base64 in the bean
    return data * draw(st.integers(0, 60_000 // len(data)))


ANY_KIND = st.sampled_from(["", "x"])


def beans(body=None, kind=ANY_KIND):
    return st.builds(
        Bean,
        method=st.sampled_from(["PUT", "POST", "DELETE", "PATCH", "M-SEARCH"]),
        requestUri=texts.map(lambda t: "/" + t),
        body=body if body is not None else st.binary(max_size=200),
        header=st.dictionaries(texts, st.lists(texts, max_size=3), max_size=4),
        host=texts,
        remoteAddr=texts,
        labels=st.one_of(st.none(), st.dictionaries(texts, json_values, min_size=1, max_size=3)),
        clusterIds=st.lists(texts.filter(bool), max_size=3),
        index=st.text(max_size=50),
        kind=kind,
    )


@st.composite
def docs_bodies(draw) -> bytes:
    """A document bean's body: versioned actions as proxy/capture.py writes them, of any sizes."""
    out = b""
    for n in range(draw(st.integers(0, 12))):
        size = draw(st.one_of(st.integers(0, 100), st.integers(2_000, 30_000)))
        if size == 0:
            out += DocOp("delete", "i", f"d{n}", n).lines()
        else:
            source = json.dumps({"n": n, "text": draw(sized_text(size))}, ensure_ascii=False).encode()
            out += DocOp("index", "i", f"d{n}", n, source).lines()
    return out


docs_beans = beans(body=docs_bodies(), kind=st.just(DOCS_KIND))


def _canonical(bean: Bean) -> Bean:
    """The bean as it reads back: empty labels are none, as the Go original writes them."""
    return dataclasses.replace(bean, labels=bean.labels or None)


@given(beans())
def test_a_bean_reads_back_from_its_json(bean) -> None:
    assert Bean.from_json(bean.to_json()) == _canonical(bean)


@given(st.binary(max_size=MAX_INPUT))
def test_any_bytes_are_a_bean_or_a_bean_error(data) -> None:
    try:
        bean = Bean.from_json(data)
    except BeanError:
        return
    assert bean.method and bean.requestUri.startswith("/")
    assert Bean.from_json(bean.to_json()) == bean


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize("data", [DEEP, b'{"method":"PUT","requestUri":"/i/_doc/1","body":%s}' % DEEP])
def test_json_nested_deeper_than_the_decoder_goes_is_a_bean_error(data: bytes) -> None:
    """Found by the fuzz tests: json.loads raised RecursionError, which the replay does not dead-letter."""
    for read in (Bean.from_json, decode):
        with pytest.raises(BeanError, match="not JSON"):
            read(data)


GO = json.dumps(GO_BEANS[0], ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "data",
    [
        GO.replace("江".encode(), b"\xed\xa0\x80"),  # the UTF-8 form of a lone surrogate
        GO.replace(b'"POST"', b'"POST\\ud800"'),
        GO.replace(b'"body": "', b'"body": "\\udc00'),
        GO.replace(b'"Content-Type"', b'"Content-Type\\udfff"'),
        GO.replace(b'"labels": null', b'"labels": {"a": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_is_a_bean_error(data: bytes) -> None:
    """Found by the fuzz test: json.loads lets a lone surrogate through, and writing the bean's body or JSON
    again raised UnicodeEncodeError, which the replay does not dead-letter."""
    for read in (Bean.from_json, decode):
        with pytest.raises(BeanError, match="not JSON|not Unicode text"):
            read(data)


@pytest.mark.parametrize("ids", [True, 5, "abc", {"a": "b"}])
def test_cluster_ids_that_are_not_a_list_are_a_bean_error(ids) -> None:
    """Found by the fuzz tests: a number raised TypeError; a string was taken letter by letter."""
    with pytest.raises(BeanError, match="clusterIds"):
        Bean.from_obj({"method": "PUT", "requestUri": "/i/_doc/1", "clusterIds": ids})


field_names = st.sampled_from(
    ["method", "requestUri", "REQUESTURI", "body", "bodyEncoding", "header", "host", "remoteAddr", "labels"]
    + ["clusterIds", "clusterids", "index", "kind", "chunk", "data", "seq"]
)


@costly(10)
@given(st.sampled_from(GO_BEANS), st.dictionaries(field_names, json_values, max_size=4), st.sets(field_names))
def test_go_beans_with_any_field_changed_decode_or_give_a_bean_error(go_bean, changed, removed) -> None:
    """Beans of the Go original (tests/go-beans.jsonl) with fields of any JSON type, or missing."""
    raw = {k: v for k, v in go_bean.items() if k not in removed} | changed
    for data in (raw, json.dumps(raw).encode()):
        try:
            bean = Bean.from_obj(data) if isinstance(data, dict) else Bean.from_json(data)
        except BeanError:
            continue
        assert Bean.from_json(bean.to_json()) == bean
        for value in (m.value for m in encode(bean, MIN_MAX_MESSAGE_BYTES)):
            assert isinstance(decode(value), (Bean, Chunk))


@given(st.sampled_from(GO_BEANS), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_go_beans_with_bytes_overwritten_decode_or_give_a_bean_error(go_bean, at, garbage) -> None:
    data = bytearray(json.dumps(go_bean, ensure_ascii=False).encode())
    at %= len(data)
    data[at : at + len(garbage)] = garbage
    try:
        item = decode(bytes(data))
    except BeanError:
        return
    assert isinstance(item, (Bean, Chunk, Abort))


chunk_like = st.fixed_dictionaries(
    {"kind": st.sampled_from(["chunk", "chunk-abort", "docs", "", None])},
    optional={
        "index": json_values,
        "chunk": st.one_of(
            json_values,
            st.fixed_dictionaries({}, optional={"id": json_values, "seq": json_values, "count": json_values}),
        ),
        "data": st.one_of(
            json_values, st.binary(max_size=30).map(lambda b: __import__("base64").b64encode(b).decode())
        ),
        "reason": json_values,
        "method": json_values,
        "requestUri": json_values,
    },
)


@given(st.one_of(st.binary(max_size=MAX_INPUT), chunk_like.map(lambda d: json.dumps(d).encode())))
def test_any_message_is_a_bean_a_chunk_an_abort_or_a_bean_error(value) -> None:
    try:
        item = decode(value)
    except BeanError:
        return
    if isinstance(item, Chunk):
        assert 0 <= item.seq < item.count and item.id and isinstance(item.data, bytes)
    else:
        assert isinstance(item, (Bean, Abort))


max_message_bytes = st.integers(MIN_MAX_MESSAGE_BYTES, 4 * MIN_MAX_MESSAGE_BYTES)


@costly(10)
@given(st.one_of(beans(body=raw_bodies()), docs_beans), max_message_bytes)
def test_messages_put_together_give_back_the_bean(bean, max_bytes) -> None:
    """For any bean and any maxMessageBytes: every message fits, and the replay gets back the bean (a document
    bean possibly as several, its actions in order)."""
    messages = encode(bean, max_bytes)
    assert all(len(m.key) + len(m.value) + RECORD_OVERHEAD <= max_bytes for m in messages)
    assembler = Assembler()
    out = reassembled([m.value for m in messages], assembler)
    event(f"{bean.kind or 'raw'} bean: {'one message' if len(messages) == 1 else 'several'}, {len(out)} out")
    assert assembler.low_water() is None and not assembler.sets
    if len(out) == 1:
        assert out == [_canonical(bean)]
        return
    assert bean.kind == DOCS_KIND
    assert b"".join(b.body for b in out) == bean.body
    assert all(dataclasses.replace(b, body=bean.body) == _canonical(bean) for b in out)
    assert all(split_actions(b.body) for b in out)


@st.composite
def big_bodies(draw) -> bytes:
    """A body that takes several messages of MIN_MAX_MESSAGE_BYTES."""
    data = draw(st.binary(min_size=1, max_size=64))
    return data * (3 * MIN_MAX_MESSAGE_BYTES // len(data) + draw(st.integers(1, 1000)))


@costly(20)
@given(
    st.lists(beans(body=big_bodies()), min_size=2, max_size=3),
    st.randoms(use_true_random=False),
    st.integers(0, 5),
)
def test_interleaved_and_repeated_chunks_give_each_bean_once(bean_list, rnd, repeats) -> None:
    """Chunks of several beans mixed in one partition, some sent twice (a producer's retry): each bean once."""
    # the same bean twice is one chunk set (a bean shipped again after a crash completes the same set)
    assume(len({b.to_json() for b in bean_list}) == len(bean_list))
    streams = [[m.value for m in encode(b, MIN_MAX_MESSAGE_BYTES)] for b in bean_list]
    for _ in range(repeats):
        s = rnd.choice(streams)
        i = rnd.randrange(len(s))
        s.insert(i + 1, s[i])
    mixed, positions = [], [0] * len(streams)
    while any(p < len(s) for p, s in zip(positions, streams)):
        k = rnd.choice([k for k, s in enumerate(streams) if positions[k] < len(s)])
        mixed.append(streams[k][positions[k]])
        positions[k] += 1
    out = reassembled(mixed, Assembler())
    assert sorted(b.to_json() for b in out) == sorted(_canonical(b).to_json() for b in bean_list)


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 4), st.integers(1, 4), st.sampled_from(["add", "abort"])),
        max_size=40,
    ),
    st.integers(0, 40),
)
def test_the_assembler_holds_any_chunk_sequence(steps, rewind_at) -> None:
    """Chunks of any ids, seqs and counts, aborts and a rewind: no error, and low_water is the first offset held."""
    assembler = Assembler()
    for offset, (cid, seq, count, op) in enumerate(steps):
        if op == "abort":
            assembler.abort(cid)
        elif seq < count:
            complete = assembler.add(Chunk(cid, seq, count, "i", b"x"), offset, offset)
            if complete is not None:
                assert len(complete.bean_json()) == complete.count
                assembler.release(cid)
        if offset == rewind_at:
            assembler.rewind(offset // 2)
    held = [s.first_offset for s in assembler.sets.values()]
    assert assembler.low_water() == (min(held) if held else None)
    assert all(not s.complete for s in assembler.sets.values())


@costly(10)
@given(st.one_of(st.binary(max_size=MAX_INPUT), chunk_like.map(lambda d: json.dumps(d).encode())))
def test_decoding_memory_is_bounded_by_the_input(value) -> None:
    assert peak_memory(lambda: decode(value), (BeanError,)) <= memory_bound(len(value))
