"""Follower sync rules changed at runtime: list, add, delete, pause, resume, stop.

The replay's admin port serves them (``/_esproxy/sync/rules``...; ``esproxy sync`` is the CLI); each
change is checked like the config (follow.Rules.from_config), applied to the live :class:`Rules` the
replay reads at its next write, and persisted in the replay's working directory
(``follow-state.json``, written atomically) so that a restart keeps it. The config's rules are the
base: the file records rules added, config rules deleted, and the state of each paused or stopped rule.

- pause: writes of the rule's indices wait, in order (the partition holding one is replayed again
  from it once resumed); nothing is skipped;
- stop: the B indices stay as they are and no longer follow (their writes are skipped and counted);
  a stopped rule is resumed by deleting and adding it again (and copying what it missed);
- delete: the rule is gone; its indices are no longer followed;
- approve / reject: the oldest write the rule's guard holds is applied / written as a dead letter with the
  operator's reason (replay/holdback.py); skip: the rule's writes captured before a time become dead letters.
  Holds, decisions and skips are kept in the same file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from esproxy.core.config import FollowRule, FollowSettings
from esproxy.core.schema import ConfigError, build
from esproxy.core.stats import STATS

from .follow import FOLLOWING, PAUSED, STOPPED, Rules
from .holdback import APPROVE, REJECT, Board

HELD = "held"  # a rule's state while its lane is stopped at a guarded write (holdback.py)
DECISIONS = ("_approve", "_reject", "_skip")

log = logging.getLogger("esproxy.follow")

STATE_FILE = "follow-state.json"


class ControlError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FollowControl:
    def __init__(self, settings: FollowSettings, path: Path | str = STATE_FILE) -> None:
        self.configured = list(settings.rules)
        self.path = Path(path)
        state = self._load()
        self.added: list[FollowRule] = [build(FollowRule, r, "added") for r in state.get("added", [])]
        self.deleted: set[str] = set(state.get("deleted", []))
        self.states: dict[str, str] = dict(state.get("states", {}))
        # held writes and operators' decisions, skips (holdback.py): kept in the same file
        self.board = Board(state.get("holds"), state.get("skips"))
        self.board.save = self._save_board
        self.rules = Rules([], active=bool(self.configured or self.added or self.deleted))
        try:
            self._apply(self._current(), self.states, save=False)
        except ControlError as e:
            raise ConfigError(
                str(self.path), f"the rules changed at runtime do not fit the config: {e.reason}"
            ) from None

    # ------------------------------------------------------------------ operations

    def list(self) -> list[dict[str, Any]]:
        added = {r.name for r in self.added}
        lanes = self.board.rows()
        out = []
        for rule in self.rules.rules:
            mine = [row for row in lanes if row["rule"] == rule.name]
            held = [row["held"] for row in mine if row["held"]]
            state = self.rules.state(rule.name)
            row: dict[str, Any] = {
                "name": rule.name,
                "state": HELD if held and state == FOLLOWING else state,
                "indices": list(rule.indices),
                "exclude": list(rule.exclude),
                "rename": rule.rename,
                "from": "added" if rule.name in added else "config",
            }
            if rule.delay or rule.guard or mine:
                row.update(
                    delay_seconds=rule.delay,
                    guard=list(rule.guard),
                    waiting=sum(r["waiting"] for r in mine),
                    lag_beyond_delay_seconds=max((r["lag_beyond_delay_seconds"] for r in mine), default=0.0),
                    held=sorted(held, key=lambda h: h["captured"]),
                )
            if rule.name in self.board.skips:
                row["skip_until"] = self.board.skips[rule.name]
            out.append(row)
        return out

    def undo_rules(self) -> list[dict[str, Any]]:
        """The rules with a delay or a guard, as ``/_esproxy/stats`` shows them (``replay.undo_rules``)."""
        return [
            {
                "name": rule.name,
                "indices": list(rule.indices),
                "exclude": list(rule.exclude),
                "delay_seconds": rule.delay,
                "guard": list(rule.guard),
            }
            for rule in self.rules.rules
            if rule.delay > 0 or rule.guard
        ]

    def status(self) -> list[dict[str, Any]]:
        """Per follower index the replay wrote: its rule's state and what was applied (esproxy.core.stats)."""
        now = time.time()
        rows = []
        for target, entry in sorted(STATS.followed.items()):
            row = {"index": target, **entry.as_dict(), "state": self.rules.state(entry.rule)}
            if not any(r.name == entry.rule for r in self.rules.rules) and entry.rule != "(other)":
                row["state"] = "deleted"
            row["last_applied_seconds_ago"] = round(now - entry.last_applied, 3) if entry.last_applied else None
            row["lag_seconds"] = round(entry.lag_seconds, 3)
            row["lag_beyond_delay_seconds"] = round(entry.lag_beyond_delay_seconds, 3)
            rule = next((r for r in self.rules.rules if r.name == entry.rule), None)
            if rule is not None:
                row["delay_seconds"] = rule.delay
                if row["state"] == FOLLOWING and any(lane.held() for lane in self.board.lanes_of(rule.name)):
                    row["state"] = HELD
            rows.append(row)
        return rows

    def waiting(self, name: str, limit: int = 100) -> dict[str, Any]:
        """The writes waiting in rule ``name``'s lanes (delayed or held), oldest capture first: where, what, when
        captured, when due, from where; at most ``limit`` (``total`` counts them all)."""
        now = time.time()
        entries = [(lane, e) for lane in self.board.lanes_of(name) for e in lane.entries]
        entries.sort(key=lambda pair: (pair[1].captured, pair[1].record.offset))
        rows = [
            {
                "where": e.place,
                "what": e.describe(),
                "captured": round(e.captured, 3),
                "due_in_seconds": round(max(0.0, e.due - now), 3),
                "guard": e.guard,
                "from": e.origin(),
            }
            for _, e in entries[:limit]
        ]
        return {"rule": name, "total": len(entries), "writes": rows}

    def decide(self, name: str, action: str, data: Any) -> dict[str, Any]:
        """approve / reject the oldest write held for rule ``name``; skip its writes captured before a time."""
        if not isinstance(data, dict):
            raise ControlError(400, "the body is not a JSON object")
        if action == "skip":
            until = data.get("until")
            if not isinstance(until, (int, float)) or isinstance(until, bool) or until <= 0:
                raise ControlError(400, 'give "until": a capture time, seconds since the epoch')
            if not any(r.name == name for r in self.rules.rules) and not self.board.lanes_of(name):
                raise ControlError(404, f'no rule named "{name}"')
            self.board.skip(name, float(until))
            return {"acknowledged": True, "skip_until": float(until)}
        reason = str(data.get("reason") or "")
        try:
            entry = self.board.decide(name, APPROVE if action == "approve" else REJECT, reason)
        except LookupError as e:
            raise ControlError(409, str(e)) from None
        return {"acknowledged": True, "decision": action, "write": entry.describe(), "where": entry.place}

    def add(self, data: Any) -> None:
        try:
            rule = build(FollowRule, data, "rule")
        except ConfigError as e:
            raise ControlError(400, str(e)) from None
        if any(r.name == rule.name for r in self._current()):
            raise ControlError(409, f'a rule named "{rule.name}" exists')
        self._apply([*self._current(), rule], self.states, added=[*self.added, rule])
        log.info("sync rule %s added: %s", rule.name, ", ".join(rule.indices))

    def delete(self, name: str) -> None:
        self._known(name)
        added = [r for r in self.added if r.name != name]
        deleted = self.deleted | ({name} if len(added) == len(self.added) else set())
        states = {k: v for k, v in self.states.items() if k != name}
        self._apply([r for r in self._current() if r.name != name], states, added=added, deleted=deleted)
        log.info("sync rule %s deleted", name)

    def set_state(self, name: str, action: str) -> None:
        current = self._known(name)
        if action == "pause" and current == FOLLOWING:
            new = PAUSED
        elif action == "resume" and current == PAUSED:
            new = FOLLOWING
        elif action == "stop" and current != STOPPED:
            new = STOPPED
        elif action not in ("pause", "resume", "stop"):
            raise ControlError(404, f"no action {action}: pause, resume or stop")
        elif action == "resume" and current == STOPPED:
            raise ControlError(409, f"rule {name} is stopped: delete and add it again (then copy what it missed)")
        else:
            return  # already so
        states = {k: v for k, v in self.states.items() if k != name}
        if new != FOLLOWING:
            states[name] = new
        self._apply(self._current(), states)
        log.info("sync rule %s: %s (was %s)", name, new, current)

    # ------------------------------------------------------------------ HTTP (the admin port)

    def handle(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        """``/_esproxy/sync/rules[/name[/_action]]``: (status, JSON document)."""
        try:
            if parts == ["rules"] and method == "GET":
                return 200, {"rules": self.list()}
            if parts == ["status"] and method == "GET":
                return 200, {"indices": self.status()}
            if parts == ["rules"] and method in ("POST", "PUT"):
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    raise ControlError(400, "the body is not JSON") from None
                self.add(data)
                return 200, {"acknowledged": True, "rules": self.list()}
            if len(parts) == 2 and parts[0] == "rules" and method == "DELETE":
                self.delete(parts[1])
                return 200, {"acknowledged": True}
            if len(parts) == 3 and parts[0] == "rules" and parts[2] == "_waiting" and method == "GET":
                return 200, self.waiting(parts[1])
            if len(parts) == 3 and parts[0] == "rules" and parts[2] in DECISIONS and method == "POST":
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    raise ControlError(400, "the body is not JSON") from None
                return 200, self.decide(parts[1], parts[2][1:], data)
            if len(parts) == 3 and parts[0] == "rules" and parts[2].startswith("_") and method == "POST":
                self.set_state(parts[1], parts[2][1:])
                return 200, {"acknowledged": True, "state": self.rules.state(parts[1])}
            raise ControlError(
                404,
                "try GET|POST rules, DELETE rules/NAME, POST rules/NAME/_pause|_resume|_stop|_approve|_reject|_skip",
            )
        except ControlError as e:
            return e.status, {"error": {"type": "sync_rule_exception", "reason": e.reason}, "status": e.status}

    # ------------------------------------------------------------------ state

    def _known(self, name: str) -> str:
        if not any(r.name == name for r in self.rules.rules):
            raise ControlError(404, f'no rule named "{name}"')
        return self.rules.state(name)

    def _current(self) -> list[FollowRule]:
        return [r for r in self.configured if r.name not in self.deleted] + self.added

    def _apply(
        self,
        rules: list[FollowRule],
        states: dict[str, str],
        added: list[FollowRule] | None = None,
        deleted: set[str] | None = None,
        save: bool = True,
    ) -> None:
        """Check, persist, then switch the live rules (a change that cannot be written is not made)."""
        try:
            checked = Rules.from_config(FollowSettings(rules=rules))
        except ConfigError as e:  # name the rules, not their places in a list the operator never wrote
            text = re.sub(r"follow\.rules\[(\d+)\]", lambda m: f'rule "{rules[int(m.group(1))].name}"', str(e))
            raise ControlError(400, text) from None
        added = self.added if added is None else added
        deleted = self.deleted if deleted is None else deleted
        if save:
            self._save(self._document(added, deleted, states))
        self.added, self.deleted, self.states = added, deleted, states
        if self.rules.active or rules:  # once rules exist, deleting the last one follows nothing
            self.rules.replace(checked.rules, states)

    def _document(self, added: list[FollowRule], deleted: set[str], states: dict[str, str]) -> dict[str, Any]:
        doc: dict[str, Any] = {"added": [asdict(r) for r in added], "deleted": sorted(deleted), "states": states}
        if self.board.holds:
            doc["holds"] = self.board.holds
        if self.board.skips:
            doc["skips"] = self.board.skips
        return doc

    def _save_board(self) -> None:
        """A hold, a decision or a skip changed: written at once (a restart keeps them); a failure is logged (the
        replay goes on: the hold is made again, the decision asked again, after a restart)."""
        try:
            self._save(self._document(self.added, self.deleted, self.states))
        except ControlError as e:
            log.error("%s", e.reason)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ConfigError(str(self.path), f"cannot read the sync rules' state: {e}") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise ControlError(500, f"cannot write {self.path}: {e}") from None
