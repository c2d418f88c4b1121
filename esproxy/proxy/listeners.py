"""The proxy role's listeners: one :class:`ProxyApp` behind a gevent ``WSGIServer`` per
``source.proxies[]`` entry, started and drained together.

esproxy.roles.Roles runs them itself (``workers: 1``); with pre-fork workers each worker runs them on the
sockets its master bound (:mod:`esproxy.proxy.worker`), and the master keeps unserved apps only to settle
the intents a dead worker left open.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Optional

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.core import labels
from esproxy.core.bean import Bean
from esproxy.core.config import Config, ElasticDestination, ProxySource
from esproxy.core.retry import Aborted, retry
from esproxy.core.wsgi import AdminEndpoints
from esproxy.replay import Rules

from . import inflight
from .handler import ProxyApp, make_server
from .leadership import Leadership
from .readroute import Follower, ReadRouter, rules_for
from .recorder import Recorder

log = logging.getLogger("esproxy")


def matching_indexes(cfg: Config, source_labels: dict[str, str]) -> list[int]:
    """The primaries (indexes into cfg.primaries()) whose labelEval accepts these labels."""
    return [i for i, p in enumerate(cfg.primaries()) if labels.parse(p.labelEval)(source_labels)]


def wait_for_cluster_id(e: Elastic, stop: Event, waiting: Optional[dict[str, tuple[float, str]]] = None) -> bool:
    """Read the cluster's id, retrying while it is down; False if a stop came first. Meanwhile ``waiting``
    (for health) maps the cluster to (since when, the last error)."""
    if e.cluster_id:
        return True
    since = time.monotonic()

    def not_ready(err: BaseException, attempts: int, delay: float) -> None:
        untrusted = isinstance(err, UpstreamError) and err.untrusted  # the operator's to fix: loud each time
        log.log(logging.ERROR if untrusted else logging.WARNING, "cluster not ready: %s; retrying in %.1fs", err, delay)
        if waiting is not None:
            waiting[e.url_text] = (since, str(err))

    try:
        cluster_id = retry(e.ensure_cluster_id, (UpstreamError,), not_ready, base=0.5, cap=10, stopping=stop.is_set)
    except Aborted:
        return False
    finally:
        if waiting is not None:
            waiting.pop(e.url_text, None)
    log.info("cluster %s has id %s", e.target(""), cluster_id)
    return True


def bind(p: ProxySource) -> socket.socket:
    """The listening socket of a proxy entry."""
    family = socket.getaddrinfo(p.host or None, p.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return WSGIServer.get_listener((p.host, p.port), family=family)


def bind_per_worker(p: ProxySource, count: int) -> list[socket.socket]:
    """``count`` listening sockets on a proxy entry's address, one per pre-fork worker (the master
    binds them), with SO_REUSEPORT: the kernel spreads new connections over them by a hash of each
    connection's addresses and ports. On one shared socket, whichever worker woke first took a
    burst of connections (keep-alive keeps them there) while the other idled: a 1-2 s p99 tail.

    A plain bind comes first, so a port another process listens on (another esproxy included,
    which would set SO_REUSEPORT too) is refused as before. Without SO_REUSEPORT: one socket, shared.
    """
    probe = bind(p)
    reuseport = getattr(socket, "SO_REUSEPORT", None)
    if reuseport is None or count < 2:
        return [probe] * count
    address, family = probe.getsockname(), probe.family
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, reuseport, 1)
            s.bind(address)
            s.listen(WSGIServer.backlog)
            s.setblocking(False)
    except OSError:
        for s in sockets:
            s.close()
        raise
    return sockets


class Listeners:
    def __init__(
        self, cfg: Config, fanout: Optional[Recorder], admin: AdminEndpoints, stop: Event, worker: bool = False
    ) -> None:
        self.cfg = cfg
        inflight.configure(cfg.maxInFlightBytes)  # a worker: shared with its master's (a master shares it after)
        self.worker = worker  # a pre-fork worker: follows the master's switches, whose checks were made there
        self.fanout = fanout
        self.admin = admin
        self.stop = stop
        self.apps: list[ProxyApp] = []
        self.servers: list[WSGIServer] = []
        self.elastics: list[Elastic] = []
        # With followers: which cluster leads (the state file of the last switchover says) and the write pause.
        self.leadership = Leadership.of(cfg)
        if self.leadership is not None:
            self.leadership.on_switch.append(self._prepare_switch)

    def start(self, sockets: Optional[list[socket.socket]] = None, serve: bool = True) -> None:
        """An app per proxy entry; served on ``sockets`` (in entry order) or on sockets bound here."""
        for i, p in enumerate(self.cfg.proxies()):
            matching = matching_indexes(self.cfg, p.labels)
            if len(matching) > 1:
                log.warning("proxy :%d: %d primaries match; forwarding to the first only", p.port, len(matching))
            leader = self.cfg.primaries()[matching[0]]
            if self.leadership is not None and matching[0] == 0:
                leader = self.leadership.leader_cfg
            primary = Elastic(leader, "primary")
            self.elastics.append(primary)
            # Serve (and answer 502 while the primary is down) rather than wait for its id.
            gevent.spawn(wait_for_cluster_id, primary, self.stop)
            app = ProxyApp(p, primary, self.fanout)
            if p.followerReadOnly:
                app.read_only = Rules.from_config(self.cfg.follow)
            app.admin = self.admin
            app.leadership = self.leadership if matching[0] == 0 else None
            followers = self.leadership.followers() if app.leadership is not None else self.cfg.followers()
            app.followers = self._followers(p, followers)
            if app.followers:
                app.reads = ReadRouter(p.readYourWrites, rules_for(self.cfg.follow))
            self.apps.append(app)
            if serve:
                server = make_server(app, sockets[i] if sockets else None)
                server.start()
                self.servers.append(server)
                # A pre-fork master says "proxy listening on" once all its workers serve.
                what = "worker serving" if sockets else "proxy listening on"
                https = " (https)" if p.tls else ""
                log.info("%s %s:%d -> %s%s", what, p.host, p.port, primary.target(""), https)

    def _followers(self, p: ProxySource, clusters: list[ElasticDestination]) -> list[Follower]:
        """The followers (of ``clusters``) whose labelEval accepts this proxy's labels, watched from now on."""
        # A pre-fork worker cannot see the master's spool: its followers' lag is the replay's alone.
        unshipped = getattr(self.fanout, "oldest_unshipped_age", None)
        followers = []
        for f in clusters:
            if labels.parse(f.labelEval)(p.labels):
                elastic = Elastic(f, "follower")
                self.elastics.append(elastic)
                follower = Follower(elastic, unshipped)
                follower.start()
                followers.append(follower)
        return followers

    def _prepare_switch(self, leader: ElasticDestination) -> Callable[[], None]:
        """A switchover to ``leader``: its client, its cluster id read now (UpstreamError if it cannot be: the
        beans of its writes must name it), and what makes the apps forward to it."""
        new = Elastic(leader, "primary")
        try:
            new.ensure_cluster_id()
        except UpstreamError:
            if not self.worker:
                new.close()
                raise
            gevent.spawn(wait_for_cluster_id, new, self.stop)  # the master read it: a moment's trouble here
        apps = [app for app in self.apps if app.leadership is not None]
        assert self.leadership is not None
        following = [c for c in self.leadership.clusters if c is not leader]  # the old leader among them

        def swap() -> None:
            self.elastics.append(new)
            for app in apps:
                old = app.followers
                # The old clients stay open: requests in flight finish on them.
                app.primary, app.followers = new, self._followers(app.cfg, following)
                for follower in old:
                    follower.close()  # its watch; reads now go to the new followers

        return swap

    def settle(self, intents: list[dict[str, Any]]) -> None:
        """Writes of unknown outcome (a crash in flight): copy what A holds, then close each intent."""
        if not intents:
            return
        app = self.apps[0]
        template = Bean("", "/", labels=dict(app.cfg.labels) or None)
        for intent in intents:
            app.settle_later(intent, template)

    def drain(self, deadline: float) -> None:
        """Stop accepting, let requests in flight finish (until ``deadline``), close idle connections."""
        for app in self.apps:
            app.draining = True  # answers now carry Connection: close
        for server in self.servers:
            server.close()  # stop accepting
        wait(lambda: all(app.inflight == 0 for app in self.apps), deadline)
        for server in self.servers:
            server.stop(timeout=0.5)  # idle keep-alive connections

    def close(self) -> None:
        for app in self.apps:
            for f in app.followers:
                f.close()
        for e in self.elastics:
            e.close()


def wait(condition: Callable[[], bool], deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.05)
