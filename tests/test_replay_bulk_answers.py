"""A cluster B whose 2xx `_bulk` answers cannot be trusted (a proxy or load balancer in front of it
mangling or cutting them, a server that is not Elasticsearch): the replay cannot tell which writes B
applied, so it sends the whole batch again with its backoff, says so, and loses nothing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import requests
from support.basics import free_port, wait_until
from support.beans import make_bean
from support.configs import replay_config
from support.kafka import create_topic, produce_raw

# What B answers to a `_bulk`, in turn, until the test lets it answer correctly.
BAD_ANSWERS = [
    "too few items",
    "html",
    "a JSON list",
    "a status that is not a number",
]


class MangledB:
    """A stand-in for B behind a misbehaving proxy: keeps its cluster id like a cluster would; answers
    each `_bulk` 200 with one of BAD_ANSWERS in turn until ``heal()``, then as Elasticsearch does.
    Records every `_bulk` body and whether its answer was a correct one."""

    def __init__(self) -> None:
        self.bulks: list[tuple[bytes, bool]] = []
        self.healed = threading.Event()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.startswith("/meta.elasticproxy/"):
                    doc = {"_index": "meta.elasticproxy", "_id": "clusterid", "found": True, "_source": {"id": "b"}}
                    self._send(200, json.dumps(doc).encode())
                elif self.path.split("?")[0] == "/_bulk":
                    with lock:
                        good = outer.healed.is_set()
                        bad = BAD_ANSWERS[len(outer.bulks) % len(BAD_ANSWERS)]
                        outer.bulks.append((body, good))
                    self._send(200, _answer(body) if good else _mangled(body, bad))
                else:
                    self._send(200, b"{}")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def heal(self) -> None:
        self.healed.set()

    def actions(self, good: bool) -> list[list[tuple]]:
        """The actions of each `_bulk` answered correctly (good) or not, as (verb, index, id, version)."""
        return [_actions(body) for body, answered_well in list(self.bulks) if answered_well == good]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def _actions(body: bytes) -> list[tuple]:
    out = []
    for line in body.splitlines():
        entry = json.loads(line)
        verb = next(iter(entry))
        if verb in ("index", "delete"):
            meta = entry[verb]
            out.append((verb, meta["_index"], meta["_id"], meta["version"]))
    return out


def _items(body: bytes) -> list[dict]:
    return [
        {verb: {"_index": index, "_id": doc_id, "_version": version, "status": 201 if verb == "index" else 200}}
        for verb, index, doc_id, version in _actions(body)
    ]


def _answer(body: bytes) -> bytes:
    return json.dumps({"took": 1, "errors": False, "items": _items(body)}).encode()


def _mangled(body: bytes, how: str) -> bytes:
    items = _items(body)
    if how == "too few items":
        return json.dumps({"took": 1, "errors": False, "items": items[:1]}).encode()
    if how == "html":
        return b"<html><body>OK</body></html>"
    if how == "a JSON list":
        return json.dumps(items).encode()
    for item in items:
        next(iter(item.values()))["status"] = "created"
    return json.dumps({"took": 1, "errors": False, "items": items}).encode()


@pytest.fixture
def mangled_b() -> Iterator[MangledB]:
    b = MangledB()
    yield b
    b.stop()


def test_a_bulk_answer_b_mangles_is_retried_whole_and_nothing_is_lost(esproxy, kafka, names, mangled_b):
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic)
    sent = []
    beans = []
    for n in range(3):
        lines = b""
        for doc in range(2):
            doc_id, version = f"d{n}-{doc}", 10 + n
            meta = {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte"}
            lines += json.dumps({"index": meta}).encode() + b"\n" + json.dumps({"n": n}).encode() + b"\n"
            sent.append(("index", index, doc_id, version))
        beans.append(make_bean("POST", "/_bulk", lines.decode(), "application/x-ndjson", index=index, kind="docs"))
    produce_raw(kafka, topic, beans)
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), mangled_b.url)
    conf["admin"] = {"port": admin_port}
    conf["health"] = {"maxReplayStall": "1s"}
    replay = esproxy(conf)
    admin = f"http://127.0.0.1:{admin_port}/_esproxy"

    def stalled() -> bool:
        r = requests.get(f"{admin}/health", timeout=5)
        return r.status_code == 503 and any(x["check"] == "replay_stalled" for x in r.json()["reasons"])

    wait_until(lambda: len(mangled_b.bulks) >= len(BAD_ANSWERS), timeout=30, msg="B answered each mangled answer")
    wait_until(stalled, timeout=30, msg="health: the replay is stalled")
    # nothing counted as applied, nothing dead-lettered or skipped: the batch is sent again, whole
    stats = requests.get(f"{admin}/stats", timeout=5).json()["replay"]
    assert stats["by_index"] == {} and stats["skipped"] == {}, stats
    first, *again = mangled_b.actions(good=False)
    assert first and all(batch == first for batch in again), "each retry sends the same batch"
    log = replay.log()
    for reason in (
        f"status 200, but the _bulk answer has 1 items for {len(first)} actions",
        "status 200, but _bulk answer is not JSON: '<html><body>OK</body></html>'",
        "status 200, but _bulk answer is a JSON list, not an object",
        "status 200, but _bulk answer item 1 has no HTTP status ('created')",
    ):
        assert f"POST {mangled_b.url}/_bulk failed (attempt" in log and reason in log, (reason, replay.log_tail())
    assert "Traceback" not in log, replay.log_tail()

    mangled_b.heal()
    written = lambda: sorted(a for batch in mangled_b.actions(good=True) for a in batch)  # noqa: E731
    wait_until(lambda: written() == sorted(sent), timeout=60, msg="every write applied once B answers well")
    wait_until(lambda: requests.get(f"{admin}/health", timeout=5).status_code == 200, timeout=30, msg="healthy")
    stats = requests.get(f"{admin}/stats", timeout=5).json()["replay"]
    assert stats["by_index"][index]["writes"] == 3 and stats["skipped"] == {}, stats
    assert replay.proc.poll() is None, replay.log_tail()
