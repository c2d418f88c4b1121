"""Kafka over TLS and SASL, end to end: the proxy produces, the replay consumes and writes dead letters,
`esproxy dlq` reads them, each with the security settings of its config entry.

Demo engines: Tansu behind a TLS terminator (support/kafkatls.py), which asks for a client certificate.
Tansu 0.6.0 cannot run SASL here (below), so SASL runs on the real broker only (`make test-real`:
Apache Kafka with SSL, SASL_SSL and SASL_PLAINTEXT listeners, see tests/engines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
import yaml
from support.basics import wait_until
from support.beans import make_bean
from support.certs import make_pki
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafkatls import SecureTansu
from support.process import esproxy_cli

pytestmark = pytest.mark.real

PASSWORD_MARK = "pw-7c1e0f-never-logged"

TANSU_NO_SASL = (
    "Tansu 0.6.0 cannot run SASL here: it offers no PLAIN, and stores SCRAM users only for a client that"
    " already authenticated (memory storage, nothing to seed); SASL is tested on the real broker"
)


@dataclass
class SecureKafka:
    """A broker reached with security settings: `addr`, the config keys, and test-side kafka-python arguments."""

    addr: str
    settings: dict  # securityProtocol, tls, sasl: as in a config entry
    client: dict = field(default_factory=dict)

    def entry(self, **extra: Any) -> dict:
        return {**self.settings, **extra}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("kafkatls"), "kafkatls")


@pytest.fixture(scope="module")
def tls_kafka(real_engines, pki, tmp_path_factory):
    """A broker that speaks TLS only and wants a client certificate."""
    if real_engines:
        broker = real_engines["kafka"]
        yield _ssl(broker.ssl_addr, broker.pki)
        return
    tansu = SecureTansu(pki, tmp_path_factory.mktemp("tansu-tls"), client_certificates=True)
    yield _ssl(tansu.addr, pki)
    tansu.stop()


def _ssl(addr: str, pki) -> SecureKafka:
    tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    client = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca)}
    client.update(ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key))
    return SecureKafka(addr, {"securityProtocol": "SSL", "tls": tls}, client)


def sasl_kafka(real_engines, protocol: str, mechanism: str, password: Optional[str] = None) -> SecureKafka:
    if not real_engines:
        pytest.skip(TANSU_NO_SASL)
    broker = real_engines["kafka"]
    user, real_password = next(iter(broker.users.items()))
    sasl = {"mechanism": mechanism, "username": user, "password": password or real_password}
    settings: dict = {"securityProtocol": protocol, "sasl": sasl}
    client = {"security_protocol": protocol, "sasl_mechanism": mechanism}
    client.update(sasl_plain_username=user, sasl_plain_password=real_password)
    if protocol == "SASL_SSL":
        settings["tls"] = {"ca": str(broker.pki.ca)}
        client["ssl_cafile"] = str(broker.pki.ca)
        return SecureKafka(broker.sasl_ssl_addr, settings, client)
    return SecureKafka(broker.sasl_plaintext_addr, settings, client)


def create_topic(broker: SecureKafka, topic: str, partitions: int = 2) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.addr, **broker.client)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce(broker: SecureKafka, topic: str, value: bytes) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.addr, acks=1, **broker.client)
    try:
        producer.send(topic, value=value, partition=0).get(timeout=20)
    finally:
        producer.close()


def secured(conf: dict, broker: SecureKafka) -> dict:
    """``conf`` with every Kafka entry pointed at ``broker``, with its security settings."""
    for section in ("source", "destination"):
        for entry in (conf.get(section) or {}).get("kafkas") or []:
            entry.update(broker.entry(brokers=[broker.addr]))
    return conf


def end_to_end(esproxy, es_a: str, es_b: str, broker: SecureKafka, names, port: int, tmp_path: Path) -> None:
    """Writes through the proxy reach B; a write B refuses becomes a dead letter, which `esproxy dlq -c`
    lists and requeues: producer, consumer, dead-letter producer, dlq's consumer and producer, all secured."""
    topic, group, index = names.topic(), names.group(), names.index()
    create_topic(broker, topic)
    esproxy(secured(replay_config(broker.addr, topic, group, es_b), broker), timeout=60)
    esproxy(secured(proxy_config(port, es_a, broker.addr, topic), broker), timeout=60)
    proxy = f"http://127.0.0.1:{port}"
    for i in range(3):
        assert requests.put(f"{proxy}/{index}/_doc/{i}", json={"n": i}, timeout=10).status_code == 201
    bulk = "".join(f'{{"index":{{"_index":"{index}","_id":"b{i}"}}}}\n{{"b":{i}}}\n' for i in range(3))
    r = requests.post(f"{proxy}/_bulk", data=bulk, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
    assert r.status_code == 200 and not r.json()["errors"], r.text
    for doc_id in ["0", "1", "2", "b0", "b1", "b2"]:
        wait_until(lambda d=doc_id: es_doc(es_b, index, d), timeout=30, msg=f"{index}/{doc_id} in B")

    # B refuses this write for good: a dead letter, listed, requeued (refused again: a second one)
    produce(broker, topic, make_bean("PUT", f"/{index}/_doc/bad", '{"broken": '))
    conf = tmp_path / "replay-dlq.yml"
    conf.write_text(yaml.safe_dump(secured(replay_config(broker.addr, topic, group, es_b), broker)))

    def dead_letters() -> list:
        listed = esproxy_cli("dlq", "list", "-c", str(conf), "--json")
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]

    wait_until(lambda: len(dead_letters()) == 1, timeout=30, msg="one dead letter")
    requeued = esproxy_cli("dlq", "requeue", "-c", str(conf), "--all")
    assert requeued.returncode == 0 and "requeued 1 to topic" in requeued.stdout, requeued.stdout + requeued.stderr
    letters = wait_until(lambda: (lambda v: v if len(v) == 2 else None)(dead_letters()), timeout=30, msg="two")
    assert [letter["requestUri"] for letter in letters] == [f"/{index}/_doc/bad"] * 2
    assert es_doc(es_b, index, "bad") is None


def test_tls_end_to_end(esproxy, es_a, es_b, tls_kafka, names, port, tmp_path):
    end_to_end(esproxy, es_a, es_b, tls_kafka, names, port, tmp_path)


@pytest.mark.parametrize(
    "protocol,mechanism", [("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256")]
)
def test_sasl_end_to_end(esproxy, es_a, es_b, real_engines, names, port, tmp_path, protocol, mechanism):
    broker = sasl_kafka(real_engines, protocol, mechanism)
    if mechanism == "SCRAM-SHA-512":  # the password from a file, as the config loader resolves any string
        broker.settings["sasl"]["password"] = password_file(tmp_path, broker.settings["sasl"]["password"])
    end_to_end(esproxy, es_a, es_b, broker, names, port, tmp_path)


def password_file(directory: Path, password: str) -> str:
    path = directory / "kafka-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def both_roles(broker: SecureKafka, port: int, es_a: str, es_b: str, names) -> dict:
    """One config: a proxy producing to ``broker`` and a replay consuming from it."""
    topic = names.topic()
    conf = secured(proxy_config(port, es_a, broker.addr, topic), broker)
    conf["source"]["kafkas"] = secured(replay_config(broker.addr, topic, names.group(), es_b), broker)["source"][
        "kafkas"
    ]
    return conf


def test_untrusted_broker_certificate_refused(esproxy, es_a, es_b, tls_kafka, names, port, tmp_path):
    """A broker whose certificate another CA signed is not talked to."""
    other = make_pki(tmp_path / "other", "other")
    untrusted = SecureKafka(tls_kafka.addr, {**tls_kafka.settings, "tls": {**tls_kafka.settings["tls"]}})
    untrusted.settings["tls"]["ca"] = str(other.ca)
    proc = esproxy(both_roles(untrusted, port, es_a, es_b, names), wait=False)
    proc.wait_log("CERTIFICATE_VERIFY_FAILED", timeout=60)
    assert proc.proc.poll() is None, proc.log_tail()  # it keeps trying: the broker may get a good certificate
    # nothing reached Kafka: a stop does not wait for it (the proxy's spool keeps what it captured)
    assert proc.terminate(timeout=10) == 0, proc.log_tail()


def test_wrong_password_refused_and_never_logged(esproxy, es_a, es_b, real_engines, names, port, tmp_path):
    """SASL with a wrong password: no connection, and the password in no log line."""
    if real_engines:
        broker = sasl_kafka(real_engines, "SASL_SSL", "SCRAM-SHA-512", password=PASSWORD_MARK)
        tansu = None
    else:  # Tansu checks SCRAM: a user it does not know fails like a wrong password
        tansu = SecureTansu(make_pki(tmp_path / "pki"), tmp_path, authentication=True)
        sasl = {"mechanism": "SCRAM-SHA-512", "username": "nobody", "password": PASSWORD_MARK}
        broker = SecureKafka(
            tansu.addr, {"securityProtocol": "SASL_SSL", "tls": {"ca": str(tansu.pki.ca)}, "sasl": sasl}
        )
    try:
        broker.settings["sasl"]["password"] = password_file(tmp_path, PASSWORD_MARK)
        conf = both_roles(broker, port, es_a, es_b, names)
        for entry in conf["source"]["kafkas"] + conf["destination"]["kafkas"]:
            entry["connectTimeout"] = "2s"  # the clients give up (and esproxy logs why) after 2 s, not 30
        conf["logLevel"] = "debug"  # even kafka-python's and ours at their most talkative
        proc = esproxy(conf, wait=False)
        proc.wait_log("unreachable", count=2, timeout=60)  # the proxy's producer and the replay's consumer
        assert proc.proc.poll() is None, proc.log_tail()  # it keeps trying
        assert PASSWORD_MARK not in proc.log()
        assert "assigned partitions" not in proc.log()
    finally:
        if tansu is not None:
            tansu.stop()
