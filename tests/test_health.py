"""/_esproxy/health tells the truth: 503 with the reasons while captured writes cannot reach the
other cluster (broker stopped, target cluster stopped, dead letters), 200 again once that clears.
Stalls are real: the broker or the cluster process is SIGSTOPped, then resumed."""

from __future__ import annotations

import os
import signal

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
