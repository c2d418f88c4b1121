"""The verdict of ``/_esproxy/health``: what keeps captured writes from reaching the other cluster.

Each check compares one figure with its ``health.*`` setting (0 turns the check off):

- ``ship_delay``: the oldest captured write not yet taken by Kafka (spool or in-memory queue) has
  waited longer than ``maxShipDelay``;
- ``producer_failing``: a topic's produce requests have failed, with no message taken since, for
  longer than ``maxProduceFailing`` — while writes still wait to be shipped or failures keep coming
  (a write refused once and moved aside does not keep health at 503 by this check);
- ``replay_stalled``: a replayed partition has had records waiting, none applied, for longer than
  ``maxReplayStall``; or a replay has not started for that long because its cluster does not answer
  (or is not trusted) when asked for its id;
- ``replay_lag``: the oldest record a partition fetched and has not applied is older than
  ``maxReplayLag`` (by its Kafka timestamp);
- ``replay_unassigned``: partitions of a replay's topics that it does not hold have had writes waiting,
  with no replay of its group committing on them, for longer than ``maxUnassigned``
  (esproxy.replay.groupwatch);
- ``dead_letters``: a dead letter was written within the last ``deadLetterWindow`` (an operator's reject or
  skip, ``esproxy sync reject|skip``, is not counted);
- a sync rule's own lane (``follow.rules[].delay``, ``guard``; esproxy.replay.holdback): ``replay_lag`` when
  its oldest write is more than ``maxReplayLag`` past its due time (capture + the delay: the delay itself
  never counts), ``replay_stalled`` when it is due and nothing was applied for ``maxReplayStall``.

Not failures, but shown (``notices`` of the answer, 200 or 503): ``sync_held``, a rule's lane stopped at a
write its guard holds, waiting for ``esproxy sync approve|reject``.

Pure logic: :mod:`esproxy.admin.server` gathers the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from esproxy.core.config import HealthSettings


@dataclass(frozen=True)
class Problem:
    check: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "reason": self.reason}


def _stalled_or_behind(
    settings: HealthSettings, subject: str, stalled: float, stalled_what: str, lag: float, lag_what: str
) -> list[Problem]:
    """``replay_stalled`` and ``replay_lag`` of one partition, or of one sync rule's lane of it."""
    found = []
    for check, value, limit, setting, what in (
        ("replay_stalled", stalled, settings.maxReplayStall, "maxReplayStall", stalled_what),
        ("replay_lag", lag, settings.maxReplayLag, "maxReplayLag", lag_what),
    ):
        if limit and value > limit:
            found.append(Problem(check, f"{subject} {what} (health.{setting}: {_secs(limit)})"))
    return found


def problems(
    settings: HealthSettings,
    *,
    now: float,
    ship_age: float,
    backlog: int,
    produce_failing: dict[str, tuple[float, float, str]],
    lags: Iterable[dict[str, Any]],
    dead_letter_times: Iterable[float],
    unstarted: Iterable[tuple[str, float, str]] = (),
    unassigned: Iterable[dict[str, Any]] = (),
    rule_lanes: Iterable[dict[str, Any]] = (),
) -> list[Problem]:
    """What is wrong now; empty when healthy. ``now`` is time.monotonic(), as the times given."""
    out: list[Problem] = []
    for row in rule_lanes:  # esproxy.replay.holdback.Holdback.rows
        lane = f"sync rule {row['rule']}'s writes of {row['topic']}-{row['partition']} (group {row['group']})"
        beyond, stalled, offset = row["lag_beyond_delay_seconds"], row["stalled_seconds"], row["oldest_offset"]
        delay = f"delay {_secs(row['delay_seconds'])}"
        out += _stalled_or_behind(
            settings, lane,
            stalled, f"applied nothing for {_secs(stalled)} while offset {offset} is due",
            beyond, f"are {_secs(beyond)} behind beyond their {delay}: the oldest waiting is offset {offset}",
        )  # fmt: skip
    limit = settings.maxShipDelay
    if limit and ship_age > limit:
        out.append(
            Problem(
                "ship_delay",
                f"captured writes wait to be shipped to Kafka: the oldest for {_secs(ship_age)}, {backlog} waiting"
                f" (health.maxShipDelay: {_secs(limit)})",
            )
        )
    limit = settings.maxProduceFailing
    for topic, (first, last, reason) in sorted(produce_failing.items()):
        failing = now - first
        if limit and failing > limit and (backlog > 0 or now - last <= limit):
            out.append(
                Problem(
                    "producer_failing",
                    f"Kafka has taken no message for topic {topic} for {_secs(failing)} of failures"
                    f" (last: {reason}, {_secs(now - last)} ago) (health.maxProduceFailing: {_secs(limit)})",
                )
            )
    for row in lags:
        replay = f"replay of {row['topic']}-{row['partition']} (group {row['group']})"
        stalled, lag, offset = row["stalled_seconds"], row["lag_seconds"], row["oldest_offset"]
        out += _stalled_or_behind(
            settings, replay,
            stalled, f"applied nothing for {_secs(stalled)} while records wait from offset {offset}",
            lag, f"is {_secs(lag)} behind: the oldest record not applied is offset {offset}",
        )  # fmt: skip
    limit = settings.maxReplayStall
    for cluster, since, reason in unstarted:  # (cluster, waiting since, why)
        if limit and now - since > limit:
            out.append(
                Problem(
                    "replay_stalled",
                    f"replay into {cluster} has not started for {_secs(now - since)}: {reason}"
                    f" (health.maxReplayStall: {_secs(limit)})",
                )
            )
    limit = settings.maxUnassigned
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in unassigned:  # KafkaReplay.unassigned()
        if limit and row["waiting_seconds"] > limit:
            groups.setdefault(row["group"], []).append(row)
    for group, rows in sorted(groups.items()):
        names = ", ".join(f"{r['topic']}-{r['partition']} (lag {r['lag']})" for r in rows)
        longest = max(r["waiting_seconds"] for r in rows)
        out.append(
            Problem(
                "replay_unassigned",
                f"partitions {names} have had writes waiting for {_secs(longest)} that no replay of group {group}"
                f" applies: this replay is not assigned them and the group's committed offsets do not move"
                f" (health.maxUnassigned: {_secs(limit)})",
            )
        )
    limit = settings.deadLetterWindow
    if limit:
        recent = [t for t in dead_letter_times if now - t <= limit]
        if recent:
            out.append(
                Problem(
                    "dead_letters",
                    f"{len(recent)} dead letter(s) written in the last {_secs(limit)}, the latest"
                    f" {_secs(now - max(recent))} ago: see `esproxy dlq list` (health.deadLetterWindow)",
                )
            )
    return out


def notices(rule_lanes: Iterable[dict[str, Any]]) -> list[Problem]:
    """What health shows without failing: the writes sync rules' guards hold (a decision for an operator)."""
    out = []
    for row in rule_lanes:
        held = row.get("held")
        if held:
            origin = held.get("from") or {}
            out.append(
                Problem(
                    "sync_held",
                    f"sync rule {row['rule']} holds {held['what']} at {held['where']} (guard {held['kind']}) for"
                    f" {_secs(held['held_seconds'])}, from client {origin.get('client') or '?'} through"
                    f" {origin.get('proxy') or '?'}; {row['waiting'] - 1} later write(s) of the rule wait behind it:"
                    f" esproxy sync approve|reject {row['rule']}",
                )
            )
    return out


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s"
