"""The roles a config enables (proxy, replay, admin), run in one gevent process and stopped
gracefully. With ``workers: N`` this process is the master of N proxy worker processes: it ships
what they capture (esproxy/proxy/prefork.py's ``WorkerPool`` manages them, esproxy/proxy/worker.py runs in each).

Signals: the table in esproxy/core/signals.py (registered from it, documented from it).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

from gevent.event import Event

from esproxy.admin.profiling import Profiler
from esproxy.admin.server import Admin, AdminView
from esproxy.clients.elastic import Elastic
from esproxy.clients.producer import KafkaDest
from esproxy.clients.refusals import ProxyDeadLetters
from esproxy.clients.tls import server_context
from esproxy.core import signals
from esproxy.core.config import Config, ConfigError
from esproxy.core.deadletters import proxy_file
from esproxy.proxy import inflight
from esproxy.proxy.fanout import Fanout
from esproxy.proxy.listeners import Listeners, bind_per_worker, matching_indexes, wait_for_cluster_id
from esproxy.proxy.prefork import WorkerPool
from esproxy.proxy.spool import Spool
from esproxy.replay.consumer import KafkaReplay
from esproxy.replay.followcontrol import FollowControl

from . import __version__

log = logging.getLogger("esproxy")

WORKERS_READY_TIMEOUT = 30.0
WORKERS_CONFIRM_TIMEOUT = 5.0  # each worker confirms a switchover's pause, resume or new leader within this


class Roles:
    def __init__(self, cfg: Config, conf_path: str = "") -> None:
        self.cfg = cfg
        self.conf_path = conf_path
        self.stop_event = Event()
        self.listeners: Optional[Listeners] = None
        self.pool: Optional[WorkerPool] = None  # workers: N > 1
        self.replays: list[KafkaReplay] = []
        self.fanout: Optional[Fanout] = None
        self.replay_elastics: list[Elastic] = []
        self.unstarted: dict[str, tuple[float, str]] = {}  # replays' clusters whose id is not read yet (health)
        # the replay's sync rules, changed at runtime through the admin port (state in the working directory)
        self.follow = FollowControl(cfg.follow) if cfg.kafka_sources() else None
        self.admin = Admin(self._admin_view())
        self.profiler = Profiler()

    @property
    def elastics(self) -> list[Elastic]:
        return (self.listeners.elastics if self.listeners else []) + self.replay_elastics

    def _admin_view(self) -> AdminView:
        """What the admin endpoints read, looked up at each scrape (the roles start after the admin port)."""

        def queue() -> tuple[int, int]:
            if self.fanout is None:
                return 0, 0
            return self.fanout.depth(), getattr(self.fanout.queue, "maxsize", None) or 0

        return AdminView(
            health=self.cfg.health,
            stopping=self.stop_event.is_set,
            queue=queue,
            in_flight=lambda: (inflight.BUDGET.in_flight(), inflight.BUDGET.limit),
            unshipped=lambda: self.fanout.unshipped() if self.fanout is not None else 0,
            oldest_unshipped_age=lambda: self.fanout.oldest_unshipped_age() if self.fanout is not None else 0.0,
            elastics=lambda: self.elastics,
            workers=lambda: self.pool,
            lags=lambda: [row for replay in self.replays for row in replay.lag()],
            unassigned=lambda: [row for replay in self.replays for row in replay.unassigned()],
            rule_lanes=lambda: [row for replay in self.replays for row in replay.rule_lanes()],
            undo_rules=self.follow.undo_rules if self.follow is not None else lambda: [],
            sync=self.follow.handle if self.follow is not None else None,
            unstarted=lambda: [(cluster, *since_why) for cluster, since_why in self.unstarted.items()],
            followers=self._follower_rows,
            switchover=self._switchover if self.cfg.followers() and self.cfg.proxies() else None,
            roles=("proxy",) * bool(self.cfg.proxies()) + ("replay",) * bool(self.cfg.kafka_sources()),
        )

    def _switchover(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        """/_esproxy/switchover[/...] (esproxy.proxy.leadership), with what the proxy still has to ship."""
        leadership = self.listeners.leadership if self.listeners is not None else None
        if leadership is None or (self.cfg.workers > 1 and self.pool is None):
            return 503, {
                "error": {"type": "esproxy_starting_exception", "reason": "the proxy is starting"},
                "status": 503,
            }
        status, doc = leadership.handle(method, parts, body)
        if status == 200 and self.pool is not None:  # the workers follow the master's state, then answer
            try:
                doc["writes_in_flight"] += self.pool.follow_leadership(leadership.gate(), WORKERS_CONFIRM_TIMEOUT)
            except TimeoutError as e:
                reason = f"not every worker took the switchover state: {e}"
                return 503, {"error": {"type": "esproxy_workers_exception", "reason": reason}, "status": 503}
        if status == 200:
            fanout = self.fanout
            doc["unshipped"] = fanout.unshipped() if fanout is not None else 0
            spool = fanout.spool if fanout is not None else None
            doc["open_intents"] = len(spool.open_intents) if spool is not None else 0
        return status, doc

    def _follower_rows(self) -> list[dict]:
        """Each follower once (proxies may share them), as this process sees it."""
        rows: dict[str, dict] = {}
        for app in self.listeners.apps if self.listeners else []:
            for f in app.followers:
                rows.setdefault(f.name, f.row())
        return list(rows.values())

    def handle_signal(self, signum: int) -> None:
        if self.stop_event.is_set():
            log.error("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: stopping gracefully", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        signals.install({"stop": self.handle_signal, "profile": self.profiler.on_signal})
        roles = [f"proxy(:{p.port})" for p in self.cfg.proxies()] + [
            f"replay({k.group})" for k in self.cfg.kafka_sources()
        ]
        log.info("esproxy %s starting: %s", __version__, ", ".join(roles))
        for warning in self.cfg.warnings:
            log.warning("config: %s", warning)
        self.admin.start_sampler()  # the console's charts (/_esproxy/ui)
        try:
            if self.cfg.admin.port:
                admin = self.cfg.admin
                self.admin.start_listener(admin.host, admin.port, admin.header, admin.tls)
            if self.cfg.proxies():
                self._start_proxies()
            if self.cfg.kafka_sources():
                self._start_replays()
        except _Stopped:
            pass
        except OSError as e:  # the port is taken, typically
            log.error("cannot start: %s", e)
            self.stop_event.set()
            self._stop()
            return 1
        # a TLS certificate or key that loads no more (esproxy --check reads them all), or a switchover
        # state file naming a cluster the config does not
        except ConfigError as e:
            log.error("config error: %s", e)
            self.stop_event.set()
            self._stop()
            return 2
        self.stop_event.wait()
        self._stop()
        log.info("esproxy stopped")
        return 0

    def _start_proxies(self) -> None:
        all_acks = any(p.durability == "kafka" for p in self.cfg.proxies())
        kafkas = [KafkaDest(k, all_acks=all_acks) for k in self.cfg.kafka_destinations()]
        rests = [Elastic(r, "backup") for r in self.cfg.rests()]
        spool, open_intents = None, []
        if self.cfg.spools():
            s = self.cfg.spool
            spool = Spool(
                Path(s.dir).resolve(),
                s.maxBytes,
                block_when_full=s.whenFull == "block",
                fsync=s.fsync,
                commit_delay=s.commitDelay,
            )
            open_intents = spool.open()
        dead_letters = ProxyDeadLetters(proxy_file(self.cfg).resolve())
        self.fanout = Fanout(self.cfg.chanSize, kafkas, rests, spool, dead_letters) if self.cfg.captures() else None
        if self.fanout:
            self.fanout.start()
        self.listeners = Listeners(self.cfg, self.fanout, self.admin, self.stop_event)
        if self.cfg.workers > 1:
            for p in self.cfg.proxies():  # a certificate a worker could not load stops the start here
                if p.tls:
                    server_context(p.tls, f"source.proxies[:{p.port}].tls")
            sockets = [bind_per_worker(p, self.cfg.workers) for p in self.cfg.proxies()]
            self.listeners.start(serve=False)  # the master's apps only settle writes of unknown outcome
            leadership = self.listeners.leadership
            shared = inflight.Shared.create(self.cfg.workers) if self.cfg.maxInFlightBytes else None
            inflight.configure(self.cfg.maxInFlightBytes, shared)
            self.pool = WorkerPool(
                self.cfg.workers,
                self.conf_path,
                sockets,
                self.fanout,
                self.admin.answer,
                self.listeners.settle,
                leadership.gate if leadership is not None else None,
                shared,
            )
            self.profiler.workers = self.pool
            self.pool.start()
            if not self.pool.wait_ready(WORKERS_READY_TIMEOUT):
                log.error("not every worker serves after %.0fs; see their lines above", WORKERS_READY_TIMEOUT)
            for p, app in zip(self.cfg.proxies(), self.listeners.apps):
                log.info(
                    "proxy listening on %s:%d -> %s (%d workers%s)",
                    p.host,
                    p.port,
                    app.primary.target(""),
                    self.cfg.workers,
                    ", https" if p.tls else "",
                )
        else:
            self.listeners.start()
        self.listeners.settle(open_intents)  # writes in flight when the last run died: copy what A holds

    def _start_replays(self) -> None:
        for k in self.cfg.kafka_sources():
            primaries = [Elastic(self.cfg.primaries()[i], "replay") for i in matching_indexes(self.cfg, k.labels)]
            self.replay_elastics += primaries
            for primary in primaries:  # needed before replaying: it says which beans to skip
                if not wait_for_cluster_id(primary, self.stop_event, self.unstarted):
                    raise _Stopped()
            source = None
            if self.cfg.follow.source.url:  # A: where a followed index B lacks is created from (followcreate.py)
                source = Elastic(self.cfg.follow.source.destination(), "follow source")
                self.replay_elastics.append(source)
            rules = self.follow.rules if self.follow is not None else None
            board = self.follow.board if self.follow is not None else None  # held writes, decisions, skips
            replay = KafkaReplay(
                k, primaries, rules, source, watch_group=self.cfg.health.maxUnassigned > 0, board=board
            )
            replay.start()
            self.replays.append(replay)

    def _stop(self) -> None:
        deadline = time.monotonic() + self.cfg.stopTimeout
        if self.pool is not None:
            self.profiler.stop_cpu()  # before the workers go: their profiles are merged in
            self.pool.stop(deadline - 3)  # they finish their requests; the master then ships the spool
        elif self.listeners is not None:
            self.listeners.drain(deadline)
        if self.fanout is not None:
            self.fanout.stop(timeout=max(1.0, deadline - time.monotonic()))
        for replay in self.replays:
            replay.stop(timeout=max(1.0, deadline - time.monotonic()))
        if self.listeners is not None:
            self.listeners.close()
        for e in self.replay_elastics:
            e.close()
        self.admin.stop()
        self.profiler.stop_cpu()  # a profile running at exit is still written


class _Stopped(Exception):
    """A stop signal arrived while the process was still starting."""
