"""The proxy's limits as settings: sizes like Elasticsearch's, defaults, bad values; the head reader's bounds."""

from __future__ import annotations

import io
import ssl
import time

import gevent
import pytest
from gevent import socket as gsocket

from esproxy.core.config import ConfigError, parse
from esproxy.core.deadlines import Deadlines
from esproxy.core.schema import format_size, parse_size
from esproxy.proxy.httpheaders import HeadersTooLarge, read_headers
from esproxy.proxy.limits import Limits, Refused, content_too_long, wait_for_bytes

CONF = """
source:
  proxies:
    - port: 9201
{extra}
destination:
  primaries:
    - url: http://127.0.0.1:9200
"""


def proxy(extra: str = ""):
    return parse(CONF.format(extra="\n".join("      " + line for line in extra.splitlines()))).source.proxies[0]


@pytest.mark.parametrize(
    "text,size",
    [
        ("100mb", 100 << 20),
        ("16kb", 16 << 10),
        ("4KB", 4096),
        ("512b", 512),
        ("512", 512),
        ("2 gb", 2 << 30),
        ("1.5mb", 3 << 19),
        ("1t", 1 << 40),
        ("0", 0),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "mb", "1.5", "-1kb", "10 megabytes", "1e6", "0.3b", "12xb"])
def test_not_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("size,text", [(100 << 20, "100mb"), (16 << 10, "16kb"), (1536, "1536b"), (0, "0b")])
def test_sizes_written_back(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


def test_defaults_are_elasticsearchs():
    limits = Limits.of(proxy())
    assert limits.max_content_length == 100 << 20  # http.max_content_length
    assert limits.max_initial_line_length == 4 << 10  # http.max_initial_line_length
    assert limits.max_header_size == 16 << 10  # http.max_header_size
    assert (limits.max_header_count, limits.read_timeout, limits.idle_timeout) == (100, 60.0, 300.0)
    assert limits.max_connections == 1000


def test_limits_from_the_config():
    p = proxy("maxContentLength: 10mb\nmaxHeaderSize: 2048\nreadTimeout: 5s\nidleTimeout: 0\nmaxConnections: 0")
    limits = Limits.of(p)
    assert (limits.max_content_length, limits.max_header_size) == (10 << 20, 2048)
    assert (limits.read_timeout, limits.idle_timeout, limits.max_connections) == (5.0, 0.0, 0)


@pytest.mark.parametrize(
    "extra,path",
    [
        ("maxContentLength: lots", "source.proxies[0].maxContentLength"),
        ("maxContentLength: 0", "source.proxies[0].maxContentLength"),
        ("maxHeaderCount: 0", "source.proxies[0].maxHeaderCount"),
        ("readTimeout: -1s", "source.proxies[0].readTimeout"),
        ("maxConnections: -1", "source.proxies[0].maxConnections"),
    ],
)
def test_bad_limits(extra, path):
    with pytest.raises(ConfigError) as e:
        proxy(extra)
    assert e.value.path == path


def head(n: int, value: bytes = b"1") -> io.BytesIO:
    return io.BytesIO(b"".join(b"X-%d: %s\r\n" % (i, value) for i in range(n)) + b"\r\nbody")


def test_header_count_and_size_at_and_over_the_limit():
    assert len(read_headers(head(10), max_count=10).items()) == 10
    with pytest.raises(HeadersTooLarge) as e:
        read_headers(head(11), max_count=10)
    assert e.value.too_many
    size = len(head(4, b"v" * 100).getvalue()) - len(b"\r\nbody")  # the header lines, line ends included
    assert len(read_headers(head(4, b"v" * 100), max_bytes=size).items()) == 4
    with pytest.raises(HeadersTooLarge) as e:
        read_headers(head(4, b"v" * 100), max_bytes=size - 1)
    assert not e.value.too_many


def test_a_huge_header_line_is_not_read_whole():
    fp = io.BytesIO(b"X-Big: " + b"b" * 10_000_000 + b"\r\n\r\n")
    with pytest.raises(HeadersTooLarge):
        read_headers(fp, max_bytes=16 << 10)
    assert fp.tell() < 17 << 10


def test_refusal_answer_is_complete_and_closes():
    limits = Limits.of(proxy("maxContentLength: 1kb"))
    raw = content_too_long(5000, limits, known=True).response()
    head_text, body = raw.split(b"\r\n\r\n", 1)
    assert head_text.startswith(b"HTTP/1.1 413 Request Entity Too Large") or head_text.startswith(
        b"HTTP/1.1 413 Content Too Large"
    )
    assert b"Connection: close" in head_text and b"Content-Length: %d" % len(body) in head_text
    assert b"request body of 5000 bytes is larger than the limit of 1kb (maxContentLength)" in body
    assert isinstance(content_too_long(1025, limits, known=False), Refused)


def test_a_tls_handshake_that_never_comes_is_dropped_after_read_timeout(tmp_path):
    import gevent
    from gevent import socket as gsocket
    from support.certs import make_pki

    from esproxy.proxy.limits import ProxyServer

    pki = make_pki(tmp_path)
    limits = Limits(1024, 1024, 1024, 10, read_timeout=0.3, idle_timeout=0.3, max_connections=10)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = ProxyServer(("127.0.0.1", 0), app, limits, ssl_context=context)
    server.start()
    try:
        client = gsocket.create_connection(server.address)
        with gevent.Timeout(10):
            assert client.recv(1) == b""  # closed, no handshake sent
    finally:
        server.stop()


def _limits(read: float, idle: float) -> Limits:
    return Limits(1 << 20, 4096, 8192, 100, read, idle, 0)


def test_deadlines_throw_into_a_waiting_greenlet_past_its_deadline_only():
    """One timer for all: the armed greenlet gets TimedOut about its seconds later, a disarmed
    one (its bytes came) goes on waiting, and a later wait is timed afresh."""
    deadlines = Deadlines(0.3, 0.3)
    assert deadlines.period == pytest.approx(0.03)
    late, fed = gsocket.socketpair(), gsocket.socketpair()
    try:
        late_file, fed_file = late[0].makefile("rb"), fed[0].makefile("rb")
        waits = [gevent.spawn(wait_for_bytes, f, 0.3, deadlines) for f in (late_file, fed_file)]
        fed[1].sendall(b"G")
        assert waits[1].get(timeout=5) is True  # came in time
        started = time.monotonic()
        assert waits[0].get(timeout=5) is False  # timed out
        assert 0.0 < time.monotonic() - started < 0.3 + 0.2
        assert deadlines.armed == {}

        def disarmed_then_waits() -> bytes:  # armed and disarmed: a later plain read is not thrown into
            assert wait_for_bytes(fed_file, 0.1, deadlines)
            gevent.sleep(0.3)
            return fed_file.read(1)

        waiting = gevent.spawn(disarmed_then_waits)
        waiting.join(0.2)
        assert waiting.get(timeout=5) == b"G"
    finally:
        deadlines.close()
        for a, b in (late, fed):
            a.close()
            b.close()
