"""Kafka TLS and SASL settings: what each combination gives kafka-python, and what --check refuses."""

from __future__ import annotations

import ssl

import pytest
import yaml
from support.certs import make_pki
from support.process import esproxy_cli

from esproxy.clients import kafkasecurity
from esproxy.configfile import parse
from esproxy.core.config import ConfigError, KafkaDestination, KafkaSource
from esproxy.core.schema import build

SECRET = "s3cr3t-kafka-password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("kafkapki"))


def destination(**security) -> KafkaDestination:
    return build(KafkaDestination, {"topic": "t", "brokers": ["127.0.0.1:9093"], **security})


def replay_conf(**security) -> str:
    src = {"brokers": ["127.0.0.1:9093"], "topics": ["t"], "group": "g", **security}
    return yaml.safe_dump({"source": {"kafkas": [src]}, "destination": {"primaries": [{"url": "http://127.0.0.1:9"}]}})


def proxy_conf(**security) -> str:
    dest = {"topic": "t", "brokers": ["127.0.0.1:9093"], **security}
    conf = {
        "source": {"proxies": [{"port": 9201}]},
        "destination": {"primaries": [{"url": "http://127.0.0.1:9"}], "kafkas": [dest]},
    }
    return yaml.safe_dump(conf)


# --------------------------------------------------------------------------- the mapping


def test_plaintext_by_default_and_nothing_else():
    assert kafkasecurity.client_kwargs(destination()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("spelling", ["SSL", "ssl", "Ssl"])
def test_ssl_with_ca_and_client_certificate(pki, spelling):
    tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    kwargs = kafkasecurity.client_kwargs(destination(securityProtocol=spelling, tls=tls))
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"
    ctx = kwargs["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [_subject(pki.authority.cert_pem.bytes())]


def test_ssl_without_ca_trusts_the_system(pki):
    ctx = kafkasecurity.client_kwargs(destination(securityProtocol="SSL"))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert _subject(pki.authority.cert_pem.bytes()) not in [c["subject"] for c in ctx.get_ca_certs()]


def test_ssl_ca_directory(pki, tmp_path):
    (tmp_path / "ca.pem").write_bytes(pki.ca.read_bytes())
    (tmp_path / "README").write_text("not a certificate")
    ctx = kafkasecurity.ssl_context(destination(securityProtocol="SSL", tls={"ca": str(tmp_path)}).tls)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [_subject(pki.authority.cert_pem.bytes())]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as e:
        parse(replay_conf(securityProtocol="SSL", tls={"ca": str(empty)}))
    assert e.value.path == "source.kafkas[0].tls.ca" and "no CA certificate" in e.value.reason


def test_check_hostname_off_keeps_verification(pki):
    tls = {"ca": str(pki.ca), "checkHostname": False}
    ctx = kafkasecurity.client_kwargs(destination(securityProtocol="SSL", tls=tls))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname


def test_verify_off_turns_every_check_off(pki):
    ctx = kafkasecurity.client_kwargs(destination(securityProtocol="SSL", tls={"verify": False}))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl(pki, protocol, mechanism):
    sasl = {"mechanism": mechanism, "username": "alice", "password": SECRET}
    tls = {"ca": str(pki.ca)} if protocol == "SASL_SSL" else {}
    kwargs = kafkasecurity.client_kwargs(destination(securityProtocol=protocol, sasl=sasl, tls=tls))
    expected = {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism.upper(),
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
    }
    assert {k: v for k, v in kwargs.items() if k != "ssl_context"} == expected
    assert ("ssl_context" in kwargs) == (protocol == "SASL_SSL")


def test_source_and_destination_map_alike(pki):
    security = {
        "securityProtocol": "SASL_SSL",
        "tls": {"ca": str(pki.ca)},
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": SECRET},
    }
    source = build(KafkaSource, {"brokers": ["b:1"], "topics": ["t"], "group": "g", **security})
    a, b = kafkasecurity.client_kwargs(source), kafkasecurity.client_kwargs(destination(**security))
    assert a.keys() == b.keys() and {k: v for k, v in a.items() if k != "ssl_context"} == {
        k: v for k, v in b.items() if k != "ssl_context"
    }


def test_password_not_in_the_entry_repr():
    dest = destination(securityProtocol="SASL_SSL", sasl={"mechanism": "PLAIN", "username": "u", "password": SECRET})
    assert SECRET not in repr(dest) and SECRET not in str(dest)


def test_a_vanished_file_fails_as_an_os_error(pki, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.read_bytes())
    dest = destination(securityProtocol="SSL", tls={"ca": str(ca)})
    ca.unlink()
    with pytest.raises(OSError, match="tls.ca"):  # the clients' connect loops retry on it
        kafkasecurity.client_kwargs(dest)


# --------------------------------------------------------------------------- what --check refuses


BAD = [
    ({"securityProtocol": "TLS"}, "source.kafkas[0].securityProtocol", "is not one of"),
    ({"tls": {"ca": "x"}}, "source.kafkas[0].tls", "securityProtocol is PLAINTEXT"),
    ({"securityProtocol": "SASL_PLAINTEXT", "tls": {"verify": False}}, "source.kafkas[0].tls", "SASL_PLAINTEXT"),
    ({"sasl": {"username": "u"}}, "source.kafkas[0].sasl", "securityProtocol is PLAINTEXT"),
    ({"securityProtocol": "SSL", "sasl": {"mechanism": "PLAIN"}}, "source.kafkas[0].sasl", "SASL needs"),
    ({"securityProtocol": "SASL_SSL"}, "source.kafkas[0].sasl.mechanism", "is required"),
    (
        {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}},
        "source.kafkas[0].sasl.mechanism",
        "is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    ),
    (
        {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "password": SECRET}},
        "source.kafkas[0].sasl.username",
        "is required",
    ),
    (
        {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u"}},
        "source.kafkas[0].sasl.password",
        "is required",
    ),
    ({"securityProtocol": "SSL", "tls": {"key": "k.pem"}}, "source.kafkas[0].tls.key", "without tls.cert"),
    ({"securityProtocol": "SSL", "tls": {"ca": "/nonexistent/ca.pem"}}, "source.kafkas[0].tls.ca", "cannot read"),
    ({"securityProtocol": "SSL", "tls": {"cert": "/nonexistent/c.pem"}}, "source.kafkas[0].tls.cert", "cannot read"),
]


@pytest.mark.parametrize("security,path,reason", BAD)
def test_bad_combinations_are_refused(security, path, reason):
    with pytest.raises(ConfigError) as e:
        parse(replay_conf(**security))
    assert e.value.path == path and reason in e.value.reason
    assert SECRET not in str(e.value)


def test_files_that_are_not_what_they_say(pki, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as e:
        parse(replay_conf(securityProtocol="SSL", tls={"ca": str(junk)}))
    assert e.value.path == "source.kafkas[0].tls.ca"
    # a key that is not the certificate's
    other_cert, other_key = pki.issue_client(tmp_path, "other")
    with pytest.raises(ConfigError) as e:
        parse(proxy_conf(securityProtocol="SSL", tls={"cert": str(pki.client_cert), "key": str(other_key)}))
    assert e.value.path == "destination.kafkas[0].tls.cert" and "cannot load" in e.value.reason


def test_encrypted_key_refused_without_prompting(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError) as e:
        parse(replay_conf(securityProtocol="SSL", tls={"cert": str(pki.client_cert), "key": str(encrypted)}))
    assert e.value.path == "source.kafkas[0].tls.cert" and "encrypted" in e.value.reason


def test_disabled_entry_is_not_checked():
    conf = yaml.safe_load(proxy_conf(securityProtocol="SSL", tls={"ca": "/nonexistent/ca.pem"}))
    conf["destination"]["kafkas"][0]["disabled"] = True
    parse(yaml.safe_dump(conf))


def test_warnings(pki):
    cfg = parse(replay_conf(securityProtocol="SSL", tls={"ca": str(pki.ca), "verify": False}))
    assert any("source.kafkas[0].tls.verify is false" in w for w in cfg.warnings)
    sasl = {"mechanism": "PLAIN", "username": "u", "password": SECRET}
    cfg = parse(proxy_conf(securityProtocol="SASL_PLAINTEXT", sasl=sasl))
    assert any("destination.kafkas[0]: SASL PLAIN over SASL_PLAINTEXT" in w for w in cfg.warnings)
    assert not any(SECRET in w for w in cfg.warnings)
    scram = {"mechanism": "SCRAM-SHA-512", "username": "u", "password": SECRET}
    cfg = parse(proxy_conf(securityProtocol="SASL_SSL", tls={"ca": str(pki.ca)}, sasl=scram))
    assert cfg.warnings == ()


def test_check_command_exits_2_with_the_key_path(tmp_path):
    conf = tmp_path / "conf.yml"
    conf.write_text(replay_conf(securityProtocol="SASL_SSL", sasl={"mechanism": "PLAIN", "password": SECRET}))
    res = esproxy_cli("-c", str(conf), "--check")
    assert res.returncode == 2
    assert "config error: source.kafkas[0].sasl.username: is required with securityProtocol SASL_SSL" in res.stderr
    assert SECRET not in res.stdout + res.stderr


def test_check_command_passes_and_warns(pki, tmp_path):
    conf = tmp_path / "conf.yml"
    conf.write_text(replay_conf(securityProtocol="SSL", tls={"ca": str(pki.ca), "verify": False}))
    res = esproxy_cli("-c", str(conf), "--check")
    assert res.returncode == 0, res.stderr
    assert "warning: source.kafkas[0].tls.verify is false" in res.stderr


def _subject(pem: bytes) -> tuple:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pem.decode())
    return ctx.get_ca_certs()[0]["subject"]


def test_config_does_not_import_kafka():
    """The config is loaded before gevent patches the standard library; kafka-python imported by then keeps
    an unpatched selector, and TLS connections hang (plain ones happen to survive)."""
    import subprocess
    import sys

    code = "import sys, esproxy.core.config, esproxy.cli; sys.exit('kafka' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
