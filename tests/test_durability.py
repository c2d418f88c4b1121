"""Nothing acknowledged is lost on the proxy side: the spool across SIGKILL, broker outages, a full spool.

Every check ends with `esproxy compare`: B must hold exactly what A holds once the stream drained.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from support.basics import wait_until
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal
from support.kafka import create_topic
from support.load import Writer


def spool_config(port: int, a: str, kafka: str, topic: str, **spool) -> dict:
    conf = proxy_config(port, a, kafka, topic)
    conf["source"]["proxies"][0]["durability"] = "spool"
    if spool:
        conf["spool"] = spool
    return conf


@pytest.mark.real
def test_sigkill_of_the_proxy_under_load_loses_nothing(esproxy, osmem_factory, kafka, names, port, tmp_path):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    first = esproxy(spool_config(port, a, kafka, topic))
    writer = Writer(f"http://127.0.0.1:{port}", index, 100000)
    writer.start()
    wait_until(lambda: len(writer.acked) >= 150, timeout=30, msg="writes flowing")
    os.killpg(first.proc.pid, signal.SIGKILL)  # mid-load: some requests are in flight
    first.proc.wait(timeout=10)
    acked_before = len(writer.acked)
    esproxy(spool_config(port, a, kafka, topic))  # same working directory, same spool
    wait_until(lambda: len(writer.acked) >= acked_before + 100, timeout=30, msg="writes flowing again")
    writer.stop = True
    writer.join(timeout=15)
    out = compare_until_equal(a, b, names.pattern())
    assert "no differences" in out
    assert requests.get(f"{a}/{index}/_count", timeout=5).json()["count"] >= acked_before


@pytest.fixture
def own_broker(own_server):
    return own_server("tansu")


def test_broker_paused_during_load_then_resumed(esproxy, osmem_factory, own_broker, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(own_broker.addr, topic, partitions=3)
    esproxy(replay_config(own_broker.addr, topic, names.group(), b))
    esproxy(spool_config(port, a, own_broker.addr, topic))
    base = f"http://127.0.0.1:{port}"
    writer = Writer(base, index, 400, pause=0.01)
    writer.start()
    wait_until(lambda: len(writer.acked) >= 50, timeout=30, msg="writes flowing")
    os.kill(own_broker.proc.pid, signal.SIGSTOP)
    paused_at = len(writer.acked)
    # The proxy keeps serving writes from the spool while the broker is away; the backlog shows.
    wait_until(lambda: len(writer.acked) >= paused_at + 60, timeout=30, msg="writes acknowledged during the pause")
    stats = requests.get(f"{base}/_esproxy/stats", timeout=5).json()
    assert stats["proxy"]["spool"]["records"] > 0, stats["proxy"]["spool"]
    time.sleep(3)
    os.kill(own_broker.proc.pid, signal.SIGCONT)
    writer.join(timeout=60)
    assert writer.failed == 0 and len(writer.acked) == 400
    compare_until_equal(a, b, names.pattern())
    wait_until(
        lambda: requests.get(f"{base}/_esproxy/stats", timeout=5).json()["proxy"]["spool"]["records"] == 0,
        timeout=30,
        msg="spool drained",
    )


def test_full_spool_rejects_writes_before_the_primary(esproxy, osmem_factory, own_broker, names, port):
    a = osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(own_broker.addr, topic, partitions=1)
    esproxy(spool_config(port, a, own_broker.addr, topic, maxBytes=1500, whenFull="reject"))
    base = f"http://127.0.0.1:{port}"
    assert requests.put(f"{base}/{index}/_doc/warm", json={"n": 0}, timeout=10).status_code == 201
    os.kill(own_broker.proc.pid, signal.SIGSTOP)
    statuses = []
    for i in range(30):
        r = requests.put(f"{base}/{index}/_doc/{i}", json={"n": i, "pad": "x" * 100}, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 503:
            err = r.json()
            assert err["status"] == 503 and err["error"]["type"] == "esproxy_spool_full_exception", err
            assert requests.get(f"{a}/{index}/_doc/{i}", timeout=5).json()["found"] is False  # never forwarded
            break
    assert statuses[-1] == 503 and statuses[:-1] and set(statuses[:-1]) == {201}, statuses
    assert requests.get(f"{base}/{index}/_doc/warm", timeout=10).status_code == 200  # reads still served
    os.kill(own_broker.proc.pid, signal.SIGCONT)
    wait_until(
        lambda: requests.put(f"{base}/{index}/_doc/after", json={"n": 1}, timeout=10).status_code == 201,
        timeout=60,
        interval=1,
        msg="writes accepted once the spool drained",
    )


def test_full_spool_blocks_writes_until_kafka_is_back(esproxy, osmem_factory, own_broker, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(own_broker.addr, topic, partitions=1)
    esproxy(replay_config(own_broker.addr, topic, names.group(), b))
    esproxy(spool_config(port, a, own_broker.addr, topic, maxBytes=1500, whenFull="block"))
    base = f"http://127.0.0.1:{port}"
    os.kill(own_broker.proc.pid, signal.SIGSTOP)
    writer = Writer(base, index, 25)
    writer.start()
    wait_until(lambda: writer.acked, timeout=20, msg="first writes")
    time.sleep(3)
    assert writer.is_alive() and len(writer.acked) < 25  # blocked: backpressure, not an error
    assert writer.failed == 0
    os.kill(own_broker.proc.pid, signal.SIGCONT)
    writer.join(timeout=60)
    assert len(writer.acked) == 25 and writer.failed == 0
    compare_until_equal(a, b, names.pattern())


@pytest.mark.real
@pytest.mark.parametrize("durability", ["kafka", "none"])
def test_other_durability_modes_replicate(durability, esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    conf = proxy_config(port, a, kafka, topic)
    conf["source"]["proxies"][0]["durability"] = durability
    esproxy(conf)
    writer = Writer(f"http://127.0.0.1:{port}", index, 40)
    writer.run()
    assert len(writer.acked) == 40
    compare_until_equal(a, b, names.pattern())


def test_stop_with_the_broker_paused_leaves_the_spool_for_the_next_start(
    esproxy, osmem_factory, own_broker, names, port
):
    """Kafka was taking writes, then stopped answering: a stop does not wait out its timeout for it
    (the spool keeps what is left), and the next start ships it."""
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(own_broker.addr, topic, partitions=1)
    conf = spool_config(port, a, own_broker.addr, topic)
    first = esproxy(conf)
    base = f"http://127.0.0.1:{port}"

    def put(ids: range) -> None:
        for i in ids:
            r = requests.put(f"{base}/{index}/_doc/{i}", json={"i": i}, timeout=10)
            assert r.status_code in (200, 201), r.text

    def shipped() -> bool:
        return requests.get(f"{base}/_esproxy/stats", timeout=5).json()["proxy"]["spool"]["records"] == 0

    put(range(10))
    wait_until(shipped, timeout=20, msg="the first writes shipped")
    os.kill(own_broker.proc.pid, signal.SIGSTOP)
    put(range(10, 20))  # answered: they are in the spool

    first.proc.send_signal(signal.SIGTERM)
    rc = first.proc.wait(timeout=15)  # under the 25 s it would wait for Kafka
    assert rc == 0, first.log_tail()
    assert "captured write(s) stay in the spool (Kafka acknowledged nothing" in first.log(), first.log_tail()
    assert first.log().rstrip().splitlines()[-1].endswith("esproxy stopped"), first.log_tail()

    os.kill(own_broker.proc.pid, signal.SIGCONT)
    esproxy(conf)  # same working directory, same spool
    esproxy(replay_config(own_broker.addr, topic, names.group(), b))
    compare_until_equal(a, b, names.pattern())
    assert requests.get(f"{b}/{index}/_count", timeout=5).json()["count"] == 20
