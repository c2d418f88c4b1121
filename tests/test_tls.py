"""TLS to Elasticsearch (CA file, client certificate, fingerprint pin, an untrusted cluster refused) and on
the proxy's and admin listeners (with and without client certificates, pre-fork workers too).

The clusters are the suite's osmem servers behind support.tls.TlsTerminator (HTTPS, client certificate
required); the certificates are made at test time (support.certs)."""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path

import pytest
import requests
from support.basics import free_port, wait_until
from support.certs import Pki, make_pki
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic
from support.process import esproxy_cli
from support.tls import TlsTerminator

from esproxy.core.config import ConfigError, parse


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Pki:
    """A CA esproxy is not told to trust."""
    return make_pki(tmp_path_factory.mktemp("other"), "other")


@pytest.fixture
def terminate():
    """Put HTTPS in front of a plain server: `url = terminate(plain_url, pki, client_ca=...)`."""
    started: list[TlsTerminator] = []

    def start(backend: str, pki: Pki, client_ca: Path | None = None, sends_ca: bool = False) -> TlsTerminator:
        chain = pki.server_cert
        if sends_ca:  # as ES 8 does: its HTTP certificate, then the CA that signed it
            chain = pki.server_cert.with_name(pki.server_cert.stem + "-with-ca.pem")
            chain.write_text(pki.server_cert.read_text() + pki.ca.read_text())
        t = TlsTerminator(backend, chain, pki.server_key, client_ca)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def client_tls(pki: Pki) -> dict:
    return {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}


def listener_tls(pki: Pki, client_ca: bool = False) -> dict:
    tls = {"cert": str(pki.server_cert), "key": str(pki.server_key)}
    return {**tls, "clientCa": str(pki.ca)} if client_ca else tls


def ca_fingerprint(pki: Pki, colons: bool = True) -> str:
    """SHA-256 of the CA certificate, as ES 8 prints its HTTP CA's at first start (AA:BB:...)."""
    der = ssl.PEM_cert_to_DER_cert(pki.ca.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2)) if colons else digest


@pytest.mark.real
def test_writes_captured_and_replayed_end_to_end_over_tls(
    esproxy, es_a, es_b, kafka, names, port, pki, terminate, tmp_path
):
    """Client -> proxy (HTTPS) -> A (HTTPS, client certificate); Kafka -> replay -> B (HTTPS, client
    certificate); the replay's admin listener over HTTPS."""
    a = terminate(es_a, pki, client_ca=pki.ca)
    b = terminate(es_b, pki, client_ca=pki.ca)
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic)
    conf = proxy_config(port, a.url, kafka, topic)
    conf["source"]["proxies"][0]["tls"] = listener_tls(pki)
    conf["destination"]["primaries"][0]["tls"] = client_tls(pki)
    proxy = esproxy(conf)
    admin_port = free_port()
    replay = replay_config(kafka, topic, names.group(), b.url)
    replay["destination"]["primaries"][0]["tls"] = client_tls(pki)
    replay["admin"] = {"port": admin_port, "tls": listener_tls(pki)}
    replaying = esproxy(replay)

    base = f"https://127.0.0.1:{port}"
    r = requests.put(f"{base}/{index}/_doc/1?refresh=true", json={"n": 1}, verify=str(pki.ca), timeout=10)
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{base}/{index}/_doc/1", verify=str(pki.ca), timeout=10)
    assert r.json()["_source"] == {"n": 1}
    assert "(https)" in proxy.log()
    wait_until(lambda: es_doc(es_b, index, "1"), timeout=30, msg="the write replayed into B over TLS")
    assert es_doc(es_b, index, "1")["_source"] == {"n": 1}

    health = requests.get(f"https://127.0.0.1:{admin_port}/_esproxy/health", verify=str(pki.ca), timeout=10)
    assert health.status_code == 200 and health.json()["health"] == "ok"
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on an HTTPS port gets no answer
        requests.get(f"http://127.0.0.1:{admin_port}/_esproxy/health", timeout=10)
    # the commands given a config use its TLS settings: compare (both clusters), sync (the admin listener)
    compare_until_equal(str(proxy.conf_path), str(replaying.conf_path), names.pattern())
    listed = esproxy_cli("sync", "list", "-c", str(replaying.conf_path))
    assert listed.returncode == 0 and listed.stdout.startswith("NAME"), listed.stdout + listed.stderr


def test_untrusted_cluster_is_refused_with_a_clear_error(esproxy, es_a, port, pki, other_pki, terminate):
    a = terminate(es_a, other_pki)  # its certificate comes from a CA the proxy does not trust
    conf = proxy_config(port, a.url)
    conf["destination"]["primaries"][0]["tls"] = {"ca": str(pki.ca)}
    proxy = esproxy(conf)
    for _ in range(3):
        r = requests.get(f"http://127.0.0.1:{port}/_cluster/health", timeout=10)
        assert r.status_code == 502
        error = r.json()["error"]
        assert error["type"] == "esproxy_upstream_untrusted_exception"
        assert "TLS certificate not trusted" in error["reason"] and a.url in error["reason"]
        assert "unable to get local issuer certificate" in error["reason"]
    # once for the change of state, not once per request
    assert proxy.count_in_log(f"primary cluster {a.url} is not trusted") == 1
    assert "[ERROR]" in proxy.log()


def test_replay_retries_a_cluster_whose_certificate_turns_untrusted(
    esproxy, es_a, es_b, kafka, names, port, pki, other_pki, terminate
):
    """B shows a certificate of another CA (a rotation esproxy was not told of): the replay logs it at ERROR
    on each retry, health says the replay is stalled; B trusted again: the replay goes on, nothing lost."""
    b = terminate(es_b, pki)
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic)
    esproxy(proxy_config(port, es_a, kafka, topic))
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), b.url)
    conf["destination"]["primaries"][0]["tls"] = {"ca": str(pki.ca)}
    conf["admin"] = {"port": admin_port}
    conf["health"] = {"maxReplayStall": "1s"}
    replay = esproxy(conf)
    health = f"http://127.0.0.1:{admin_port}/_esproxy/health"
    base = f"http://127.0.0.1:{port}"

    assert requests.put(f"{base}/{index}/_doc/1", json={"n": 1}, timeout=10).status_code == 201
    wait_until(lambda: es_doc(es_b, index, "1"), timeout=30, msg="replayed while trusted")
    b.present(other_pki.server_cert, other_pki.server_key)
    assert requests.put(f"{base}/{index}/_doc/2", json={"n": 2}, timeout=10).status_code == 201

    def stalled() -> bool:
        r = requests.get(health, timeout=5)
        return r.status_code == 503 and any(x["check"] == "replay_stalled" for x in r.json()["reasons"])

    wait_until(stalled, timeout=30, msg="health: the replay is stalled")
    wait_until(lambda: replay.log().count("[ERROR]") >= 3, timeout=30, msg="each retry logged at ERROR")
    assert replay.count_in_log(f"replay cluster {b.url} is not trusted") == 1
    assert es_doc(es_b, index, "2") is None

    b.present(pki.server_cert, pki.server_key)
    wait_until(lambda: es_doc(es_b, index, "2"), timeout=30, msg="replayed once trusted again")
    replay.wait_log("its TLS certificate is trusted again")
    wait_until(lambda: requests.get(health, timeout=5).status_code == 200, timeout=30, msg="healthy again")


def test_replay_into_an_untrusted_cluster_never_starts_and_health_says_so(
    esproxy, es_b, kafka, names, pki, other_pki, terminate
):
    b = terminate(es_b, other_pki)
    topic = names.topic()
    create_topic(kafka, topic)
    admin_port = free_port()
    conf = replay_config(kafka, topic, names.group(), b.url)
    conf["destination"]["primaries"][0]["tls"] = {"ca": str(pki.ca)}
    conf["admin"] = {"port": admin_port}
    conf["health"] = {"maxReplayStall": "1s"}
    replay = esproxy(conf, ready=[("admin listening on", 1)])

    def unhealthy() -> list:
        r = requests.get(f"http://127.0.0.1:{admin_port}/_esproxy/health", timeout=5)
        return r.json()["reasons"] if r.status_code == 503 else []

    reasons = wait_until(unhealthy, timeout=30, msg="health: the replay has not started")
    assert [r["check"] for r in reasons] == ["replay_stalled"]
    assert b.url in reasons[0]["reason"] and "TLS certificate not trusted" in reasons[0]["reason"]
    assert "cluster not ready" in replay.log() and "assigned partitions" not in replay.log()


def test_fingerprint_pin_accepts_its_chain_and_refuses_another(esproxy, es_a, port, pki, terminate):
    a = terminate(es_a, pki, sends_ca=True)
    wrong = "ab" * 32
    other_port = free_port()
    conf = proxy_config(port, a.url, labels={"PIN": "good"})
    conf["source"]["proxies"].append({"port": other_port, "host": "127.0.0.1", "labels": {"PIN": "wrong"}})
    conf["destination"]["primaries"] = [
        {"url": a.url, "labelEval": "PIN==good", "tls": {"fingerprint": ca_fingerprint(pki)}},
        {"url": a.url, "labelEval": "PIN==wrong", "tls": {"fingerprint": wrong}},
    ]
    esproxy(conf)
    r = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(f"http://127.0.0.1:{other_port}/", timeout=10)
    assert r.status_code == 502 and wrong in r.json()["error"]["reason"]


def test_pin_of_the_leaf_without_colons(esproxy, es_a, port, pki, terminate):
    a = terminate(es_a, pki)
    end = "-----END CERTIFICATE-----"
    leaf = ssl.PEM_cert_to_DER_cert(pki.server_cert.read_text().split(end)[0] + end + "\n")  # the chain's first
    conf = proxy_config(port, a.url)
    conf["destination"]["primaries"][0]["tls"] = {"fingerprint": hashlib.sha256(leaf).hexdigest()}
    esproxy(conf)
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200


def test_proxy_requires_client_certificates_with_two_workers(esproxy, es_a, port, pki, other_pki):
    conf = proxy_config(port, es_a)
    conf["workers"] = 2
    conf["source"]["proxies"][0]["tls"] = listener_tls(pki, client_ca=True)
    proc = esproxy(conf)
    proc.wait_log("worker serving", count=2)
    base, ca = f"https://127.0.0.1:{port}", str(pki.ca)
    with pytest.raises(requests.exceptions.ConnectionError):  # no certificate: the handshake fails
        requests.get(f"{base}/", verify=ca, timeout=10)
    other = (str(other_pki.client_cert), str(other_pki.client_key))
    with pytest.raises(requests.exceptions.ConnectionError):  # one of a CA not in clientCa
        requests.get(f"{base}/", verify=ca, cert=other, timeout=10)
    mine = (str(pki.client_cert), str(pki.client_key))
    for _ in range(8):  # new connections each time: both workers take some
        with requests.Session() as s:
            assert s.get(f"{base}/", verify=ca, cert=mine, timeout=10).status_code == 200
    assert "Traceback" not in proc.log()


# ---------------------------------------------------------------- config


def _config(tls: dict, url: str = "https://127.0.0.1:9200") -> str:
    return json.dumps(
        {"source": {"proxies": [{"port": 9999}]}, "destination": {"primaries": [{"url": url, "tls": tls}]}}
    )


def test_config_names_the_tls_key_that_cannot_be_used(pki, tmp_path):
    key = "destination.primaries[0].tls"
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    cases = [
        ({"ca": str(tmp_path / "missing.pem")}, f"{key}.ca", "cannot read"),
        ({"cert": str(not_pem), "key": str(pki.client_key)}, f"{key}.cert", "not a PEM file"),
        ({"key": str(pki.client_key)}, f"{key}.cert", "is required"),
        ({"fingerprint": "12:34"}, f"{key}.fingerprint", "64 hex digits"),
        ({"fingerprint": "ab" * 32, "ca": str(pki.ca)}, f"{key}.fingerprint", "not both"),
        ({"fingerprint": "ab" * 32, "verify": False}, f"{key}.verify", "pinned"),
    ]
    for tls, path, reason in cases:
        with pytest.raises(ConfigError) as e:
            parse(_config(tls))
        assert e.value.path == path and reason in str(e.value), (tls, str(e.value))
    with pytest.raises(ConfigError) as e:
        parse(_config({}).replace('"port": 9999}', '"port": 9999, "tls": {"key": "k.pem"}}'))
    assert e.value.path == "source.proxies[0].tls.cert"
    assert parse(_config({"ca": str(pki.ca.parent)})).primaries()[0].tls.ca == str(pki.ca.parent)  # a directory
    warned = parse(_config({"ca": str(pki.ca)}, url="http://127.0.0.1:9200")).warnings
    assert any("not https://" in w for w in warned)


def test_check_reads_the_certificates_and_warns_of_verify_false(pki, other_pki, tmp_path):
    import yaml

    def check(tls: dict, listener: dict | None = None) -> tuple[int, str]:
        conf = {"source": {"proxies": [{"port": 9999, **({"tls": listener} if listener else {})}]}}
        conf["destination"] = {"primaries": [{"url": "https://127.0.0.1:9200", "tls": tls}]}
        path = tmp_path / "conf.yml"
        path.write_text(yaml.safe_dump(conf))
        done = esproxy_cli("-c", str(path), "--check")
        return done.returncode, done.stdout + done.stderr

    code, out = check({"verify": False})
    assert code == 0 and "destination.primaries[0].tls.verify: false" in out and "warning" in out
    code, out = check(client_tls(pki))
    assert code == 0 and "tls" not in out, out
    # a certificate and a key that do not belong together: readable, but unusable
    code, out = check({"cert": str(pki.client_cert), "key": str(other_pki.client_key)})
    assert code == 2 and "destination.primaries[0].tls.cert" in out, out
    code, out = check({}, {"cert": str(pki.server_cert), "key": str(other_pki.server_key)})
    assert code == 2 and "source.proxies[0].tls.cert" in out, out
