"""Elasticsearch from the test's side: documents, cluster ids, error bodies, and `esproxy compare` until B equals A."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Optional

import requests


def es_doc(base: str, index: str, doc_id: str) -> Optional[dict]:
    """GET a document; its response JSON if found, else None."""
    from urllib.parse import quote

    r = requests.get(f"{base}/{index}/_doc/{quote(doc_id, safe='')}", timeout=5)
    if r.status_code == 200 and r.json().get("found"):
        return r.json()
    return None


def es_cluster_id(base: str) -> Optional[str]:
    r = requests.get(f"{base}/meta.elasticproxy/_doc/clusterid", timeout=5)
    if r.status_code != 200:
        return None
    return (r.json().get("_source") or {}).get("id")


def is_es_error(body: Any, status: int) -> bool:
    """True if body is an Elasticsearch-style error: {"error":{"type":..,"reason":..},"status":N}."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("type"), str)
        and isinstance(body["error"].get("reason"), str)
        and body.get("status") == status
    )


def compare_until_equal(a: str, b: str, index: str = "*", timeout: float = 90) -> str:
    """`esproxy compare` until B holds what A holds in the indices `index` names (a pattern; tests that share
    clusters, as on the real engines, pass their own `names.pattern()`)."""

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "esproxy", "compare", "--source", a, "--target", b, "--index", index],
            capture_output=True,
            text=True,
            timeout=120,
        )

    deadline = time.monotonic() + timeout
    result = run()
    while result.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)  # a compare of a test's few indices takes ~0.15 s: a longer pause only waits
        result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def bulk_load(base: str, index: str, count: int, chunk: int = 2000) -> None:
    """``count`` small documents with ids ``0..count-1`` (plain `_bulk` into the cluster, no proxy)."""
    for start in range(0, count, chunk):
        lines = []
        for i in range(start, min(count, start + chunk)):
            lines += [json.dumps({"index": {"_index": index, "_id": str(i)}}), json.dumps({"n": i, "s": f"doc {i}"})]
        r = requests.post(
            f"{base}/_bulk", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"}, timeout=120
        )
        assert r.status_code == 200 and not r.json()["errors"], r.text[:500]
    requests.post(f"{base}/{index}/_refresh", timeout=60)


def put(base: str, path: str, body: dict, **params: str) -> dict:
    """PUT a JSON body; the answer, which must be 200 or 201."""
    r = requests.put(f"{base}/{path}", params=params, json=body, timeout=10)
    assert r.status_code in (200, 201), r.text
    return r.json()


def index_meta(base: str, index: str) -> dict:
    """GET /index: its mappings, settings and aliases."""
    r = requests.get(f"{base}/{index}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[index]
