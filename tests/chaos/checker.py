"""The checker: the recorded history against what A and B hold once the faults healed and B caught up.

Rules (docs/reliability.md):
1. every acknowledged write's effect is on A and on B: each document holds a state its history allows
   (a document is written by one client, in order; an acknowledged write applies, a refused one does not, one of
   unknown outcome may or may not);
2. a write of unknown outcome is on both or on neither (B holds what A holds);
3. B equals A: every document of the schedule's indices, and their mappings;
4. no duplicate side effects: each acknowledged auto-id `_bulk` action's document exists exactly once on each
   side (once at most for an unknown one, never for a refused one); a scripted counter counts each
   acknowledged increment once (rule 1 checks it: the counter is part of the document);
5. health is truthful: not 200 on both roles for longer than HEALTH_GRACE while replication could not progress
   (an acknowledged canary write had not reached B for more than STALL seconds).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import requests

from .generator import Op
from .monitor import Monitor

# Replication does not progress when an acknowledged canary write has not reached B for STALL seconds (the
# shortest threshold, maxReplayStall); health must not say 200 on both roles through such a stall for longer than
# HEALTH_GRACE: the longest threshold (maxUnassigned 10 s, read every 5 s), the monitor's second, and room for a
# busy machine.
STALL = 5.0
HEALTH_GRACE = 20.0
IMPOSSIBLE = object()


def canon(doc: Optional[dict]) -> str:
    return json.dumps(doc, sort_keys=True)


def dump(base: str, index: str) -> dict[str, dict]:
    """Every document of an index: id -> _source."""
    requests.post(f"{base}/{index}/_refresh", timeout=60)
    r = requests.post(f"{base}/{index}/_search", json={"size": 10000, "query": {"match_all": {}}}, timeout=60)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {hit["_id"]: hit["_source"] for hit in r.json()["hits"]["hits"]}


def mappings(base: str, index: str) -> Any:
    r = requests.get(f"{base}/{index}/_mapping", timeout=30)
    return r.json().get(index, {}).get("mappings") if r.status_code == 200 else None


@dataclass
class Snapshot:
    docs: dict[str, dict[str, dict]]  # index -> id -> source
    maps: dict[str, Any]


def snapshot(base: str, indices: list[str]) -> Snapshot:
    return Snapshot({i: dump(base, i) for i in indices}, {i: mappings(base, i) for i in indices})


def differences(a: Snapshot, b: Snapshot) -> list[str]:
    """Where B differs from A: documents and mappings."""
    out = []
    for index, docs in a.docs.items():
        other = b.docs.get(index, {})
        for doc_id in sorted(set(docs) | set(other)):
            if docs.get(doc_id) != other.get(doc_id):
                out.append(f"{index}/{doc_id}: A {canon(docs.get(doc_id))} B {canon(other.get(doc_id))}")
        if a.maps.get(index) != b.maps.get(index):
            out.append(f"{index} mappings: A {canon(a.maps.get(index))} B {canon(b.maps.get(index))}")
    return out


def apply(op: Op, state: Optional[dict]) -> Any:
    """The document after ``op`` took effect on ``state`` (None: absent); IMPOSSIBLE if it could not have."""
    if op.kind in ("index", "cas"):
        return op.value
    if op.kind == "create":
        return op.value if state is None else IMPOSSIBLE
    if op.kind == "delete":
        return None if state is not None else IMPOSSIBLE
    if state is None:
        return None if op.kind == "ubq" else IMPOSSIBLE  # a query matches no absent document
    if op.kind == "update":
        return {**state, **op.value}
    if op.kind == "incr":
        return {**state, "cnt": state.get("cnt", 0) + 1}
    if op.kind == "ubq":
        return state if op.value is None else {**state, "ubq": op.value}
    raise ValueError(op.kind)


def allowed_states(ops: list[Op]) -> tuple[dict[tuple[str, str], set[str]], list[str]]:
    """(index, id) -> the states (canonical JSON) its history allows at the end; and the anomalies: an
    acknowledged write that could not have applied to any state the history allows before it."""
    states: dict[tuple[str, str], set[Optional[str]]] = {}
    anomalies = []
    for op in sorted(ops, key=lambda o: (o.client, o.seq)):  # each client's in its order; a _bulk's keys differ
        if op.kind == "auto" or op.outcome == "fail":
            continue
        for doc_id in op.keys if op.kind == "ubq" else [op.doc_id]:
            key = (op.index, doc_id)
            before = states.setdefault(key, {canon(None)})
            after = {canon(s) for s in (apply(op, json.loads(c)) for c in before) if s is not IMPOSSIBLE}
            if op.outcome == "info":
                states[key] = before | after
            elif after:
                states[key] = after
            else:
                anomalies.append(
                    f"{op.index}/{doc_id}: acknowledged {op.kind} (client {op.client} #{op.seq}) "
                    f"could not apply to any allowed state {sorted(before)}"
                )
                states[key] = {canon(op.value if op.kind in ("create", "index", "cas") else None)}
    return states, anomalies


@dataclass
class Verdict:
    operations: int = 0
    acknowledged: int = 0
    unknown: int = 0
    refused: int = 0
    lost: list = field(default_factory=list)
    divergent: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    health_lies: list = field(default_factory=list)
    converged_after: Optional[float] = None
    samples: int = 0  # the monitor's
    unhealthy: int = 0  # samples in which a role's health was not 200 (or did not answer)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.divergent or self.duplicated or self.health_lies)


def check(
    ops: list[Op], a: Snapshot, b: Snapshot, doc_indices: list[str], auto_index: str, monitor: Monitor
) -> Verdict:
    v = Verdict(len(ops))
    outcomes = Counter(op.outcome for op in ops)
    v.acknowledged, v.unknown, v.refused = outcomes["ok"], outcomes["info"], outcomes["fail"]
    # rules 1 and 2: each document's state on A and on B is one its history allows
    states, v.lost = allowed_states(ops)
    keys = set(states) | {(i, d) for side in (a, b) for i in doc_indices for d in side.docs.get(i, {})}
    for index, doc_id in sorted(keys):
        allowed = states.get((index, doc_id), {canon(None)})
        for side, snap in (("A", a), ("B", b)):
            held = canon(snap.docs.get(index, {}).get(doc_id))
            if held not in allowed:
                v.lost.append(f"{index}/{doc_id} on {side}: {held}, allowed {sorted(allowed)}")
    # rule 4: auto-id documents, by their token
    for side, snap in (("A", a), ("B", b)):
        counts = Counter(doc.get("tok") for doc in snap.docs.get(auto_index, {}).values())
        expected = {op.doc_id: op.outcome for op in ops if op.kind == "auto"}
        for tok, outcome in expected.items():
            n = counts.get(tok, 0)
            if n > 1:
                v.duplicated.append(f"{auto_index} tok {tok} x{n} on {side} ({outcome})")
            elif outcome == "ok" and n == 0:
                v.lost.append(f"{auto_index} tok {tok}: acknowledged, not on {side}")
            elif outcome == "fail" and n:
                v.lost.append(f"{auto_index} tok {tok}: refused, yet on {side}")
        for tok in set(counts) - set(expected):
            v.lost.append(f"{auto_index} tok {tok} on {side}: written by no one")
    # rules 2 and 3: B equals A
    v.divergent = differences(a, b)
    # rule 5
    v.health_lies = health_lies(monitor)
    v.samples = len(monitor.samples)
    v.unhealthy = sum(1 for s in monitor.samples if s.proxy_health != 200 or s.replay_health != 200)
    return v


def health_lies(monitor: Monitor, stall: float = STALL, grace: float = HEALTH_GRACE) -> list[str]:
    """Spells longer than ``grace`` in which replication could not progress (an acknowledged canary write had not
    reached B for more than ``stall`` seconds) and both roles' health said 200 at every sample (times: seconds
    after the load started). A role that does not answer its health (stopped, restarting) is not 200."""
    lies, run, b_seen = [], [], 0
    t0 = monitor.t0

    def close(run: list) -> None:
        if run and run[-1][0] - run[0][0] > grace:
            lies.append(
                f"t={run[0][0] - t0:.0f}-{run[-1][0] - t0:.0f}s: health 200 on both roles while an acknowledged "
                f"canary write had not reached B for {run[0][1]:.0f}-{run[-1][1]:.0f}s"
            )

    for s in monitor.samples:
        if s.b_canary is not None:
            b_seen = max(b_seen, s.b_canary)
        waiting = [t for n, t in monitor.acked if n > b_seen and t <= s.t]
        stalled = s.t - min(waiting) if waiting else 0.0
        if stalled > stall and s.proxy_health == 200 and s.replay_health == 200:
            run.append((s.t, stalled))
        else:
            close(run)
            run = []
    close(run)
    return lies
