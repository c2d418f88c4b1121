"""esproxy.clients.lean (bodiless GET/HEAD) gives what geventhttpclient gave: the same request bytes
and the same Response, for answers framed every way HTTP/1.1 allows, against a raw loopback server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from gevent import socket as gsocket
from hypothesis import given
from hypothesis import strategies as st

from esproxy.clients import lean
from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.core.config import ElasticDestination
from esproxy.core.deadlines import Deadlines

ANSWERS = {
    "length, duplicates, blanks": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-a: 1\r\n"
    b"set-cookie: a\r\nX-b:  2 \r\nSet-Cookie: b\r\nContent-Length: 5\r\n\r\nhello",
    "chunked with extension and trailer": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
    "no reason, empty": b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
    "connection close": b"HTTP/1.1 299 Whatever It Is\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    "HTTP/1.0 until close": b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    "interim 100 first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
}


class RawServer:
    """Answers one request per connection with ``answer`` (its heads only to HEAD), then closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = b""
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                length = (
                    int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                    if b"content-length: " in head
                    else 0
                )
                while len(data) < data.find(b"\r\n\r\n") + 4 + length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                answer = self.answer
                if data.startswith(b"HEAD"):
                    last = answer.rfind(b"HTTP/1.")  # the final answer's head, without its body
                    answer = answer[: answer.index(b"\r\n\r\n", last) + 4]
                conn.sendall(answer)


@pytest.fixture(scope="module")
def server():
    s = RawServer()
    yield s
    s.sock.close()


BODIES = {"none": b"", "json": '{"a":"张三"}'.encode(), "ndjson": b'{"index":{}}\n{"a":1}\n'}


@pytest.mark.parametrize("name", list(ANSWERS))
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "post"])
@pytest.mark.parametrize("body", list(BODIES))
def test_same_request_and_response_as_geventhttpclient(server, name, method, body):
    """Every request the proxy or the replay sends (a bytes body or none, any method) goes out as
    geventhttpclient sent it, byte for byte, and its answer reads the same."""
    server.answer = ANSWERS[name]
    e = Elastic(ElasticDestination(url=f"http://127.0.0.1:{server.port}/"))
    headers = {"Accept": "application/json", "X-Forwarded-For": "127.0.0.1"}
    if body != "none":
        headers["content-type"] = "application/json"
    ours = e.request(method, "/i/_doc/a%2Fb?q=1", headers, BODIES[body])
    # a client of its own: the server closes each connection after one answer, and geventhttpclient
    # does not send a POST again on a pooled connection found closed
    client = Elastic(ElasticDestination(url=f"http://127.0.0.1:{server.port}/"))._client
    theirs = client.request(method, "/i/_doc/a%2Fb?q=1", body=BODIES[body], headers=headers)
    assert server.requests[-1] == server.requests[-2]
    expected = (theirs.status_code, theirs.status_message or "", list(theirs.items()), theirs.read())
    assert (ours.status, ours.reason, ours.headers, ours.body) == expected
    e.close()


def test_a_long_chunked_answer_is_streamed(server):
    pieces = [b"x" * 70000, b"y" * 5]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    server.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    e = Elastic(ElasticDestination(url=f"http://127.0.0.1:{server.port}/"))
    r = e.request("GET", "/", {}, b"", stream_over=1000)
    assert r.stream is not None and r.length is None and r.body == b""
    assert b"".join(r.stream) == b"".join(pieces)
    assert e.connections()[0] == 0  # given back once the last piece was read
    e.close()


def test_a_cut_answer_is_an_upstream_error(server):
    server.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    e = Elastic(ElasticDestination(url=f"http://127.0.0.1:{server.port}/"))
    with pytest.raises(UpstreamError, match="3 of 10|7 of 10"):
        e.request("GET", "/", {}, b"")
    assert e.connections()[0] == 0
    e.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
def test_a_kept_alive_connection_closed_meanwhile_is_retried_once(method):
    """The first connection answers once and is closed without a word; the pooled socket looks
    idle until used, so the next request fails on it and goes again on a new connection; not a
    POST, which the cluster may have applied (geventhttpclient's rule): that one is an error."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    served = []

    def serve() -> None:
        for n in range(2):
            conn, _ = srv.accept()
            conn.recv(65536)
            served.append(n)  # before the answer: the test reads it once the answer is in
            conn.sendall(answer)
            if n == 0:
                conn.recv(65536)  # the second request arrives on it: dropped
                conn.close()
            else:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    e = Elastic(ElasticDestination(url=f"http://127.0.0.1:{srv.getsockname()[1]}/"))
    body = b'{"a":1}' if method in ("PUT", "POST") else b""
    assert e.request(method, "/", {}, body).body == b"ok"
    if method == "POST":
        with pytest.raises(UpstreamError):
            e.request(method, "/", {}, body)
        assert served == [0]
    else:
        assert e.request(method, "/", {}, body).body == b"ok"
        assert served == [0, 1]
    e.close()
    srv.close()


@pytest.mark.parametrize(
    "head",
    [b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\nbad name: x"],
)
def test_unparsable_heads_are_refused(head):
    with pytest.raises(lean.Unparsable):
        lean.parse_head(head)


def test_waits_are_timed_by_deadlines_and_the_socket_gets_its_timeout_back():
    """time_waits: the wait for an answer that does not come ends in socket.timeout after about the
    socket's own timeout (without a gevent.Timeout per wait: the socket has none meanwhile), and the
    connection goes back to its pool with its timeout as it was."""

    class Pool:
        def __init__(self) -> None:
            self.released: list = []

        def release_socket(self, sock) -> None:
            self.released.append((sock, sock.gettimeout()))

    ours, theirs = gsocket.socketpair()
    ours.settimeout(0.3)
    pool, deadlines = Pool(), Deadlines(0.3)
    answer = lean.Answer(pool, ours, "GET")
    answer.time_waits(deadlines)
    assert ours.gettimeout() is None
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        answer.read_head()
    assert 0.25 < time.monotonic() - started < 0.3 + 0.2
    assert deadlines.armed == {}
    answer.finish(reusable=False)
    assert pool.released == [(ours, 0.3)]
    deadlines.close()
    ours.close()
    theirs.close()


_HEAD_PIECES = st.sampled_from(
    [b"a", b"B", b"-", b":", b": ", b" ", b"\t", b"\r", b"\n", b"\r\n", b"x", b"\x01", b"\x7f", b"\xe9", b"(", b"1"]
    + [b"Content-Length", b"Transfer-Encoding", b"chunked", b"Connection", b"close", b"A: ", b"a: ", b"Date: "]
)


@given(
    st.sampled_from(
        [b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 200  OK", b"HTTP/1.1 204", b"HTTP/2 200"]
    ),
    st.lists(st.lists(_HEAD_PIECES, max_size=8).map(b"".join), max_size=6),
)
def test_llhttp_reads_an_answer_head_as_the_lines_are_read_or_leaves_it_to_them(status, lines):
    """parse_head (llhttp) and parse_head_lines (Python) give the same answer or the same refusal;
    parse_head_raw, when it takes the head, gives the same headers as sent."""
    head = b"\r\n".join([status, *lines])

    def outcome(parse):
        try:
            return parse(head)
        except lean.Unparsable as e:
            return str(e)

    assert outcome(lean.parse_head) == outcome(lean.parse_head_lines)
    end = (head + b"\r\n\r\n").find(b"\r\n\r\n")
    try:
        raw = lean.parse_head_raw(head[:end] + b"\r\n\r\n")
    except lean.Unparsable:
        return
    if raw is not None:
        version, code, reason, headers = raw
        decoded = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        assert (version, code, reason, decoded) == lean.parse_head_lines(head[:end])
