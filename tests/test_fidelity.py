"""B converges to exactly what A holds: a seeded random workload through the proxy, then `esproxy compare`.

Eight clients mix index-with-id, auto-id, create (some conflicting), partial updates (some on
missing documents), deletes, `_bulk` requests with failing items, index creation/deletion and
reads, against a 3-partition topic replayed by a parallel pool. Two modes: clients on disjoint ids,
and clients contending for the same few ids. After the stream drains, compare must find nothing.
"""

from __future__ import annotations

import json
import random
import threading

import pytest
import requests
from support.basics import wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic, produce_raw, read_topic

from esproxy.core import routing

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

CLIENTS = 8
OPS_PER_CLIENT = 45


def _bulk_body(lines: list) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


class Client(threading.Thread):
    def __init__(self, base: str, n: int, seed: int, indices: list, scratch: str, contended: bool) -> None:
        super().__init__(name=f"client-{n}")
        self.base, self.n, self.rng = base, n, random.Random(seed * 1000 + n)
        self.indices, self.scratch, self.contended = indices, scratch, contended
        self.session = requests.Session()
        self.statuses: dict = {}
        self.errors: list = []

    def doc_id(self) -> str:
        if self.contended:
            return f"shared-{self.rng.randrange(6)}"
        return f"c{self.n}-{self.rng.randrange(12)}"

    def call(self, method: str, path: str, **kw) -> requests.Response:
        r = self.session.request(method, self.base + path, timeout=30, **kw)
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            self.errors.append(f"{method} {path} -> {r.status_code} {r.text[:200]}")
        return r

    def run(self) -> None:
        try:
            for _ in range(OPS_PER_CLIENT):
                self.step()
        except Exception as e:  # surfaced by the test
            self.errors.append(repr(e))

    def step(self) -> None:
        rng, index = self.rng, self.rng.choice(self.indices)
        doc = {"n": rng.randrange(1000), "who": self.n, "tag": rng.choice(["a", "b", "c"])}
        op = rng.choices(
            ["index", "auto", "create", "update", "delete", "bulk", "scratch", "read"],
            weights=[20, 8, 8, 14, 8, 14, 4, 12],
        )[0]
        if op == "index":
            self.call("PUT", f"/{index}/_doc/{self.doc_id()}", json=doc)
        elif op == "auto":
            self.call("POST", f"/{index}/_doc", json=doc)
        elif op == "create":  # a conflict when the id exists
            self.call("PUT", f"/{index}/_create/{self.doc_id()}", json=doc)
        elif op == "update":  # a 404 when the id does not exist
            body = (
                {"doc": {"tag": rng.choice(["x", "y"])}}
                if rng.random() < 0.7
                else {"script": {"source": "ctx._source.n += 1"}}
            )
            self.call("POST", f"/{index}/_update/{self.doc_id()}", json=body)
        elif op == "delete":
            self.call("DELETE", f"/{index}/_doc/{self.doc_id()}")
        elif op == "bulk":
            lines: list = []
            for _ in range(rng.randrange(2, 7)):
                kind = rng.choice(["index", "create", "update", "delete", "auto", "bad"])
                target = rng.choice(self.indices)
                if kind == "index":
                    lines += [{"index": {"_index": target, "_id": self.doc_id()}}, doc]
                elif kind == "create":
                    lines += [{"create": {"_index": target, "_id": self.doc_id()}}, doc]
                elif kind == "update":
                    lines += [{"update": {"_index": target, "_id": self.doc_id()}}, {"doc": {"tag": "bulk"}}]
                elif kind == "delete":
                    lines += [{"delete": {"_index": target, "_id": self.doc_id()}}]
                elif kind == "auto":
                    lines += [{"index": {"_index": target}}, doc]
                else:  # a mapping error: n is a long
                    lines += [{"index": {"_index": target, "_id": self.doc_id()}}, {"n": "not a number"}]
            self.call("POST", "/_bulk", data=_bulk_body(lines), headers={"Content-Type": "application/x-ndjson"})
        elif op == "scratch":  # index-level writes: create with a mapping, or delete, the client's own index
            if rng.random() < 0.5:
                mapping = {"mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}}}
                self.call("PUT", f"/{self.scratch}", json=mapping)
            else:
                self.call("DELETE", f"/{self.scratch}")
            self.call("PUT", f"/{self.scratch}/_doc/s{rng.randrange(3)}", json=doc)
        else:
            if rng.random() < 0.5:
                self.call("GET", f"/{index}/_doc/{self.doc_id()}")
            else:
                self.call("POST", f"/{index}/_search", json={"query": {"match": {"tag": "a"}}})


@pytest.mark.parametrize("mode", ["disjoint", "contended"])
def test_b_converges_to_a(mode, esproxy, osmem_factory, kafka, names, port, tmp_path):
    a, b = osmem_factory(), osmem_factory()
    topic, group = names.topic(mode), names.group(mode)
    create_topic(kafka, topic, partitions=3)
    indices = [names.index("p"), names.index("q")]
    for index in indices:  # `n` is a long, so a string in `n` is a mapping error on A
        mapping = {"mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}}}
        assert requests.put(f"{a}/{index}", json=mapping, timeout=10).status_code == 200
        assert requests.put(f"{b}/{index}", json=mapping, timeout=10).status_code == 200
    esproxy(replay_config(kafka, topic, group, b, concurrency=3))
    esproxy(proxy_config(port, a, kafka, topic, chan_size=1000))

    seed = 20261125 + (mode == "contended")
    clients = [
        Client(f"http://127.0.0.1:{port}", n, seed, indices, names.index(f"s{n}"), mode == "contended")
        for n in range(CLIENTS)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=240)
    assert not [c for c in clients if c.is_alive()], "clients did not finish"
    assert not [e for c in clients for e in c.errors], [e for c in clients for e in c.errors]
    statuses: dict = {}
    for c in clients:
        for status, count in c.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    # The workload really exercised failures: conflicts (409) and missing documents (404).
    assert statuses.get(409, 0) > 0 and statuses.get(404, 0) > 0, statuses

    # The replay drains in the background: compare until it agrees or the bound runs out.
    assert "no differences" in compare_until_equal(a, b, names.pattern(), timeout=90)
    documents = sum(requests.get(f"{a}/{i}/_count", timeout=10).json()["count"] for i in indices)
    assert documents > 20, documents

    beans = [json.loads(r.value) for r in read_topic(kafka, topic)]
    reads = [x for x in beans if not routing.is_write(x["method"], x["requestUri"])]
    assert beans and not reads, reads[:3]


def _doc_bean(index: str, lines: list) -> bytes:
    return make_bean("POST", "/_bulk", _bulk_body(lines).decode(), "application/x-ndjson", index=index, kind="docs")


def test_copies_arriving_out_of_order_or_twice_keep_the_newest(esproxy, es_b, kafka, names):
    """The mechanism behind per-document order: A's _seq_no as an external version on B."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)

    def put(doc_id: str, version: int, source: dict) -> bytes:
        meta = {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte"}
        return _doc_bean(index, [{"index": meta}, source])

    def delete(doc_id: str, version: int) -> bytes:
        meta = {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte"}
        return _doc_bean(index, [{"delete": meta}])

    produce_raw(
        kafka,
        topic,
        [
            put("1", 5, {"n": "newest"}),
            put("1", 3, {"n": "older, arrived late"}),  # a race on A, or a replay after a crash
            put("2", 4, {"n": "deleted later"}),
            delete("2", 6),
            put("2", 4, {"n": "deleted later"}),  # the same message again: must not resurrect
            put("1", 5, {"n": "newest"}),  # the same message again: no change
            put("3", 0, {"n": "sentinel"}),
        ],
    )
    esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "3"), timeout=20, msg="sentinel replayed")
    assert es_doc(es_b, index, "1")["_source"] == {"n": "newest"}
    assert es_doc(es_b, index, "2") is None
