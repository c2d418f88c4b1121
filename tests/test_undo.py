"""The undo window (issue 26): sync rules' ``guard`` (destructive writes held for an operator) and ``delay``
(a delayed follower), on the proxy -> Kafka -> replay -> B path.

- guard: ``DELETE /orders`` through the proxy (pre-fork workers) is held: B keeps ``orders``, health shows the
  hold (200, a notice), the rule's state is ``held`` with what, since when and where from; another rule's writes
  keep reaching B, the rule's own later writes wait behind the hold; a replay restart keeps it (same since);
  ``reject`` writes its dead letter with the reason and the rule goes on; the copy B -> A then brings A back
  (compare 0). ``approve`` of another held deletion deletes that index in B.
- delay: every document of a rule with ``delay: 3s`` reaches B no earlier than 3 s after it was sent and within
  the usual lag after that, measured per document; a rule without delay is not held back meanwhile; ``skip
  --until`` drops the delayed writes captured before a time (dead letters), the later ones are applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)


def _esproxy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esproxy", *args], capture_output=True, text=True, timeout=timeout)


def _sync(conf, *args: str) -> subprocess.CompletedProcess:
    return _esproxy("sync", *args, "-c", str(conf), timeout=30)


def _doc(base: str, index: str, doc_id: str) -> int:
    return requests.get(f"{base}/{index}/_doc/{doc_id}", timeout=10).status_code


def _letters(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_guard_holds_a_deletion_until_an_operator_decides(es_a, es_b, kafka, esproxy, names, tmp_path):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    orders, logs, carts = names.index("orders"), names.index("logs"), names.index("carts")
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b, deadLetterFile="dead.jsonl")
    replay["admin"] = {"port": admin}
    replay["health"] = {"maxReplayStall": "1s", "maxReplayLag": "2s"}  # a hold is neither
    replay["follow"] = {
        "rules": [
            {"name": "orders", "indices": [orders, carts], "guard": ["index_delete", "delete_by_query"]},
            {"name": "logs", "indices": [logs]},
        ]
    }
    proc = esproxy(replay)
    proxy_conf = proxy_config(port, es_a, kafka, topic)
    proxy_conf["workers"] = 2  # pre-fork: the bean carries the client and the Host it asked all the same
    esproxy(proxy_conf)
    proxy = f"http://127.0.0.1:{port}"
    base = f"http://127.0.0.1:{admin}"

    def put(index: str, doc_id: str) -> None:
        r = requests.put(f"{proxy}/{index}/_doc/{doc_id}", json={"n": doc_id}, timeout=10)
        assert r.status_code < 300, r.text

    for i in range(5):
        put(orders, str(i))
    put(carts, "c1")
    put(logs, "1")
    wait_until(lambda: _doc(es_b, orders, "4") == 200 and _doc(es_b, carts, "c1") == 200, 30, msg="followed")

    # the mistake: DELETE /orders through the proxy. A loses it, B keeps it: held
    assert requests.delete(f"{proxy}/{orders}", timeout=10).status_code == 200
    proc.wait_log(f"sync rule orders holds DELETE /{orders}", timeout=30)
    put(logs, "2")  # another rule goes on
    put(carts, "c2")  # the rule's own later write waits behind the hold
    wait_until(lambda: _doc(es_b, logs, "2") == 200, 30, msg="the other rule's write reached B")
    time.sleep(1.5)  # longer than maxReplayStall and maxReplayLag: a hold is neither
    assert _doc(es_b, orders, "1") == 200 and _doc(es_b, carts, "c2") == 404
    health = requests.get(f"{base}/_esproxy/health", timeout=10)
    assert health.status_code == 200, health.text
    notices = health.json()["notices"]
    assert [n["check"] for n in notices] == ["sync_held"], notices
    assert f"DELETE /{orders}" in notices[0]["reason"] and "1 later write(s)" in notices[0]["reason"]
    listed = _sync(proc.conf_path, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("orders "))
    assert row[1] == "held", listed.stdout
    held_line = next(line for line in listed.stdout.splitlines() if line.startswith("orders holds"))
    assert f"DELETE /{orders} (index_delete)" in held_line and "from client 127.0.0.1" in held_line, held_line
    assert f"through 127.0.0.1:{port}" in held_line, held_line
    rules = requests.get(f"{base}/_esproxy/sync/rules", timeout=10).json()["rules"]
    hold = rules[0]["held"][0]
    assert hold["kind"] == "index_delete" and hold["from"]["client"].startswith("127.0.0.1:"), hold
    since = hold["since"]
    metrics = requests.get(f"{base}/_esproxy/metrics", timeout=10).text
    assert 'esproxy_sync_held{rule="orders",' in metrics and "esproxy_healthy 1" in metrics

    # a restart keeps the hold, and when it began
    proc.terminate()
    proc = esproxy(replay)
    wait_until(
        lambda: requests.get(f"{base}/_esproxy/sync/rules", timeout=10).json()["rules"][0].get("held"), 30, msg="held"
    )
    again = requests.get(f"{base}/_esproxy/sync/rules", timeout=10).json()["rules"][0]["held"][0]
    assert again["since"] == since and again["where"] == hold["where"]
    assert _doc(es_b, orders, "1") == 200

    # reject: a dead letter with the reason; the rule goes on (c2 applied)
    rejected = _sync(proc.conf_path, "reject", "orders", "--reason", "DELETE sent by mistake, ticket 42")
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.startswith(f"rule orders: rejected: a dead letter, DELETE /{orders}"), rejected.stdout
    wait_until(lambda: _doc(es_b, carts, "c2") == 200, 30, msg="the rule goes on after the reject")
    letters = _letters(tmp_path / "dead.jsonl")
    assert len(letters) == 1 and "ticket 42" in letters[0]["deadLetter"]["reason"], letters
    assert "rejected by the operator" in letters[0]["deadLetter"]["reason"]
    assert requests.get(f"{base}/_esproxy/health", timeout=10).json().get("notices") is None
    stats = requests.get(f"{base}/_esproxy/stats", timeout=10).json()["replay"]
    assert stats["sync_decided"] == 1 and stats["rule_lanes"] == []
    assert requests.get(f"{base}/_esproxy/health", timeout=10).status_code == 200  # a decision, not a failure

    # bring A back from B: the copy in the other direction, then compare
    copied = _esproxy("sync", "copy", "--source", es_b, "--target", es_a, "--index", orders, "--settle", "0")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    compared = _esproxy("compare", "--source", es_a, "--target", es_b, "--index", orders)
    assert compared.returncode == 0 and "no differences" in compared.stdout, compared.stdout

    # approve: the deletion of carts is applied
    assert requests.delete(f"{proxy}/{carts}", timeout=10).status_code == 200
    wait_until(lambda: _sync(proc.conf_path, "list").stdout.count("orders holds") == 1, 30, msg="held")
    approved = _sync(proc.conf_path, "approve", "orders")
    assert approved.returncode == 0 and "approved" in approved.stdout, approved.stdout + approved.stderr
    wait_until(lambda: requests.head(f"{es_b}/{carts}", timeout=10).status_code == 404, 30, msg="deleted in B")
    assert _sync(proc.conf_path, "approve", "orders").returncode == 1  # nothing held any more


def test_delayed_rule_applies_each_write_after_its_delay(es_a, es_b, kafka, esproxy, names, tmp_path):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    slow, fast = names.index("slow"), names.index("fast")
    delay = 3.0
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b, deadLetterFile="dead.jsonl")
    replay["admin"] = {"port": admin}
    replay["health"] = {"maxReplayLag": "1s"}  # the delay itself does not count
    replay["follow"] = {
        "rules": [
            {"name": "slow", "indices": [slow], "rename": "{{remote_index}}-late", "delay": f"{delay:g}s"},
            {"name": "fast", "indices": [fast]},
        ]
    }
    proc = esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"
    base = f"http://127.0.0.1:{admin}"
    s = requests.Session()

    sent: dict[str, tuple[float, float]] = {}  # doc id -> (sent, acknowledged)
    seen: dict[str, float] = {}
    for i in range(8):  # a steady writer: both rules, one partition
        t0 = time.time()
        assert s.put(f"{proxy}/{slow}/_doc/{i}", json={"n": i}, timeout=10).status_code < 300
        sent[str(i)] = (t0, time.time())
        assert s.put(f"{proxy}/{fast}/_doc/{i}", json={"n": i}, timeout=10).status_code < 300
        time.sleep(0.2)
    # the rule without delay is not held back: its last write is in B before the first delayed one is due
    wait_until(lambda: _doc(es_b, fast, "7") == 200, timeout=delay, msg="the undelayed rule goes on")
    assert time.time() < sent["0"][0] + delay and _doc(es_b, f"{slow}-late", "0") == 404

    health_seen = []
    deadline = time.time() + delay + 15
    while len(seen) < len(sent) and time.time() < deadline:
        for doc_id in sent:
            if doc_id not in seen and _doc(es_b, f"{slow}-late", doc_id) == 200:
                seen[doc_id] = time.time()
        health_seen.append(s.get(f"{base}/_esproxy/health", timeout=10).status_code)
        time.sleep(0.05)
    assert len(seen) == len(sent), (seen, proc.log_tail())
    for doc_id, (t0, acked) in sent.items():
        assert seen[doc_id] - t0 >= delay, (doc_id, seen[doc_id] - t0)  # never before capture + delay
        assert seen[doc_id] - acked <= delay + 3.0, (doc_id, seen[doc_id] - acked)  # the usual lag on top
    assert set(health_seen) == {200}, health_seen  # inside the delay, not a lag

    status = _sync(proc.conf_path, "status")
    row = next(line.split() for line in status.stdout.splitlines() if line.startswith(f"{slow}-late "))
    assert row[-2] == "3s" and float(row[-1].rstrip("s")) < 3.0, status.stdout  # DELAY, LAG BEYOND DELAY
    assert float(row[-3].rstrip("s")) >= delay  # LAG counts the delay
    metrics = s.get(f"{base}/_esproxy/metrics", timeout=10).text
    assert f'esproxy_sync_delay_seconds{{index="{slow}-late",rule="slow"}} 3.0' in metrics

    # a restart inside the window loses nothing: the commit stopped before the write waiting
    assert s.put(f"{proxy}/{slow}/_doc/r", json={"n": 1}, timeout=10).status_code < 300
    wait_until(lambda: s.get(f"{base}/_esproxy/stats", timeout=10).json()["replay"]["rule_lanes"], 10, msg="waits")
    proc.terminate()
    proc = esproxy(replay)
    wait_until(lambda: _doc(es_b, f"{slow}-late", "r") == 200, timeout=delay + 20, msg="applied after the restart")

    # a bad write inside the window: skip the rule's writes captured before now (dead letters), keep later ones
    assert s.post(f"{proxy}/{slow}/_doc/bad", json={"n": -1}, timeout=10).status_code < 300
    time.sleep(0.5)  # its capture (the Kafka timestamp, when the proxy shipped it) is before `until`
    until = time.time()
    time.sleep(0.5)
    assert s.put(f"{proxy}/{slow}/_doc/good", json={"n": 1}, timeout=10).status_code < 300
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until)) + f".{int(until % 1 * 1000):03d}Z"
    skipped = _sync(proc.conf_path, "skip", "slow", "--until", stamp)
    assert skipped.returncode == 0, skipped.stderr
    wait_until(lambda: _doc(es_b, f"{slow}-late", "good") == 200, timeout=delay + 10, msg="the later write")
    assert _doc(es_b, f"{slow}-late", "bad") == 404
    letters = _letters(tmp_path / "dead.jsonl")
    assert len(letters) == 1 and "skipped by the operator" in letters[0]["deadLetter"]["reason"], letters
    assert s.get(f"{base}/_esproxy/health", timeout=10).status_code == 200
