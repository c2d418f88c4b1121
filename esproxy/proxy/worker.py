"""A pre-fork worker (``workers: N``): serves the proxy listeners its master bound, and records
captured writes through the master (:mod:`esproxy.proxy.prefork`, :mod:`esproxy.proxy.channel`).

Started by the master as ``esproxy -c conf.yml --worker IPC_FD,LISTEN_FD...``. TERM or INT (or the
master going away) stops it gracefully: stop accepting, finish the requests in flight, exit 0.
USR1 sent to a worker itself profiles that worker alone (``cpu.profile.<pid>``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any, Iterable, Optional

import gevent
from gevent.event import Event

from esproxy.admin.profiling import Profiler
from esproxy.admin.server import read_body, refuse, upstream_rows
from esproxy.core import signals
from esproxy.core.bean import Bean
from esproxy.core.config import Config
from esproxy.core.stats import STATS
from esproxy.core.wsgi import JSON_TYPE, Check, StartResponse

from .channel import Channel, MasterClient, MasterGone
from .listeners import Listeners
from .recorder import NotRecorded, Unavailable

log = logging.getLogger("esproxy.worker")

REPORT_EVERY = 1.0  # seconds between the counters sent to the master


class MasterFanout:
    """The :class:`~esproxy.proxy.recorder.Recorder` of a pre-fork worker: the master records each write."""

    def __init__(self, client: MasterClient, records_intents: bool) -> None:
        self.client = client
        self.records_intents = records_intents

    def begin(self, method: str, uri: str, body: bytes) -> str:
        return self._call(Unavailable, "begin", method, uri, body)

    def done(self, intent_id: str, beans: list[Bean]) -> None:
        self._call(NotRecorded, "done", intent_id, beans)

    def put(self, bean: Bean) -> None:
        self._call(NotRecorded, "put", [bean])

    def deliver_now(self, beans: list[Bean], deadline: float) -> None:
        self._call(NotRecorded, "deliver", beans, max(0.0, deadline - time.monotonic()))

    def _call(self, error: type[Exception], op: str, *args: Any) -> Any:
        try:
            return self.client.call(op, *args)
        except MasterGone as e:
            raise error(str(e)) from None


class MasterAdmin:
    """/_esproxy/ on a worker's port (an esproxy.core.wsgi.AdminEndpoints): the master answers, with every
    worker's counters."""

    def __init__(self, client: MasterClient) -> None:
        self.client = client

    def serve(
        self, environ: dict[str, Any], start_response: StartResponse, check: Optional[Check] = None
    ) -> Iterable[bytes]:
        refused = refuse(environ, start_response, check)
        if refused is not None:
            return refused
        method = environ["REQUEST_METHOD"]
        sent = read_body(environ) if method not in ("GET", "HEAD") else b""  # a control's (switchover)
        try:
            path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")  # query: the console's
            status, headers, body = self.client.call("admin", path, method, sent, query)
        except MasterGone as e:
            status, headers, body = "503 Service Unavailable", [JSON_TYPE], str(e).encode()
        start_response(status, headers)
        return [body]


class Worker:
    def __init__(self, cfg: Config, fds: list[int]) -> None:
        self.cfg = cfg
        self.ipc = socket.socket(fileno=fds[0])
        self.sockets = [socket.socket(fileno=fd) for fd in fds[1:]]
        self.stop_event = Event()
        pid = os.getpid()
        self.profiler = Profiler(out_name=f"cpu.profile.{pid}", mem_name=f"mem.profile.{pid}")
        self.client = MasterClient(Channel(self.ipc), self._command)
        self.listeners: Optional[Listeners] = None
        self._gate: Optional[dict[str, Any]] = None  # the master's leader and pause, when sent before we serve

    def run(self) -> int:
        signals.install({"stop": self._on_stop_signal, "profile": self.profiler.on_signal})
        fanout = MasterFanout(self.client, records_intents=self.cfg.spools()) if self.cfg.captures() else None
        self.listeners = Listeners(self.cfg, fanout, MasterAdmin(self.client), self.stop_event, worker=True)
        if self.listeners.leadership is not None:  # a switchover may be under way: its pause applies at once
            gate = self.client.call("leadership")
            for g in (gate, self._gate):
                if g is not None:
                    self.listeners.leadership.follow(g)
        self.listeners.start(self.sockets)
        for server in self.listeners.servers:
            # One connection per wake-up: where the workers share one socket (no SO_REUSEPORT) the
            # others take theirs; on a socket of its own it changes nothing.
            server.max_accept = 1
        self.client.notify("ready")
        reporter = gevent.spawn(self._report_loop)
        gevent.spawn(self._stop_with_master)
        self.stop_event.wait()
        self.listeners.drain(time.monotonic() + self.cfg.stopTimeout - 2)  # under the master's own deadline
        reporter.kill()
        self._report()
        self.profiler.stop_cpu()
        self.listeners.close()
        self.client.channel.close()
        log.info("worker stopped")
        return 0

    def _on_stop_signal(self, signum: int) -> None:
        if not self.stop_event.is_set():  # the master's TERM often follows a terminal's INT: one drain
            log.info("worker: %s received: stopping gracefully", signal.Signals(signum).name)
            self.stop_event.set()

    def _stop_with_master(self) -> None:
        self.client.closed.wait()
        if not self.stop_event.is_set():
            log.error("worker: the master process is gone; stopping")
            self.stop_event.set()

    def _report_loop(self) -> None:
        while True:
            self._report()
            gevent.sleep(REPORT_EVERY)

    def _report(self) -> None:
        report = STATS.proxy_report()
        report["upstreams"] = upstream_rows(self.listeners.elastics if self.listeners else [])
        self.client.notify("report", report)

    def _command(self, op: str, args: tuple) -> None:
        if op == "leadership":
            generation, gate = args
            leadership = self.listeners.leadership if self.listeners is not None else None
            if leadership is None:
                self._gate = gate  # applied before serving
            else:
                leadership.follow(gate)
            self.client.notify("leadership_ack", generation, leadership.writes_in_flight if leadership else 0)
        elif op == "cpu_start":
            seconds = args[0]
            # The master's cpu_stop ends it; the worker's own timer is only a safety net.
            self.profiler.start_cpu(None if seconds is None else seconds + 60)
        elif op == "cpu_stop":
            path = self.profiler.stop_cpu()
            self.client.notify("profiled", "cpu", str(path) if path else "")
        elif op == "mem":
            path = self.profiler.collect_mem(args[0])
            self.client.notify("profiled", "mem", str(path) if path else "")


def run(cfg: Config, fds: str) -> int:
    return Worker(cfg, [int(fd) for fd in fds.split(",")]).run()
