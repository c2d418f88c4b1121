"""Pass-through: the proxy must be invisible to clients.

The same request sequence is sent directly to a fresh osmem A1 and, through esproxy, to a second
fresh osmem A2 (same starting state). Each step must give the same status, content-type and body.

Normalisation is minimal and explicit, per step:
  - `took` (top level of search/bulk/count responses) is a timing, removed on both sides;
  - the `_id` of the auto-id POST is random, replaced by a placeholder on both sides.
Everything else is compared byte for byte (pretty output included).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import requests
from support.configs import proxy_config

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}

# Response headers that must appear at most once in a proxied response.
SINGLE_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
    "server",
    "x-elastic-product",
)
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")


def drop_took(body):
    if isinstance(body, dict):
        body.pop("took", None)
    return body


def mask_id(body):
    if isinstance(body, dict) and "_id" in body:
        body["_id"] = "<random>"
    return body


@dataclass
class Step:
    name: str
    method: str
    path: str
    kwargs: Callable[[], dict] = field(default=lambda: {})
    normalise: Optional[Callable] = None
    status: Optional[int] = None  # sanity check of what osmem itself answers directly


def chunks(*parts: bytes):
    def gen():
        yield from parts

    return gen


INDEX = "pt"
MAPPINGS = {"mappings": {"properties": {"name": {"type": "keyword"}, "n": {"type": "long"}}}}
BULK = (
    b'{"index":{"_index":"pt","_id":"b1"}}\n{"name":"bulk one","n":11}\n'
    b'{"create":{"_index":"pt","_id":"b2"}}\n{"name":"bulk two","n":12}\n'
    b'{"index":{"_id":"b3"}}\n{"name":"bulk three","n":13}\n'
    b'{"delete":{"_index":"pt","_id":"b3"}}\n'
)

STEPS = [
    Step("root", "GET", "/", status=200),
    Step("create-index", "PUT", f"/{INDEX}", lambda: {"json": MAPPINGS}, status=200),
    Step("put-doc", "PUT", f"/{INDEX}/_doc/1", lambda: {"json": {"name": "one", "n": 1}}, status=201),
    Step(
        "post-doc-refresh",
        "POST",
        f"/{INDEX}/_doc/2?refresh=true",
        lambda: {"data": b'{"name":"two","n":2}', "headers": JSON},
        status=201,
    ),
    Step("post-auto-id", "POST", f"/{INDEX}/_doc", lambda: {"json": {"name": "auto"}}, mask_id, 201),
    Step("get-doc", "GET", f"/{INDEX}/_doc/1", status=200),
    Step("head-doc", "HEAD", f"/{INDEX}/_doc/1", status=200),
    Step("head-missing-doc", "HEAD", f"/{INDEX}/_doc/missing", status=404),
    Step("get-missing-index", "GET", "/no-such-index/_doc/1", status=404),
    Step(
        "malformed-json",
        "PUT",
        f"/{INDEX}/_doc/3",
        lambda: {"data": b'{"name": "broken", ', "headers": JSON},
        status=400,
    ),
    Step("bulk", "POST", f"/{INDEX}/_bulk", lambda: {"data": BULK, "headers": NDJSON}, drop_took, 200),
    Step("refresh", "POST", f"/{INDEX}/_refresh", status=200),
    Step(
        "search",
        "POST",
        f"/{INDEX}/_search",
        lambda: {"json": {"query": {"term": {"name": "bulk one"}}}},
        drop_took,
        200,
    ),
    Step("search-get-qs", "GET", f"/{INDEX}/_search?q=name:one&size=5", normalise=drop_took, status=200),
    Step("count", "GET", f"/{INDEX}/_count", normalise=drop_took, status=200),
    Step(
        "put-pretty",
        "PUT",
        f"/{INDEX}/_doc/1?pretty",
        lambda: {"json": {"name": "one", "n": 100}},
        status=200,
    ),
    Step("get-pretty", "GET", f"/{INDEX}/_doc/1?pretty=true", status=200),
    Step("put-slash-id", "PUT", f"/{INDEX}/_doc/a%2Fb", lambda: {"json": {"name": "slash"}}, status=201),
    Step("get-slash-id", "GET", f"/{INDEX}/_doc/a%2Fb", status=200),
    Step(
        "put-non-ascii-id",
        "PUT",
        f"/{INDEX}/_doc/%E4%B8%AD%E6%96%87-%C3%A9",
        lambda: {"json": {"name": "中文 é"}},
        status=201,
    ),
    Step("get-non-ascii-id", "GET", f"/{INDEX}/_doc/%E4%B8%AD%E6%96%87-%C3%A9", status=200),
    Step(
        "chunked-body",
        "PUT",
        f"/{INDEX}/_doc/chunked",
        lambda: {"data": chunks(b'{"name":', b'"chunked",', b'"n":7}')(), "headers": JSON},
        status=201,
    ),
    Step("get-chunked", "GET", f"/{INDEX}/_doc/chunked", status=200),
    Step(
        "gzip-body",
        "PUT",
        f"/{INDEX}/_doc/gz",
        lambda: {
            "data": gzip.compress(b'{"name":"gzipped","n":8}'),
            "headers": {**JSON, "Content-Encoding": "gzip"},
        },
        status=201,
    ),
    Step("get-gzip", "GET", f"/{INDEX}/_doc/gz", status=200),
    Step("update", "POST", f"/{INDEX}/_update/2", lambda: {"json": {"doc": {"n": 22}}}, status=200),
    Step("get-updated", "GET", f"/{INDEX}/_doc/2", status=200),
    Step("delete-doc", "DELETE", f"/{INDEX}/_doc/2", status=200),
    Step("get-deleted", "GET", f"/{INDEX}/_doc/2", status=404),
    Step("delete-missing-doc", "DELETE", f"/{INDEX}/_doc/never", status=404),
    Step("refresh-2", "POST", f"/{INDEX}/_refresh", status=200),
    Step(
        "search-sorted",
        "POST",
        f"/{INDEX}/_search?size=20&track_total_hits=true",
        lambda: {"json": {"query": {"exists": {"field": "n"}}, "sort": [{"n": "asc"}]}},
        drop_took,
        200,
    ),
]


def norm_body(resp: requests.Response, normalise):
    if normalise is None:
        return resp.content
    try:
        return normalise(resp.json())
    except ValueError:
        return resp.content


def header_list(resp: requests.Response, name: str) -> list:
    return resp.raw.headers.getlist(name)


@pytest.fixture
def pair(osmem_factory, esproxy, kafka, names, port):
    """(direct base URL of A1, proxied base URL in front of A2, topic)."""
    a1 = osmem_factory()
    a2 = osmem_factory()
    topic = names.topic()
    esproxy(proxy_config(port, a2, kafka, topic))
    return a1, f"http://127.0.0.1:{port}", topic


def send(base: str, step: Step, session=None) -> requests.Response:
    return (session or requests).request(step.method, base + step.path, timeout=15, **step.kwargs())


@pytest.mark.parametrize("keepalive", [False, True], ids=["new-connections", "one-keepalive-session"])
def test_passthrough_sequence(pair, keepalive):
    """With one kept-alive session, a framing slip (a body after a HEAD answer, a wrong length...)
    would also corrupt the following responses."""
    direct, proxied, _ = pair
    problems = []
    s1 = requests.Session() if keepalive else None
    s2 = requests.Session() if keepalive else None
    for step in STEPS:
        r1 = send(direct, step, s1)
        r2 = send(proxied, step, s2)
        if step.status is not None:
            assert r1.status_code == step.status, f"{step.name}: osmem itself answered {r1.status_code}"
        where = f"{step.name} ({step.method} {step.path})"
        if r1.status_code != r2.status_code:
            problems.append(f"{where}: status direct={r1.status_code} proxied={r2.status_code} {r2.text[:300]}")
            continue
        if r1.headers.get("content-type") != r2.headers.get("content-type"):
            problems.append(
                f"{where}: content-type direct={r1.headers.get('content-type')!r} "
                f"proxied={r2.headers.get('content-type')!r}"
            )
        b1, b2 = norm_body(r1, step.normalise), norm_body(r2, step.normalise)
        if b1 != b2:
            problems.append(f"{where}: body differs\n  direct:  {b1!r:.400}\n  proxied: {b2!r:.400}")
    assert not problems, "\n".join(problems)


def test_passthrough_headers_not_duplicated(pair):
    direct, proxied, _ = pair
    problems = []
    for step in STEPS:
        r1 = send(direct, step)
        r2 = send(proxied, step)
        for name in SINGLE_HEADERS + HOP_BY_HOP:
            values = header_list(r2, name)
            if len(values) > 1:
                problems.append(f"{step.name}: header {name} repeated: {values}")
        if header_list(r2, "content-length") and header_list(r2, "transfer-encoding"):
            problems.append(f"{step.name}: both Content-Length and Transfer-Encoding: {dict(r2.headers)}")
        # Headers of the upstream response that are end-to-end must survive the proxy.
        for name in ("x-elastic-product", "content-encoding"):
            if r1.headers.get(name) != r2.headers.get(name):
                problems.append(f"{step.name}: {name} direct={r1.headers.get(name)!r} proxied={r2.headers.get(name)!r}")
    assert not problems, "\n".join(problems)


def test_passthrough_hop_by_hop_request_headers(pair):
    """Hop-by-hop request headers sent by the client are the proxy's, not the upstream's business:
    a `Connection: close` with a custom hop-by-hop header must not break the exchange."""
    direct, proxied, _ = pair
    headers = {"Connection": "close, X-Hop", "X-Hop": "1", "TE": "trailers"}
    r1 = requests.get(direct + "/", headers=headers, timeout=10)
    r2 = requests.get(proxied + "/", headers=headers, timeout=10)
    assert (r1.status_code, r1.content) == (r2.status_code, r2.content)
    assert len(header_list(r2, "connection")) <= 1


def test_passthrough_large_body(pair):
    """A ~512 KB document goes through unchanged (both the stored source and the response)."""
    direct, proxied, _ = pair
    doc = {"name": "big", "blob": "x" * (512 * 1024)}
    data = json.dumps(doc).encode()
    r1 = requests.put(direct + "/big/_doc/1?refresh=true", data=data, headers=JSON, timeout=30)
    r2 = requests.put(proxied + "/big/_doc/1?refresh=true", data=data, headers=JSON, timeout=30)
    assert r1.status_code == 201
    assert (r2.status_code, r2.content) == (r1.status_code, r1.content)
    g1 = requests.get(direct + "/big/_doc/1", timeout=30)
    g2 = requests.get(proxied + "/big/_doc/1", timeout=30)
    assert g2.status_code == 200 and g2.json()["_source"] == doc
    assert g1.content == g2.content


def test_large_answers_are_streamed_unchanged(esproxy, es_a, port, names, tmp_path):
    """A read answer over 256 KiB passes through as it arrives (the log says so), byte for byte."""
    conf = proxy_config(port, es_a)
    conf["source"]["proxies"][0]["accesslog"] = True
    proc = esproxy(conf)
    index = names.index()
    big = {"text": "数据" * 400_000, "n": 1}  # ~2.4 MB of UTF-8
    r = requests.put(f"{es_a}/{index}/_doc/big?refresh=true", json=big, timeout=30)
    assert r.status_code in (200, 201), r.text
    for path in (f"/{index}/_doc/big", f"/{index}/_search?q=n:1"):
        direct = requests.get(es_a + path, timeout=30)
        proxied = requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)
        assert proxied.status_code == direct.status_code == 200
        if "_search" in path:
            assert drop_took(proxied.json()) == drop_took(direct.json())
        else:
            assert proxied.content == direct.content
            assert proxied.headers.get("Content-Length") == str(len(direct.content))
    proc.wait_log("<streamed, ", count=2)
    # Small answers are still read whole and logged as they are.
    requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    proc.wait_log('"Method":"GET","Path":"/"')
