"""The bench's peer (issue 24): the Go elasticproxy's config rendered from esproxy's, the check of its
binary, and the side-by-side figures with the ratio esproxy / peer. Pure logic; the bench itself is run
by `make bench BENCH_PEER=...` (docs/performance.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the bench package lives beside esproxy, not in the installed distribution

from bench import report  # noqa: E402
from bench.load import LoadResult  # noqa: E402
from bench.peer import PEER_NAME, PeerError, PeerRow, check_binary, format_row, peer_config, peer_rows  # noqa: E402
from bench.scenarios import Side  # noqa: E402


def _conf1(**proxy_extra: object) -> dict:
    """conf1.yml as the bench renders it for its proxy (Bench.proxy_config): port, A's URL, the broker, a topic."""
    conf = yaml.safe_load((REPO / "conf1.yml").read_text(encoding="utf-8"))
    conf["source"]["proxies"] = [{**conf["source"]["proxies"][0], "port": 40001, **proxy_extra}]
    conf["destination"]["primaries"] = [{**conf["destination"]["primaries"][0], "url": "http://127.0.0.1:40002/"}]
    kafka = conf["destination"]["kafkas"][0]
    conf["destination"]["kafkas"] = [{**kafka, "topic": "bench.s1.peer.x", "brokers": ["127.0.0.1:40003"]}]
    return conf


def test_peer_config_carries_conf1_settings_over_to_the_go_keys() -> None:
    conf, dropped = peer_config(_conf1(), port=40009)
    assert conf == {
        "chanSize": 2048,
        "source": {"proxies": [{"port": 40009, "accesslog": True}]},
        "destination": {
            "primaries": [{"url": "http://127.0.0.1:40002/", "timeout": "60s"}],
            "kafkas": [{"topic": "bench.s1.peer.x", "brokers": ["127.0.0.1:40003"], "codec": "none"}],
        },
    }
    # what the Go tool has no key for is named, not silently lost
    assert dropped == ["source.proxies[0].host", "destination.kafkas[0].sync", "destination.kafkas[0].requiredAcks"]


def test_peer_config_follows_accesslog_and_names_esproxy_only_settings() -> None:
    esproxy = _conf1(accesslog=False, durability="spool", header={"X-Token": "t"}, labels={"site": "dc1"})
    esproxy["workers"] = 2
    esproxy["destination"]["followers"] = [{"url": "http://127.0.0.1:40004/"}]
    esproxy["destination"]["kafkas"][0]["version"] = "2.7.2"
    conf, dropped = peer_config(esproxy, port=40010)
    assert conf["source"]["proxies"] == [
        {"port": 40010, "accesslog": False, "header": {"X-Token": "t"}, "labels": {"site": "dc1"}}
    ]
    assert conf["destination"]["kafkas"][0]["version"] == "2.7.2"
    assert "workers" in dropped and "source.proxies[0].durability" in dropped
    assert "destination.followers" in dropped


def test_peer_config_matches_keys_case_insensitively_as_esproxy_does() -> None:
    esproxy = {
        "ChanSize": 0,
        "Source": {"Proxies": [{"Port": 1, "AccessLog": True}]},
        "Destination": {"Primaries": [{"URL": "http://127.0.0.1:9/", "Timeout": "3s"}]},
    }
    conf, dropped = peer_config(esproxy, port=40011)
    assert conf == {
        "chanSize": 0,
        "source": {"proxies": [{"port": 40011, "accesslog": True}]},
        "destination": {"primaries": [{"url": "http://127.0.0.1:9/", "timeout": "3s"}]},
    }
    assert dropped == []


@pytest.mark.parametrize(
    "esproxy, message",
    [
        ({"source": {"proxies": []}, "destination": {"primaries": [{"url": "u"}]}}, "source.proxies"),
        ({"source": {"proxies": [{"port": 1}]}, "destination": {}}, "destination.primaries"),
    ],
)
def test_peer_config_refuses_what_it_cannot_translate(esproxy: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        peer_config(esproxy, port=1)


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "elasticproxy"
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_check_binary_reports_what_the_binary_says_and_refuses_a_broken_one(tmp_path: Path) -> None:
    with pytest.raises(PeerError, match="no such file"):
        check_binary(tmp_path / "missing")
    with pytest.raises(PeerError, match="exited 3"):
        check_binary(_script(tmp_path, "echo nope >&2; exit 3"))
    good = _script(tmp_path, 'echo "version: 1.0.0"; echo "build  : "')
    assert check_binary(good).startswith("elasticproxy 1.0.0")
    good.with_name("elasticproxy.source").write_text("source x at ed4d43a, go1.26.8\n", encoding="utf-8")
    assert check_binary(good) == "elasticproxy 1.0.0, source x at ed4d43a, go1.26.8"


def _side(rps: float, p50_ms: float, p99_ms: float, cpu: dict[str, float], seconds: float = 10.0) -> Side:
    answered = round(rps * seconds)
    load = LoadResult(
        label="x",
        url="http://127.0.0.1:1/",
        connections=100,
        threads=2,
        elapsed=seconds,
        answered=answered,
        statuses={"200": answered},
        errors={},
        bytes_read=0,
        bytes_written=0,
        latency_us={"min": 1.0, "mean": 1.0, "stdev": 0.0, "max": p99_ms * 1000},
        percentiles_us=[(50.0, int(p50_ms * 1000)), (99.0, int(p99_ms * 1000)), (100.0, int(p99_ms * 1000))],
        client_cpu=0.0,
    )
    return Side(load, cpu)


def _by_figure(rows: list[PeerRow]) -> dict[str, PeerRow]:
    return {r.figure: r for r in rows}


def test_peer_rows_put_each_figure_side_by_side_with_the_ratio_esproxy_over_peer() -> None:
    res = {
        "S1": {
            "direct": _side(600, 90, 160, {"osmem A": 5.0}),
            "proxy": _side(500, 190, 320, {"esproxy": 2.5, "osmem A": 5.0}),  # 500 µs per write
            "peer": _side(550, 140, 240, {PEER_NAME: 1.375, "osmem A": 5.0}),  # 250 µs per write
            "proxy_docs_in_a": 5000,
            "messages": 5000,
            "peer_docs_in_a": 5500,
            "peer_messages": 5500,
        },
        "S2": {
            "direct": _side(30000, 2, 70, {"osmem A": 9.0}),
            "proxy": _side(4000, 25, 150, {"esproxy": 4.4}),  # 110 µs per GET
            "peer": _side(8000, 12, 40, {PEER_NAME: 2.08}),  # 26 µs per GET
            "proxy_noaccesslog": _side(6000, 16, 100, {"esproxy": 6.0}),
            "peer_noaccesslog": _side(20000, 5, 30, {PEER_NAME: 6.0}),
        },
        "peak_rss": {"after": "S2", "esproxy": 50.0, "peer": 25.0},
    }
    rows = _by_figure(peer_rows(res, report.cpu_us))
    s1 = rows["S1 captured POST, req/s"]
    assert (s1.esproxy, s1.peer, s1.direct) == (500, 550, 600) and s1.ratio == pytest.approx(500 / 550)
    assert rows["S1 p99 ms"].ratio == pytest.approx(320 / 240)
    cpu = rows["S1 proxy CPU µs per request"]
    assert (cpu.esproxy, cpu.peer, cpu.ratio) == (pytest.approx(500), pytest.approx(250), pytest.approx(2.0))
    assert rows["S1 Kafka records / documents written through it to A"].ratio == 1.0
    get = rows["S2 proxy CPU µs per request"]
    assert get.ratio == pytest.approx(110 / 26)
    assert rows["S2 GET one document, req/s"].ratio == pytest.approx(0.5)
    quiet = rows["S2 accesslog: false, proxy CPU µs per request"]
    assert (quiet.esproxy, quiet.peer) == (pytest.approx(100), pytest.approx(30))
    assert rows["S2 accesslog: false, req/s"].ratio == pytest.approx(0.3)
    rss = next(r for r in rows.values() if r.figure.startswith("peak RSS"))
    assert rss.ratio == 2.0 and "end of S2" in rss.figure
    assert format_row(rows["S2 GET one document, req/s"]) == (
        "| S2 GET one document, req/s | 4,000 | 8,000 | **0.50×** | higher is better | 30,000 |"
    )
    # issue 24's targets, on the conf1.yml pair and on the no-access-log pair
    targets = {row[0]: row[1:] for row in report._peer_target_rows(res)}
    assert targets["S2 req/s: esproxy / Go elasticproxy (issue 24)"] == ("4000 / 8000 = 0.50", "≥ 0.5×", "met")
    assert targets["S2 CPU µs per GET: esproxy / Go elasticproxy (issue 24)"][2] == "not met"  # 4.2× > 2×
    assert targets["S1 CPU µs per captured write: esproxy / Go elasticproxy (issue 24)"] == (
        "500 / 250 = 2.00",
        "≤ 1.5×",
        "not met",
    )
    assert targets["S1 req/s: esproxy / Go elasticproxy (issue 24)"][2] == "not met"
    assert targets["S2 req/s, accesslog: false on both: esproxy / Go elasticproxy (issue 24)"][2] == "not met"


def test_without_a_peer_there_are_no_peer_rows() -> None:
    res = {"S2": {"direct": _side(1, 1, 1, {}), "proxy": _side(1, 1, 1, {"esproxy": 1.0})}, "peak_rss": {"esproxy": 1}}
    assert peer_rows(res, report.cpu_us) == []
    assert report._peer_target_rows(res) == []


@pytest.mark.parametrize(
    "esproxy, peer, expected", [(2.0, 4.0, 0.5), (None, 4.0, None), (2.0, None, None), (2.0, 0.0, None)]
)
def test_ratio_is_esproxy_over_peer_and_none_without_both(
    esproxy: Optional[float], peer: Optional[float], expected: Optional[float]
) -> None:
    row = PeerRow("f", esproxy, peer, "higher")
    assert row.ratio == expected
    assert ("n/a" in format_row(row)) == (expected is None)
