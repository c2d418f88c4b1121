"""One parsed request (issue 23): a `_bulk` through the proxy with the read-only guard, assigned ids,
followers (read routing and read-your-writes) and capture all on is read once: the `_bulk` parser is
called once, and the request is classified once.

The proxy's app (ProxyApp) runs in this process, in front of an osmem cluster, and is called as its
WSGI server calls it; the captured beans go to a recording sink in place of the spool. Every binding
of the parser and of the classifiers in esproxy's loaded modules is wrapped with a counter, so a stage
that calls one on its own, whatever it imported, is counted.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from typing import Any, Callable, Iterator

import pytest
import requests

from esproxy.clients.elastic import Elastic
from esproxy.core import bulk, routing
from esproxy.core.bean import Bean
from esproxy.core.config import ElasticDestination, FollowRule, FollowSettings, ProxySource
from esproxy.core.schema import Duration, Url
from esproxy.proxy import request as request_module
from esproxy.proxy.handler import ProxyApp
from esproxy.proxy.readroute import Follower, ReadRouter
from esproxy.replay.follow import Rules

COUNTED = {
    "parse_request": bulk.parse_request,
    "is_write": routing.is_write,
    "write_kind": request_module.write_kind,
}


class Sink:
    """A Recorder with a spool's calls (durability: spool): the intents and beans, kept in memory."""

    records_intents = True

    def __init__(self) -> None:
        self.intents: dict[str, tuple[str, str, bytes]] = {}
        self.beans: dict[str, list[Bean]] = {}

    def begin(self, method: str, uri: str, body: bytes) -> str:
        intent = f"i{len(self.intents)}"
        self.intents[intent] = (method, uri, bytes(body))
        return intent

    def done(self, intent_id: str, beans: list[Bean]) -> None:
        self.beans[intent_id] = beans

    def put(self, bean: Bean) -> None:
        raise AssertionError("durability: spool records through begin/done")

    def deliver_now(self, beans: list[Bean], deadline: float) -> None:
        raise AssertionError("durability: spool records through begin/done")


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """Counts the calls of the `_bulk` parser and the request classifiers, through any module's name for them."""
    counts: Counter = Counter()

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return counted

    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("esproxy"):
            continue
        for name, original in COUNTED.items():
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, counting(name, original))
    return counts


@pytest.fixture
def app(own_server) -> Iterator[ProxyApp]:
    a, b = own_server("osmem"), own_server("osmem")
    cfg = ProxySource(port=0, durability="spool", assignIds=True, readYourWrites=Duration(30))
    primary = Elastic(ElasticDestination(url=Url(a.url)), "primary")
    proxy = ProxyApp(cfg, primary, Sink())
    # In front of a cluster that follows the leader's `logs-*` as `logs-*-replica`: writes to those refused.
    rules = FollowSettings(rules=[FollowRule(name="logs", indices=["logs-*"], rename="{{remote_index}}-replica")])
    proxy.read_only = Rules.from_config(rules)
    proxy.reads = ReadRouter(30.0)  # read-your-writes: a write's indices are remembered
    proxy.followers = [Follower(Elastic(ElasticDestination(url=Url(b.url), maxLag=Duration(0)), "follower"))]
    yield proxy
    for elastic in (primary, proxy.followers[0].elastic):
        elastic.close()


def call(app: ProxyApp, method: str, uri: str, body: bytes) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "RAW_URI": uri,
        "PATH_INFO": uri.split("?", 1)[0],
        "CONTENT_TYPE": "application/x-ndjson",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "proxy",
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    chunks = app(environ, lambda s, headers, exc_info=None: status.append(s))
    return status[0], b"".join(chunks)


BULK = (
    b'{"index":{"_index":"docs"}}\n{"n":1}\n'
    b'{"create":{"_index":"other"}}\n{"n":2}\n'
    b'{"index":{"_index":"docs","_id":"named"}}\n{"n":3}\n'
    b'{"update":{"_index":"docs","_id":"named"}}\n{"doc":{"m":4}}\n'
    b'{"delete":{"_index":"docs","_id":"gone"}}\n'
)


def test_a_bulk_with_every_stage_on_is_parsed_once(app: ProxyApp, calls: Counter) -> None:
    status, answer = call(app, "POST", "/_bulk?refresh=true", BULK)

    assert status.startswith("200"), answer
    assert calls == {"parse_request": 1, "is_write": 1, "write_kind": 1}
    items = [next(iter(item.values())) for item in json.loads(answer)["items"]]
    assert [item["status"] for item in items] == [201, 201, 201, 200, 404]
    # the ids the proxy gave (assignIds) are the ones A holds and the beans carry
    given = [items[0]["_id"], items[1]["_id"]]
    assert len(given[0]) == 20 and len(given[1]) == 20 and given[0] != given[1]
    (beans,) = app.fanout.beans.values()
    ops = {}
    for bean in beans:
        lines = bean.body.split(b"\n")
        for head, source in zip(lines[::2], lines[1::2]):
            meta = json.loads(head)["index"]
            ops[(meta["_index"], meta["_id"])] = json.loads(source)
    assert ops == {("docs", given[0]): {"n": 1}, ("other", given[1]): {"n": 2}, ("docs", "named"): {"n": 3, "m": 4}}
    (intent,) = app.fanout.intents.values()
    assert given[0].encode() in intent[2] and given[1].encode() in intent[2]  # the intent holds the body as forwarded
    a = app.primary.url.rstrip("/")
    assert requests.get(f"{a}/docs/_doc/{given[0]}", timeout=5).json()["_source"] == {"n": 1}


def test_a_bulk_the_read_only_guard_refuses_is_parsed_once(app: ProxyApp, calls: Counter) -> None:
    body = b'{"index":{"_index":"docs"}}\n{"n":1}\n{"index":{"_index":"logs-1-replica"}}\n{"n":2}\n'
    status, answer = call(app, "POST", "/_bulk", body)

    assert status.startswith("403"), answer
    assert "logs-1-replica" in json.loads(answer)["error"]["reason"]
    assert calls == {"parse_request": 1, "is_write": 1}
    assert app.fanout.intents == {}  # refused before anything was recorded or forwarded
