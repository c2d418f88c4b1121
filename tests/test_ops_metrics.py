"""/_esproxy/health, /_esproxy/stats and /_esproxy/metrics on the proxy port and the admin port;
credentials never logged; `logLevel`."""

from __future__ import annotations

import uuid

import pytest
import requests
from support.basics import free_port, wait_until
from support.process import Esproxy
from support.prometheus import metric, parse_prometheus
from support.servers import DemoServer

from esproxy.core.logs import redact


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("servers")
    a, b, k = DemoServer("osmem", d), DemoServer("osmem", d), DemoServer("tansu", d)
    yield a.url, b.url, k.addr
    for srv in (a, b, k):
        srv.stop()


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.terminate()


def scrape(url: str, **kw) -> dict:
    r = requests.get(url + "/_esproxy/metrics", timeout=5, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(r.text)


def test_metrics_move_with_traffic(servers, procs, tmp_path):
    a, b, kafka = servers
    topic, group, index = (f"ops-{x}-{uuid.uuid4().hex[:6]}" for x in ("topic", "group", "idx"))
    pport, aport = free_port(), free_port()
    proxy = Esproxy(
        {
            "chanSize": 16,
            "source": {"proxies": [{"port": pport, "host": "127.0.0.1"}]},
            "destination": {"primaries": [{"url": a}], "kafkas": [{"topic": topic, "brokers": [kafka]}]},
        },
        tmp_path / "proxy",
    )
    procs.append(proxy)
    replay = Esproxy(
        {
            "admin": {"port": aport},
            "source": {"kafkas": [{"brokers": [kafka], "topics": [topic], "group": group, "sessionTimeout": "6s"}]},
            "destination": {"primaries": [{"url": b}]},
        },
        tmp_path / "replay",
    )
    procs.append(replay)
    proxy.wait_log("proxy listening on")
    replay.wait_log("admin listening on")
    purl, aurl = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{aport}"

    health = requests.get(purl + "/_esproxy/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["pid"] == proxy.pid  # answered by esproxy, not forwarded to A

    before = scrape(purl)
    n = 7
    for i in range(n):
        assert requests.put(f"{purl}/{index}/_doc/{i}", json={"i": i}, timeout=10).status_code == 201
    assert requests.get(f"{purl}/{index}/_doc/0", timeout=5).status_code == 200
    after = scrape(purl)

    put = dict(method="PUT", status="201")
    assert metric(after, "esproxy_requests_total", **put) - metric(before, "esproxy_requests_total", **put) == n
    assert metric(after, "esproxy_requests_total", method="GET", status="200") >= 1
    assert metric(after, "esproxy_writes_captured_total") - metric(before, "esproxy_writes_captured_total") == n
    count = metric(after, "esproxy_request_duration_seconds_count")
    assert count - metric(before, "esproxy_request_duration_seconds_count") == n + 1
    assert metric(after, "esproxy_request_duration_seconds_bucket", le="+Inf") == count
    assert metric(after, "esproxy_queue_capacity") == 16
    assert metric(after, "esproxy_spool_records") >= 0
    assert metric(after, "esproxy_uptime_seconds") > 0
    assert metric(after, "esproxy_build_info", version=__import__("esproxy").__version__) == 1
    # the /_esproxy/ requests themselves are not counted
    assert all(k[0] != "esproxy_requests_total" or dict(k[1])["method"] in ("PUT", "GET") for k in after)
    wait_until(
        lambda: metric(scrape(purl), "esproxy_kafka_produced_total", topic=topic) == n, timeout=20, msg="produced"
    )
    # once Kafka took them, the spool (durability: spool, the default) is empty again
    wait_until(lambda: metric(scrape(purl), "esproxy_spool_records") == 0, timeout=20, msg="spool drained")
    # upstream pool of A: one kept-alive connection or more, none busy now
    cluster_rows = [k for k in after if k[0] == "esproxy_cluster_info"]
    assert len(cluster_rows) == 1 and dict(cluster_rows[0][1])["direction"] == "primary"

    # the replay role, scraped on its admin port
    replay.wait_log("assigned partitions", timeout=30)
    wait_until(
        lambda: metric(scrape(aurl), "esproxy_replay_writes_total", index=index) == n, timeout=30, msg="replayed"
    )
    rs = scrape(aurl)
    assert metric(rs, "esproxy_replay_messages_total") >= n
    assert metric(rs, "esproxy_replay_bytes_total", index=index) > 0
    assert metric(rs, "esproxy_dead_letters_total") == 0
    assert any(k[0] == "esproxy_consumer_lag" and dict(k[1])["topic"] == topic for k in rs)
    stats = requests.get(aurl + "/_esproxy/stats", timeout=5).json()
    assert stats["replay"]["by_index"][index]["writes"] == n
    assert stats["pid"] == replay.pid
    assert {u["direction"] for u in stats["upstreams"]} == {"replay"}
    assert stats["upstreams"][0]["cluster_id"]
    # the admin port answers only /_esproxy/ paths
    assert requests.get(aurl + "/", timeout=5).status_code == 404


def test_admin_paths_require_the_proxy_header(servers, procs, tmp_path):
    a, _b, _k = servers
    port = free_port()
    token = "s3cret-token-value"
    p = Esproxy(
        {
            "source": {"proxies": [{"port": port, "host": "127.0.0.1", "header": {"X-Proxy-Token": token}}]},
            "destination": {"primaries": [{"url": a}]},
        },
        tmp_path,
    )
    procs.append(p)
    p.wait_log("proxy listening on")
    url = f"http://127.0.0.1:{port}"
    for path in ("health", "stats", "metrics"):
        assert requests.get(f"{url}/_esproxy/{path}", timeout=5).status_code == 401
    ok = scrape(url, headers={"X-Proxy-Token": token})
    assert metric(ok, "esproxy_requests_total", method="GET", status="401") == 0  # admin paths are not counted
    assert requests.post(f"{url}/_esproxy/metrics", headers={"X-Proxy-Token": token}, timeout=5).status_code == 405


def test_credentials_never_logged(servers, procs, tmp_path):
    a, _b, kafka = servers
    port = free_port()
    basic = "Basic dXNlcjpodW50ZXIy"  # user:hunter2
    primary = a.replace("http://", "http://elastic:pa55word@")
    p = Esproxy(
        {
            "logLevel": "debug",
            "source": {"proxies": [{"port": port, "host": "127.0.0.1", "accesslog": True}]},
            "destination": {
                "primaries": [{"url": primary, "header": {"X-Api": "ApiKey Zm9vOmJhcmJheg=="}}],
                "kafkas": [{"topic": f"ops-cred-{uuid.uuid4().hex[:6]}", "brokers": [kafka]}],
            },
        },
        tmp_path,
    )
    procs.append(p)
    p.wait_log("proxy listening on")
    url = f"http://127.0.0.1:{port}"
    r = requests.put(
        f"{url}/users/_doc/1", json={"name": "x", "password": "hunter2"}, headers={"Authorization": basic}, timeout=10
    )
    assert r.status_code == 201
    p.wait_log("kafka.produce result", timeout=20)
    log = p.log()
    assert "access log:" in log and "kafka write size" in log
    for secret in ("pa55word", "hunter2", "dXNlcjpodW50ZXIy", "Zm9vOmJhcmJheg"):
        assert secret not in log, secret


@pytest.mark.parametrize(
    "line,secret",
    [
        ('"header":{"Authorization":["Basic dXNlcjpwYXNz"]}', "dXNlcjpwYXNz"),
        ("Authorization: ApiKey Zm9vOmJhcg==", "Zm9vOmJhcg"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "eyJhbGci"),
        ("GET http://elastic:changeme@10.0.0.1:9200/x", "changeme"),
        ('{"body":"{\\"password\\":\\"hunter2\\"}"}', "hunter2"),
    ],
)
def test_redact(line, secret):
    assert secret not in redact(line)


def test_redact_keeps_plain_text():
    text = 'Basic realm="esproxy" charset="UTF-8"; the basic idea; http://127.0.0.1:9200/x'
    assert redact(text) == text


def test_log_level(servers, procs, tmp_path):
    a, _b, _k = servers
    port = free_port()
    p = Esproxy(
        {
            "logLevel": "warn",
            "source": {"proxies": [{"port": port, "host": "127.0.0.1"}]},
            "destination": {"primaries": [{"url": a}]},
        },
        tmp_path,
    )
    procs.append(p)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/_esproxy/health", timeout=1).status_code == 200, timeout=30, msg="up")
    assert requests.get(url + "/nope-404/_doc/1", timeout=5).status_code == 404
    assert p.terminate() == 0
    assert "[INFO ]" not in p.log()  # `proxy listening on`, `esproxy stopped` are INFO lines
