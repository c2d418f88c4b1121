"""The chaos checker's and nemesis's pure logic (tests/chaos): a schedule is a function of its seed, and the
checker finds what it must find in a made-up history (a lost write, a write on one side only, a duplicate, a
health that said 200 while nothing reached B)."""

from __future__ import annotations

from chaos.checker import Snapshot, allowed_states, canon, check, health_lies
from chaos.generator import Op, classify
from chaos.monitor import Monitor, Sample
from chaos.nemesis import KINDS, draw

D, AUTO = "t-d0", "t-auto"


def op(seq: int, kind: str, outcome: str, value=None, doc_id: str = "k", index: str = D, keys=()) -> Op:
    return Op(0, seq, kind, index, doc_id, value, outcome=outcome, keys=list(keys))


def monitor(samples: list[Sample], acked: list[tuple[int, float]]) -> Monitor:
    m = Monitor("http://p", "http://r", "http://b", "c")
    m.t0, m.samples, m.acked = 0.0, samples, acked
    return m


def snap(docs: dict, auto: dict | None = None) -> Snapshot:
    return Snapshot({D: docs, AUTO: auto or {}}, {D: {}, AUTO: {}})


def test_a_schedule_is_a_function_of_its_seed():
    assert [f.__dict__ for f in draw(7, 30)] == [f.__dict__ for f in draw(7, 30)]
    assert [f.kind for f in draw(7, 30)] != [f.kind for f in draw(8, 30)]
    assert {f.kind for s in range(60) for f in draw(s, 30)} == set(KINDS)  # every fault gets drawn
    assert all(2.0 <= f.at <= 26.0 for s in range(60) for f in draw(s, 30))


def test_outcomes():
    assert classify(201, {}) == "ok"
    assert classify(409, {}) == "fail" and classify(404, {}) == "fail" and classify(429, {}) == "fail"
    assert classify(503, {"error": {"type": "esproxy_spool_full_exception"}}) == "fail"
    assert classify(503, {"error": {"type": "esproxy_not_recorded_exception"}}) == "info"  # applied on A
    assert classify(504, {}) == "info" and classify(502, None) == "info"


def test_allowed_states_follow_the_history():
    ops = [
        op(1, "index", "ok", {"v": 1}),
        op(2, "update", "ok", {"p": "x"}),
        op(3, "incr", "ok"),
        op(4, "delete", "fail"),  # refused: not applied
        op(5, "incr", "info"),  # unknown: either
    ]
    states, anomalies = allowed_states(ops)
    assert not anomalies
    assert states[(D, "k")] == {canon({"v": 1, "p": "x", "cnt": 1}), canon({"v": 1, "p": "x", "cnt": 2})}


def test_an_acknowledged_write_that_could_not_apply_is_an_anomaly():
    _, anomalies = allowed_states([op(1, "create", "ok", {"v": 1}), op(2, "create", "ok", {"v": 2})])
    assert len(anomalies) == 1 and "acknowledged create" in anomalies[0]


def test_update_by_query_touches_the_documents_that_exist():
    ops = [op(1, "index", "ok", {"v": 1}, "a"), op(2, "ubq", "ok", 7, None, keys=["a", "b"])]
    states, _ = allowed_states(ops)
    assert states[(D, "a")] == {canon({"v": 1, "ubq": 7})} and states[(D, "b")] == {canon(None)}


def test_the_checker_finds_lost_divergent_and_duplicated_writes():
    ops = [
        op(1, "index", "ok", {"v": 1}, "lost"),
        op(2, "index", "info", {"v": 2}, "half"),  # unknown: on A only
        op(3, "auto", "ok", {"tok": "t1"}, "t1", AUTO),
        op(4, "auto", "ok", {"tok": "t2"}, "t2", AUTO),
    ]
    a = snap({"lost": {"v": 1}, "half": {"v": 2}}, {"x1": {"tok": "t1"}, "x2": {"tok": "t2"}})
    b = snap({}, {"x1": {"tok": "t1"}, "y1": {"tok": "t1"}})
    v = check(ops, a, b, [D], AUTO, monitor([], []))
    assert v.acknowledged == 3 and v.unknown == 1 and not v.ok
    assert any("lost on B" in x for x in v.lost) and any("tok t2: acknowledged, not on B" in x for x in v.lost)
    assert not any("half" in x for x in v.lost)  # an unknown write may be on A: not lost...
    assert any(x.startswith(f"{D}/half") for x in v.divergent)  # ...but then it must be on B too
    assert v.duplicated == [f"{AUTO} tok t1 x2 on B (ok)"]
    same = check(ops[1:3], snap({}, {"x1": {"tok": "t1"}}), snap({}, {"x1": {"tok": "t1"}}), [D], AUTO, monitor([], []))
    assert same.ok, same


def test_health_that_says_200_while_nothing_reaches_b_is_a_lie():
    acked = [(1, 1.0), (2, 2.0)]
    stuck = [Sample(t, 1, 200, 200) for t in range(2, 60)]  # canary 2 never reaches B
    lies = health_lies(monitor(stuck, acked))
    assert len(lies) == 1 and "t=8-59s" in lies[0], lies
    told = [Sample(t, 1, 200, 503 if t > 20 else 200) for t in range(2, 60)]  # the replay said so in time
    assert health_lies(monitor(told, acked)) == []
    restarted = [Sample(t, 1, 200, None if t % 15 == 0 else 200) for t in range(2, 60)]  # each restart resets a
    assert health_lies(monitor(restarted, acked)) == []  # role's clock: 200 for < grace after each is truthful
    assert health_lies(monitor(told, acked)) == []
    caught_up = [Sample(t, 2 if t > 10 else 1, 200, 200) for t in range(2, 60)]
    assert health_lies(monitor(caught_up, acked)) == []
