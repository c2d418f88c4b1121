"""Reads the proxy passes through without WSGI (ProxyApp.pass_read) answer the same bytes as the
WSGI path: the same GET sent with ``Content-Length: 0`` takes the WSGI path, without it pass_read."""

from __future__ import annotations

import re
import socket

import requests
from support.configs import proxy_config

DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def exchange(port: int, request: bytes) -> bytes:
    """One request on a new connection that asks to be closed; every byte of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return DATE.sub(b"\r\nDate: -\r\n", out)


def both_paths(port: int, method: str, path: str, extra: str = "") -> tuple[bytes, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n{extra}Connection: close\r\n"
    passed = exchange(port, (head + "\r\n").encode())
    wsgi = exchange(port, (head + "Content-Length: 0\r\n\r\n").encode())
    return passed, wsgi


def test_pass_read_answers_byte_for_byte_as_the_wsgi_path(esproxy, es_a, port, names):
    esproxy(proxy_config(port, es_a))
    index = names.index()
    requests.put(f"{es_a}/{index}/_doc/1?refresh=true", json={"name": "张三", "n": 1}, timeout=10)
    big = {"text": "x" * 300_000}  # over STREAM_OVER: streamed on both paths
    requests.put(f"{es_a}/{index}/_doc/big?refresh=true", json=big, timeout=30)
    cases = [
        ("GET", f"/{index}/_doc/1", ""),
        ("GET", f"/{index}/_doc/1?pretty", ""),
        ("HEAD", f"/{index}/_doc/1", ""),
        ("GET", f"/{index}/_doc/missing", ""),
        ("GET", "/no-such-index/_search", ""),
        ("GET", f"/{index}/_doc/1", "Accept-Encoding: gzip\r\nX-Opaque-Id: a\r\nX-Opaque-Id: b\r\n"),
        ("GET", f"/{index}/_doc/big", ""),
    ]
    for method, path, extra in cases:
        passed, wsgi = both_paths(port, method, path, extra)
        assert passed.startswith(b"HTTP/1.1 "), (method, path, passed[:200])
        assert passed == wsgi, (method, path, extra)
    status = requests.get(f"http://127.0.0.1:{port}/_esproxy/stats", timeout=10).json()
    assert status  # admin paths are still answered (by the WSGI path)


def test_pass_read_when_the_primary_is_down(esproxy, port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    esproxy(proxy_config(port, f"http://127.0.0.1:{closed}"), timeout=10)
    passed, wsgi = both_paths(port, "GET", "/i/_doc/1")
    assert passed.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert passed == wsgi


def test_pass_read_with_a_header_check(esproxy, es_a, port, names):
    """With ``header`` required, a plain GET is checked on pass_read as on the WSGI path: the same 401
    without it (or with a wrong value, or twice), the same answer with it."""
    conf = proxy_config(port, es_a)
    conf["source"]["proxies"][0]["header"] = {"X-Proxy-Token": "t0ken"}
    esproxy(conf)
    index = names.index()
    requests.put(f"{es_a}/{index}/_doc/1?refresh=true", json={"n": 1}, timeout=10)
    cases = [
        ("", b"HTTP/1.1 401 Unauthorized\r\n"),
        ("X-Proxy-Token: wrong\r\n", b"HTTP/1.1 401 Unauthorized\r\n"),
        ("X-Proxy-Token: t0ken\r\nX-Proxy-Token: t0ken\r\n", b"HTTP/1.1 401 Unauthorized\r\n"),
        ("X-Proxy-Token: t0ken\r\n", b"HTTP/1.1 200 OK\r\n"),
        ("x-proxy-token:  t0ken \r\n", b"HTTP/1.1 200 OK\r\n"),
    ]
    for extra, start in cases:
        passed, wsgi = both_paths(port, "GET", f"/{index}/_doc/1", extra)
        assert passed.startswith(start), (extra, passed[:200])
        assert passed == wsgi, extra
