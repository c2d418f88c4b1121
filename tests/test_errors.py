"""Upstream failures are answered with Elasticsearch-style JSON errors: 502 and 504."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from support.basics import free_port
from support.configs import proxy_config
from support.elastic import is_es_error
from support.servers import DemoServer


def assert_es_error(r: requests.Response, status: int, what: str) -> None:
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
    assert "json" in r.headers.get("Content-Type", ""), f"{what}: {dict(r.headers)}"
    assert is_es_error(r.json(), status), f"{what}: {r.text}"


def test_primary_going_down_gives_502(esproxy, kafka, names, port, tmp_path):
    """A that disappears after the proxy started: every request gets a 502 JSON error."""
    a = DemoServer("osmem", tmp_path)
    try:
        esproxy(proxy_config(port, a.url, kafka, names.topic()))
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/", timeout=10).status_code == 200
    finally:
        a.stop()
    for method, path, kw in [("GET", "/", {}), ("PUT", "/idx/_doc/1", {"json": {"a": 1}})]:
        assert_es_error(requests.request(method, base + path, timeout=15, **kw), 502, f"{method} {path}")


def test_primary_closed_port_from_start_gives_502(esproxy, kafka, names, port):
    """A primary URL pointing at a closed port: the proxy still serves, answering 502."""
    closed = free_port()  # nothing listens there
    esproxy(proxy_config(port, f"http://127.0.0.1:{closed}", kafka, names.topic()), timeout=10)
    base = f"http://127.0.0.1:{port}"
    for method, path, kw in [("GET", "/", {}), ("PUT", "/idx/_doc/1", {"json": {"a": 1}})]:
        assert_es_error(requests.request(method, base + path, timeout=15, **kw), 502, f"{method} {path}")


@pytest.fixture
def slow_server():
    """A tiny HTTP server: answers the proxy's cluster-id bookkeeping (`/meta.elasticproxy/...`)
    at once like a cluster would, and every other request only after 5 s (or when the test ends)."""
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path.startswith("/meta.elasticproxy/"):
                if self.command in ("GET", "HEAD"):
                    doc = {"_index": "meta.elasticproxy", "_id": "clusterid", "found": True}
                    self._answer(200, {**doc, "_source": {"id": "slowcluster"}})
                else:
                    self._answer(201, {"_index": "meta.elasticproxy", "_id": "clusterid", "result": "created"})
                return
            release.wait(5)
            self._answer(200, {"late": True})

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    release.set()
    srv.shutdown()
    srv.server_close()


def test_primary_timeout_gives_504(esproxy, kafka, names, port, slow_server):
    esproxy(proxy_config(port, slow_server, kafka, names.topic(), timeout="500ms"))
    for method, path, kw in [("GET", "/", {}), ("PUT", "/idx/_doc/1", {"json": {"a": 1}})]:
        start = time.monotonic()
        r = requests.request(method, f"http://127.0.0.1:{port}{path}", timeout=15, **kw)
        elapsed = time.monotonic() - start
        assert_es_error(r, 504, f"{method} {path}")
        assert elapsed < 3.0, f"the 500ms primary timeout took {elapsed:.1f}s to fire"
