"""Stand-ins for cluster B where a test needs one that misbehaves: behind something that mangles its `_bulk`
answers (a proxy, a load balancer, a gateway that is not Elasticsearch), or answering some items 429/5xx once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What B answers to a `_bulk`, in turn, until the test lets it answer correctly.
BAD_ANSWERS = [
    "too few items",
    "html",
    "a JSON list",
    "a status that is not a number",
]


class FakeB:
    """A stand-in for B: keeps its cluster id like a cluster would, answers 200 ``{}`` to any request but
    `_bulk`, whose answer ``bulk_answer`` gives. Records every `_bulk` as (path with query, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path with query, body) of every request
        self.bulk_requests: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
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
                    return
                with outer.lock:
                    outer.requests.append((self.command, self.path, body))
                if self.path.split("?")[0].endswith("/_bulk"):
                    with outer.lock:
                        outer.bulk_requests.append((self.path, body))
                        answer = outer.bulk_answer(body)
                    self._send(200, answer)
                else:
                    self._send(200, b"{}")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def bulk_answer(self, body: bytes) -> bytes:  # called under self.lock
        return _answer(body)

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


class MangledB(FakeB):
    """A stand-in for B behind a misbehaving proxy: answers each `_bulk` 200 with one of BAD_ANSWERS in
    turn until ``heal()``, then as Elasticsearch does. Records every `_bulk` body and whether its answer
    was a correct one."""

    def __init__(self) -> None:
        self.bulks: list[tuple[bytes, bool]] = []
        self.healed = threading.Event()
        super().__init__()

    def bulk_answer(self, body: bytes) -> bytes:
        good = self.healed.is_set()
        bad = BAD_ANSWERS[len(self.bulks) % len(BAD_ANSWERS)]
        self.bulks.append((body, good))
        return _answer(body) if good else _mangled(body, bad)

    def heal(self) -> None:
        self.healed.set()

    def actions(self, good: bool) -> list[list[tuple]]:
        """The actions of each `_bulk` answered correctly (good) or not, as (verb, index, id, version)."""
        return [_actions(body) for body, answered_well in list(self.bulks) if answered_well == good]


class ItemsFailOnceB(FakeB):
    """A stand-in for B under load: the first time it is sent an action on a document of ``fail_once``
    (id -> status, e.g. 429 or 503) it answers that item with the status and keeps nothing of it; every
    other action is applied: ``applied`` holds each document's writes (id -> the sources written, in order)."""

    def __init__(self, fail_once: dict[str, int]) -> None:
        self.fail_once = dict(fail_once)
        self.applied: dict[str, list[dict]] = {}
        super().__init__()

    def bulk_answer(self, body: bytes) -> bytes:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        items, i = [], 0
        while i < len(lines):
            verb, meta = next(iter(lines[i].items()))
            source = None if verb == "delete" else lines[i + 1]
            i += 1 if verb == "delete" else 2
            status = self.fail_once.pop(meta["_id"], None)
            if status is None:
                self.applied.setdefault(meta["_id"], []).append(source)
                items.append({verb: {"_index": meta.get("_index"), "_id": meta["_id"], "_version": 1, "status": 201}})
            else:
                error = {"type": "es_rejected_execution_exception", "reason": "rejected: too busy"}
                items.append(
                    {verb: {"_index": meta.get("_index"), "_id": meta["_id"], "status": status, "error": error}}
                )
        failed = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return json.dumps({"took": 1, "errors": failed, "items": items}).encode()


def _actions(body: bytes) -> list[tuple]:
    out = []
    for line in body.splitlines():
        entry = json.loads(line)
        verb = next(iter(entry))
        if verb in ("index", "delete"):
            meta = entry[verb]
            out.append((verb, meta["_index"], meta["_id"], meta.get("version")))
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
