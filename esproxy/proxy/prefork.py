"""``workers: N`` — the master's side of the pre-fork model.

The master binds the proxy ports, starts N worker processes (``esproxy -c conf --worker FDS``,
inheriting the listening sockets and one end of a socket pair each) and keeps everything that must
be single: the spool, the Kafka producer, the replay role, the admin port. Workers serve HTTP; a
captured write crosses to the master (:mod:`esproxy.proxy.channel`) and the worker answers its client
only once the master recorded it, so writes are recorded in the order clients saw them answered,
across workers, exactly as in one process.

A worker that dies is replaced; the intents it left open (writes in flight at A) are settled by the
master from A's current documents, as after a crash. TERM stops the workers gracefully first, then
the master ships the spool. USR1 profiles every process: the master sends its workers the duration
it read from ``jj.cpu`` and merges their ``cpu.profile.<pid>`` into ``cpu.profile``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import gevent
from gevent import subprocess
from gevent.event import AsyncResult, Event
from gevent.pool import Group

from esproxy.admin.profiling import merge_profiles
from esproxy.core.retry import backoff

from .channel import Channel
from .fanout import Fanout
from .inflight import ENV as INFLIGHT_ENV
from .inflight import Shared
from .spool import intent_record

log = logging.getLogger("esproxy.prefork")

RESPAWN_PAUSE = 1.0  # a worker that dies at once is not restarted in a tight loop
PROFILE_WAIT = 30.0  # how long the master waits for its workers' profiles


class WorkerProcess:
    """The master's view of one worker."""

    def __init__(self, slot: int, proc: subprocess.Popen, channel: Channel) -> None:
        self.slot = slot
        self.proc = proc
        self.channel = channel
        self.intents: dict[str, dict[str, Any]] = {}  # open intents: settled by the master if the worker dies
        self.report: dict[str, Any] = {}
        self.answering = Group()
        self.profiles: dict[str, Optional[Path]] = {}  # "cpu"/"mem" -> its file, once the worker wrote it
        self.profiled = {"cpu": Event(), "mem": Event()}
        self.ready = Event()  # serving its listeners
        self.leadership_acks: dict[int, AsyncResult] = {}  # broadcast number -> its writes in flight


class WorkerPool:
    def __init__(
        self,
        count: int,
        conf_path: str,
        listeners: list[list[socket.socket]],  # per proxy entry, a listening socket per worker slot
        fanout: Optional[Fanout],
        render_admin: Callable[[str, str, bytes, str], tuple[str, list, bytes]],  # path, method, body, query
        settle: Callable[[list[dict[str, Any]]], None],
        leadership: Optional[Callable[[], Optional[dict[str, Any]]]] = None,
        inflight: Optional[Shared] = None,
    ) -> None:
        self.count = count
        self.conf_path = conf_path
        self.listeners = listeners
        self.fanout = fanout
        self.render_admin = render_admin
        self.settle = settle
        self.leadership = leadership  # the master's leader and write pause (esproxy.proxy.leadership.Leadership.gate)
        self.inflight = inflight  # maxInFlightBytes, shared with the workers (esproxy.proxy.inflight)
        self._broadcasts = 0
        self.workers: dict[int, WorkerProcess] = {}  # slot -> worker
        self.stopping = False
        self._watchers = Group()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for slot in range(self.count):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        mine, theirs = socket.socketpair()
        fds = [theirs.fileno()] + [per_slot[slot].fileno() for per_slot in self.listeners]
        argv = [sys.executable, "-m", "esproxy", "-c", self.conf_path, "--worker", ",".join(map(str, fds))]
        env = None
        if self.inflight is not None:
            self.inflight.clear(slot)  # what a dead worker of this slot held is not in flight any more
            env = {**os.environ, INFLIGHT_ENV: self.inflight.worker_env(slot)}
        passed = fds + ([self.inflight.fd] if self.inflight is not None else [])
        proc = subprocess.Popen(argv, pass_fds=passed, env=env, stdin=subprocess.DEVNULL, **_own_session(os.getpid()))
        theirs.close()
        worker = WorkerProcess(slot, proc, Channel(mine))
        self.workers[slot] = worker
        log.info("worker %d started, pid=%d", slot, proc.pid)
        self._watchers.spawn(self._serve, worker)

    def _serve(self, w: WorkerProcess) -> None:
        started = time.monotonic()
        while True:
            message = w.channel.recv()
            if message is None:
                break
            seq, op, args = message
            if seq:
                w.answering.spawn(self._answer, w, seq, op, args)  # spawned in order: recorded in order
            else:
                self._notice(w, op, args)
        w.answering.join()
        rc = w.proc.wait()
        w.channel.close()
        for event in w.profiled.values():
            event.set()
        if self.stopping:
            log.info("worker %d (pid %d) exited with %s", w.slot, w.proc.pid, rc)
            return
        log.error("worker %d (pid %d) died (exit %s); starting another", w.slot, w.proc.pid, _describe(rc))
        if w.intents:
            log.warning("settling %d write(s) the dead worker had in flight", len(w.intents))
            self.settle(list(w.intents.values()))
        if time.monotonic() - started < 5:
            gevent.sleep(backoff(1, base=RESPAWN_PAUSE, cap=10))
        if not self.stopping:
            self._spawn(w.slot)

    def wait_ready(self, timeout: float) -> bool:
        """Whether every worker serves within ``timeout`` (one started first would take every
        connection a client opens meanwhile, and keep-alive keeps them there)."""
        deadline = time.monotonic() + timeout
        return all(w.ready.wait(max(0.0, deadline - time.monotonic())) for w in list(self.workers.values()))

    def stop(self, deadline: float) -> None:
        """TERM every worker and wait for them (they finish their requests first); KILL at the deadline."""
        self.stopping = True
        for w in self.workers.values():
            _signal(w, signal.SIGTERM)
        if not self._watchers.join(timeout=max(0.0, deadline - time.monotonic())):
            for w in self.workers.values():
                if w.proc.poll() is None:
                    log.error("worker %d (pid %d) still running at the deadline: killed", w.slot, w.proc.pid)
                    _signal(w, signal.SIGKILL)
            self._watchers.join(timeout=5)
        for per_slot in self.listeners:
            for s in set(per_slot):
                s.close()

    # ------------------------------------------------------------------ requests from workers

    def _answer(self, w: WorkerProcess, seq: int, op: str, args: tuple) -> None:
        try:
            value = self._do(w, op, args)
            reply: tuple = (seq, True, value)
        except Exception as e:  # answered to the worker, which turns it into an HTTP error
            reply = (seq, False, e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))
        try:
            w.channel.send(reply)
        except OSError:
            pass  # the worker is gone; its open intents are settled by _serve

    def _do(self, w: WorkerProcess, op: str, args: tuple) -> Any:
        if op == "admin":
            return self.render_admin(*args)
        if op == "leadership":
            return self.leadership() if self.leadership is not None else None
        fanout = self.fanout
        if fanout is None:
            raise RuntimeError("this config has no destination for captured writes")
        if op == "begin":
            method, uri, body = args
            intent_id = fanout.begin(method, uri, body)
            w.intents[intent_id] = intent_record(intent_id, method, uri, body)
            return intent_id
        if op == "done":
            intent_id, beans = args
            fanout.done(intent_id, beans)
            w.intents.pop(intent_id, None)
            return None
        if op == "put":
            for bean in args[0]:
                fanout.put(bean)
            return None
        if op == "deliver":
            beans, seconds = args
            fanout.deliver_now(beans, deadline=time.monotonic() + seconds)
            return None
        raise ValueError(f"unknown request {op!r}")

    def _notice(self, w: WorkerProcess, op: str, args: tuple) -> None:
        if op == "ready":
            w.ready.set()
        elif op == "report":
            w.report = args[0]
        elif op == "leadership_ack":
            waiting = w.leadership_acks.pop(args[0], None)
            if waiting is not None:
                waiting.set(args[1])
        elif op == "profiled":
            kind, path = args
            w.profiles[kind] = Path(path) if path else None
            w.profiled[kind].set()

    # ------------------------------------------------------------------ admin and profiling

    def reports(self) -> list[dict[str, Any]]:
        return [w.report for w in self.workers.values() if w.report]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers.values()]

    def rows(self) -> list[dict[str, Any]]:
        """Per worker: its slot, pid, and the connections it accepted and requests it answered
        (since it started; a replaced worker starts from 0)."""
        return [
            {
                "slot": w.slot,
                "pid": w.proc.pid,
                "connections": w.report.get("connections", 0),
                "requests": w.report.get("latency_count", 0),
            }
            for _, w in sorted(self.workers.items())
        ]

    def follow_leadership(self, gate: dict[str, Any], timeout: float) -> int:
        """Send every worker the master's leader and write pause; once each applied it, their writes in
        flight (the sum). TimeoutError names a worker that did not confirm in time."""
        self._broadcasts += 1
        number = self._broadcasts
        waiting = []
        for w in list(self.workers.values()):
            result = w.leadership_acks[number] = AsyncResult()
            try:
                w.channel.send((0, "leadership", (number, gate)))
            except OSError:  # gone: its successor asks for the state before it serves
                w.leadership_acks.pop(number, None)
                continue
            waiting.append((w, result))
        deadline = time.monotonic() + timeout
        total = 0
        for w, result in waiting:
            try:
                total += result.get(timeout=max(0.0, deadline - time.monotonic()))
            except gevent.Timeout:
                raise TimeoutError(f"worker {w.slot} (pid {w.proc.pid}) did not confirm within {timeout:g}s") from None
            finally:
                w.leadership_acks.pop(number, None)
        return total

    def command(self, op: str, *args: Any) -> None:
        """Send every worker a profiling command: cpu_start(seconds), cpu_stop(), mem(seconds)."""
        kind = "cpu" if op == "cpu_stop" else "mem" if op == "mem" else None
        for w in list(self.workers.values()):
            if kind:
                w.profiled[kind].clear()
            try:
                w.channel.send((0, op, args))
            except OSError:
                if kind:
                    w.profiled[kind].set()

    def gather_cpu(self, own: Optional[Path]) -> None:
        """Stop the workers' CPU profiles and merge them with the master's (``own``) into cpu.profile."""
        self.command("cpu_stop")
        parts = self._gathered("cpu")
        paths = ([own] if own else []) + parts
        if not paths:
            return
        out = (own or parts[0]).with_name("cpu.profile")
        try:
            gevent.get_hub().threadpool.apply(merge_profiles, (paths, out))
        except (OSError, ValueError) as e:
            log.error("cpu.profile: cannot merge the workers' profiles: %s", e)
            return
        for part in parts:
            part.unlink(missing_ok=True)
        log.info("cpu.profile: merged the profiles of %d worker(s) into %s", len(parts), out)

    def gather_mem(self, own: Optional[Path]) -> None:
        """Append the workers' mem.profile.<pid> to the master's mem.profile."""
        parts = self._gathered("mem")
        if own is None or not parts:
            return
        with open(own, "a", encoding="utf-8") as out:
            for part in parts:
                out.write("\n" + part.read_text(encoding="utf-8"))
                part.unlink(missing_ok=True)

    def _gathered(self, kind: str) -> list[Path]:
        deadline = time.monotonic() + PROFILE_WAIT
        paths = []
        for w in list(self.workers.values()):
            w.profiled[kind].wait(max(0.0, deadline - time.monotonic()))
            path = w.profiles.pop(kind, None)
            if path is not None and path.exists():
                paths.append(path)
        return paths


def _libc_prctl() -> Optional[Callable[..., int]]:
    """libc's prctl (Linux), loaded before any fork: a forked child should not load libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _libc_prctl()
PR_SET_PDEATHSIG = 1


def _own_session(master: int) -> dict[str, Any]:
    """Popen's arguments that start a worker in a session of its own, killed by the kernel whenever its
    master dies (PR_SET_PDEATHSIG), or nothing where that cannot be set (not Linux).

    In its own session a worker is its own scheduling group where the kernel groups a session's
    processes (``sched_autogroup``): master and workers no longer share one group's CPU share, which
    (measured on a busy 2-core machine) gave the workers more CPU and a shorter tail. They are then out
    of the master's process group, so a signal to that group (supervisord's stopasgroup, a terminal's
    Ctrl-C) reaches the master only: it stops them (TERM, as it always did), and if the master is
    killed instead (killasgroup's SIGKILL, an OOM kill), the kernel kills them with it.
    """
    prctl = _prctl
    if prctl is None:
        return {}

    def die_with_master() -> None:  # in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != master:  # the master died before that took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return {"start_new_session": True, "preexec_fn": die_with_master}


def _signal(w: WorkerProcess, signum: int) -> None:
    try:
        os.kill(w.proc.pid, signum)
    except ProcessLookupError:
        pass


def _describe(rc: Optional[int]) -> str:
    if rc is not None and rc < 0:
        return signal.Signals(-rc).name
    return str(rc)


def _picklable(e: Exception) -> bool:
    try:
        pickle.dumps(e)
        return True
    except Exception:  # noqa: BLE001 - anything unpicklable gets a plain RuntimeError
        return False
