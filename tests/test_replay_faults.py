"""At-least-once replay under faults, on real servers: writes flow through a proxy process while the
replay is killed, its target cluster paused, or its group rebalanced; afterwards `esproxy compare`
finds B identical to A, so every write the proxy acknowledged reached B."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.kafka import create_topic, read_topic
from support.servers import DemoServer

PARTITIONS = 4


class Writer(threading.Thread):
    """Writes through the proxy until stopped: new documents, overwrites and deletes over several
    indices (so over several partitions); counts what the proxy acknowledged."""

    def __init__(self, proxy: str, indices: list[str]) -> None:
        super().__init__(daemon=True)
        self.proxy, self.indices = proxy, indices
        self.halt = threading.Event()
        self.acked = 0
        self.failed: list = []

    def run(self) -> None:
        s = requests.Session()
        i = 0
        while not self.halt.is_set():
            index = self.indices[i % len(self.indices)]
            if i % 7 == 6:
                r = s.delete(f"{self.proxy}/{index}/_doc/d{i - 14}", timeout=10)
                ok = r.status_code in (200, 404)
            else:
                doc_id = f"d{i - 21}" if i % 5 == 4 and i > 21 else f"d{i}"  # some overwrite older ones
                r = s.put(f"{self.proxy}/{index}/_doc/{doc_id}", json={"n": i, "at": time.time()}, timeout=10)
                ok = r.status_code in (200, 201)
            if ok:
                self.acked += 1
            else:
                self.failed.append((r.status_code, r.text[:200]))
            i += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)


def compare(a: str, b: str, pattern: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esproxy", "compare", "--source", a, "--target", b, "--index", pattern],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_converges(a: str, b: str, pattern: str, timeout: float = 25) -> str:
    last: list = []

    def equal() -> bool:
        last[:] = [compare(a, b, pattern)]
        return last[0].returncode == 0

    wait_until(equal, timeout=timeout, interval=0.5, msg=f"B to converge to A on {pattern}")
    return last[0].stdout


def replay_stats(admin_port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{admin_port}/_esproxy/stats", timeout=5).json()["replay"]


def committed(kafka: str, topic: str, group: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        c.close()


def setup(esproxy, es_a, kafka, names, port):
    topic, group, base = names.topic(), names.group(), names.index("w")
    create_topic(kafka, topic, partitions=PARTITIONS)
    esproxy(proxy_config(port, es_a, kafka, topic))
    return topic, group, base, Writer(f"http://127.0.0.1:{port}", [f"{base}-{k}" for k in range(6)])


def with_admin(conf: dict) -> tuple[dict, int]:
    admin = free_port()
    conf["admin"] = {"port": admin}
    return conf, admin


@pytest.mark.real
def test_sigkill_of_the_replay_under_load_resumes_from_the_committed_offsets(esproxy, es_a, es_b, kafka, names, port):
    topic, group, base, writer = setup(esproxy, es_a, kafka, names, port)
    writer.start()
    # A backlog, so that the replay is busy catching up (many small batches) when killed.
    wait_until(lambda: writer.acked >= 1300, timeout=30, msg="a backlog of writes")
    conf, admin = with_admin(replay_config(kafka, topic, group, es_b, batchSize=10))
    first = esproxy(conf)
    # Under way, with commits behind it and backlog ahead. Waits for the commit itself: how many messages that takes
    # depends on the engines' speed (1200 in 15 s held on osmem, not on a real B).
    wait_until(
        lambda: replay_stats(admin)["messages"] >= 300 and any(committed(kafka, topic, group).values()),
        timeout=30,
        msg="the first replay under way, with offsets committed",
    )
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=5)
    after_kill = committed(kafka, topic, group)
    assert any(after_kill.values()), "the replay committed nothing before it was killed"
    at_kill = writer.acked
    wait_until(lambda: writer.acked >= at_kill + 100, timeout=15, msg="writes while no replay runs")
    conf, admin = with_admin(replay_config(kafka, topic, group, es_b))
    second = esproxy(conf, timeout=30)  # joins once the killed member's session (6 s) expired
    wait_until(lambda: replay_stats(admin)["messages"] >= 1, timeout=15, msg="the second replay under way")
    writer.stop()
    assert writer.acked > 200 and not writer.failed, (writer.acked, writer.failed[:3])
    assert_converges(es_a, es_b, f"{base}-*")
    # The restarted replay read exactly what follows the offsets committed before the kill.
    records = read_topic(kafka, topic)
    expected = sum(1 for r in records if r.offset >= (after_kill.get(r.partition) or 0))
    wait_until(lambda: replay_stats(admin)["messages"] >= expected, timeout=10, msg="the backlog consumed")
    print(f"acked {writer.acked}, records {len(records)}, committed at kill {after_kill}, replayed after: {expected}")
    assert replay_stats(admin)["messages"] == expected < len(records)
    assert second.proc.poll() is None and second.count_in_log("dead letter") == 0


def test_target_cluster_paused_backs_off_and_skips_nothing(esproxy, es_a, kafka, names, port, tmp_path):
    b = DemoServer("osmem", tmp_path)  # a cluster of this test's own, to SIGSTOP
    try:
        topic, group, base, writer = setup(esproxy, es_a, kafka, names, port)
        conf = replay_config(kafka, topic, group, b.url)
        conf["destination"]["primaries"][0]["timeout"] = "1s"  # a stopped B times requests out
        replay = esproxy(conf)
        writer.start()
        wait_until(lambda: writer.acked >= 200, timeout=30, msg="writes before B stops")
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            # B answers nothing: the replay times out (1 s) and backs off, and commits stop moving.
            wait_until(lambda: replay.count_in_log("failed (attempt") >= 1, timeout=15, msg="a failed attempt")
            paused_commits = committed(kafka, topic, group)
            retries = replay.count_in_log("failed (attempt")
            wait_until(lambda: replay.count_in_log("failed (attempt") > retries, timeout=15, msg="another attempt")
            assert committed(kafka, topic, group) == paused_commits, "committed while B was stopped"
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        resumed = writer.acked
        wait_until(lambda: writer.acked >= resumed + 100, timeout=15, msg="writes after B resumed")
        writer.stop()
        assert writer.acked > 200 and not writer.failed, (writer.acked, writer.failed[:3])
        assert_converges(es_a, b.url, f"{base}-*")
        log = replay.log()
        print(f"acked {writer.acked}, retries logged {log.count('failed (attempt')}")
        assert "failed (attempt" in log and "retrying in" in log, replay.log_tail()
        assert "dead letter" not in log and "skipped" not in log
        assert replay.proc.poll() is None
    finally:
        b.stop()


@pytest.mark.real
def test_a_second_replay_joining_the_group_under_load_loses_nothing(esproxy, es_a, es_b, kafka, names, port):
    topic, group, base, writer = setup(esproxy, es_a, kafka, names, port)
    first = esproxy(replay_config(kafka, topic, group, es_b))
    writer.start()
    wait_until(lambda: writer.acked >= 200, timeout=30, msg="writes before the second member joins")
    second = esproxy(replay_config(kafka, topic, group, es_b))  # waits for its own assignment
    joined = writer.acked
    wait_until(lambda: writer.acked >= joined + 200, timeout=30, msg="writes after the rebalance")
    writer.stop()
    assert writer.acked > 200 and not writer.failed, (writer.acked, writer.failed[:3])
    assert_converges(es_a, es_b, f"{base}-*")
    assert first.count_in_log("revoked partitions") >= 1, first.log_tail()

    def assigned(proc) -> set:
        lines = [line for line in proc.log().splitlines() if "assigned partitions" in line]
        return set(lines[-1].split("assigned partitions ")[1].strip().strip("[]").split(", "))

    # After the rebalance both members own partitions, and none twice.
    one, two = assigned(first), assigned(second)
    print(f"acked {writer.acked}, first {sorted(one)}, second {sorted(two)}")
    assert one and two and not one & two and len(one | two) == PARTITIONS, (one, two)
    assert first.proc.poll() is None and second.proc.poll() is None


def test_a_replay_whose_broker_stopped_answering_stops_promptly(esproxy, es_b, own_server, names):
    """Leaving the group waits for a coordinator that does not answer for a few seconds only, not the
    whole stop timeout: the group moves on after sessionTimeout anyway."""
    broker = own_server("tansu")
    topic = names.topic()
    create_topic(broker.addr, topic, partitions=1)
    proc = esproxy(replay_config(broker.addr, topic, names.group(), es_b))
    os.kill(broker.proc.pid, signal.SIGSTOP)
    proc.proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.proc.wait(timeout=10)  # not the 25 s of the stop's timeout
    except subprocess.TimeoutExpired:
        pytest.fail(f"the replay still runs 10 s after SIGTERM:\n{proc.log_tail()}")
    assert rc == 0, proc.log_tail()
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()
