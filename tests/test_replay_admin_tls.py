"""A follower's replay admin over HTTPS with a private CA (`replayAdminTls`): the proxy reads the lag through
it and sends reads to the follower; without that CA the lag is unknown and the log names the TLS failure.
`esproxy switchover`'s client of the replay admin (switchover.replay_endpoint) trusts the same CA."""

from __future__ import annotations

import json
from typing import Optional

import pytest
import requests
from support.basics import free_port, wait_until
from support.certs import Pki, make_pki
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafka import create_topic

from esproxy.commands.switchover import Failed, replay_endpoint
from esproxy.core.config import ConfigError, ElasticDestination, parse
from esproxy.core.schema import build

JSON = {"Content-Type": "application/json"}
TOKEN = {"X-Admin-Token": "replay-admin-token"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def follower_row(port: int, url: str) -> dict:
    stats = requests.get(f"http://127.0.0.1:{port}/_esproxy/stats", timeout=10).json()
    return next(f for f in stats["followers"] if f["cluster"] == url)


@pytest.fixture
def https_admin_split(esproxy, es_a, es_b, kafka, names, port, pki):
    """A replay A->B whose admin listener is HTTPS with a certificate of a private CA, and a proxy in front of
    A with B as its follower, that replay's admin as its `replayAdmin` and ``admin_tls`` as `replayAdminTls`."""

    def start(admin_tls: Optional[dict]) -> tuple[object, dict]:
        topic, group, admin = names.topic(), names.group(), free_port()
        create_topic(kafka, topic)
        replay_conf = replay_config(kafka, topic, group, es_b)
        replay_conf["admin"] = {
            "port": admin,
            "header": TOKEN,
            "tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)},
        }
        esproxy(replay_conf)
        follower = {
            "url": es_b,
            "replayAdmin": f"https://127.0.0.1:{admin}",
            "replayAdminHeader": TOKEN,
            "maxLag": "30s",
            "timeout": "5s",
        }
        if admin_tls is not None:
            follower["replayAdminTls"] = admin_tls
        proxy_conf = proxy_config(port, es_a, kafka, topic)
        proxy_conf["destination"]["followers"] = [follower]
        return esproxy(proxy_conf), follower

    return start


def test_lag_read_over_https_with_the_private_ca_and_reads_go_to_the_follower(
    https_admin_split, es_a, es_b, names, port, pki
):
    _, follower = https_admin_split({"ca": str(pki.ca)})
    wait_until(lambda: follower_row(port, es_b)["state"] == "ok", timeout=20, msg="the follower to be usable")
    row = follower_row(port, es_b)
    assert row["usable"] and isinstance(row["lag_seconds"], (int, float)), row
    assert row["problem"] == "", row

    base, index = f"http://127.0.0.1:{port}", names.index()
    r = requests.put(f"{base}/{index}/_doc/1?refresh=true", json={"n": 1}, headers=JSON, timeout=10)
    assert r.status_code in (200, 201), r.text
    wait_until(lambda: es_doc(es_b, index, "1") is not None, timeout=20, msg="the write replayed into B")
    r = requests.put(f"{es_b}/{index}/_doc/only-b?refresh=true", json={"marker": "b"}, headers=JSON, timeout=10)
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{base}/{index}/_search", timeout=10)
    assert {h["_id"] for h in r.json()["hits"]["hits"]} == {"1", "only-b"}, r.text  # B answered
    assert requests.get(f"{base}/_esproxy/stats", timeout=10).json()["proxy"]["reads"][es_b] >= 1

    # esproxy switchover's client of the replay admin trusts the same CA, and only with it
    stats = replay_endpoint(build(ElasticDestination, follower)).get("/_esproxy/stats")
    assert isinstance(stats["replay"]["consumer_lag"], list), stats
    no_ca = build(ElasticDestination, {k: v for k, v in follower.items() if k != "replayAdminTls"})
    with pytest.raises(Failed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        replay_endpoint(no_ca).get("/_esproxy/stats", timeout=5)


def test_without_the_ca_the_lag_is_unknown_and_the_log_names_the_tls_failure(https_admin_split, es_b, port):
    proxy, _ = https_admin_split(None)
    wait_until(
        lambda: "TLS certificate not trusted" in follower_row(port, es_b)["problem"],
        timeout=20,
        msg="the follower's problem to name the untrusted certificate",
    )
    row = follower_row(port, es_b)
    assert row["state"] == "lag_unknown" and not row["usable"] and row["lag_seconds"] is None, row
    assert "replayAdminTls.ca" in row["problem"], row  # says what to set
    proxy.wait_log("gets no reads: lag unknown: replay admin:", timeout=10)
    line = next(x for x in proxy.log().splitlines() if "gets no reads" in x)
    assert "[WARN" in line and "TLS certificate not trusted" in line and "replayAdminTls.ca" in line, line


def _proxy_with_follower(follower: dict) -> str:
    return json.dumps(
        {
            "source": {"proxies": [{"port": 9999}]},
            "destination": {
                "primaries": [{"url": "http://127.0.0.1:9200"}],
                "followers": [{"url": "http://127.0.0.1:9201", **follower}],
            },
        }
    )


def test_config_checks_replay_admin_tls_as_a_clusters_tls(pki, tmp_path):
    key = "destination.followers[0].replayAdminTls"
    https = {"replayAdmin": "https://127.0.0.1:2901"}
    with pytest.raises(ConfigError) as e:
        parse(_proxy_with_follower({**https, "replayAdminTls": {"ca": str(tmp_path / "missing.pem")}}))
    assert e.value.path == f"{key}.ca" and "cannot read" in str(e.value), str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(_proxy_with_follower({**https, "replayAdminTls": {"fingerprint": "12:34"}}))
    assert e.value.path == f"{key}.fingerprint", str(e.value)

    plain = {"replayAdmin": "http://127.0.0.1:2901", "replayAdminTls": {"ca": str(pki.ca)}}
    assert any(
        w.startswith(f"{key}: the replayAdmin is not https://") for w in parse(_proxy_with_follower(plain)).warnings
    )
    warned = parse(_proxy_with_follower({**https, "replayAdminTls": {"verify": False}})).warnings
    assert any(w.startswith(f"{key}.verify: false") for w in warned), warned

    # a file: reference resolves as in every other setting
    ref = tmp_path / "ca-path"
    ref.write_text(str(pki.ca) + "\n")
    cfg = parse(_proxy_with_follower({**https, "replayAdminTls": {"ca": f"file:{ref}"}}))
    assert cfg.followers()[0].replayAdminTls.ca == str(pki.ca)
