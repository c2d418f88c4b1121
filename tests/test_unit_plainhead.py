"""The plain reads' head reader (connection.RawPathHandler._plain_head, llhttp) takes a head only when
the ordinary way (the request line's checks, httpheaders.read_headers, pywsgi, ProxyApp.passes) would
read it to the same request and give it to pass_read; anything else it leaves unread (no servers)."""

from __future__ import annotations

import io
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esproxy.proxy.connection import RawPathHandler
from esproxy.proxy.handler import ProxyApp
from esproxy.proxy.limits import Limits, Refused

LIMITS = Limits(
    max_content_length=1 << 20,
    max_initial_line_length=64,
    max_header_size=256,
    max_header_count=6,
    read_timeout=0,
    idle_timeout=0,
    max_connections=0,
)


class App:
    draining = False
    passes = ProxyApp.passes


class Server:
    limits = LIMITS
    application = App()


def _handler(data: bytes) -> RawPathHandler:
    h = RawPathHandler.__new__(RawPathHandler)
    h.server = Server()  # type: ignore[assignment]
    h.client_address = ("127.0.0.1", 1)
    h.rfile = io.BufferedReader(io.BytesIO(data), 8192)  # type: ignore[assignment]
    return h


def _ordinary(data: bytes) -> Optional[tuple]:
    """What the ordinary way reads of ``data``: the request as pass_read gets it, or None when it is
    refused, malformed, or not one pass_read takes."""
    h = _handler(data)
    try:
        if not h._read_head(LIMITS):
            return None
    except (Refused, ValueError, OSError):
        return None
    if not App().passes(h):
        return None
    return _request(h)


def _request(h: RawPathHandler) -> tuple:
    return (
        h.command,
        h.path,
        h.request_version,
        h.headers.items(),
        h.headers.get("content-type"),
        h.close_connection,
        h.content_length,
        h.rfile.tell(),
    )


def check(data: bytes) -> bool:
    """Taken by the plain reader: read as the ordinary way reads it. Not taken: nothing consumed."""
    h = _handler(data)
    if not h._plain_head(LIMITS):
        assert h.rfile.tell() == 0
        return False
    assert _request(h) == _ordinary(data), data
    return True


PLAIN = [
    b"GET /i/_doc/1 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /i/_doc/1 HTTP/1.1\r\n\r\n",
    b"GET /i/_search?q=a:b&x=%2F HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Opaque-Id: a\r\nx-opaque-id: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\nX-Sp:   padded  \r\n\r\nGET / HTTP/1.1\r\n\r\n",  # pipelined
    b"GET / HTTP/1.1\r\nConnection: Close\r\nX-Latin: caf\xe9\r\nX-Empty:\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Type: application/json\r\nX-Tab: a\tb\r\n\r\n",
]
NOT_PLAIN = [
    b"GET /i/_doc/1 HTTP/1.0\r\n\r\n",
    b"POST /i/_doc HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /i HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /i HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /i HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET /i HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /i HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    b"GET /_esproxy/stats HTTP/1.1\r\n\r\n",
    b"GET /%5Fesproxy/stats HTTP/1.1\r\n\r\n",
    b"GET //i HTTP/1.1\r\n\r\n",
    b"GET  /i HTTP/1.1\r\n\r\n",
    b"GET /i  HTTP/1.1\r\n\r\n",
    b"GET /\xe4\xb8\xad/_doc/1 HTTP/1.1\r\n\r\n",  # raw UTF-8: the ordinary way serves it
    b"GET /i HTTP/1.1\nHost: a\n\n",
    b"GET /i HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    b"GET /i HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
    b"GET /i HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    b"GET /i HTTP/1.1\r\nX Y: a\r\n\r\n",
    b"GET /i HTTP/1.1\r\nHost: a\r\n",  # not all there yet
    b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n",  # over maxInitialLineLength
    b"GET /i HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(7)) + b"\r\n",  # over maxHeaderCount
    b"GET /i HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n",  # over maxHeaderSize
    b"get /i HTTP/1.1\r\n\r\n",
    b"GET http://a/i HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_heads_are_read_as_the_ordinary_way_reads_them(data: bytes) -> None:
    assert check(data)


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_other_heads_are_left_to_the_ordinary_way(data: bytes) -> None:
    assert not check(data)


TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
pieces = st.sampled_from(
    [b"GET", b"HEAD", b" ", b"/", b"//", b"/i", b"?a=b", b"%2F", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r"]
    + [b":", b": ", b"\t", b"\x00", b"\x7f", b"\xe9", b"Host", b"Connection", b"close", b"upgrade", b"Expect"]
    + [b"Content-Length", b"Transfer-Encoding", b"Upgrade", b"0", b"X-A", b"x-a", b"a b", b"From "]
)
names = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
values = st.binary(max_size=20)


@given(
    st.sampled_from([b"GET /i HTTP/1.1\r\n", b"HEAD /a?b HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n"]),
    st.lists(st.one_of(st.builds(lambda n, v: n + b": " + v + b"\r\n", names, values), st.lists(pieces).map(b"".join))),
    st.binary(max_size=10),
)
def test_any_head_is_read_as_the_ordinary_way_reads_it_or_left_to_it(line: bytes, lines: list, rest: bytes) -> None:
    check(line + b"".join(lines) + b"\r\n" + rest)


@given(st.lists(pieces, max_size=40).map(b"".join))
def test_any_bytes_are_read_as_the_ordinary_way_reads_them_or_left_to_it(data: bytes) -> None:
    check(data)
