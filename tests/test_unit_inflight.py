"""esproxy.proxy.inflight: the budget of request bytes in flight, alone and shared between processes."""

from __future__ import annotations

import json
import os

import pytest

from esproxy.core.config import ConfigError, parse
from esproxy.proxy.inflight import Budget, Shared, refusal_body


def test_a_budget_refuses_what_would_pass_it_and_takes_it_once_given_back():
    b = Budget(100)
    assert b.take(60) and b.take(40)
    assert not b.take(1) and b.used == 100
    b.give(40)
    assert b.take(30) and not b.take(11) and b.in_flight() == 90


def test_no_budget_takes_everything():
    b = Budget(0)
    assert b.take(10**12) and b.in_flight() == 0


def test_workers_share_one_budget_and_a_dead_workers_slot_is_cleared():
    master = Shared.create(3)
    try:
        one = Budget(100, Shared.of_worker(master.worker_env(0)))
        two = Budget(100, Shared.of_worker(master.worker_env(1)))
        assert one.take(70)
        assert not two.take(31) and two.take(30)
        assert master.total() == 100 and one.in_flight() == 100
        one.give(20)
        assert two.take(20) and not one.take(1)
        master.clear(0)  # worker 0 died holding 50
        assert master.total() == 50 and one.take(50)
    finally:
        os.close(master.fd)


def test_the_refusal_is_elasticsearchs_circuit_breaking_exception():
    doc = json.loads(refusal_body(200, 300, 400))
    assert doc["status"] == 429
    cause = doc["error"]["root_cause"][0]
    assert doc["error"]["type"] == cause["type"] == "circuit_breaking_exception"
    assert cause["bytes_wanted"] == 500 and cause["bytes_limit"] == 400 and cause["durability"] == "TRANSIENT"
    assert cause["reason"].startswith("[in_flight_requests] Data too large")


CONF = """
source: {proxies: [{port: 9200, maxContentLength: %s}]}
destination: {primaries: [{url: "http://127.0.0.1:9201"}]}
maxInFlightBytes: %s
"""


def test_the_budget_holds_twice_the_largest_body():
    assert parse(CONF % ("100mb", "200mb")).maxInFlightBytes == 200 << 20
    assert parse(CONF % ("100mb", "0")).maxInFlightBytes == 0
    with pytest.raises(ConfigError, match="maxInFlightBytes"):
        parse(CONF % ("100mb", "199mb"))


@pytest.mark.parametrize(
    "body",
    [
        b"x" * 3_000_000,
        ('{"a":"\u00e9\\\\"\t\x01"}\n' * 200_000).encode(),
        b"\n" * 2_000_000,
        ("x" * 1_048_570 + "\n\u00e9").encode(),
        os.urandom(2_000_000),  # not UTF-8: base64, made whole
    ],
    ids=["plain", "escapes", "newlines", "cut-near-a-character", "binary"],
)
def test_a_large_beans_json_made_in_pieces_is_the_json_made_whole(body):
    from esproxy.core.bean import Bean

    bean = Bean("POST", "/_bulk", body, labels={"k": "v"}, index="i", kind="docs")
    whole = json.dumps(bean.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
    assert b"".join(bean.json_pieces()) == whole
    assert bean.to_json() == whole
