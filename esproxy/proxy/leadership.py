"""Which cluster leads the proxy's writes, the write pause of a switchover, and the history of switches.

The proxy's config names a leader (``destination.primaries[0]``) and the clusters following it
(``destination.followers[]``). ``esproxy switchover`` / ``esproxy failover`` (esproxy/commands/switchover.py)
change which of them leads through the admin endpoints answered here:

- ``GET /_esproxy/switchover``: the state (leader, followers, paused, writes in flight, history);
- ``POST /_esproxy/switchover/pause`` ``{"mode": "reject"|"hold", "hold": s, "retryAfter": s, "expires": s}``:
  new writes get 503 + ``Retry-After`` (``reject``), or wait up to ``hold`` seconds for the resume, then
  503; reads keep flowing; after ``expires`` seconds (a command that died) writes resume by themselves;
- ``POST /_esproxy/switchover/leader`` ``{"url": U, "expect": V, "kind": "switchover"|"failover"}``: U
  (a configured cluster) leads from now on, if V still does; written to the state file first;
- ``POST /_esproxy/switchover/resume``: writes flow again (held ones go on, to the current leader).

The state file (``leader.json`` in the spool directory) keeps the leader and the history across
restarts: a proxy that starts with it follows the last switch and says so in a WARNING.

With pre-fork workers the master's Leadership is the one these endpoints change; each worker's
follows it (:meth:`Leadership.gate`, :meth:`Leadership.follow`; esproxy.proxy.prefork sends it to every
worker after each change and each worker asks for it before it serves).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import gevent
from gevent.event import Event

from esproxy.core.config import Config, ConfigError, ElasticDestination
from esproxy.core.logs import redact_url

log = logging.getLogger("esproxy.switchover")

STATE_FILE = "leader.json"
HISTORY = 20  # switches kept in the state file and shown by the stats
DEFAULT_RETRY_AFTER = 1
MAX_HOLD = 300.0
DEFAULT_EXPIRES = 300.0  # a pause nobody resumes (the command died) ends by itself after this

Answer = tuple[int, Any]  # HTTP status, JSON document


def state_path(cfg: Config) -> Path:
    return Path(cfg.spool.dir).resolve() / STATE_FILE


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


@dataclass
class Pause:
    mode: str  # reject | hold
    hold: float  # seconds a write waits for the resume (mode hold)
    retry_after: int  # seconds, the Retry-After of a refused write
    since: float  # time.time()
    resumed: Event = field(default_factory=Event)
    switched: Optional[dict[str, Any]] = None  # the history entry of a switch made during the pause


class Leadership:
    """The leader among ``clusters`` (the config's primary first, then its followers), and the write gate."""

    def __init__(self, clusters: list[ElasticDestination], path: Optional[Path]) -> None:
        self.clusters = clusters
        self.path = path
        self.leader = 0  # index into clusters
        self.history: list[dict[str, Any]] = []
        self.pause: Optional[Pause] = None
        self.generation = 0  # counts pauses, resumes and switches: a worker applies only a newer gate
        self.writes_in_flight = 0
        self.refused = 0  # writes answered 503 while paused
        self.held = 0  # writes that waited for a resume
        # Each prepares the swap to a new leader (reads its cluster id: raises if it cannot) and returns
        # what makes it (esproxy.proxy.listeners: the apps' primary).
        self.on_switch: list[Callable[[ElasticDestination], Callable[[], None]]] = []
        if path is not None:
            self._load(path)

    @classmethod
    def of(cls, cfg: Config) -> Optional[Leadership]:
        """None when the config has no follower (nothing to switch to)."""
        if not cfg.followers() or not cfg.primaries():
            return None
        return cls(cfg.primaries()[:1] + cfg.followers(), state_path(cfg))

    # ------------------------------------------------------------------ state

    @property
    def leader_cfg(self) -> ElasticDestination:
        return self.clusters[self.leader]

    def followers(self) -> list[ElasticDestination]:
        return [c for i, c in enumerate(self.clusters) if i != self.leader]

    def _find(self, url: str) -> Optional[int]:
        return next((i for i, c in enumerate(self.clusters) if same_url(c.url, url)), None)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise ConfigError(str(path), f"unreadable switchover state: {e}") from None
        found = self._find(str(doc.get("leader", "")))
        if found is None:
            raise ConfigError(
                str(path),
                f"the last switchover made {redact_url(str(doc.get('leader')))} the leader, which is neither the"
                " primary nor a follower in this config; fix the config or remove the file (the config's primary"
                " then leads)",
            )
        self.leader = found
        self.history = list(doc.get("history", []))[-HISTORY:]
        if found != 0:
            log.warning(
                "SWITCHED OVER: %s leads (writes go there), not the config's primary %s: %s says so (last switch %s);"
                " `esproxy switchover` switches back",
                redact_url(self.leader_cfg.url),
                redact_url(self.clusters[0].url),
                path,
                self.history[-1].get("at", "?") if self.history else "?",
            )

    def _save(self, leader: int, history: list[dict[str, Any]]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"leader": self.clusters[leader].url, "history": history[-HISTORY:]}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def status(self) -> dict[str, Any]:
        pause = self.pause
        last = self.history[-1] if self.history else None
        return {
            "leader": redact_url(self.leader_cfg.url),
            "followers": [redact_url(c.url) for c in self.followers()],
            "config_primary": redact_url(self.clusters[0].url),
            "paused": pause is not None,
            "mode": pause.mode if pause else "",
            "paused_seconds": round(time.time() - pause.since, 3) if pause else 0.0,
            "writes_in_flight": self.writes_in_flight,
            "writes_refused": self.refused,
            "writes_held": self.held,
            "switches": len(self.history),
            "last_switch": last,
            "history": list(self.history),
        }

    def gate(self) -> dict[str, Any]:
        """What a pre-fork worker needs to follow this (the master's) state: leader and pause."""
        pause = self.pause
        return {
            "generation": self.generation,
            "leader": self.leader_cfg.url,
            "pause": None if pause is None else [pause.mode, pause.hold, pause.retry_after, pause.since],
        }

    def follow(self, gate: dict[str, Any]) -> None:
        """A pre-fork worker: take the master's leader and pause (:meth:`gate`), unless older than ours.
        The state file is the master's to write."""
        if gate["generation"] < self.generation:
            return
        self.generation = gate["generation"]
        target = self._find(gate["leader"])
        if target is not None and target != self.leader:
            for swap in [prepare(self.clusters[target]) for prepare in self.on_switch]:
                swap()
            self.leader = target
            log.warning("worker: %s leads now", redact_url(self.leader_cfg.url))
        if gate["pause"] is not None and self.pause is None:
            self.pause = Pause(*gate["pause"])
        elif gate["pause"] is None and self.pause is not None:
            pause, self.pause = self.pause, None
            pause.resumed.set()

    # ------------------------------------------------------------------ the write gate (hot path)

    def admit_write(self) -> Optional[int]:
        """None: the write may go (counted in flight until :meth:`write_done`); else its Retry-After seconds."""
        pause = self.pause
        if pause is not None and pause.mode == "hold":
            self.held += 1
            pause.resumed.wait(pause.hold)
            pause = self.pause  # another pause may have begun meanwhile
        if pause is not None:
            self.refused += 1
            return pause.retry_after
        self.writes_in_flight += 1
        return None

    def write_done(self) -> None:
        self.writes_in_flight -= 1

    # ------------------------------------------------------------------ admin endpoints

    def handle(self, method: str, parts: list[str], body: bytes) -> Answer:
        try:
            args = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(args, dict):
            return _error(400, "the body must be a JSON object")
        if not parts:
            return (200, self.status()) if method in ("GET", "HEAD") else _error(405, "GET only")
        if method != "POST" or len(parts) != 1:
            return _error(405 if len(parts) == 1 else 404, "POST /_esproxy/switchover/pause|leader|resume")
        action = {"pause": self._pause, "resume": self._resume, "leader": self._switch}.get(parts[0])
        if action is None:
            return _error(404, f"no switchover/{parts[0]}; try pause, leader or resume")
        try:
            return action(args)
        except (TypeError, ValueError) as e:
            return _error(400, str(e))

    def _pause(self, args: dict[str, Any]) -> Answer:
        mode = str(args.get("mode", "reject"))
        if mode not in ("reject", "hold"):
            raise ValueError(f"mode must be reject or hold, not {mode!r}")
        hold = min(MAX_HOLD, max(0.0, float(args.get("hold", 10))))
        retry_after = max(1, int(args.get("retryAfter", DEFAULT_RETRY_AFTER)))
        expires = max(0.1, float(args.get("expires", DEFAULT_EXPIRES)))
        if self.pause is None:
            self.pause = Pause(mode, hold, retry_after, time.time())
            self.generation += 1
            gevent.spawn_later(expires, self._expire, self.pause, expires)
            log.warning(
                "switchover: writes paused (%s%s); reads go on",
                f"held up to {hold:.0f}s, then " if mode == "hold" else "",
                f"503 with Retry-After: {retry_after}",
            )
        return 200, self.status()

    def _expire(self, pause: Pause, after: float) -> None:
        if self.pause is pause:
            log.error(
                "switchover: writes paused for %.0fs and nobody resumed them (the command died?): resuming", after
            )
            self._resume({})

    def _resume(self, args: dict[str, Any]) -> Answer:
        pause, self.pause = self.pause, None
        if pause is not None:
            self.generation += 1
            paused = time.time() - pause.since
            if pause.switched is not None:  # the history entry of the switch made during this pause
                pause.switched["write_pause_seconds"] = round(paused, 3)
                self._save_quietly()
            pause.resumed.set()
            log.warning("switchover: writes resumed after %.3fs, to %s", paused, redact_url(self.leader_cfg.url))
        return 200, self.status()

    def _switch(self, args: dict[str, Any]) -> Answer:
        url, expect, kind = str(args.get("url", "")), args.get("expect"), str(args.get("kind", "switchover"))
        target = self._find(url)
        if target is None:
            raise ValueError(f"{redact_url(url)} is neither the primary nor a follower in the proxy's config")
        if expect is not None and not same_url(str(expect), self.leader_cfg.url):
            return _error(409, f"the leader is {redact_url(self.leader_cfg.url)}, not {redact_url(str(expect))}")
        if target == self.leader:
            return 200, self.status()
        started = float(args.get("started", time.time()))
        now = time.time()
        entry = {
            "kind": kind,
            "from": redact_url(self.leader_cfg.url),
            "to": redact_url(self.clusters[target].url),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "at_epoch": round(now, 3),
            "duration_seconds": round(max(0.0, now - started), 3),
            "write_pause_seconds": None if self.pause is not None else 0.0,
        }
        try:
            swaps = [prepare(self.clusters[target]) for prepare in self.on_switch]
        except Exception as e:  # noqa: BLE001 - the new leader unreachable, typically: nothing changed
            return _error(502, f"cannot make {entry['to']} the leader: {e}; the leader is unchanged")
        history = self.history + [entry]
        try:
            self._save(target, history)  # on disk first: a restart must not go back to the old leader
        except OSError as e:
            return _error(500, f"cannot write the switchover state {self.path}: {e}; the leader is unchanged")
        for swap in swaps:
            swap()
        self.leader, self.history = target, history[-HISTORY:]
        self.generation += 1
        if self.pause is not None:
            self.pause.switched = entry
        log.warning("%s: %s leads now (was %s); state in %s", kind, entry["to"], entry["from"], self.path)
        return 200, self.status()

    def _save_quietly(self) -> None:
        try:
            self._save(self.leader, self.history)
        except OSError as e:
            log.error("cannot write the switchover state %s: %s", self.path, e)


def _error(status: int, reason: str) -> Answer:
    kinds = {400: "illegal_argument_exception", 404: "resource_not_found_exception", 409: "esproxy_conflict_exception"}
    return status, {"error": {"type": kinds.get(status, "esproxy_exception"), "reason": reason}, "status": status}
