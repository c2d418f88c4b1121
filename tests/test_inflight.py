"""Large writes in memory (issue 22.6): a 92 MB `_bulk` costs the proxy about twice its size, and
`maxInFlightBytes` refuses what would pass it with Elasticsearch's 429, so that nothing is lost.

The proxy's peak RSS is read from /proc/<pid>/status (VmHWM, reset through clear_refs before the
writes): a resource bound, not a timing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from support.basics import wait_until
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")

NDJSON = {"Content-Type": "application/x-ndjson"}


def bulk_body(index: str, count: int = 900, doc_bytes: int = 100_000) -> bytes:
    """900 documents of 100 KB: a 92 MB `_bulk`, half of them without an id (the proxy assigns them)."""
    filler = "x" * doc_bytes
    lines = []
    for i in range(count):
        meta = {"_index": index, "_id": str(i)} if i % 2 else {"_index": index}
        lines += (json.dumps({"index": meta}), json.dumps({"n": i, "text": filler}))
    return ("\n".join(lines) + "\n").encode()


def es_count(base: str, index: str):
    """Documents in ``index`` (None: no such index)."""
    requests.post(f"{base}/{index}/_refresh", timeout=30)
    r = requests.get(f"{base}/{index}/_count", timeout=30)
    return None if r.status_code == 404 else r.json()["count"]


def memory(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """The process's RSS now, its peak (VmHWM) reset to it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory(pid, "VmRSS")


@pytest.fixture
def proxied(esproxy, osmem_factory, kafka, names, port):
    """start(maxInFlightBytes): A, B, a topic, the replay (unless replay=False) and the proxy; (a, b, proxy
    process, base URL)."""

    def start(budget: str, replay: bool = True):
        a, b = osmem_factory(), osmem_factory()
        topic = names.topic()
        create_topic(kafka, topic, partitions=3)
        if replay:
            esproxy(replay_config(kafka, topic, names.group(), b))
        conf = proxy_config(port, a, kafka, topic)
        conf["maxInFlightBytes"] = budget
        proxy = esproxy(conf)
        base = f"http://127.0.0.1:{port}"
        requests.put(f"{base}/{names.index('warm')}/_doc/1", json={"a": 1}, timeout=10).raise_for_status()
        return a, b, proxy, base

    return start


def test_a_92mb_bulk_costs_the_proxy_at_most_two_and_a_half_times_its_size(proxied, names):
    a, b, proxy, base = proxied("512mb", replay=False)  # B's part is test_large_writes
    body = bulk_body(names.index("big"))
    before = reset_peak(proxy.pid)
    r = requests.post(f"{base}/_bulk", data=body, headers=NDJSON, timeout=120)
    assert r.status_code == 200 and r.json()["errors"] is False, r.text[:300]
    time.sleep(2)  # shipped to Kafka meanwhile: the messages are made and sent
    increase = memory(proxy.pid, "VmHWM") - before
    print(f"{len(body) / 1e6:.1f} MB _bulk: peak RSS +{increase / 1e6:.0f} MB, {increase / len(body):.2f}x the body")
    assert increase <= 2.5 * len(body)


def test_bulks_over_the_budget_get_429_and_nothing_is_lost(proxied, names):
    # Each 92 MB bulk reserves twice its size (184 MB): 400 MB take two at once, not three.
    a, b, proxy, base = proxied("400mb")
    indices = [names.index(f"bulk{i}") for i in range(3)]
    bodies = [bulk_body(index) for index in indices]
    answers: list = [None] * 3
    go = threading.Barrier(3)

    def send(i: int) -> None:
        go.wait()
        answers[i] = requests.post(f"{base}/_bulk", data=bodies[i], headers=NDJSON, timeout=120)

    before = reset_peak(proxy.pid)
    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = memory(proxy.pid, "VmHWM")
    statuses = sorted(r.status_code for r in answers)
    print(f"statuses {statuses}; peak RSS {before / 1e6:.0f} MB -> {peak / 1e6:.0f} MB")
    assert statuses == [200, 200, 429], [r.text[:300] for r in answers]
    assert peak - before <= 400 << 20  # within the budget above the baseline
    refused = next(i for i, r in enumerate(answers) if r.status_code == 429)
    r = answers[refused]
    assert r.headers["Retry-After"] == "1"
    error = r.json()
    assert error["status"] == 429 and error["error"]["type"] == "circuit_breaking_exception"
    cause = error["error"]["root_cause"][0]
    assert cause["type"] == "circuit_breaking_exception" and cause["durability"] == "TRANSIENT"
    assert cause["bytes_limit"] == 400 << 20 and cause["bytes_wanted"] > cause["bytes_limit"]
    assert cause["reason"].startswith("[in_flight_requests] Data too large")
    assert es_count(a, indices[refused]) is None  # not forwarded: nothing of it reached A

    stats = requests.get(f"{base}/_esproxy/stats", timeout=10).json()["proxy"]["in_flight"]
    assert stats == {"bytes": 0, "limit": 400 << 20, "refused": 1}
    metrics = requests.get(f"{base}/_esproxy/metrics", timeout=10).text
    assert "esproxy_inflight_refused_total 1" in metrics

    # The client retries after Retry-After, as Elasticsearch clients do with a 429: now it is taken.
    time.sleep(1)
    again = requests.post(f"{base}/_bulk", data=bodies[refused], headers=NDJSON, timeout=120)
    assert again.status_code == 200 and again.json()["errors"] is False
    assert all(es_count(a, index) == 900 for index in indices)
    # Counting rather than `esproxy compare`, which would read the 270 MB back from both clusters.
    wait_until(lambda: all(es_count(b, index) == 900 for index in indices), timeout=120, msg="B holds A's documents")
