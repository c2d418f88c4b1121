"""Runs the roles a config enables in one gevent process, and stops them gracefully.

Signals (the one table; supervisord sends TERM):

| signal        | effect                                                                        |
|---------------|-------------------------------------------------------------------------------|
| TERM, INT     | graceful stop: stop accepting, finish requests in flight, ship the queue to  |
|               | Kafka, commit replayed offsets, exit 0 (a second one exits at once, code 1)  |
| USR1          | profiling in the working directory: jj.cpu -> cpu.profile, jj.mem ->         |
|               | mem.profile (see esproxy/profiling.py and docs/operations.md)                |
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import gevent
from gevent.event import Event

from . import __version__, labels
from .admin import Admin
from .bean import Bean
from .config import Config
from .dest.elastic import Elastic, UpstreamError, backoff
from .dest.kafka import KafkaDest
from .fanout import Fanout
from .profiling import Profiler
from .source.kafka import KafkaReplay
from .source.proxy import ProxyApp, make_server
from .spool import Spool

log = logging.getLogger("esproxy")

GRACEFUL_TIMEOUT = 25.0  # under supervisord's stopwaitsecs (30) so a stop never turns into a kill


class Arbiter:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop_event = Event()
        self.apps: list[ProxyApp] = []
        self.servers: list = []
        self.replays: list[KafkaReplay] = []
        self.fanout: Optional[Fanout] = None
        self.elastics: list[Elastic] = []
        self.admin = Admin(self)
        self.profiler = Profiler()

    def handle_signal(self, signum: int) -> None:
        if self.stop_event.is_set():
            log.error("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: stopping gracefully", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.handle_signal, signum)
        gevent.signal_handler(signal.SIGUSR1, self.profiler.on_signal)
        roles = [f"proxy(:{p.port})" for p in self.cfg.proxies()] + [
            f"replay({k.group})" for k in self.cfg.kafka_sources()
        ]
        log.info("esproxy %s starting: %s", __version__, ", ".join(roles))
        for warning in self.cfg.warnings:
            log.warning("config: %s", warning)
        try:
            if self.cfg.admin.port:
                self.admin.start_listener(self.cfg.admin.host, self.cfg.admin.port, self.cfg.admin.header)
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
        self.stop_event.wait()
        self._stop()
        log.info("esproxy stopped")
        return 0

    def _elastic(self, cfg_index: int, direction: str) -> Elastic:
        e = Elastic(self.cfg.primaries()[cfg_index], direction)
        self.elastics.append(e)
        return e

    def _wait_for_cluster_id(self, e: Elastic) -> bool:
        """Read the cluster's id, retrying while it is down; False if a stop came first."""
        attempt = 0
        while not e.cluster_id:
            try:
                log.info("cluster %s has id %s", e.target(""), e.ensure_cluster_id())
            except UpstreamError as err:
                delay = backoff(attempt, base=0.5, cap=10)
                attempt += 1
                log.warning("cluster not ready: %s; retrying in %.1fs", err, delay)
                if self.stop_event.wait(delay):
                    return False
        return True

    def _start_proxies(self) -> None:
        modes = {p.durability for p in self.cfg.proxies()}
        kafkas = [KafkaDest(k, all_acks="kafka" in modes) for k in self.cfg.kafka_destinations()]
        rests = [Elastic(r, "backup") for r in self.cfg.rests()]
        spool, open_intents = None, []
        if (kafkas or rests) and "spool" in modes:
            s = self.cfg.spool
            spool = Spool(Path(s.dir).resolve(), s.maxBytes, block_when_full=s.whenFull == "block", fsync=s.fsync)
            open_intents = spool.open()
        self.fanout = Fanout(self.cfg.chanSize, kafkas, rests, spool) if kafkas or rests else None
        if self.fanout:
            self.fanout.start()
        for p in self.cfg.proxies():
            matching = _matching_indexes(self.cfg, p.labels)
            if len(matching) > 1:
                log.warning("proxy :%d: %d primaries match; forwarding to the first only", p.port, len(matching))
            primary = self._elastic(matching[0], "primary")
            # Serve (and answer 502 while the primary is down) rather than wait for its id.
            gevent.spawn(self._wait_for_cluster_id, primary)
            app = ProxyApp(p, primary, self.fanout)
            app.admin = self.admin
            server = make_server(app)
            server.start()
            self.apps.append(app)
            self.servers.append(server)
            log.info("proxy listening on %s:%d -> %s", p.host, p.port, app.primary.target(""))
        for intent in open_intents:  # writes in flight when the last run died: copy what A holds
            app = self.apps[0]
            app.settle_later(intent, Bean("", "/", labels=dict(app.cfg.labels) or None))

    def _start_replays(self) -> None:
        for k in self.cfg.kafka_sources():
            primaries = [self._elastic(i, "replay") for i in _matching_indexes(self.cfg, k.labels)]
            for primary in primaries:  # needed before replaying: it says which beans to skip
                if not self._wait_for_cluster_id(primary):
                    raise _Stopped()
            replay = KafkaReplay(k, primaries)
            replay.start()
            self.replays.append(replay)

    def _stop(self) -> None:
        deadline = time.monotonic() + GRACEFUL_TIMEOUT
        for app in self.apps:
            app.draining = True  # answers now carry Connection: close
        for server in self.servers:
            server.close()  # stop accepting
        _wait(lambda: all(app.inflight == 0 for app in self.apps), deadline)
        for server in self.servers:
            server.stop(timeout=0.5)  # idle keep-alive connections
        if self.fanout is not None:
            self.fanout.stop(timeout=max(1.0, deadline - time.monotonic()))
        for replay in self.replays:
            replay.stop(timeout=max(1.0, deadline - time.monotonic()))
        for e in self.elastics:
            e.close()
        self.admin.stop()
        self.profiler.stop_cpu()  # a profile running at exit is still written


class _Stopped(Exception):
    """A stop signal arrived while the process was still starting."""


def _matching_indexes(cfg: Config, source_labels: dict[str, str]) -> list[int]:
    return [i for i, p in enumerate(cfg.primaries()) if labels.parse(p.labelEval)(source_labels)]


def _wait(condition: Callable[[], bool], deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.05)
