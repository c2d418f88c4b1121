"""/_esproxy/health tells the truth: 503 with the reasons while captured writes cannot reach the
other cluster (broker stopped, target cluster stopped, dead letters), 200 again once that clears.
Stalls are real: the broker or the cluster process is SIGSTOPped, then resumed."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from support.basics import free_port, wait_until
from support.beans import make_bean
from support.configs import replay_config
from support.elastic import es_doc
from support.kafka import create_topic, produce_raw
from support.prometheus import metric, parse_prometheus
from support.servers import DemoServer

SHORT = {"maxShipDelay": "2s", "maxProduceFailing": "2s", "maxReplayStall": "2s", "maxReplayLag": "3s"}


def health(url: str) -> tuple[int, dict]:
    r = requests.get(url + "/_esproxy/health", timeout=5)
    return r.status_code, r.json()


def checks(url: str) -> set:
    return {p["check"] for p in health(url)[1]["reasons"]}


def scrape(url: str) -> dict:
    r = requests.get(url + "/_esproxy/metrics", timeout=5)
    assert r.status_code == 200, r.text
    return parse_prometheus(r.text)


def stats(url: str) -> dict:
    return requests.get(url + "/_esproxy/stats", timeout=5).json()


def assert_unhealthy_shape(doc: dict, pid: int) -> None:
    assert doc["status"] == 503 and doc["health"] == "unhealthy" and doc["pid"] == pid and doc["version"]
    error = doc["error"]
    assert error["type"] == "esproxy_unhealthy_exception"
    assert [c["reason"] for c in error["root_cause"]] == [r["reason"] for r in doc["reasons"]]
    assert all(c["type"] == "esproxy_unhealthy_exception" for c in error["root_cause"])
    assert error["reason"] == "; ".join(r["reason"] for r in doc["reasons"])


@pytest.fixture
def broker(own_server):
    return own_server("tansu")


@pytest.mark.parametrize("durability", ["spool", "none"])
def test_proxy_unhealthy_while_the_broker_is_stopped(esproxy, es_a, broker, names, port, durability):
    topic, index = names.topic(), names.index()
    proxy = esproxy(
        {
            "chanSize": 8,
            "health": SHORT,
            "source": {"proxies": [{"port": port, "host": "127.0.0.1", "durability": durability}]},
            "destination": {"primaries": [{"url": es_a}], "kafkas": [{"topic": topic, "brokers": [broker.addr]}]},
        }
    )
    proxy.wait_log("kafka producer for topic")
    url = f"http://127.0.0.1:{port}"
    status, doc = health(url)
    assert status == 200 and doc["status"] == "ok" and doc["health"] == "ok" and doc["reasons"] == []
    assert doc["pid"] == proxy.pid

    os.killpg(broker.proc.pid, signal.SIGSTOP)  # the broker hangs: connections open, no answers
    assert requests.put(f"{url}/{index}/_doc/1", json={"n": 1}, timeout=10).status_code == 201
    wait_until(lambda: "ship_delay" in checks(url), timeout=8, msg="503 ship_delay")
    status, doc = health(url)
    assert status == 503, doc
    assert_unhealthy_shape(doc, proxy.pid)
    assert "health.maxShipDelay" in doc["error"]["reason"]
    assert stats(url)["proxy"]["oldest_unshipped_seconds"] > 2
    samples = scrape(url)
    assert metric(samples, "esproxy_oldest_unshipped_seconds") > 2
    assert metric(samples, "esproxy_healthy") == 0
    assert metric(samples, "esproxy_health_problem", check="ship_delay") == 1

    if durability == "spool":
        # The shipper's produce waits for the topic's metadata (max_block_ms, 10 s), fails, keeps the
        # write in the spool and tries again: the failures are counted by reason.
        wait_until(lambda: "producer_failing" in checks(url), timeout=30, msg="503 producer_failing")
        failed = stats(url)["proxy"]["kafka"]["failed"][topic]
        (reason, count), *_ = failed.items()
        assert count >= 1 and reason in health(url)[1]["error"]["reason"]
        assert metric(scrape(url), "esproxy_kafka_produce_failed_total", topic=topic, reason=reason) == count

    os.killpg(broker.proc.pid, signal.SIGCONT)
    status, doc = wait_until(lambda: (lambda h: h if h[0] == 200 else None)(health(url)), timeout=40, msg="200")
    assert doc["health"] == "ok" and doc["reasons"] == []
    proxy_stats = stats(url)["proxy"]
    assert proxy_stats["oldest_unshipped_seconds"] == 0 and proxy_stats["kafka"]["failing_seconds"] == {}
    # durability: none counts a write as produced in the broker's callback, after the queue let it go
    # (which is what cleared ship_delay): wait for it.
    wait_until(lambda: stats(url)["proxy"]["kafka"]["produced"].get(topic) == 1, timeout=10, msg="produced 1")
    assert metric(scrape(url), "esproxy_healthy") == 1


@pytest.mark.real
def test_replay_unhealthy_while_the_target_cluster_is_stopped(esproxy, kafka, names, tmp_path):
    target = DemoServer("osmem", tmp_path)
    try:
        topic, group, index = names.topic(), names.group(), names.index()
        create_topic(kafka, topic)
        admin = free_port()
        conf = replay_config(kafka, topic, group, target.url)
        conf["destination"]["primaries"][0]["timeout"] = "30s"
        replay = esproxy({**conf, "health": SHORT, "admin": {"port": admin}})
        url = f"http://127.0.0.1:{admin}"
        produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/1", '{"n":1}')])
        wait_until(lambda: es_doc(target.url, index, "1"), timeout=20, msg="first write replayed")
        row = wait_until(lambda: stats(url)["replay"]["consumer_lag"], timeout=10, msg="lag row")[0]
        assert row["topic"] == topic and row["lag_seconds"] == 0 and row["stalled_seconds"] == 0
        assert health(url)[0] == 200

        os.killpg(target.proc.pid, signal.SIGSTOP)
        produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/2", '{"n":2}')])
        wait_until(lambda: {"replay_stalled", "replay_lag"} <= checks(url), timeout=15, msg="503 stalled, lagging")
        status, doc = health(url)
        assert status == 503
        assert_unhealthy_shape(doc, replay.pid)
        assert f"{topic}-0" in doc["error"]["reason"]
        row = stats(url)["replay"]["consumer_lag"][0]
        assert row["lag_seconds"] > 3 and row["stalled_seconds"] > 2 and row["oldest_offset"] == 1
        samples = scrape(url)
        where = {"group": group, "topic": topic, "partition": "0"}
        assert metric(samples, "esproxy_consumer_lag_seconds", **where) > 3
        assert metric(samples, "esproxy_replay_stalled_seconds", **where) > 2
        assert metric(samples, "esproxy_health_problem", check="replay_stalled") == 1

        os.killpg(target.proc.pid, signal.SIGCONT)
        wait_until(lambda: health(url)[0] == 200, timeout=30, msg="200 once the cluster answers")
        assert es_doc(target.url, index, "2")
        row = stats(url)["replay"]["consumer_lag"][0]
        assert row["lag_seconds"] == 0 and row["stalled_seconds"] == 0 and row["oldest_offset"] is None
    finally:
        os.killpg(target.proc.pid, signal.SIGCONT)
        target.stop()


@pytest.mark.real
def test_dead_letters_make_health_503_for_the_window(esproxy, es_b, kafka, names):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic)
    admin = free_port()
    replay = esproxy(
        {**replay_config(kafka, topic, group, es_b), "health": {"deadLetterWindow": "4s"}, "admin": {"port": admin}}
    )
    url = f"http://127.0.0.1:{admin}"
    assert health(url)[0] == 200
    produce_raw(kafka, topic, [b"not a bean {"])
    wait_until(lambda: "dead_letters" in checks(url), timeout=20, msg="503 dead_letters")
    status, doc = health(url)
    assert status == 503 and doc["reasons"][0]["check"] == "dead_letters"
    assert_unhealthy_shape(doc, replay.pid)
    assert "1 dead letter(s)" in doc["error"]["reason"]
    assert metric(scrape(url), "esproxy_dead_letters_total") == 1
    wait_until(lambda: health(url)[0] == 200, timeout=15, msg="200 once the window passed")
    assert metric(scrape(url), "esproxy_dead_letters_total") == 1  # the counter stays


def _holding_consumer(kafka: str, topic: str, group: str):
    """A member of ``group`` that holds every partition of ``topic`` and consumes nothing: it polls until it is
    assigned them, then only heartbeats. Its assignor (roundrobin) is not the replay's (range), so the replay
    cannot join the group while it is there: no replay holds a partition, none is applied."""
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    c = KafkaConsumer(
        bootstrap_servers=kafka,
        group_id=group,
        client_id="holder",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        partition_assignment_strategy=[RoundRobinPartitionAssignor],
    )
    c.subscribe([topic])
    # A new group's first join can take a while on a loaded machine (the broker's join delay, then a sync): a
    # setup wait, not a figure.
    wait_until(lambda: c.poll(timeout_ms=200) is not None and len(c.assignment()) == 2, timeout=60, msg="held")
    return c


@pytest.mark.real
def test_replay_unhealthy_while_no_member_of_its_group_consumes(esproxy, es_b, kafka, names):
    """Writes wait in partitions that no replay applies (the group's other member holds them and consumes
    nothing; the replay cannot join): 503 replay_unassigned naming them with their lag; 200 once that member
    commits them (a member of the group consuming them is all the check asks for)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=2)
    holder = _holding_consumer(kafka, topic, group)
    try:
        for partition in (0, 1):
            beans = [make_bean("PUT", f"/{index}/_doc/{partition}-{i}", '{"n":1}') for i in range(3)]
            produce_raw(kafka, topic, beans, partition=partition)
        admin = free_port()
        conf = {**replay_config(kafka, topic, group, es_b), "health": {"maxUnassigned": "3s"}, "admin": {"port": admin}}
        replay = esproxy(conf, ready=[("subscribed to", 1)])
        url = f"http://127.0.0.1:{admin}"
        assert stats(url)["replay"]["consumer_lag"] == []  # it holds nothing: no figures of its own
        wait_until(lambda: "replay_unassigned" in checks(url), timeout=30, interval=0.5, msg="503 replay_unassigned")
        status, doc = health(url)
        assert status == 503
        assert_unhealthy_shape(doc, replay.pid)
        reason = next(r["reason"] for r in doc["reasons"] if r["check"] == "replay_unassigned")
        assert f"{topic}-0 (lag " in reason and f"{topic}-1 (lag " in reason, reason
        assert f"group {group}" in reason and "health.maxUnassigned: 3.0s" in reason, reason
        rows = stats(url)["replay"]["unassigned"]
        assert [(r["topic"], r["partition"]) for r in rows] == [(topic, 0), (topic, 1)]
        assert all(r["lag"] >= 1 and r["committed"] is None and r["waiting_seconds"] > 3 for r in rows), rows
        samples = scrape(url)
        assert metric(samples, "esproxy_replay_unassigned_seconds", group=group, topic=topic, partition="1") > 3
        assert metric(samples, "esproxy_health_problem", check="replay_unassigned") == 1

        tps = [TopicPartition(topic, p) for p in (0, 1)]
        holder.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in holder.end_offsets(tps).items()})
        wait_until(lambda: health(url)[0] == 200, timeout=20, interval=0.5, msg="200 once the holder committed")
        assert stats(url)["replay"]["unassigned"] == []
    finally:
        holder.close()


@pytest.mark.real
def test_an_idle_replay_of_a_group_whose_other_member_consumes_stays_healthy(esproxy, es_b, kafka, names):
    """Two replays of one group, one partition: the one that holds nothing sees writes wait in the partition it
    does not hold for longer than health.maxUnassigned, but the group's committed offset moves: 200."""
    from kafka import KafkaProducer

    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(kafka, topic, partitions=1)
    # the holder applies 10 writes a second, 16 a second come: the partition lags all along, its commits move
    conf = replay_config(kafka, topic, group, es_b, maxDocsPerSecond=10, batchSize=5)
    ports = [free_port(), free_port()]
    for admin in ports:  # each logs `assigned partitions` (the idle one: []) once its join is complete
        esproxy({**conf, "health": {"maxUnassigned": "3s"}, "admin": {"port": admin}})
    urls = [f"http://127.0.0.1:{admin}" for admin in ports]

    def idle_one() -> str:
        """The admin URL of the replay that holds nothing, once the other holds the partition."""
        idle = [url for url in urls if not stats(url)["replay"]["consumer_lag"]]
        return idle[0] if len(idle) == 1 else ""

    produce_raw(kafka, topic, [make_bean("PUT", f"/{index}/_doc/0", '{"n":0}')])
    idle = wait_until(idle_one, timeout=30, interval=0.5, msg="one replay holding the partition")
    wait_until(lambda: es_doc(es_b, index, "0"), timeout=20, msg="the first write replayed")
    seen_waiting = False

    def still_healthy() -> None:
        nonlocal seen_waiting
        status, doc = health(idle)
        assert status == 200, doc
        seen_waiting = seen_waiting or bool(stats(idle)["replay"]["unassigned"])

    producer = KafkaProducer(bootstrap_servers=kafka, acks=1)
    try:
        n = 0
        for _ in range(20):  # 10 s
            for _ in range(8):
                n += 1
                producer.send(topic, make_bean("PUT", f"/{index}/_doc/{n}", '{"n":1}'), partition=0)
            producer.flush(timeout=10)
            still_healthy()
            time.sleep(0.5)
    finally:
        producer.close()
    while not es_doc(es_b, index, str(n)):
        still_healthy()
        time.sleep(0.3)
    assert seen_waiting  # the idle replay did see writes wait in the partition it does not hold
