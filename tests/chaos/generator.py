"""The clients: threads writing through the proxy, each recording every operation and its outcome.

Each client owns its documents (ids `c<client>-k<key>-g<generation>`), so the writes to one document come from
one client, one after the other: what a document may hold at the end follows from its history alone
(checker.py). An operation whose outcome is unknown (a timeout, a reset, a 5xx that does not say the write was
refused) may still take effect later, at any point after the client's next operations: so the client retires
the documents it touched and goes on with a new generation of them; nothing it does later touches the old ones.

Outcomes, as Jepsen names them: ``ok`` (acknowledged: 2xx), ``fail`` (refused: the write was not applied and
will not be: 4xx, 429, a connection refused, a 503 that says it was not forwarded), ``info`` (unknown).
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import requests

KEYS = 12  # documents per client at a time (over the two document indices)
TIMEOUT = (3.0, 15.0)  # connect, read: a read timeout is an unknown outcome
NOT_FORWARDED = ("esproxy_spool_full_exception", "esproxy_unavailable_exception", "esproxy_switchover_in_progress")
# kind -> weight; incr needs painless on A (captured as the document it made), ubq the API on A and B and its script
# painless on both (replayed as sent): see Features
WEIGHTS = {"index": 22, "create": 8, "update": 14, "cas": 10, "delete": 9, "kbulk": 8, "bulk": 12, "incr": 10, "ubq": 4}
INCR = "ctx._source.cnt = (ctx._source.cnt == null ? 0 : ctx._source.cnt) + 1"


@dataclass
class Features:
    """What the clusters run, probed at the start (runner.features): osmem runs no painless; Elasticsearch 8 as Maven
    Central has it has neither painless (lang-painless) nor `_update_by_query` (the reindex module)."""

    incr: bool = False  # A runs painless
    ubq: bool = False  # A and B answer _update_by_query
    ubq_script: bool = False  # ... and run painless


@dataclass
class Op:
    """One write's effect on one document (a `_bulk` gives one per action) or, for `ubq`, on the client's
    documents of an index (``keys``)."""

    client: int
    seq: int
    kind: str  # index, create, update, cas, delete, incr, ubq, auto (an auto-id _bulk action)
    index: str
    doc_id: Optional[str]  # auto: the token the document carries
    value: Any = None  # the document (index, create, cas), the partial document (update), n (ubq)
    start: float = 0.0
    end: float = 0.0
    outcome: str = "info"
    status: Optional[int] = None
    detail: str = ""
    keys: list = field(default_factory=list)  # ubq: the documents it may touch
    via: str = ""  # "bulk" for an action of a _bulk


def classify(status: int, body: Any) -> str:
    if 200 <= status < 300:
        return "ok"
    if status in (400, 404, 409, 429):
        return "fail"
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type", "") if isinstance(error, dict) else ""
    if status == 503 and kind.startswith(NOT_FORWARDED):
        return "fail"
    return "info"


def refused_connection(e: requests.RequestException) -> bool:
    """A connection the proxy refused: the request never left the client."""
    text = repr(e)
    return isinstance(e, requests.ConnectionError) and ("NewConnectionError" in text or "Connection refused" in text)


class History:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()

    def add(self, *ops: Op) -> None:
        with self._lock:
            self.ops.extend(ops)


class Client(threading.Thread):
    def __init__(
        self,
        cid: int,
        seed: int,
        proxy: str,
        doc_indices: list[str],
        auto_index: str,
        history: History,
        until: float,
        max_ops: int,
        features: Features,
    ) -> None:
        super().__init__(daemon=True, name=f"client-{cid}")
        self.cid, self.proxy, self.doc_indices, self.auto_index = cid, proxy, doc_indices, auto_index
        self.rng = random.Random(f"{seed}/client/{cid}")
        self.history, self.until, self.max_ops = history, until, max_ops
        self.ubq_script = features.ubq_script
        self.kinds = [k for k in WEIGHTS if (k != "incr" or features.incr) and (k != "ubq" or features.ubq)]
        self.weights = [WEIGHTS[k] for k in self.kinds]
        self.generation = [0] * KEYS
        self.seq = 0
        self.halt = threading.Event()
        self.session = requests.Session()

    # ------------------------------------------------------------------ documents

    def doc(self, k: int) -> tuple[str, str]:
        return self.doc_indices[k % len(self.doc_indices)], f"c{self.cid}-k{k}-g{self.generation[k]}"

    def retire(self, ids: list[str]) -> None:
        for k in range(KEYS):
            if self.doc(k)[1] in ids:
                self.generation[k] += 1

    def body(self) -> dict:
        return {"c": self.cid, "w": f"{self.cid}-{self.seq}", "v": self.seq}

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        while not self.halt.is_set() and time.time() < self.until and self.seq < self.max_ops:
            self.seq += 1
            kind = self.rng.choices(self.kinds, self.weights)[0]
            ops = getattr(self, f"op_{kind}")()
            if ops:
                self.history.add(*ops)
                unknown = [o.doc_id for o in ops if o.outcome == "info" and o.kind != "auto"]
                unknown += [key for o in ops if o.outcome == "info" for key in o.keys]
                if unknown:
                    self.retire(unknown)
                if any(o.detail == "refused connection" for o in ops):
                    time.sleep(0.2)
            time.sleep(self.rng.uniform(0, 0.03))

    def call(self, ops: list[Op], method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; set every op's outcome from the answer; the answer's JSON (or None)."""
        started = time.time()
        for op in ops:
            op.start = started
        try:
            r = self.session.request(method, f"{self.proxy}{path}", timeout=TIMEOUT, **kwargs)
        except requests.RequestException as e:
            refused = refused_connection(e)
            for op in ops:
                op.end, op.outcome = time.time(), "fail" if refused else "info"
                op.detail = "refused connection" if refused else type(e).__name__
            self.session = requests.Session()
            return None
        try:
            body = r.json()
        except ValueError:
            body = None
        for op in ops:
            op.end, op.status, op.outcome = time.time(), r.status_code, classify(r.status_code, body)
            if op.outcome != "ok":
                op.detail = r.text[:200]
        return body

    def new(self, kind: str, index: str, doc_id: Optional[str], value: Any = None, **kw: Any) -> Op:
        return Op(self.cid, self.seq, kind, index, doc_id, value, **kw)

    # ------------------------------------------------------------------ operations

    def op_index(self) -> list[Op]:
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        op = self.new("index", index, doc_id, self.body())
        self.call([op], "PUT", f"/{index}/_doc/{doc_id}", json=op.value)
        return [op]

    def op_create(self) -> list[Op]:
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        op = self.new("create", index, doc_id, self.body())
        self.call([op], "PUT", f"/{index}/_create/{doc_id}", json=op.value)
        return [op]

    def op_update(self) -> list[Op]:
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        op = self.new("update", index, doc_id, {"p": f"{self.cid}-{self.seq}"})
        self.call([op], "POST", f"/{index}/_update/{doc_id}", json={"doc": op.value})
        return [op]

    def op_delete(self) -> list[Op]:
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        op = self.new("delete", index, doc_id)
        self.call([op], "DELETE", f"/{index}/_doc/{doc_id}")
        return [op]

    def op_cas(self) -> list[Op]:
        """Read the document through the proxy, then write it if_seq_no/if_primary_term (a create if absent)."""
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        try:
            r = self.session.get(f"{self.proxy}/{index}/_doc/{doc_id}", timeout=TIMEOUT)
            found = r.json() if r.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return []  # a read: nothing to record
        if r.status_code not in (200, 404):
            return []
        if not found:
            op = self.new("create", index, doc_id, self.body())
            self.call([op], "PUT", f"/{index}/_create/{doc_id}", json=op.value)
            return [op]
        op = self.new("cas", index, doc_id, self.body())
        cond = f"if_seq_no={found['_seq_no']}&if_primary_term={found['_primary_term']}"
        self.call([op], "PUT", f"/{index}/_doc/{doc_id}?{cond}", json=op.value)
        return [op]

    def op_incr(self) -> list[Op]:
        """A scripted counter: not idempotent (applied twice, it counts twice)."""
        index, doc_id = self.doc(self.rng.randrange(KEYS))
        op = self.new("incr", index, doc_id)
        self.call([op], "POST", f"/{index}/_update/{doc_id}", json={"script": {"source": INCR, "lang": "painless"}})
        return [op]

    def op_ubq(self) -> list[Op]:
        """_update_by_query over the client's own documents of one index (after a refresh, so it sees them all):
        sets `ubq` where both clusters run painless, else rewrites them as they are (each gets a new version)."""
        index = self.rng.choice(self.doc_indices)
        keys = [self.doc(k)[1] for k in range(KEYS) if self.doc(k)[0] == index]
        try:
            if self.session.post(f"{self.proxy}/{index}/_refresh", timeout=TIMEOUT).status_code != 200:
                return []
        except requests.RequestException:
            return []
        op = self.new("ubq", index, None, self.seq if self.ubq_script else None, keys=keys)
        query = {"bool": {"filter": [{"term": {"c": self.cid}}, {"ids": {"values": keys}}]}}
        ubq: dict = {"query": query}
        if self.ubq_script:
            ubq["script"] = {"source": "ctx._source.ubq = params.n", "lang": "painless", "params": {"n": self.seq}}
        body = self.call([op], "POST", f"/{index}/_update_by_query?conflicts=proceed", json=ubq)
        if op.outcome == "ok" and (not isinstance(body, dict) or body.get("failures") or body.get("version_conflicts")):
            op.outcome, op.detail = "info", json.dumps(body)[:200]
        return [op]

    def op_kbulk(self) -> list[Op]:
        """A _bulk of 2-3 actions on distinct documents of the client: index, update or delete."""
        lines, ops = [], []
        for k in self.rng.sample(range(KEYS), self.rng.randint(2, 3)):
            index, doc_id = self.doc(k)
            verb = self.rng.choice(("index", "update", "delete"))
            meta = {verb: {"_index": index, "_id": doc_id}}
            if verb == "index":
                op = self.new("index", index, doc_id, self.body(), via="bulk")
                lines += [meta, op.value]
            elif verb == "update":
                op = self.new("update", index, doc_id, {"p": f"{self.cid}-{self.seq}"}, via="bulk")
                lines += [meta, {"doc": op.value}]
            else:
                op = self.new("delete", index, doc_id, via="bulk")
                lines += [meta]
            ops.append(op)
        self.bulk(ops, lines)
        return ops

    def op_bulk(self) -> list[Op]:
        """A _bulk of 1-5 `index` actions without _id: each document carries a token of its own."""
        lines, ops = [], []
        for i in range(self.rng.randint(1, 5)):
            tok = f"{self.cid}-{self.seq}-{i}"
            ops.append(self.new("auto", self.auto_index, tok, {"c": self.cid, "tok": tok, "v": self.seq}, via="bulk"))
            lines += [{"index": {"_index": self.auto_index}}, ops[-1].value]
        self.bulk(ops, lines)
        return ops

    def bulk(self, ops: list[Op], lines: list[dict]) -> None:
        data = "".join(json.dumps(line) + "\n" for line in lines)
        body = self.call(ops, "POST", "/_bulk", data=data, headers={"Content-Type": "application/x-ndjson"})
        if not (ops[0].outcome == "ok" and isinstance(body, dict)):
            return
        items = body.get("items") or []
        if len(items) != len(ops):
            for op in ops:
                op.outcome, op.detail = "info", f"{len(items)} items for {len(ops)} actions"
            return
        for op, item in zip(ops, items):
            ((_, answer),) = item.items()
            op.status = answer.get("status")
            op.outcome = classify(op.status or 0, answer)
            if op.outcome != "ok":
                op.detail = json.dumps(answer)[:200]
