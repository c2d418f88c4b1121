"""The log lines the spec declares stable (format, readiness lines, Kafka and access lines)."""

from __future__ import annotations

import json
import re

import requests
from support.beans import writes_of
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(?P<level>[A-Z ]{5})\] \d+ --- \[.{5}\] \[[^\]]*\]  : (?P<msg>.*)$"
)


def messages(log: str) -> list:
    """The message part of every log line; fails on a line not in the spec's format."""
    out = []
    for line in log.splitlines():
        m = LINE.match(line)
        assert m, f"log line not in the spec's format: {line!r}"
        out.append(m.group("msg"))
    return out


def json_after(msgs: list, prefix: str) -> list:
    return [json.loads(m[len(prefix) :].strip()) for m in msgs if m.startswith(prefix)]


def test_proxy_log_lines(esproxy, es_a, kafka, names, port):
    topic, index = names.topic(), names.index()
    conf = proxy_config(port, es_a, kafka, topic)
    conf["source"]["proxies"][0]["accesslog"] = True
    conf["logLevel"] = "debug"  # the two lines per Kafka message are DEBUG lines
    proc = esproxy(conf)
    r = requests.put(f"http://127.0.0.1:{port}/{index}/_doc/1", json={"n": 1}, timeout=10)
    assert r.status_code == 201
    proc.wait_log("kafka.produce result", timeout=15)
    proc.wait_log("access log: ", timeout=15)
    assert proc.terminate() == 0
    msgs = messages(proc.log())

    listening = [m for m in msgs if m.startswith("proxy listening on ")]
    assert len(listening) == 1, msgs
    assert re.fullmatch(rf"proxy listening on 127\.0\.0\.1:{port} -> {re.escape(es_a)}/?", listening[0]), listening

    [result] = json_after(msgs, "kafka.produce result ")
    assert result["Topic"] == topic and isinstance(result["Partition"], int) and result["Offset"] >= 0, result

    access = json_after(msgs, "access log: ")
    assert access and all("RemoteAddr" in a for a in access), access

    writes = [m for m in msgs if m.startswith("kafka write size: ")]
    assert len(writes) == 1, msgs
    m = re.fullmatch(r"kafka write size: (\d+), message: (\{.*\}),to kafka", writes[0])
    assert m, writes[0]
    bean = json.loads(m.group(2))
    assert writes_of(bean)[0][:3] == ("index", index, "1")
    assert int(m.group(1)) == len(m.group(2).encode()), "size is the message's byte length"

    assert msgs[-1] == "esproxy stopped"


def test_kafka_message_lines_are_debug(esproxy, es_a, kafka, names, port):
    proc = esproxy(proxy_config(port, es_a, kafka, names.topic()))
    r = requests.put(f"http://127.0.0.1:{port}/{names.index()}/_doc/1", json={"n": 1}, timeout=10)
    assert r.status_code == 201
    assert proc.terminate() == 0
    assert "kafka write size" not in proc.log() and "kafka.produce result" not in proc.log()


def test_no_access_log_by_default(esproxy, es_a, kafka, names, port):
    proc = esproxy(proxy_config(port, es_a, kafka, names.topic()))
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    assert proc.terminate() == 0
    assert "access log: " not in proc.log()


def test_replay_assigned_partitions_line(esproxy, es_b, kafka, names):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=3)
    proc = esproxy(replay_config(kafka, topic, group, es_b))
    msgs = messages(proc.log())
    [line] = [m for m in msgs if "assigned partitions" in m]
    m = re.fullmatch(rf"kafka consumer group {re.escape(group)} assigned partitions \[(.*)\]", line)
    assert m, line
    assert sorted(p.strip() for p in m.group(1).split(",")) == [f"{topic}-{i}" for i in range(3)]
