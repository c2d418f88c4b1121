"""A cluster with security on, for tests: an osmem server behind a gate that wants given request headers
(as Elasticsearch wants credentials) and answers 401 like Elasticsearch without them; what passes is
forwarded to osmem as it is."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class AuthGate:
    def __init__(self, target: str, required: dict[str, str]) -> None:
        self.refused = 0
        target_netloc = urlsplit(target).netloc
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if any(self.headers.get(k) != v for k, v in required.items()):
                    outer.refused += 1
                    reason = f"unable to authenticate user for REST request [{self.path}]"  # never the credential
                    doc = {"error": {"root_cause": [{"type": "security_exception", "reason": reason}]}, "status": 401}
                    doc["error"].update(type="security_exception", reason=reason)
                    self._answer(401, [("WWW-Authenticate", 'Basic realm="security"')], json.dumps(doc).encode())
                    return
                conn = http.client.HTTPConnection(target_netloc, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    self._answer(r.status, [(k, v) for k, v in r.getheaders() if k.lower() not in HOP], data)
                finally:
                    conn.close()

            def _answer(self, status: int, headers: list, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
