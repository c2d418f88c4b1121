"""Settling a write of unknown outcome on a real cluster: A goes on executing a write whose client died, so
its documents are read only once the writes it was executing have finished (see esproxy/settle.py)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from esproxy.config import Duration, ElasticDestination, Url
from esproxy.dest.elastic import Elastic
from esproxy.settle import WRITE_TASKS, wait_for_writes_in_flight, write_tasks

pytestmark = pytest.mark.real

DOCS = 20000


def test_settling_waits_for_the_writes_a_is_still_executing(es_a, names):
    if requests.get(es_a + WRITE_TASKS, timeout=10).status_code != 200:
        pytest.skip("this cluster has no tasks API (osmem): it applies a write before it reads the next request")
    index = names.index()
    assert requests.put(f"{es_a}/{index}", timeout=30).status_code == 200
    body = "".join(f'{{"index":{{"_id":"{i}"}}}}\n{json.dumps({"n": i, "pad": "x" * 40})}\n' for i in range(DOCS))
    data = body.encode()
    head = (
        f"POST /{index}/_bulk HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    parts = urlsplit(es_a)
    primary = Elastic(ElasticDestination(url=Url(es_a), timeout=Duration(60)))
    # A client (a proxy worker) sends a long write and dies before the answer.
    with socket.create_connection((parts.hostname, parts.port)) as s:
        s.sendall(head + data)
        in_flight = None
        for _ in range(200):
            in_flight = write_tasks(primary)
            if in_flight:
                break
    assert in_flight, "A never showed the write as running"
    wait_for_writes_in_flight(primary, timeout=60)
    # What a settle reads now is what A ends up with: the whole write, though nobody got its answer.
    requests.post(f"{es_a}/{index}/_refresh", timeout=30)
    assert requests.get(f"{es_a}/{index}/_count", timeout=30).json()["count"] == DOCS
