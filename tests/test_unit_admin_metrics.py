"""The admin's typed /_esproxy/stats snapshot and the metrics read from it (no servers): every metric of
METRICS renders from a snapshot with every section filled (a misspelt field fails here), and the stats JSON
keeps its shape: its keys in their order, the rows other modules produce as they wrote them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from esproxy.admin import metrics
from esproxy.admin.server import Admin, AdminView
from esproxy.admin.snapshot import (
    FollowerRow,
    PartitionLag,
    Row,
    RuleLaneRow,
    Switchover,
    UnassignedPartition,
    as_json,
)
from esproxy.core.config import HealthSettings
from esproxy.core.stats import FollowedIndex, Stats

LAG = {
    "group": "g",
    "topic": "t",
    "partition": 3,
    "lag": 7,
    "lag_seconds": 1.5,
    "stalled_seconds": 0.5,
    "paused_by": "",
    "oldest_offset": 40,
}
UNASSIGNED = {"group": "g", "topic": "t", "partition": 4, "lag": 2, "committed": 9, "waiting_seconds": 3.0}
RULE_LANE = {  # esproxy.replay.holdback.Holdback.rows
    "group": "g",
    "rule": "r1",
    "topic": "t",
    "partition": 3,
    "waiting": 2,
    "oldest_offset": 38,
    "oldest_captured": 1800000000.0,
    "delay_seconds": 30.0,
    "due_in_seconds": 0.0,
    "lag_beyond_delay_seconds": 0.0,
    "stalled_seconds": 0.0,
    "held": {"kind": "index_delete", "what": "DELETE /i", "where": "t-3@38", "since": 1800000001.0,
             "held_seconds": 4.0, "captured": 1800000000.0, "from": {"client": "10.0.0.7:5123", "proxy": "p:2900"}},
}  # fmt: skip
FOLLOWER = {
    "cluster": "http://b:9200",
    "state": "ok",
    "usable": True,
    "since": 1.0,
    "lag_seconds": 0.25,
    "max_lag_seconds": 5.0,
    "replay_admin": "http://r:2901",
    "problem": "",
}
SWITCHOVER = {
    "leader": "http://a:9200",
    "followers": ["http://b:9200"],
    "config_primary": "http://a:9200",
    "paused": False,
    "mode": "",
    "paused_seconds": 0.0,
    "writes_in_flight": 0,
    "writes_refused": 2,
    "writes_held": 0,
    "switches": 1,
    "last_switch": {"duration_seconds": 1.25, "write_pause_seconds": 0.5},
    "history": [{"duration_seconds": 1.25, "write_pause_seconds": 0.5}],
    "unshipped": 0,  # added by esproxy.roles: not declared in Switchover, kept as it is
    "open_intents": 0,
}


class FakeElastic:
    url, direction, cluster_id = "http://user:secret@a:9200", "primary", "abc"

    def connections(self) -> tuple[int, int]:
        return 1, 2


class FakeWorkers:
    def reports(self) -> list[dict[str, Any]]:
        return [{**Stats().proxy_report(), "connections": 5, "upstreams": []}]

    def pids(self) -> list[int]:
        return [101]

    def rows(self) -> list[dict[str, Any]]:
        return [{"slot": 0, "pid": 101, "connections": 5, "requests": 9}]


def _admin(full: bool) -> Admin:
    stats = Stats()
    stats.observe_request("GET", 200, 0.01)
    stats.writes_captured, stats.reads, stats.read_fallbacks = 1, {"http://b:9200": 2}, {"lag": 1}
    stats.kafka_produced = {"t": 3}
    stats.produce_failed("t", "KafkaTimeoutError")
    stats.replay_by_index, stats.replay_skipped, stats.replay_skipped_by_rules = {"i": [2, 20]}, {"i": 1}, {"j": 1}
    stats.followed = {"i-sync": FollowedIndex("i", "r1")}
    stats.followed["i-sync"].delay_seconds = 30.0
    stats.dead_letters = 1
    view = AdminView(
        health=HealthSettings(),
        stopping=lambda: False,
        queue=lambda: (1, 10),
        unshipped=lambda: 1,
        oldest_unshipped_age=lambda: 0.5,
        elastics=lambda: [FakeElastic()],  # type: ignore[list-item]
        workers=lambda: FakeWorkers() if full else None,
        lags=lambda: [dict(LAG)],
        unassigned=lambda: [dict(UNASSIGNED)],
        followers=lambda: [dict(FOLLOWER)],
        switchover=(lambda method, parts, body: (200, dict(SWITCHOVER))) if full else None,
        in_flight=lambda: (2048, 1 << 29),
        rule_lanes=lambda: [dict(RULE_LANE)],
    )
    return Admin(view, stats)


def test_every_metric_renders_from_a_full_snapshot() -> None:
    text = _admin(full=True).prometheus()
    for m in metrics.METRICS:
        samples = [line for line in text.splitlines() if line.startswith(m.name) and not line.startswith("#")]
        assert samples, f"{m.name} has no sample from a full snapshot"
    assert 'esproxy_leader_info{url="http://a:9200",config_primary="true"} 1' in text
    assert "esproxy_switchover_last_duration_seconds 1.25" in text
    assert 'esproxy_consumer_lag{group="g",topic="t",partition="3"} 7' in text
    assert 'esproxy_worker_requests_total{worker="0",pid="101"} 9' in text


def test_the_stats_json_keeps_its_keys_in_their_order() -> None:
    admin = _admin(full=True)
    status, _, body = admin.render("/_esproxy/stats", "GET")
    doc = json.loads(body)
    assert status == "200 OK"
    assert list(doc) == [
        "version",
        "pid",
        "workers",
        "uptime_seconds",
        "proxy",
        "upstreams",
        "followers",
        "switchover",
        "replay",
    ]
    assert list(doc["proxy"]) == [
        "requests",
        "latency_seconds",
        "writes_captured",
        "connections",
        "in_flight",
        "workers",
        "reads",
        "read_fallbacks",
        "queue",
        "spool",
        "oldest_unshipped_seconds",
        "kafka",
    ]
    assert list(doc["replay"]) == [
        "messages",
        "bytes",
        "messages_per_second",
        "by_index",
        "skipped",
        "skipped_by_rules",
        "throttled_seconds",
        "followed",
        "dead_letters",
        "consumer_lag",
        "unassigned",
        "rule_lanes",
        "sync_decided",
        "undo_rules",
    ]
    assert doc["proxy"]["requests"] == {"GET 200": 1} and doc["proxy"]["latency_seconds"]["le"]["+Inf"] == 1
    assert doc["proxy"]["kafka"]["failed"] == {"t": {"KafkaTimeoutError": 1}}
    assert doc["upstreams"] == [
        {
            "cluster": "http://user:***@a:9200",
            "direction": "primary",
            "cluster_id": "abc",
            "connections_in_use": 1,
            "connections_idle": 2,
        }
    ]
    assert doc["replay"]["by_index"] == {"i": {"writes": 2, "bytes": 20}}
    assert doc["replay"]["followed"] == {"i-sync": admin.stats.followed["i-sync"].as_dict()}
    assert list(doc["replay"]["followed"]["i-sync"]) == list(FollowedIndex("i", "r1").as_dict())
    assert doc["replay"]["rule_lanes"] == [RULE_LANE]
    assert doc["switchover"] == SWITCHOVER and list(doc["switchover"]) == list(SWITCHOVER)
    assert doc["replay"]["consumer_lag"] == [LAG] and doc["replay"]["unassigned"] == [UNASSIGNED]
    assert doc["followers"] == [FOLLOWER] and doc["proxy"]["workers"] == FakeWorkers().rows()


def test_without_workers_or_followers_their_keys_are_left_out() -> None:
    doc = json.loads(_admin(full=False).render("/_esproxy/stats", "GET")[2])
    assert "workers" not in doc and "switchover" not in doc and "workers" not in doc["proxy"]


def test_a_switchover_that_cannot_say_is_an_empty_object_and_no_sample() -> None:
    admin = _admin(full=True)
    admin.view = AdminView(**{**admin.view.__dict__, "switchover": lambda method, parts, body: (503, {})})
    assert json.loads(admin.render("/_esproxy/stats", "GET")[2])["switchover"] == {}
    assert "\nesproxy_switchovers_total " not in admin.prometheus()


@pytest.mark.parametrize(
    "cls,row",
    [
        (PartitionLag, LAG),
        (UnassignedPartition, UNASSIGNED),
        (FollowerRow, FOLLOWER),
        (Switchover, SWITCHOVER),
        (RuleLaneRow, RULE_LANE),
    ],
)
def test_a_row_reads_back_as_its_producer_wrote_it(cls: type[Row], row: dict[str, Any]) -> None:
    typed = cls.of({**row, "added_later": 1})
    out = as_json(typed)
    assert out == {**row, "added_later": 1} and list(out) == [*row, "added_later"]


def test_a_metric_reading_a_field_the_snapshot_lacks_fails_in_a_test() -> None:
    broken = metrics.Metric("x", "gauge", "x", metrics._one(lambda s: s.proxy.in_fligth.bytes))  # type: ignore[attr-defined]
    snap = _admin(full=True).snapshot()
    with pytest.raises(AttributeError):
        list(broken.samples(metrics.Reading(snap, [], healthy=True)))
