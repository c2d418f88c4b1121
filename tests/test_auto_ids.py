"""Writes that let the primary choose the id get it from the proxy (assignIds), so that every write
in flight at a crash can be settled: B ends equal to A with no manual step.

Each test ends with `esproxy compare`: B must hold exactly what A holds once the stream drained.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal

import pytest
import requests
from support.basics import kill_group, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic
from support.load import WriterThread

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

NDJSON = {"Content-Type": "application/x-ndjson"}
ES_ID = re.compile(r"^[A-Za-z0-9_-]{20}$")


def spool_config(port: int, a: str, kafka: str, topic: str, **proxy: object) -> dict:
    # A short primary timeout: writes of unknown outcome are settled once it is over (plus a grace).
    conf = proxy_config(port, a, kafka, topic, timeout="3s")
    conf["source"]["proxies"][0].update({"durability": "spool", **proxy})
    return conf


def bulk_body(actions: list[dict], n: int) -> bytes:
    return b"".join(
        json.dumps(a).encode() + b"\n" + json.dumps({"n": n, "k": i}).encode() + b"\n" for i, a in enumerate(actions)
    )


class AutoIdWriter(WriterThread):
    """Auto-id writes only: single documents and bulks (index in the action or the URL, index and
    create verbs). Remembers the (index, id) of every acknowledged document."""

    def __init__(self, base: str, index: str, count: int) -> None:
        super().__init__(base, index, count)
        self.acked: list[tuple[str, str]] = []
        self.requests_acked = 0

    def write(self, s: requests.Session, i: int) -> bool:
        if i % 3 == 0:
            r = s.post(f"{self.base}/{self.index}/_doc", json={"n": i}, timeout=30)
            ok = r.status_code == 201
            docs = [(r.json()["_index"], r.json()["_id"])] if ok else []
        else:
            if i % 3 == 1:
                url, actions = f"{self.base}/_bulk", [{"index": {"_index": self.index}}] * 3
            else:
                url, actions = f"{self.base}/{self.index}/_bulk", [{"create": {}}, {"index": {}}]
            r = s.post(url, data=bulk_body(actions, i), headers=NDJSON, timeout=30)
            ok = r.status_code == 200 and not r.json()["errors"]
            docs = [(v["_index"], v["_id"]) for item in r.json()["items"] for v in item.values()] if ok else []
        if ok:
            self.acked += docs
            self.requests_acked += 1
        return ok


def requests_unread_by(port: int) -> int:
    """Connections to 127.0.0.1:port whose received bytes the server has not read yet."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            rx_queue = int(fields[4].split(":")[1], 16)
            if local_port == port and rx_queue > 0:
                count += 1
    return count


def test_client_answers_look_as_before_and_b_gets_as_ids(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    reference = osmem_factory()  # answers auto-id writes itself: what the client saw before
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    esproxy(spool_config(port, a, kafka, topic))
    base = f"http://127.0.0.1:{port}"
    seen: list[tuple[str, str]] = []

    # Single document: the same status, fields and headers as A's own auto-id answer.
    direct = requests.post(f"{reference}/{index}/_doc?refresh=true", json={"n": 0}, timeout=10)
    proxied = requests.post(f"{base}/{index}/_doc?refresh=true", json={"n": 1}, timeout=10)
    assert proxied.status_code == direct.status_code == 201, proxied.text
    assert set(proxied.json()) == set(direct.json())
    assert proxied.json()["result"] == "created" and proxied.json()["_version"] == 1
    assert ES_ID.match(proxied.json()["_id"])
    assert {k.lower() for k in proxied.headers} == {k.lower() for k in direct.headers}
    seen.append((index, proxied.json()["_id"]))

    # Bulk: every item keeps the verb the client sent, index in the action or in the URL.
    actions = [{"index": {"_index": index}}, {"create": {"_index": index}}, {"index": {}}, {"create": {}}]
    direct = requests.post(f"{reference}/{index}/_bulk", data=bulk_body(actions, 2), headers=NDJSON, timeout=10)
    proxied = requests.post(f"{base}/{index}/_bulk", data=bulk_body(actions, 2), headers=NDJSON, timeout=10)
    assert proxied.status_code == direct.status_code == 200, proxied.text
    items, direct_items = proxied.json()["items"], direct.json()["items"]
    assert [list(i) for i in items] == [list(i) for i in direct_items] == [["index"], ["create"], ["index"], ["create"]]
    for item, direct_item in zip(items, direct_items):
        r, d = next(iter(item.values())), next(iter(direct_item.values()))
        assert set(r) == set(d) and r["status"] == d["status"] == 201 and r["result"] == "created", item
        assert ES_ID.match(r["_id"]) and r["_index"] == index
        seen.append((index, r["_id"]))

    # A gzip'ed bulk, with an action that names its document and one that does not.
    body = gzip.compress(bulk_body([{"index": {"_index": index, "_id": "mine"}}, {"index": {"_index": index}}], 3))
    proxied = requests.post(f"{base}/_bulk", data=body, headers={**NDJSON, "Content-Encoding": "gzip"}, timeout=10)
    assert proxied.status_code == 200 and not proxied.json()["errors"], proxied.text
    ids = [item["index"]["_id"] for item in proxied.json()["items"]]
    assert ids[0] == "mine" and ES_ID.match(ids[1])
    seen += [(index, doc_id) for doc_id in ids]

    assert len(set(seen)) == len(seen) == 1 + 4 + 2
    for idx, doc_id in seen:
        assert es_doc(a, idx, doc_id) is not None, doc_id  # the id the client saw is A's
    assert "no differences" in compare_until_equal(a, b, names.pattern())
    for idx, doc_id in seen:
        assert es_doc(b, idx, doc_id)["_source"] == es_doc(a, idx, doc_id)["_source"]


def test_assign_ids_false_keeps_as_own_ids(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic)
    esproxy(replay_config(kafka, topic, names.group(), b))
    esproxy(spool_config(port, a, kafka, topic, assignIds=False))
    base = f"http://127.0.0.1:{port}"
    r = requests.post(f"{base}/{index}/_doc", json={"n": 1}, timeout=10)
    assert r.status_code == 201 and r.json()["result"] == "created"
    r = requests.post(f"{base}/{index}/_bulk", data=bulk_body([{"index": {}}], 1), headers=NDJSON, timeout=10)
    assert r.status_code == 200 and not r.json()["errors"]
    assert "no differences" in compare_until_equal(a, b, names.pattern())


@pytest.fixture
def own_a(own_server):
    return own_server("osmem")


def test_sigkill_of_the_proxy_with_auto_id_writes_in_flight_settles_them_all(
    esproxy, own_a, osmem_factory, kafka, names, port
):
    a, b = own_a.url, osmem_factory()
    topic = names.topic()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    conf = spool_config(port, a, kafka, topic)
    first = esproxy(conf)
    base = f"http://127.0.0.1:{port}"
    writers = [AutoIdWriter(base, names.index(f"w{i}"), 90) for i in range(4)]
    for w in writers:
        w.start()
    wait_until(lambda: sum(w.requests_acked for w in writers) >= 40, timeout=30, msg="writes flowing")
    # Pause A: the writes being forwarded now wait, unread, at A; kill the proxy while they do.
    os.kill(own_a.proc.pid, signal.SIGSTOP)
    wait_until(lambda: requests_unread_by(own_a.port) >= 2, timeout=15, msg="writes in flight at A")
    kill_group(first.proc, signal.SIGKILL)
    first.proc.wait(timeout=10)
    acked_before = sum(w.requests_acked for w in writers)
    # A resumes and applies them, but nobody hears of it: only the spool's intents know.
    os.kill(own_a.proc.pid, signal.SIGCONT)
    wait_until(lambda: requests_unread_by(own_a.port) == 0, timeout=15, msg="A read what was in flight")
    second = esproxy(conf)  # same working directory, same spool
    for w in writers:
        w.join(timeout=120)
        assert not w.is_alive()
    assert sum(w.requests_acked for w in writers) > acked_before  # writes went on after the restart
    assert second.count_in_log("cannot settle") == 0, second.log_tail()
    # Read back from A once A is done with them: the primary's timeout (3 s) and a grace after they were sent.
    second.wait_log("document(s) of a write whose outcome was unknown", timeout=30)
    assert "no differences" in compare_until_equal(a, b, names.pattern())
    acked = {doc for w in writers for doc in w.acked}
    indices = ",".join(w.index for w in writers)
    counts = [requests.get(f"{url}/{indices}/_count", timeout=10).json()["count"] for url in (a, b)]
    assert counts[0] == counts[1] >= len(acked)  # A also holds what it applied unacknowledged: so does B


def test_sigkill_of_a_worker_with_auto_id_writes_in_flight_settles_them_all(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic = names.topic()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    conf = spool_config(port, a, kafka, topic)
    conf["workers"] = 2
    proc = esproxy(conf)
    base = f"http://127.0.0.1:{port}"
    proc.wait_log("worker serving", count=2)
    writers = [AutoIdWriter(base, names.index(f"w{i}"), 400) for i in range(6)]
    for w in writers:
        w.start()
    wait_until(lambda: sum(w.requests_acked for w in writers) >= 60, timeout=30, msg="writes flowing")
    # Kill a busy worker; until one had writes in flight (six writers keep both busy: almost always the first).
    for kills in range(1, 6):
        victim = requests.get(f"{base}/_esproxy/stats", timeout=5).json()["workers"][kills % 2]
        os.kill(victim, signal.SIGKILL)
        proc.wait_log("died (exit SIGKILL); starting another", count=kills, timeout=10)
        if proc.count_in_log("the dead worker had in flight"):
            break
        wait_until(
            lambda: len(requests.get(f"{base}/_esproxy/stats", timeout=5).json()["workers"]) == 2,
            timeout=15,
            msg="respawn",
        )
    assert proc.count_in_log("the dead worker had in flight"), proc.log_tail()
    acked_at_kill = sum(w.requests_acked for w in writers)
    wait_until(lambda: sum(w.requests_acked for w in writers) >= acked_at_kill + 60, timeout=30, msg="writes again")
    for w in writers:
        w.stop = True
    for w in writers:
        w.join(timeout=30)
    assert proc.count_in_log("cannot settle") == 0, proc.log_tail()
    assert "no differences" in compare_until_equal(a, b, names.pattern())
    acked = {doc for w in writers for doc in w.acked}
    indices = ",".join(w.index for w in writers)
    counts = [requests.get(f"{url}/{indices}/_count", timeout=10).json()["count"] for url in (a, b)]
    assert counts[0] == counts[1] >= len(acked)
