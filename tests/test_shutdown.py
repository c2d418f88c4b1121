"""Graceful stop: SIGTERM/SIGINT finish in-flight work, flush the queue to Kafka, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from support.basics import free_port, wait_until
from support.beans import make_bean
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafka import count_messages, create_topic, produce_raw

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

WRITES = 300


def test_sigterm_drains_queue_to_kafka(esproxy, es_a, kafka, names, port):
    topic, index = names.topic(), names.index()
    proc = esproxy(proxy_config(port, es_a, kafka, topic, chan_size=10000))
    base = f"http://127.0.0.1:{port}"

    def write(i: int) -> int:
        try:
            return requests.put(f"{base}/{index}/_doc/{i}", json={"i": i, "pad": "p" * 200}, timeout=30).status_code
        except requests.RequestException:
            return 0

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(write, range(WRITES)))
    proc.proc.send_signal(signal.SIGTERM)  # as soon as every write was answered
    ok = sum(1 for s in statuses if 200 <= s < 300)
    assert ok == WRITES, f"only {ok}/{WRITES} writes succeeded: {sorted(set(statuses))}"

    start = time.monotonic()
    try:
        rc = proc.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"esproxy still running 20 s after SIGTERM:\n{proc.log_tail()}")
    assert rc == 0, f"exit code {rc}:\n{proc.log_tail()}"
    assert time.monotonic() - start < 20
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()
    # Everything answered 2xx is in Kafka: exactly once each.
    assert count_messages(kafka, topic) == ok


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_proxy_stops_cleanly(esproxy, es_a, kafka, names, port, sig):
    proc = esproxy(proxy_config(port, es_a, kafka, names.topic()))
    proc.proc.send_signal(sig)
    rc = proc.proc.wait(timeout=15)
    assert rc == 0, proc.log_tail()
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()


def test_replay_sigterm_commits_offsets(esproxy, es_b, kafka, names):
    """After a graceful stop, a restarted replay in the same group does not re-read what was done:
    the offsets were committed. Detected by deleting the doc in B behind the replay's back."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    bean = make_bean("PUT", f"/{index}/_doc/once", '{"v":1}')
    produce_raw(kafka, topic, [bean])
    first = esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "once"), timeout=20, msg="bean replayed")
    assert first.terminate() == 0, first.log_tail()
    assert first.log().rstrip().splitlines()[-1].endswith("esproxy stopped")

    assert requests.delete(f"{es_b}/{index}/_doc/once?refresh=true", timeout=10).status_code == 200
    marker = make_bean("PUT", f"/{index}/_doc/marker", '{"v":2}')
    produce_raw(kafka, topic, [marker])
    esproxy(replay_config(kafka, topic, group, es_b))
    wait_until(lambda: es_doc(es_b, index, "marker"), timeout=20, msg="marker replayed by 2nd replay")
    assert es_doc(es_b, index, "once") is None, "the committed message was replayed again"


def _stopped_within(proc, seconds: float) -> int:
    """SIGTERM, then the exit code; fails with the log if the exit takes longer than ``seconds``."""
    proc.proc.send_signal(signal.SIGTERM)
    try:
        return proc.proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"esproxy still running {seconds} s after SIGTERM:\n{proc.log_tail()}")


def test_spool_proxy_stops_promptly_with_kafka_unreachable_and_ships_at_next_start(
    esproxy, es_a, es_b, kafka, names, port
):
    """Kafka down: the spool keeps what was captured, so a stop does not wait for Kafka (stopTimeout);
    the next start, with Kafka back, ships it."""
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=1)
    conf = proxy_config(port, es_a, f"127.0.0.1:{free_port()}", topic)  # nothing listens there
    conf["source"]["proxies"][0]["durability"] = "spool"
    first = esproxy(conf)
    for i in range(5):
        r = requests.put(f"http://127.0.0.1:{port}/{index}/_doc/{i}", json={"i": i}, timeout=10)
        assert r.status_code in (200, 201), r.text

    rc = _stopped_within(first, 10)  # not the 25 s it would wait for Kafka
    assert rc == 0, first.log_tail()
    log = first.log()
    assert "5 captured write(s) stay in the spool" in log, first.log_tail()
    assert log.rstrip().splitlines()[-1].endswith("esproxy stopped"), first.log_tail()
    assert "message lost" not in log

    conf["destination"]["kafkas"][0]["brokers"] = [kafka]  # same working directory, same spool
    esproxy(conf)
    esproxy(replay_config(kafka, topic, names.group(), es_b))
    for i in range(5):
        wait_until(lambda i=i: es_doc(es_b, index, str(i)), timeout=30, msg=f"doc {i} replayed into B")


def test_replay_stops_promptly_with_kafka_unreachable(esproxy, es_b, names):
    conf = replay_config(f"127.0.0.1:{free_port()}", names.topic(), names.group(), es_b)
    proc = esproxy(conf, ready=[("ECONNREFUSED", 1)])  # bootstrapping
    rc = _stopped_within(proc, 6)  # its bootstrap alone waits 30 s for a broker
    assert rc == 0, proc.log_tail()
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()


def test_replay_stops_promptly_when_kafka_went_away_with_a_commit_pending(esproxy, own_server, names):
    """Kafka gone while the replay applies a message: the commit of it cannot be made, and the stop gives it
    up after a few seconds (the next owner replays the message again) rather than looking for a coordinator
    for kafka-python's 30 s, past the stop's own deadline."""
    broker, b = own_server("tansu"), own_server("osmem")
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(broker.addr, topic, partitions=1)
    admin = free_port()
    proc = esproxy({**replay_config(broker.addr, topic, group, b.url), "admin": {"port": admin}})

    def consumed() -> int:
        return requests.get(f"http://127.0.0.1:{admin}/_esproxy/stats", timeout=5).json()["replay"]["messages"]

    os.kill(b.proc.pid, signal.SIGSTOP)  # the replay's write of it waits for B
    produce_raw(broker.addr, topic, [make_bean("PUT", f"/{index}/_doc/pending", '{"v":1}')])
    wait_until(lambda: consumed() == 1, timeout=20, msg="the message consumed")
    broker.stop()
    os.kill(b.proc.pid, signal.SIGCONT)
    wait_until(lambda: es_doc(b.url, index, "pending"), timeout=20, msg="the message applied to B")
    # a commit of it tried and given up: within COMMIT_TIMEOUT (3 s), not kafka-python's 30 s
    proc.wait_log("kafka commit failed", timeout=20)

    rc = _stopped_within(proc, 15)  # not the 25 s of stopTimeout
    assert rc == 0, proc.log_tail()
    assert proc.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()


def test_in_memory_queue_with_kafka_unreachable_is_tried_to_the_end_then_reported_lost(esproxy, es_a, names, port):
    """durability: none — the queue is lost on exit: the stop says so when it starts, keeps trying for its
    whole timeout (the writes' only chance), and logs each write it could not ship with `message lost:`."""
    index = names.index()
    conf = proxy_config(port, es_a, f"127.0.0.1:{free_port()}", names.topic(), chan_size=100)
    conf["source"]["proxies"][0]["durability"] = "none"
    conf["stopTimeout"] = "5s"  # the shortest allowed; the default (25 s) is the same code waiting longer
    proc = esproxy(conf)
    for i in range(3):
        r = requests.put(f"http://127.0.0.1:{port}/{index}/_doc/{i}", json={"i": i}, timeout=10)
        assert r.status_code in (200, 201), r.text

    started = time.monotonic()
    rc = _stopped_within(proc, 5 + 10)
    assert time.monotonic() - started >= 5, proc.log_tail()  # it tried to the end of its timeout
    assert rc == 0, proc.log_tail()
    log = proc.log()
    assert "stopping: 3 captured write(s) are only in memory (durability: none)" in log, proc.log_tail()
    assert "shipping them to Kafka for up to 5s" in log, proc.log_tail()
    lost = [line for line in log.splitlines() if "message lost: " in line]
    assert len(lost) == 3, proc.log_tail()
    assert all(index in line for line in lost), lost
    assert log.rstrip().splitlines()[-1].endswith("esproxy stopped"), proc.log_tail()
