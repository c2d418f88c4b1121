"""Property-based tests of what the proxy reads from clients: the request head and `_bulk` bodies (no servers).

Examples per property: the hypothesis profile (tests/conftest.py: "ci" by default, "long" for `make fuzz`).
"""

from __future__ import annotations

import io
import json
import re
from http import client

import pytest
from gevent.pywsgi import headers_factory
from hypothesis import given
from hypothesis import strategies as st
from support.fuzz import MAX_INPUT, costly, memory_bound, peak_memory

from esproxy.core.bulk import ACTIONS, BulkFormatError, parse_request, split_actions
from esproxy.proxy.httpheaders import MAXHEADERS, MAXLINE, MalformedHead, read_headers

HEAD_ERRORS = (MalformedHead, client.HTTPException)

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(TCHAR, min_size=1, max_size=20)
plain_names = names.filter(lambda n: n.lower() not in ("transfer-encoding", "content-length"))  # not framing
# a field value: visible latin-1 characters and inner blanks, no line end
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40).map(
    lambda v: v.lstrip(" \t")
)
line_ends = st.sampled_from([b"\r\n", b"\n"])
# lines as a hostile client writes them: header-like, folded, odd, with stray CR/LF/NUL
odd_lines = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}".encode("latin-1"), names, values),
    st.builds(lambda v: b" " + v.encode("latin-1"), values),
    st.binary(max_size=60),
    st.sampled_from([b"From x", b": v", b"X : v", b"X\x00Y: v", b"\r", b"X: a\rb", b"no colon"]),
)


def _read(block: bytes):
    fp = io.BytesIO(block)
    try:
        return read_headers(fp), fp.tell()
    except HEAD_ERRORS:
        return None, fp.tell()


@given(st.lists(st.tuples(plain_names, values, line_ends), max_size=30), line_ends, st.binary(max_size=64))
def test_well_formed_heads_are_read_as_sent(headers, end, rest) -> None:
    """Headers as a client writes them: every one as it was sent, in order, the same as http.client
    reads them, and not a byte of what follows the blank line."""
    block = b"".join(f"{n}: {v}".encode("latin-1") + e for n, v, e in headers) + end
    ours, consumed = _read(block + rest)
    assert ours is not None and consumed == len(block)
    assert ours.items() == [(n, v) for n, v, _ in headers]
    assert ours.items() == headers_factory(io.BytesIO(block)).items()


def _one_line(line_end: tuple[bytes, bytes]) -> bool:
    """Not the blank line that ends the head, nor two lines."""
    line, end = line_end
    return b"\n" not in line and line + end not in (b"\n", b"\r\n")


@given(st.lists(st.tuples(odd_lines, line_ends).filter(_one_line), max_size=20), line_ends)
def test_odd_heads_are_read_like_http_client_or_refused(lines, end) -> None:
    """Whatever the lines: the head is either read as http.client reads it, or refused with the documented
    error; a refusal only when http.client would drop a line, or the head is not plainly header lines."""
    block = b"".join(line + e for line, e in lines) + end
    ours, _ = _read(block)
    if ours is None:
        return
    theirs = headers_factory(io.BytesIO(block))
    assert ours.status == theirs.status
    assert ours.items() == [(n, re.sub(r"\r?\n[ \t]+", " ", v)) for n, v in theirs.items()]  # folds are spaces
    # nothing the client sent was left out: every line is a header or its continuation
    assert len(ours.items()) == sum(1 for line, _ in lines if line[:1] not in (b" ", b"\t"))


@given(st.binary(max_size=MAX_INPUT))
def test_any_bytes_give_a_head_or_the_documented_error(data) -> None:
    ours, consumed = _read(data)
    if ours is not None and ours.status == "":
        head = data[:consumed]
        assert head.endswith(b"\n") and head.count(b"\n") <= MAXHEADERS + 1
        assert data.find(b"\n\n") + 2 == consumed or data.find(b"\n\r\n") + 3 == consumed or head in (b"\n", b"\r\n")


class Endless:
    """A client that never stops sending ``pattern`` over and over; counts what was read."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.served = 0

    def readline(self, limit: int = -1) -> bytes:
        start = self.served % len(self.pattern)
        ahead = self.pattern[start:] + self.pattern  # a whole period from here: a line end if there is one
        cut = ahead.find(b"\n")
        size = min(limit, cut + 1) if cut >= 0 else limit
        line = (ahead * (size // len(ahead) + 1))[:size]
        self.served += len(line)
        return line


@given(st.binary(min_size=1, max_size=200).filter(lambda p: b"\n\n" not in p and b"\n\r\n" not in p))
def test_an_endless_head_is_read_only_up_to_the_limits(pattern) -> None:
    """A head that never ends (one endless line, or header lines forever) costs at most the limits."""
    fp = Endless(pattern if not pattern.startswith((b"\n", b"\r\n")) else b"X" + pattern)
    try:
        message = read_headers(fp)
        assert message.status  # "Line too long"
    except HEAD_ERRORS:
        pass
    assert fp.served <= (MAXHEADERS + 1) * (MAXLINE + 1)


# --------------------------------------------------------------------------- _bulk

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
metas = st.dictionaries(st.sampled_from(["_index", "_id", "routing", "pipeline", "if_seq_no"]), json_scalars)
sources = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@st.composite
def bulk_bodies(draw):
    """A valid `_bulk` body in any of the layouts clients send, and the actions it holds."""
    actions = draw(st.lists(st.tuples(st.sampled_from(ACTIONS), metas, sources), max_size=12))
    blank = draw(st.sampled_from([b"", b"\n", b"  \n", b"\r\n"]))
    lines = []
    for verb, meta, source in actions:
        lines.append(json.dumps({verb: meta}, ensure_ascii=draw(st.booleans())).encode())
        if verb != "delete":
            lines.append(json.dumps(source).encode())
        if draw(st.booleans()):
            lines.append(blank.rstrip(b"\n"))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\n\n"])), actions


@costly(20)
@given(bulk_bodies())
def test_bulk_bodies_are_read_back_action_by_action(body_actions) -> None:
    body, actions = body_actions
    parsed = parse_request(body)
    assert [(a.verb, a.meta) for a in parsed] == [(verb, json.loads(json.dumps(meta))) for verb, meta, _ in actions]
    assert [json.loads(a.source) for a in parsed if a.verb != "delete"] == [
        json.loads(json.dumps(s)) for v, _, s in actions if v != "delete"
    ]
    chunks = split_actions(body)
    assert len(chunks) == len(parsed) and all(len(parse_request(c)) == 1 for c in chunks)


bulk_noise = st.lists(
    st.one_of(
        st.binary(max_size=40),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda v, m: json.dumps({v: m}).encode(), st.sampled_from(ACTIONS + ("bogus",)), json_values),
        st.just(b"[" * 3000),  # nested deeper than the JSON decoder's recursion limit
    ),
    max_size=10,
).map(b"\n".join)


@given(st.one_of(st.binary(max_size=MAX_INPUT), bulk_noise))
def test_any_bulk_body_gives_actions_or_a_format_error(body) -> None:
    try:
        actions = parse_request(body)
    except BulkFormatError:
        return
    assert all(a.verb in ACTIONS and isinstance(a.meta, dict) for a in actions)
    assert all((a.source is None) == (a.verb == "delete") for a in actions)


@costly(10)
@given(st.one_of(st.binary(max_size=MAX_INPUT), bulk_noise, bulk_bodies().map(lambda b: b[0])))
def test_bulk_parsing_memory_is_bounded_by_the_input(body) -> None:
    assert peak_memory(lambda: parse_request(body), (BulkFormatError,)) <= memory_bound(len(body))


def test_an_action_line_nested_deeper_than_the_decoder_goes_is_a_format_error() -> None:
    """Found by the fuzz test: json.loads raised RecursionError."""
    with pytest.raises(BulkFormatError, match="line 1 is not JSON"):
        parse_request(b"[" * 5000 + b"\n{}\n")
