"""The proxy's limits on what a client sends and how slowly: 413, 414, 431, 408, idle close, maxConnections,
each answered Elasticsearch-style, nothing forwarded or captured, and the other clients served meanwhile."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from typing import Optional

import pytest
import requests
from support.basics import wait_until
from support.configs import proxy_config
from support.elastic import is_es_error
from support.kafka import count_messages

SMALL = {
    "maxContentLength": "1kb",
    "maxInitialLineLength": "256b",
    "maxHeaderSize": "1kb",
    "maxHeaderCount": 10,
    "readTimeout": "1s",
    "idleTimeout": "1s",
}


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes, closed: bool) -> None:
        self.status, self.headers, self.body, self.closed = status, headers, body, closed

    def json(self) -> dict:
        return json.loads(self.body)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_answer(s: socket.socket, then_closed: bool = True) -> Answer:
    """One HTTP answer from s (Content-Length framed); with then_closed, also whether the server closed after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before an answer: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    if then_closed:
        try:
            while True:  # what follows the answer: nothing, then the close (or a reset while we still send)
                extra = s.recv(65536)
                if not extra:
                    closed = True
                    break
        except ConnectionResetError:
            closed = True
    return Answer(int(lines[0].split()[1]), headers, body[:length], closed)


def limited(port: int, es_a: str, kafka: Optional[str] = None, topic: Optional[str] = None, **limits) -> dict:
    conf = proxy_config(port, es_a, kafka, topic)
    conf["source"]["proxies"][0].update({**SMALL, **limits})
    return conf


def assert_refused(a: Answer, status: int, kind: str) -> None:
    assert a.status == status, (a.status, a.body)
    assert is_es_error(a.json(), status), a.body
    assert a.json()["error"]["type"] == kind, a.body
    assert a.headers.get("connection", "").lower() == "close", a.headers
    assert a.closed


@pytest.fixture
def proxy(esproxy, es_a, kafka, names, port):
    """A proxy with small limits that captures into a topic of its own: (base URL, port, topic, index)."""
    topic = names.topic()
    esproxy(limited(port, es_a, kafka, topic))
    return f"http://127.0.0.1:{port}", port, topic, names.index()


def captured_only(kafka: str, topic: str, base: str, index: str) -> None:
    """Nothing was captured so far: a good write now is the topic's first and only message."""
    r = requests.put(f"{base}/{index}/_doc/good", json={"ok": 1}, timeout=10)
    assert r.status_code == 201, r.text
    wait_until(lambda: count_messages(kafka, topic) >= 1, timeout=15, msg="the good write captured")
    assert count_messages(kafka, topic) == 1


def test_body_over_content_length_is_refused_before_it_is_read(proxy, es_a, kafka):
    base, port, topic, index = proxy
    s = connect(port)
    s.sendall(
        f"PUT /{index}/_doc/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 5000000\r\n\r\n".encode()
        + b'{"x":"'
    )
    assert_refused(read_answer(s), 413, "esproxy_content_too_long_exception")
    # an ordinary client that sends the whole body first still reads the answer (the lingering close)
    r = requests.put(f"{base}/{index}/_doc/big", data=b'{"x":"' + b"a" * 200_000 + b'"}', timeout=10)
    assert r.status_code == 413, r.text
    assert "maxContentLength" in r.json()["error"]["reason"]
    assert requests.get(f"{es_a}/{index}/_doc/big", timeout=10).status_code == 404
    captured_only(kafka, topic, base, index)


def test_chunked_body_over_the_limit_is_refused_while_it_is_read(proxy, es_a, kafka):
    base, port, topic, index = proxy
    s = connect(port)
    s.sendall(
        f"POST /{index}/_doc/chunked HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    for _ in range(4):  # 4 x 400 bytes: over 1kb at the third
        s.sendall(b"190\r\n" + b" " * 400 + b"\r\n")
    assert_refused(read_answer(s), 413, "esproxy_content_too_long_exception")
    assert requests.get(f"{es_a}/{index}/_doc/chunked", timeout=10).status_code == 404
    captured_only(kafka, topic, base, index)


def test_a_chunked_body_within_the_limit_passes(proxy, es_a):
    base, _port, _topic, index = proxy

    def chunks():
        yield b'{"a":'
        yield b'"' + b"b" * 500 + b'"}'

    r = requests.put(f"{base}/{index}/_doc/ok", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 201, r.text
    assert requests.get(f"{es_a}/{index}/_doc/ok", timeout=10).json()["_source"]["a"] == "b" * 500


@pytest.mark.parametrize(
    "head,status,kind",
    [
        ("GET /" + "a" * 300 + " HTTP/1.1\r\n\r\n", 414, "esproxy_too_long_http_line_exception"),
        ("GET / HTTP/1.1\r\n" + "".join(f"X-H{i}: 1\r\n" for i in range(11)) + "\r\n", 431, None),
        ("GET / HTTP/1.1\r\nX-Big: " + "b" * 1100 + "\r\n\r\n", 431, None),
    ],
    ids=["request-line", "header-count", "header-size"],
)
def test_oversized_heads(proxy, head, status, kind):
    base, port, _topic, _index = proxy
    s = connect(port)
    s.sendall(head.encode())
    assert_refused(read_answer(s), status, kind or "esproxy_too_long_http_header_exception")
    assert requests.get(base + "/", timeout=10).status_code == 200


def test_heads_at_the_limits_pass(proxy):
    _base, port, _topic, _index = proxy
    s = connect(port)
    # 9 headers + Host = 10 lines; the request line exactly 256 bytes: the primary answers (no such index)
    target = "/" + "n" * (256 - len("GET / HTTP/1.1"))
    line = f"GET {target} HTTP/1.1"
    assert len(line) == 256
    s.sendall((line + "\r\nHost: x\r\n" + "".join(f"X-H{i}: 1\r\n" for i in range(9)) + "\r\n").encode())
    a = read_answer(s, then_closed=False)
    assert a.status == 404 and a.json()["error"]["type"] == "index_not_found_exception", a.body


def test_slow_head_gets_408_while_others_are_served(proxy):
    base, port, _topic, _index = proxy
    s = connect(port)
    s.sendall(b"GET / HTTP/1.1\r\n")
    stop = threading.Event()
    outcome: list = []

    def drip() -> None:  # a header byte every 0.2s: never a whole head within readTimeout (1s)
        try:
            while not stop.is_set():
                s.sendall(b"X")
                time.sleep(0.2)
        except OSError as e:
            outcome.append(e)

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    served = 0
    try:
        for _ in range(5):
            assert requests.get(base + "/", timeout=5).status_code == 200
            served += 1
        answer = read_answer(s)
    finally:
        stop.set()
        dripper.join(5)
    assert served == 5
    assert_refused(answer, 408, "esproxy_request_timeout_exception")


def test_slow_body_gets_408_and_is_not_forwarded(proxy, es_a, kafka):
    base, port, topic, index = proxy
    s = connect(port)
    s.sendall(
        f"PUT /{index}/_doc/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{".encode()
    )
    assert_refused(read_answer(s), 408, "esproxy_request_timeout_exception")
    assert requests.get(f"{es_a}/{index}/_doc/slow", timeout=10).status_code == 404
    captured_only(kafka, topic, base, index)


def test_idle_keep_alive_connection_is_closed(proxy):
    _base, port, _topic, _index = proxy
    s = connect(port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(s, then_closed=False).status == 200
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # within idleTimeout: served on the same connection
    assert read_answer(s, then_closed=False).status == 200
    assert s.recv(1) == b""  # then nothing for idleTimeout (1s): closed without an answer
    quiet = connect(port)  # a connection that never sends a byte is closed after readTimeout
    assert quiet.recv(1) == b""


def test_idle_timeout_0_keeps_a_connection_past_read_timeout(esproxy, es_a, port):
    """idleTimeout: 0 is never, whatever readTimeout: a kept-alive connection quiet for longer than
    readTimeout (0.3s) is still served (the socket's own timeout no longer closed it)."""
    esproxy(limited(port, es_a, readTimeout="300ms", idleTimeout="0"))
    s = connect(port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(s, then_closed=False).status == 200
    time.sleep(1.0)  # nothing to wait for: the point is that nothing happens meanwhile
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(s, then_closed=False).status == 200


def test_connections_over_max_get_503_and_the_others_are_served(esproxy, es_a, port):
    esproxy(limited(port, es_a, maxConnections=2, idleTimeout="60s", readTimeout="60s"))
    held = [connect(port), connect(port)]
    for s in held:  # both served: the proxy holds them now
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(s, then_closed=False).status == 200
    third = connect(port)
    third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_refused(read_answer(third), 503, "esproxy_too_many_connections_exception")
    for s in held:  # still served
        s.sendall(b"GET /_cluster/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(s, then_closed=False).status == 200
    held.pop().close()

    def served() -> bool:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

    wait_until(served, timeout=10, msg="a slot freed by the close")
    stats = requests.get(f"http://127.0.0.1:{port}/_esproxy/stats", timeout=5).json()
    assert stats["proxy"]["requests"].get("OTHER 503") == 1, stats


def test_oversize_upload_while_another_client_writes(proxy, es_a):
    base, port, _topic, index = proxy
    done = threading.Event()
    refused: list = []

    def upload() -> None:
        while not done.is_set():
            s = connect(port)
            s.sendall(f"PUT /{index}/_doc/up HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".encode())
            try:
                s.sendall(b"u" * 200_000)
            except OSError:
                pass
            refused.append(read_answer(s, then_closed=False).status)
            s.close()

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        for i in range(20):
            r = requests.put(f"{base}/{index}/_doc/w{i}", json={"i": i}, timeout=10)
            assert r.status_code == 201, r.text
    finally:
        done.set()
        uploader.join(10)
    assert refused and set(refused) == {413}
    assert requests.get(f"{es_a}/{index}/_doc/up", timeout=10).status_code == 404


def test_workers_apply_the_same_limits(esproxy, es_a, port):
    p = esproxy({**limited(port, es_a), "workers": 2})

    def refusing_workers() -> set:
        s = connect(port)
        s.sendall(b"PUT /w/_doc/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        assert_refused(read_answer(s), 413, "esproxy_content_too_long_exception")
        s = connect(port)
        s.sendall(("GET / HTTP/1.1\r\n" + "".join(f"X-H{i}: 1\r\n" for i in range(11)) + "\r\n").encode())
        assert_refused(read_answer(s), 431, "esproxy_too_long_http_header_exception")
        pids = set(re.findall(r"\] (\d+) --- .*refused a request", p.log()))
        return len(pids) == 2

    wait_until(refusing_workers, timeout=30, interval=0, msg="both workers refusing")  # whichever accepts


def reset(s: socket.socket) -> None:
    """Close with a TCP reset rather than a FIN, as wrk at its end and load balancers do."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_resets_are_ordinary_closes(esproxy, es_a, port, names):
    """A client that resets its connection between requests, in the middle of a head or a body, or before it
    read its answer leaves no traceback in the log (at most a DEBUG line), and the proxy goes on serving."""
    p = esproxy(limited(port, es_a, maxContentLength="1mb", idleTimeout="60s", readTimeout="60s"))
    index = names.index()
    for _ in range(3):
        s = connect(port)  # between requests, on a kept-alive connection
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(s, then_closed=False).status == 200
        reset(s)
        s = connect(port)  # within a head
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.05)
        reset(s)
        s = connect(port)  # within a body
        s.sendall(f"PUT /{index}/_doc/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode())
        s.sendall(b'Content-Length: 100000\r\n\r\n{"a":')
        time.sleep(0.05)
        reset(s)
        s = connect(port)  # before its answer was read
        s.sendall(b"GET /_cat/indices HTTP/1.1\r\nHost: x\r\n\r\n")
        reset(s)
    time.sleep(0.5)
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    log_text = p.log()
    assert "Traceback" not in log_text, log_text[-4000:]
    assert "ConnectionResetError" not in log_text, log_text[-4000:]
