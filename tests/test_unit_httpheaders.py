"""The proxy's request header reader gives pywsgi what http.client's parser gives it, and refuses
what http.client would half read (no servers)."""

from __future__ import annotations

import io
import re
from http import client

import pytest
from gevent.pywsgi import headers_factory

from esproxy.proxy.httpheaders import MalformedHead, parse_plain, read_headers

PLAIN = [
    b"Host: a\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\nbody follows",
    b"Host: a\r\n\r\n",
    b"\r\n",
    b"Host: a\n\n",  # bare LF line ends
    b"Host: a\r\nX-Dup: 1\r\nx-dup: 2\r\nX-DUP: 3\r\n\r\n",  # duplicates, any case
    b"Host: a\r\nX-Folded: one\r\n two\r\n\tthree\r\nAccept: */*\r\n\r\n",  # obsolete line folding
    b"Host:a\r\nX-Empty:\r\nX-Spaces:   padded   \r\nX-Colon: a:b:c\r\n\r\n",
    b"Host: a\r\nX-Latin: caf\xe9\r\n\r\n",
    b"Host: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"Host: a\r\nContent-Length:  5 \r\n\r\n",
    b"Host: a\r\nConnection: close\r\n\r\n",
]
UNUSUAL = [  # the reader refuses these (http.client keeps the headers before the odd line, drops the rest)
    b" starts folded\r\nHost: a\r\n\r\n",
    b"Host: a\r\nnot a header line\r\nX-After: 1\r\n\r\n",
    b"Host: a\r\n: empty name\r\n\r\n",
    b"From someone\r\nHost: a\r\n\r\n",
    b"Host: a\rX-Cr: 1\r\n\r\n",
    b"Host: a\r\nX Space: 1\r\n\r\n",
    b"Host: a\r\nX-Eof: 1",  # no blank line before EOF
    b"Host: a\r\nX-Long: " + b"x" * 70000 + b"\r\n\r\n",
]


def _stdlib(block: bytes):
    """What http.client reads, with a folded value's line breaks as spaces, as read_headers gives them."""
    message = headers_factory(io.BytesIO(block))
    message._headers = [(name, re.sub(r"\r?\n[ \t]+", " ", value)) for name, value in message._headers]
    return message


@pytest.mark.parametrize("block", PLAIN)
def test_same_message_as_http_client(block: bytes) -> None:
    ours, theirs = read_headers(io.BytesIO(block)), _stdlib(block)
    assert type(ours) is type(theirs)
    assert ours.status == theirs.status
    assert ours.items() == theirs.items()
    assert list(ours.headers) == list(theirs.headers)
    for name in ("host", "HOST", "content-type", "x-dup", "X-Folded", "transfer-encoding", "missing"):
        assert ours.get(name) == theirs.get(name) and ours.get_all(name) == theirs.get_all(name)
    assert ours.typeheader == theirs.typeheader and ours.getheader("content-length") == theirs.getheader(
        "content-length"
    )
    del ours["x-dup"], theirs["x-dup"]
    assert ours.items() == theirs.items()


def test_reads_exactly_the_header_lines() -> None:
    fp = io.BytesIO(b"Host: a\r\n\r\nthe body")
    read_headers(fp)
    assert fp.read() == b"the body"


def _lines(block: bytes) -> list[bytes]:
    lines = io.BytesIO(block).readlines()
    blank = next((i for i, line in enumerate(lines) if line in (b"\r\n", b"\n")), len(lines))
    return lines[: blank + 1] if blank < len(lines) else lines + [b""]


@pytest.mark.parametrize("block", PLAIN)
def test_plain_blocks_take_the_fast_path(block: bytes) -> None:
    assert parse_plain(_lines(block)) is not None


@pytest.mark.parametrize("block", UNUSUAL[:-1])  # the long line never gets that far
def test_unusual_blocks_do_not(block: bytes) -> None:
    assert parse_plain(_lines(block)) is None


@pytest.mark.parametrize("block", UNUSUAL[:-1])
def test_unusual_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(MalformedHead):
        read_headers(io.BytesIO(block))


def test_a_line_that_is_no_header_does_not_hide_the_body_length() -> None:
    """http.client stops at the odd line: the Content-Length after it would be lost and the body read as
    the next request (request smuggling). The reader refuses the head instead."""
    block = b"Host: a\r\nnot a header\r\nContent-Length: 24\r\n\r\nDELETE /idx HTTP/1.1\r\n\r\n"
    assert _stdlib(block).get("content-length") is None
    with pytest.raises(MalformedHead):
        read_headers(io.BytesIO(block))


@pytest.mark.parametrize("block", [b"", b"Host: a\r\n"])
def test_a_head_cut_by_the_connection_end_is_refused(block: bytes) -> None:
    with pytest.raises(MalformedHead, match="ended"):
        read_headers(io.BytesIO(block))


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\nContent-Length: 5",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: chunked ",
        b"Transfer-Encoding: identity",
        b"Content-Length: 5\r\nContent-Length: 5",
        b"Content-Length: +5",
        b"Content-Length: 1_0",
        b"Content-Length: 5, 5",
        b"Content-Length: -1",
        b"Content-Length:",
    ],
)
def test_a_head_that_says_its_body_length_two_ways_is_refused(framing: bytes) -> None:
    """What a front end and the proxy could read differently: the rest of a body taken as another request."""
    with pytest.raises(MalformedHead):
        read_headers(io.BytesIO(b"Host: a\r\n" + framing + b"\r\n\r\n"))


def test_a_too_long_line_is_what_http_client_says() -> None:
    ours, theirs = read_headers(io.BytesIO(UNUSUAL[-1])), _stdlib(UNUSUAL[-1])
    assert ours.status == theirs.status == "Line too long"


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x01", b"\x7f", b"a\x1bb"])
def test_a_value_with_a_control_character_is_refused(value: bytes) -> None:
    """Found by the fuzz test: the upstream client refuses such a value (a 502, a write left to settle)."""
    with pytest.raises(MalformedHead, match="control character"):
        read_headers(io.BytesIO(b"Host: a\r\nContent-Type: " + value + b"\r\n\r\n"))
    assert read_headers(io.BytesIO(b"X-Tab: a\tb\xe9\r\n\r\n")).items() == [("X-Tab", "a\tb\xe9")]


def test_fast_path_values() -> None:
    assert parse_plain([b"Host: a\r\n", b"X-F: 1\r\n", b" 2\r\n", b"\r\n"]) == [("Host", "a"), ("X-F", "1\r\n 2")]
    assert parse_plain([b"bad line\r\n", b"\r\n"]) is None


def test_too_many_headers() -> None:
    block = b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(client.HTTPException):
        read_headers(io.BytesIO(block))
    with pytest.raises(client.HTTPException):
        _stdlib(block)
