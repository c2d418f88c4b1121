"""The switchover's logic without servers: the proxy's leader state and write gate (esproxy.proxy.leadership), the
command's plan and its "applied everything" test (esproxy.commands.switchover)."""

from __future__ import annotations

import json

import gevent
import pytest
import yaml

from esproxy.commands.switchover import Failed, behind, config_problems, make_plan
from esproxy.core.config import ConfigError, parse
from esproxy.proxy.leadership import STATE_FILE, Leadership

A, B, C = "http://a:9200", "http://b:9200", "http://c:9200"


def _config(*followers: str, **extra: object) -> object:
    conf = {
        "source": {"proxies": [{"port": 9000}]},
        "destination": {
            "primaries": [{"url": A, "replayAdmin": "http://127.0.0.1:2902"}],
            "followers": [{"url": f, "replayAdmin": "http://127.0.0.1:2901"} for f in followers],
            "kafkas": [{"topic": "t", "brokers": ["k:9092"]}],
        },
        "spool": {"dir": "/nonexistent"},
        **extra,
    }
    return parse(yaml.safe_dump(conf))


def _leadership(tmp_path, *followers: str) -> Leadership:
    cfg = _config(*(followers or (B,)))
    return Leadership(cfg.primaries() + cfg.followers(), tmp_path / STATE_FILE)


def _post(lead: Leadership, action: str, **body: object) -> tuple[int, dict]:
    return lead.handle("POST", [action], json.dumps(body).encode())


def test_the_config_primary_leads_until_a_switch_which_the_state_file_keeps(tmp_path) -> None:
    lead = _leadership(tmp_path)
    assert lead.leader_cfg.url == A and lead.status()["followers"] == [B]
    prepared = []
    lead.on_switch.append(lambda cfg: prepared.append(cfg.url) or (lambda: prepared.append("swapped")))
    status, doc = _post(lead, "leader", url=B, expect=A, kind="switchover")
    assert status == 200 and doc["leader"] == B and doc["followers"] == [A]
    assert prepared == [B, "swapped"]
    assert doc["last_switch"]["from"] == A and doc["last_switch"]["to"] == B and doc["switches"] == 1
    again = _leadership(tmp_path)  # a restarted proxy
    assert again.leader_cfg.url == B and again.history == lead.history
    # a stale command (it thinks A still leads) changes nothing
    status, doc = _post(again, "leader", url=A, expect=B)
    assert status == 200 and doc["leader"] == A
    assert _post(again, "leader", url=B, expect=B)[0] == 409


def test_a_state_file_naming_an_unknown_cluster_is_refused(tmp_path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"leader": C, "history": []}))
    with pytest.raises(ConfigError, match="neither the primary nor a follower"):
        _leadership(tmp_path)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        _leadership(tmp_path)


def test_a_leader_that_cannot_be_prepared_is_not_switched_to(tmp_path) -> None:
    lead = _leadership(tmp_path)

    def unreachable(cfg: object) -> object:
        raise OSError("connection refused")

    lead.on_switch.append(unreachable)
    status, doc = _post(lead, "leader", url=B)
    assert status == 502 and "the leader is unchanged" in doc["error"]["reason"]
    assert lead.leader_cfg.url == A and not (tmp_path / STATE_FILE).exists()
    assert _post(lead, "leader", url=C)[0] == 400  # not configured


def test_paused_writes_are_refused_or_held_until_the_resume(tmp_path) -> None:
    lead = _leadership(tmp_path)
    assert lead.admit_write() is None and lead.writes_in_flight == 1
    lead.write_done()
    assert _post(lead, "pause", mode="reject", retryAfter=3)[1]["paused"]
    assert lead.admit_write() == 3 and lead.writes_in_flight == 0 and lead.refused == 1
    _post(lead, "resume")
    assert lead.admit_write() is None
    lead.write_done()

    _post(lead, "pause", mode="hold", hold=5)
    held = gevent.spawn(lead.admit_write)
    gevent.sleep(0.05)
    assert not held.ready()  # waiting for the resume
    _post(lead, "resume")
    assert held.get(timeout=2) is None and lead.writes_in_flight == 1 and lead.held == 1
    lead.write_done()

    _post(lead, "pause", mode="hold", hold=0.05)
    assert lead.admit_write() == 1  # held too long: refused after all


def test_the_write_pause_of_a_switch_is_in_its_history(tmp_path) -> None:
    lead = _leadership(tmp_path)
    _post(lead, "pause")
    _post(lead, "leader", url=B)
    assert lead.history[-1]["write_pause_seconds"] is None  # still paused
    _post(lead, "resume")
    assert lead.history[-1]["write_pause_seconds"] >= 0
    assert json.loads((tmp_path / STATE_FILE).read_text())["history"][-1]["write_pause_seconds"] is not None


def test_bad_requests_are_answered_with_reasons(tmp_path) -> None:
    lead = _leadership(tmp_path)
    assert lead.handle("POST", ["pause"], b"[1]")[0] == 400
    assert lead.handle("POST", ["pause"], b"{")[0] == 400
    assert _post(lead, "pause", mode="sometimes")[0] == 400
    assert _post(lead, "reverse")[0] == 404
    assert lead.handle("GET", ["pause"], b"")[0] == 405
    assert lead.handle("GET", [], b"")[1]["leader"] == A


def test_applied_means_committed_at_or_past_every_end_offset() -> None:
    end = {("t", 0): 10, ("t", 1): 0, ("t", 2): 5}
    assert behind(end, {("t", 0): 10, ("t", 1): None, ("t", 2): 7}) == {}
    assert behind(end, {("t", 0): 4, ("t", 2): None}) == {"t-0": 6, "t-2": 5}


def test_the_plan_goes_from_whichever_cluster_leads_to_the_other() -> None:
    cfg = _config(B)
    plan = make_plan(cfg, A)
    assert (plan.old.url, plan.new.url, plan.topics, plan.brokers) == (A, B, ["t"], ["k:9092"])
    assert plan.into_new is not None and plan.into_old is not None
    assert plan.into_new.url == "http://127.0.0.1:2901" and plan.into_old.url == "http://127.0.0.1:2902"
    assert plan.proxy.url == "http://127.0.0.1:9000"
    back = make_plan(cfg, B + "/")
    assert (back.old.url, back.new.url) == (B, A)
    with pytest.raises(Failed, match="not in this config"):
        make_plan(cfg, C)
    three = _config(B, C)
    with pytest.raises(Failed, match="--to"):
        make_plan(three, A)
    assert make_plan(three, A, to=C).new.url == C


def test_configs_a_switchover_cannot_use() -> None:
    assert config_problems(_config(B)) == []
    assert any("followers" in p for p in config_problems(_config()))
    renaming = {"follow": {"rules": [{"name": "logs", "indices": ["logs-*"], "rename": "{{remote_index}}-sync"}]}}
    assert any("rename" in p for p in config_problems(_config(B, **renaming)))
    assert config_problems(_config(B, workers=2)) == []  # the master passes the pause on to its workers


def test_a_worker_follows_the_masters_gate_and_ignores_an_older_one(tmp_path) -> None:
    master, worker = _leadership(tmp_path), _leadership(tmp_path / "elsewhere")
    swapped = []
    worker.on_switch.append(lambda cfg: lambda: swapped.append(cfg.url))
    _post(master, "pause", mode="reject", retryAfter=2)
    paused = master.gate()
    worker.follow(paused)
    assert worker.admit_write() == 2
    _post(master, "leader", url=B)
    _post(master, "resume")
    worker.follow(master.gate())
    assert swapped == [B] and worker.leader_cfg.url == B and worker.admit_write() is None
    worker.follow(paused)  # arrives late: older than what the worker has
    assert worker.pause is None and worker.leader_cfg.url == B
    assert not (tmp_path / "elsewhere").exists()  # the state file is the master's


def test_a_pause_nobody_resumes_ends_by_itself(tmp_path) -> None:
    lead = _leadership(tmp_path)
    _post(lead, "pause", expires=0.1)
    with gevent.Timeout(5):
        while lead.pause is not None:
            gevent.sleep(0.02)
    assert lead.admit_write() is None


class _Admin:
    """A replay's admin endpoint as the switchover reads it (its stats)."""

    url = "http://127.0.0.1:2901"

    def __init__(self, replay: dict) -> None:
        self.replay = replay

    def get(self, path: str, timeout: float = 10) -> dict:
        assert path == "/_esproxy/stats"
        return {"replay": self.replay}


def test_a_delayed_or_holding_follower_is_refused_unless_forced() -> None:
    import argparse
    import io

    from esproxy.commands.switchover import Run, delayed_follower

    plain = _Admin({"undo_rules": [{"name": "o", "delay_seconds": 0, "guard": ["close"]}], "rule_lanes": []})
    delayed = _Admin({"undo_rules": [{"name": "p", "delay_seconds": 1800.0, "guard": []}], "rule_lanes": []})
    held = _Admin({"rule_lanes": [{"rule": "o", "held": {"what": "DELETE /orders", "where": "t-0@3"}}]})
    assert delayed_follower(plain) is None  # a guard alone, nothing held: B is the leader's equal
    assert delayed_follower(delayed) == "sync rule p delays its writes by 1800s"
    assert delayed_follower(held) == "sync rule o holds DELETE /orders (t-0@3)"
    for force, refused in ((False, True), (True, False)):
        out = io.StringIO()
        run = Run(_config(B), argparse.Namespace(force=force, to="", timeout=60.0), "switchover", out)
        try:
            problem = run.delayed(delayed)  # type: ignore[arg-type]
        finally:
            run.offsets.close()
        assert (problem is not None) is refused
        assert refused or "--force, going on" in out.getvalue()
