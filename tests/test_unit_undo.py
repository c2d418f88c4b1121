"""The undo window's pure logic (issue 26): which writes a guard holds (replay/undo.py), which rules a write
touches (replay/followed.py), the delay's arithmetic, the config's checks, what the operators' board keeps, the
health verdict on rule lanes (admin/health.py) and `esproxy sync skip --until` times."""

from __future__ import annotations

import json

import pytest
import yaml

from esproxy import configfile
from esproxy.admin.health import notices, problems
from esproxy.commands.syncctl import parse_time
from esproxy.core.bean import DOCS_KIND, Bean
from esproxy.core.config import ConfigError, FollowRule, FollowSettings, HealthSettings
from esproxy.replay.follow import Rules
from esproxy.replay.followcontrol import FollowControl
from esproxy.replay.followed import follow_raw
from esproxy.replay.undo import GUARD_KINDS, captured_at, due_at, guard_problem, lag_beyond, write_kind


def bean(method: str, uri: str, body: bytes = b"", kind: str = "") -> Bean:
    return Bean(method=method, requestUri=uri, body=body, kind=kind)


@pytest.mark.parametrize(
    "method,uri,body,kind",
    [
        ("DELETE", "/orders", b"", "index_delete"),
        ("DELETE", "/orders/", b"", "index_delete"),
        ("DELETE", "/orders,carts", b"", "index_delete"),
        ("DELETE", "/ord*", b"", "index_delete"),
        ("DELETE", "/_all", b"", "index_delete"),
        ("DELETE", "/orders?timeout=30s", b"", "index_delete"),
        ("DELETE", "/orders/_doc/1", b"", None),  # a document
        ("DELETE", "/orders/_alias/current", b"", None),
        ("DELETE", "/_template/t", b"", None),
        ("POST", "/_aliases", b'{"actions":[{"remove_index":{"index":"orders"}}]}', "index_delete"),
        ("POST", "/_aliases", b'{"actions":[{"add":{"index":"orders","alias":"o"}}]}', None),
        ("POST", "/orders/_delete_by_query?conflicts=proceed", b"{}", "delete_by_query"),
        ("POST", "/orders/doc/_delete_by_query", b"{}", "delete_by_query"),  # Elasticsearch 6
        ("POST", "/_all/_delete_by_query", b"{}", "delete_by_query"),
        ("POST", "/orders/_update_by_query", b"{}", "update_by_query"),
        ("POST", "/orders/_close", b"", "close"),
        ("POST", "/orders/_open", b"", None),
        ("POST", "/orders/_doc/1", b"{}", None),
        ("POST", "/_bulk", b'{"delete":{"_index":"orders","_id":"1"}}\n', None),
        ("GET", "/orders", b"", None),
    ],
)
def test_write_kind(method, uri, body, kind):
    assert write_kind(bean(method, uri, body)) == kind


def test_document_beans_are_never_guarded():
    assert write_kind(bean("DELETE", "/orders", kind=DOCS_KIND)) is None


def test_guard_kinds():
    assert GUARD_KINDS == ("index_delete", "delete_by_query", "update_by_query", "close")
    assert guard_problem("close") is None
    assert "not a kind" in (guard_problem("delete") or "")


def test_delay_arithmetic():
    assert captured_at(1_700_000_000_500) == 1_700_000_000.5
    assert captured_at(-1, now=42.0) == 42.0 and captured_at(None, now=7.0) == 7.0
    assert due_at(100.0, 30.0) == 130.0 and due_at(100.0, 0) == 100.0 and due_at(100.0, -5) == 100.0
    assert lag_beyond(120.0, 130.0) == 0.0  # inside the delay
    assert lag_beyond(131.5, 130.0) == 1.5


def rules(*specs: dict) -> Rules:
    return Rules.from_config(FollowSettings(rules=[FollowRule(**spec) for spec in specs]))


ORDERS = {"name": "orders", "indices": ["orders", "carts"], "guard": ["index_delete"], "delay": 60}
LOGS = {"name": "logs", "indices": ["logs-*"], "rename": "{{remote_index}}-sync"}


def test_rules_carry_delay_and_guard():
    r = rules(ORDERS, LOGS)
    assert r.undo
    orders = r.target("orders")
    assert orders is not None and orders.rule.delay == 60.0 and orders.rule.guard == ("index_delete",)
    assert not rules(LOGS).undo


@pytest.mark.parametrize(
    "method,uri,touched",
    [
        ("DELETE", "/orders", ["orders"]),
        ("DELETE", "/orders,logs-1", ["orders", "logs"]),
        ("DELETE", "/other", []),
        ("DELETE", "/ord*", ["orders"]),  # a wildcard that may match a followed index: its rule
        ("DELETE", "/*", ["orders", "logs"]),
        ("DELETE", "/_all", ["orders", "logs"]),
        ("POST", "/logs-2/_delete_by_query", ["logs"]),
    ],
)
def test_rules_a_write_touches(method, uri, touched):
    outcome = follow_raw(rules(ORDERS, LOGS), bean(method, uri, b"{}" if method == "POST" else b""))
    assert [r.name for r in outcome.rules] == touched


def test_remove_index_through_aliases_touches_its_rule():
    body = json.dumps({"actions": [{"remove_index": {"index": "carts"}}]}).encode()
    outcome = follow_raw(rules(ORDERS, LOGS), bean("POST", "/_aliases", body))
    assert [r.name for r in outcome.rules] == ["orders"] and write_kind(bean("POST", "/_aliases", body))


def _config(rule: dict) -> str:
    return yaml.safe_dump(
        {
            "source": {"kafkas": [{"brokers": ["127.0.0.1:9092"], "topics": ["t"], "group": "g"}]},
            "destination": {"primaries": [{"url": "http://127.0.0.1:9201"}]},
            "follow": {"rules": [rule]},
        }
    )


@pytest.mark.parametrize(
    "rule,path,words",
    [
        ({"name": "o", "indices": ["o"], "guard": ["index_delete", "drop"]}, "follow.rules[0].guard[1]", '"drop"'),
        ({"name": "o", "indices": ["o"], "delay": "-1s"}, "follow.rules[0].delay", ""),
        ({"name": "o", "indices": ["o"], "delay": "soon"}, "follow.rules[0].delay", ""),
        ({"name": "o", "indices": ["o"], "guard": ["index_delete", 3]}, "follow.rules[0].guard[1]", '"3"'),
    ],
)
def test_bad_values_name_the_key(tmp_path, rule, path, words):
    conf = tmp_path / "replay.yml"
    conf.write_text(_config(rule))
    with pytest.raises(ConfigError) as e:
        configfile.load(str(conf))
    assert str(e.value).startswith(path + ":"), str(e.value)
    assert words in str(e.value)


def test_good_values_load(tmp_path):
    conf = tmp_path / "replay.yml"
    conf.write_text(_config({"name": "o", "indices": ["o"], "delay": "30m", "guard": ["close", "index_delete"]}))
    cfg = configfile.load(str(conf))
    rule = Rules.from_config(cfg.follow).rules[0]
    assert rule.delay == 1800.0 and rule.guard == ("close", "index_delete")
    conf.write_text(_config({"name": "o", "indices": ["o"], "guard": "index_delete"}))  # one value for a list
    assert Rules.from_config(configfile.load(str(conf)).follow).rules[0].guard == ("index_delete",)


def test_board_keeps_skips_and_decisions_in_the_state_file(tmp_path):
    state = tmp_path / "follow-state.json"
    settings = FollowSettings(rules=[FollowRule(name="o", indices=["o"], guard=["index_delete"])])
    control = FollowControl(settings, state)
    status, doc = control.handle("POST", ["rules", "o", "_skip"], b'{"until": 1800000000}')
    assert status == 200 and doc["skip_until"] == 1800000000.0
    status, doc = control.handle("POST", ["rules", "o", "_approve"], b"{}")
    assert status == 409 and "holds no write" in doc["error"]["reason"]
    status, doc = control.handle("POST", ["rules", "o", "_skip"], b'{"until": "tomorrow"}')
    assert status == 400
    status, doc = control.handle("POST", ["rules", "nope", "_skip"], b'{"until": 5}')
    assert status == 404
    control.board.holds["t-0@7"] = {"rule": "o", "since": 1.5, "decision": "reject", "reason": "oops"}
    control.board.save()
    again = FollowControl(settings, state)
    assert again.board.skips == {"o": 1800000000.0}
    assert again.board.holds["t-0@7"]["reason"] == "oops"
    listed = again.list()[0]
    assert (
        listed["guard"] == ["index_delete"] and listed["skip_until"] == 1800000000.0 and listed["state"] == "following"
    )


def _lane(**over) -> dict:
    row = {
        "group": "g",
        "rule": "orders",
        "topic": "t",
        "partition": 0,
        "waiting": 2,
        "oldest_offset": 7,
        "delay_seconds": 30.0,
        "lag_beyond_delay_seconds": 0.0,
        "stalled_seconds": 0.0,
        "held": None,
    }
    row.update(over)
    return row


def test_health_counts_only_the_lag_beyond_the_delay():
    settings = HealthSettings(maxReplayLag=5, maxReplayStall=10)

    def checks(row: dict) -> list[str]:
        found = problems(
            settings, now=0, ship_age=0, backlog=0, produce_failing={}, lags=[], dead_letter_times=[], rule_lanes=[row]
        )
        return [p.check for p in found]

    assert checks(_lane()) == []  # inside its 30 s delay: not a lag
    assert checks(_lane(lag_beyond_delay_seconds=4.9)) == []
    assert checks(_lane(lag_beyond_delay_seconds=5.5)) == ["replay_lag"]
    assert checks(_lane(lag_beyond_delay_seconds=5.5, stalled_seconds=11)) == ["replay_stalled", "replay_lag"]


def test_a_hold_is_a_notice_not_a_problem():
    hold = {
        "kind": "index_delete",
        "what": "DELETE /orders",
        "where": "t-0@7",
        "held_seconds": 12.0,
        "from": {"client": "10.0.0.7:5123", "proxy": "a-proxy:2900"},
    }
    row = _lane(held=hold)
    settings = HealthSettings(maxReplayLag=5, maxReplayStall=10)
    found = problems(
        settings, now=0, ship_age=0, backlog=0, produce_failing={}, lags=[], dead_letter_times=[], rule_lanes=[row]
    )
    assert found == []
    shown = notices([row, _lane(rule="logs")])
    assert [n.check for n in shown] == ["sync_held"]
    assert "DELETE /orders at t-0@7" in shown[0].reason and "10.0.0.7:5123" in shown[0].reason
    assert "a-proxy:2900" in shown[0].reason and "1 later write(s)" in shown[0].reason


@pytest.mark.parametrize(
    "text,epoch",
    [
        ("1800000000", 1800000000.0),
        ("1800000000.25", 1800000000.25),
        ("2027-01-15T08:00:00Z", 1800000000.0),
        ("2027-01-15T08:00:00", 1800000000.0),  # no zone: UTC
        ("2027-01-15T16:00:00+08:00", 1800000000.0),
        ("2027-01-15T08:00:00.500Z", 1800000000.5),
    ],
)
def test_skip_until_times(text, epoch):
    assert parse_time(text) == epoch


def test_skip_until_refuses_other_text():
    with pytest.raises(ValueError):
        parse_time("yesterday")


DELAYED = [{"name": "orders", "indices": ["orders", "carts-*"], "exclude": ["carts-tmp"], "delay_seconds": 60.0}]


@pytest.mark.parametrize(
    "names,expected",
    [
        (["orders"], True),
        (["logs", "orders"], True),
        (["carts-1"], True),
        (["carts-tmp"], False),  # excluded: not delayed
        (["logs"], False),
        (["ord*"], True),  # a wildcard that may match a delayed index
        (["log*"], False),
        (["_all"], True),
        (None, True),  # all indices, or named in the body
        (["logs", "-orders"], False),
    ],
)
def test_reads_of_delayed_indices_go_to_the_leader(names, expected):
    from esproxy.proxy.readroute import delayed_read

    assert delayed_read(names, DELAYED) is expected
    assert delayed_read(names, []) is False
    assert delayed_read(names, [{**DELAYED[0], "delay_seconds": 0}]) is False  # a guard only: B is not behind
