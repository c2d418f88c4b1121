"""Read/write splitting, pure logic: which requests a follower may answer, read-your-writes memory,
follower state (esproxy/proxy/readroute.py)."""

from __future__ import annotations

import gzip
import json

import pytest

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.core import config
from esproxy.core.config import ElasticDestination, FollowRule, FollowSettings
from esproxy.core.schema import Duration, Url
from esproxy.proxy.readroute import (
    CLUSTER,
    WRITE,
    Follower,
    ReadRouter,
    RecentWrites,
    View,
    client_key,
    follower_view,
    leader_reason,
    read_indices,
    written_indices,
)
from esproxy.proxy.request import Request
from esproxy.replay.follow import Rules


@pytest.mark.parametrize(
    "method,uri,body",
    [
        ("GET", "/logs/_search?q=x", b""),
        ("POST", "/logs/_search", b'{"query":{"match_all":{}}}'),
        ("POST", "/logs,metrics/_count", b"{}"),
        ("POST", "/_msearch", b'{"index":"logs"}\n{}\n'),
        ("POST", "/_mget", b'{"docs":[]}'),
        ("GET", "/logs/_doc/1", b""),
        ("HEAD", "/logs/_doc/1", b""),
        ("GET", "/logs/_source/a%2Fb", b""),
        ("HEAD", "/logs", b""),
        ("GET", "/logs/_mapping", b""),
        ("GET", "/logs/doc/1", b""),  # Elasticsearch 6 typed get
        ("POST", "/logs/_field_caps?fields=*", b""),
        ("POST", "/logs/_validate/query", b"{}"),
        ("GET", "/logs/_explain/1", b"{}"),
        ("POST", "/_search", b'{"query":{"term":{"pitch":"x"}}}'),  # a field named like pit is no pit
    ],
)
def test_follower_may_answer(method: str, uri: str, body: bytes) -> None:
    assert leader_reason(method, uri, body) is None


@pytest.mark.parametrize(
    "method,uri,body,reason",
    [
        ("PUT", "/logs/_doc/1", b"{}", WRITE),
        ("POST", "/_bulk", b"", WRITE),
        ("DELETE", "/logs", b"", WRITE),
        ("POST", "/logs/_search?scroll=1m", b"{}", "scroll"),
        ("GET", "/logs/_search?size=10&scroll=30s", b"", "scroll"),
        ("POST", "/_search/scroll", b'{"scroll_id":"x"}', "scroll"),
        ("GET", "/_search/scroll/abc?scroll=1m", b"", "scroll"),
        ("DELETE", "/_search/scroll", b'{"scroll_id":["x"]}', "scroll"),
        ("POST", "/logs/_pit?keep_alive=1m", b"", "scroll"),
        ("DELETE", "/_pit", b'{"id":"x"}', "scroll"),
        ("POST", "/logs/_search/point_in_time?keep_alive=1m", b"", "scroll"),
        ("DELETE", "/_search/point_in_time", b'{"pit_id":["x"]}', "scroll"),
        ("POST", "/_search", b'{"pit":{"id":"x","keep_alive":"1m"}}', "scroll"),
        ("POST", "/logs/_async_search", b"{}", "scroll"),
        ("GET", "/_async_search/abc", b"", "scroll"),
        ("POST", "/_sql?format=json", b'{"query":"select 1"}', "scroll"),
        ("POST", "/logs/_eql/search", b"{}", "scroll"),
        ("GET", "/", b"", CLUSTER),
        ("GET", "/_cat/indices", b"", CLUSTER),
        ("GET", "/_cluster/health", b"", CLUSTER),
        ("GET", "/_nodes/stats", b"", CLUSTER),
        ("GET", "/logs/_settings", b"", CLUSTER),
        ("GET", "/logs/_stats", b"", CLUSTER),
    ],
)
def test_leader_answers(method: str, uri: str, body: bytes, reason: str) -> None:
    assert leader_reason(method, uri, body) == reason


def test_indices_a_read_names() -> None:
    assert read_indices("/logs/_search?q=x") == ["logs"]
    assert read_indices("/logs,metrics-*/_count") == ["logs", "metrics-*"]
    assert read_indices("/logs%2Cb/_doc/1") == ["logs", "b"]
    assert read_indices("/_search") is None
    assert read_indices("/logs/_msearch") is None  # the body may name others


def test_indices_a_write_names() -> None:
    assert written_indices("PUT", "/logs/_doc/1", b"{}") == ["logs"]
    bulk = b'{"index":{"_index":"a","_id":"1"}}\n{}\n{"delete":{"_index":"b","_id":"2"}}\n'
    assert written_indices("POST", "/_bulk", bulk) == ["a", "b"]
    assert written_indices("POST", "/c/_bulk", b'{"index":{"_id":"1"}}\n{}\n') == ["c"]
    assert written_indices("POST", "/_bulk", b'{"index":{"_id":"1"}}\n{}\n') == ["*"]  # no index named
    assert written_indices("POST", "/_bulk", b"not json\n") == ["*"]
    assert written_indices("POST", "/_reindex", b'{"dest":{"index":"x"}}') == ["*"]
    assert written_indices("PUT", "/_template/t", b"{}") == ["*"]


def test_recent_writes_expire_and_match_patterns() -> None:
    recent = RecentWrites(window=5)
    recent.wrote("c1", ["logs-1"], now=100)
    assert recent.recently_wrote("c1", ["logs-1"], now=104)
    assert recent.recently_wrote("c1", ["logs-*"], now=104)
    assert recent.recently_wrote("c1", None, now=104)  # a read naming no index may read it
    assert not recent.recently_wrote("c1", ["other"], now=104)
    assert not recent.recently_wrote("c2", ["logs-1"], now=104)
    assert not recent.recently_wrote("c1", ["logs-1"], now=105.1)
    assert len(recent) == 0  # expired entries are dropped


def test_recent_writes_are_bounded() -> None:
    recent = RecentWrites(window=60, clients=3, per_client=2)
    for i in range(5):
        recent.wrote(f"c{i}", ["x"], now=1)
    assert len(recent) == 3
    assert not recent.recently_wrote("c0", ["x"], now=2)  # the least recent writer is forgotten
    assert recent.recently_wrote("c4", ["x"], now=2)
    recent.wrote("c4", ["a", "b", "c"], now=2)  # more indices than remembered: everything
    assert recent.recently_wrote("c4", ["zzz"], now=3)


def test_client_key_prefers_credentials() -> None:
    a = client_key({"HTTP_AUTHORIZATION": "Basic dTpw", "REMOTE_ADDR": "10.0.0.1"})
    b = client_key({"HTTP_AUTHORIZATION": "Basic dTpw", "REMOTE_ADDR": "10.0.0.2"})
    assert a == b and "dTpw" not in a
    assert client_key({"REMOTE_ADDR": "10.0.0.1"}) != client_key({"REMOTE_ADDR": "10.0.0.2"})


def _rules(*rules: FollowRule) -> Rules:
    return Rules.from_config(FollowSettings(rules=list(rules)))


def test_follower_view() -> None:
    assert follower_view("GET", "/x/_search", b"", b"", None) == View("/x/_search", b"")  # no rules: as sent
    same = _rules(FollowRule(name="logs", indices=["logs-*"]))
    view = follower_view("GET", "/logs-1/_search", b"", b"", same)
    assert view is not None and view.uri == "/logs-1/_search" and view.names is not None
    assert follower_view("GET", "/users/_search", b"", b"", same) is None  # not followed: B may not have it
    assert follower_view("GET", "/logs-*/_search", b"", b"", same) is None  # a pattern may reach unfollowed ones
    assert follower_view("GET", "/_search", b"", b"", same) is None
    renamed = _rules(FollowRule(name="logs", indices=["logs-*"], rename="{{remote_index}}-sync"))
    view = follower_view("GET", "/logs-1/_search", b"", b"", renamed)
    assert view is not None and view.uri == "/logs-1-sync/_search"
    answer = b'{"hits":{"hits":[{"_index":"logs-1-sync","_id":"1","_source":{"n":1}}]}}'
    assert view.names is not None and b'"_index":"logs-1"' in (view.names.answer(200, answer) or b"")


def _follower(max_lag: float = 5.0, replay_admin: str = "") -> Follower:
    cfg = ElasticDestination(url=Url("http://127.0.0.1:9"), maxLag=Duration(max_lag), replayAdmin=replay_admin)
    return Follower(Elastic(cfg, "follower"))


def test_follower_state() -> None:
    f = _follower()
    assert f.unusable() == "lag"  # lag not known yet
    f.lag = 1.0
    assert f.unusable() is None
    f.lag = 6.0
    assert f.unusable() == "lag"
    f.lag = 1.0
    f.failed(UpstreamError("http://127.0.0.1:9/x", "timed out", timeout=True))
    assert f.unusable() == "timeout"
    assert f.row()["state"] == "timeout" and not f.row()["usable"]
    ignoring = _follower(max_lag=0)
    assert ignoring.unusable() is None  # maxLag 0: the lag does not matter, known or not


def _request(environ: dict, method: str, uri: str, body: bytes) -> Request:
    """The request as ProxyApp hands it to the router (its Content-Encoding from the environ)."""
    return Request(method, uri, body, environ.get("HTTP_CONTENT_ENCODING", "").lower())


def test_router_choices() -> None:
    ok, lagging = _follower(max_lag=0), _follower()
    router = ReadRouter(read_your_writes=30)
    env = {"REMOTE_ADDR": "10.0.0.1"}
    assert router.choose(env, _request(env, "GET", "/x/_search", b""), [ok])[:2] == (ok, "")
    assert router.choose(env, _request(env, "GET", "/x/_search", b""), [lagging])[:2] == (None, "lag")
    assert router.choose(env, _request(env, "GET", "/x/_search", b""), [lagging, ok])[:2] == (ok, "")
    forced = {**env, "HTTP_X_ESPROXY_READ": "leader"}
    assert router.choose(forced, _request(forced, "GET", "/x/_search", b""), [ok])[:2] == (None, "forced")
    gz = {**env, "HTTP_CONTENT_ENCODING": "gzip"}
    pit = gzip.compress(json.dumps({"pit": {"id": "p"}}).encode())
    assert router.choose(gz, _request(gz, "POST", "/_search", pit), [ok])[:2] == (None, "scroll")
    router.answered(env, _request(env, "PUT", "/x/_doc/1", b"{}"), 201)
    assert router.choose(env, _request(env, "GET", "/x/_search", b""), [ok])[:2] == (None, "read_your_writes")
    assert router.choose(env, _request(env, "GET", "/y/_search", b""), [ok])[:2] == (ok, "")
    other = {"REMOTE_ADDR": "10.0.0.2"}
    assert router.choose(other, _request(other, "GET", "/x/_search", b""), [ok])[:2] == (ok, "")
    router.answered(other, _request(other, "PUT", "/y/_doc/1", b"{}"), 400)  # a refused write opens no window
    assert router.choose(other, _request(other, "GET", "/y/_search", b""), [ok])[:2] == (ok, "")


def _conf(extra: str) -> str:
    return "source:\n  proxies: [{port: 9201}]\ndestination:\n  primaries: [{url: 'http://127.0.0.1:9200'}]\n" + extra


def test_config_warnings() -> None:
    cfg = config.parse(_conf("  followers: [{url: 'http://127.0.0.1:9300'}]\n"))
    assert any("no replayAdmin" in w for w in cfg.warnings)
    cfg = config.parse(_conf("  followers: [{url: 'http://127.0.0.1:9300', maxLag: 0}]\n"))
    assert not any("followers" in w for w in cfg.warnings)
    ryw = "source:\n  proxies: [{port: 9201, readYourWrites: 2s}]\n"
    cfg = config.parse(ryw + "destination:\n  primaries: [{url: 'http://127.0.0.1:9200'}]\n")
    assert any("readYourWrites: no destination.followers" in w for w in cfg.warnings)
