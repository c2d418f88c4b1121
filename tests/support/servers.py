"""Servers the tests talk to: the demo osmem/Tansu processes, and a recording HTTP server standing in for a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from .basics import REPO, free_port, kill_group, tcp_open, wait_until

DEMO_SERVER = REPO / "ops" / "demo-server"


class DemoServer:
    """One ops/demo-server process (osmem or tansu) on 127.0.0.1:<free port>."""

    def __init__(self, kind: str, log_dir: Path):
        assert kind in ("osmem", "tansu")
        self.kind = kind
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / f"{kind}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO_SERVER), kind, self.addr],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_tail()}")

    def pause(self) -> None:
        """SIGSTOP the server's process group and return once every thread of it is stopped: the signal is
        delivered asynchronously, and a thread still running could answer one more request."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        wait_until(lambda: all(_stopped(t) for t in Path(f"/proc/{self.proc.pid}/task").iterdir()), timeout=5)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.kind == "osmem":
                try:
                    if requests.get(self.url + "/", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            elif tcp_open("127.0.0.1", self.port):
                try:
                    from kafka import KafkaConsumer

                    c = KafkaConsumer(bootstrap_servers=self.addr, request_timeout_ms=3000)
                    try:
                        c.topics()
                        return
                    finally:
                        c.close()
                except Exception:  # noqa: BLE001 - broker not ready yet
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} on {self.addr} not ready after {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


class RecordingServer:
    """A tiny HTTP server standing in for a cluster: records every request (method, path, headers,
    body) and answers like Elasticsearch would for the cluster-id bookkeeping; other requests get
    201 (PUT/POST) or 200 with a small JSON body."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    outer.requests.append((self.command, self.path, dict(self.headers.items()), body))
                if self.path.startswith("/meta.elasticproxy/") and self.command in ("GET", "HEAD"):
                    status = 200
                    doc = {"_index": "meta.elasticproxy", "_id": "clusterid", "found": True}
                    doc["_source"] = {"id": "recordercluster"}
                elif self.command in ("PUT", "POST"):
                    status, doc = 201, {"result": "created", "_id": "x", "_index": "x"}
                else:
                    status, doc = 200, {"recorded": True}
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args):
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def matching(self, method: str, path_prefix: str) -> list:
        return [r for r in list(self.requests) if r[0] == method and r[1].startswith(path_prefix)]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def _stopped(task: Path) -> bool:
    try:
        stat = (task / "stat").read_text()
    except OSError:  # the thread is gone
        return True
    return stat[stat.rindex(")") + 2] in "Tt"
