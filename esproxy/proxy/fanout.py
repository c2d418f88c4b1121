"""Between request handlers and destinations: how a captured write is kept until Kafka has it.

Per proxy, ``durability`` chooses:

- ``spool`` (the default): the write is appended to the write-ahead spool (fsync, group-committed)
  before the client gets its answer; one shipper greenlet produces the spool to Kafka in order
  and truncates it once Kafka acknowledged. Survives SIGKILL, reboots and Kafka outages within
  ``spool.maxBytes``.
- ``kafka``: the handler waits for Kafka (acks=all) before answering.
- ``none``: the Go original's in-memory queue of ``chanSize`` (0: direct hand-off); fastest, but
  what is queued is lost if the process dies.

A full queue or spool blocks the handler (or, with ``spool.whenFull: reject``, refuses the write
with 503 before it reaches the primary): backpressure, never a silent drop.

A write the broker refuses for good (esproxy.clients.refusals: too large for it, invalid...) does not
block the ones behind it, in any mode: it becomes a dead letter (esproxy.clients.refusals.ProxyDeadLetters,
a local file, fsynced before the spool is acknowledged past it) and shipping goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Optional, Union

import gevent
from gevent.event import Event
from gevent.queue import Channel, Empty, Queue

from esproxy.clients.elastic import Elastic, replay_as_sent
from esproxy.clients.producer import KafkaDest
from esproxy.clients.refusals import ProxyDeadLetters
from esproxy.core.bean import Bean
from esproxy.core.retry import POLL, Aborted, Backoff

from .recorder import NotRecorded
from .spool import Spool

log = logging.getLogger("esproxy.fanout")

_STOP = object()
SHIP_BATCH = 500
# While stopping: Kafka acknowledged nothing for this long, so the spool keeps what is left for the next
# start rather than the stop waiting out its timeout. (A working broker acknowledges within milliseconds.)
STALL_SECONDS = 2.5


class Fanout:
    """The :class:`~esproxy.proxy.recorder.Recorder` of the process that ships captured writes."""

    def __init__(
        self,
        chan_size: int,
        kafkas: list[KafkaDest],
        rests: list[Elastic],
        spool: Optional[Spool],
        dead_letters: ProxyDeadLetters,
    ) -> None:
        self.queue: Union[Queue, Channel] = Queue(chan_size) if chan_size > 0 else Channel()
        self.kafkas = kafkas
        self.rests = rests
        self.spool = spool
        self.dead_letters = dead_letters
        for kafka in kafkas:
            kafka.on_refused = lambda bean, error, topic=kafka.topic: dead_letters.write(bean, topic, error)
        self.stopping = False
        self._greenlets: list[gevent.Greenlet] = []
        self._connected = Event()
        self._queued_at: deque[float] = deque()  # durability: none — time.time() of each write not yet taken
        self._produced_from_memory = False  # durability: none — the producer may hold writes kept nowhere else
        self._backed_up_at = 0.0  # time.monotonic() the last backup (rests) was done: progress, for a stop

    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._run_queue))
        if self.spool is not None:
            self._greenlets.append(gevent.spawn(self._run_spool))

    # ------------------------------------------------------------------ handlers
    # esproxy.proxy.recorder.Recorder; a pre-fork worker calls the same through esproxy.proxy.worker.MasterFanout.

    @property
    def records_intents(self) -> bool:
        """Whether there is a spool (a proxy with durability: spool records an intent per write)."""
        return self.spool is not None

    def begin(self, method: str, uri: str, body: bytes) -> str:
        """durability: spool — before forwarding: room in the spool (else SpoolFull), then a durable intent."""
        assert self.spool is not None
        self.spool.check_space()
        return self.spool.intent(method, uri, body)

    def done(self, intent_id: str, beans: list[Bean]) -> None:
        """durability: spool — the write's beans are on disk and its intent closed when this returns."""
        assert self.spool is not None
        self.spool.done(intent_id, beans)

    def put(self, bean: Bean) -> None:
        """durability: none."""
        queued_at = time.time()
        self._queued_at.append(queued_at)
        try:
            self.queue.put(bean)
        except BaseException:  # not queued (the handler was killed while the queue was full)
            self._queued_at.remove(queued_at)
            raise

    def deliver_now(self, beans: list[Bean], deadline: float) -> None:
        """durability: kafka — every destination has the beans when this returns; else NotRecorded."""
        self._connected.wait(max(0.0, deadline - time.monotonic()))
        waits = Backoff(base=0.2, cap=5)
        pending = list(beans)
        while pending:
            if self._connected.is_set():
                pending = pending[self._ship(pending) :]
                if not pending:
                    break
            delay = waits.next()
            if time.monotonic() + delay > deadline or self.stopping:
                raise NotRecorded(f"Kafka did not take {len(pending)} write(s)")
            gevent.sleep(delay)
        for bean in beans:
            self._backups(bean)

    def depth(self) -> int:
        """Beans in the in-memory queue (the spool's backlog is counted by the spool)."""
        return self.queue.qsize()

    def unshipped(self) -> int:
        """Captured writes not yet taken by the Kafka producer (queue, handlers waiting to queue, spool)."""
        return len(self._queued_at) + (self.spool.backlog() if self.spool is not None else 0)

    def oldest_unshipped_age(self) -> float:
        """Seconds the oldest captured write not yet taken by the Kafka producer has waited: in the spool,
        or in the queue (durability: none: from put() until the producer took it); 0 when there is none."""
        queued = max(0.0, time.time() - self._queued_at[0]) if self._queued_at else 0.0
        return max(queued, self.spool.oldest_age() if self.spool is not None else 0.0)

    # ------------------------------------------------------------------ shippers

    def _connect(self) -> bool:
        try:
            for kafka in self.kafkas:
                kafka.connect(lambda: self.stopping)
        except Aborted as e:  # stop() tells what that leaves unshipped
            log.info("fanout: %s", e)
            return False
        self._connected.set()
        return True

    def _run_queue(self) -> None:
        if not self._connected.is_set() and not self._connect():
            return
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            self._produced_from_memory = True
            try:
                for kafka in self.kafkas:
                    if kafka.matches(item.labels):
                        kafka.write(item)
                self._backups(item)
            except Exception:  # a bug must not stop the shipping of every later write
                log.exception("fanout: delivering %s %s failed", item.method, item.requestUri)
            finally:
                if self._queued_at:
                    self._queued_at.popleft()

    def _run_spool(self) -> None:
        assert self.spool is not None
        self._connected.wait()
        waits = Backoff(base=0.5, cap=10)
        while not (self.stopping and self.spool.backlog() == 0):
            batch = self.spool.take(SHIP_BATCH, timeout=0.5)
            if not batch:
                continue
            beans = [bean for _, bean in batch]
            try:
                done = self._ship(beans)
            except Exception:
                log.exception("fanout: shipping the spool failed")
                done = 0
            if done:
                for bean in beans[:done]:
                    self._backups(bean)
                self.spool.ack(done)
                waits.reset()
            if done < len(beans):
                if self.stopping:
                    return
                delay = waits.next()
                log.warning(
                    "kafka unreachable or refusing: %d write(s) wait in the spool; retrying in %.1fs",
                    self.spool.backlog(),
                    delay,
                )
                gevent.sleep(delay)

    def _ship(self, beans: list[Bean]) -> int:
        """How many beans, from the first, every Kafka destination took or refused for good.

        A bean refused for good is a dead letter (on disk when this returns) and counts as done: the
        beans behind it go on. One whose dead letter cannot be written is not done (retried later).
        """
        done = len(beans)
        for kafka in self.kafkas:
            mine = [i for i, b in enumerate(beans) if kafka.matches(b.labels)]
            start = 0
            while start < len(mine):
                shipped = kafka.ship([beans[i] for i in mine[start:]])
                start += shipped.taken
                if shipped.refused is None or not self._dead_letter(beans[mine[start]], kafka.topic, shipped.refused):
                    break
                start += 1
            if start < len(mine):
                done = min(done, mine[start])
        return done

    def _dead_letter(self, bean: Bean, topic: str, error: BaseException) -> bool:
        try:
            self.dead_letters.write(bean, topic, error)
        except OSError as e:
            log.error(
                "kafka refused a write to %s for good (%s), but its dead letter was not written: %s", topic, error, e
            )
            return False
        return True

    def _backups(self, bean: Bean) -> None:
        for rest in self.rests:
            if rest.matches(bean.labels):
                try:
                    # a backup may be any HTTP server: a `_bulk` answer not shaped as Elasticsearch's is only logged
                    outcome = replay_as_sent(rest, bean, lambda: self.stopping, retry_unreadable=False)
                except Aborted as e:
                    log.error("backup %s: %s", rest.target(""), e)
                    continue
                self._backed_up_at = time.monotonic()
                r = outcome.refused
                if r is not None:
                    log.warning("backup %s answered %d: %s", rest.target(bean.requestUri), r.status, r.body[:300])
                for chunk, item in outcome.refused_actions:  # a backup has no dead letters: said, as a refused write
                    log.warning(
                        "backup %s refused %s %s/%s (%d): %s: %s",
                        rest.target(bean.requestUri),
                        item.verb,
                        item.index,
                        item.id,
                        item.status,
                        str(item.error)[:300],
                        chunk[:300],
                    )

    def stop(self, timeout: float) -> None:
        """Ship what is held (the client requests are finished), then close.

        Writes held only in memory (durability: none's queue) have no other chance: they are shipped for
        up to ``timeout`` seconds, and each one Kafka did not take is logged with `message lost:`. The
        spool's are shipped while Kafka takes them; once it acknowledges nothing for STALL_SECONDS (or was
        never reached) the rest stays on disk, shipped at the next start, and the stop goes on.
        """
        deadline = time.monotonic() + timeout
        in_memory = len(self._queued_at)
        if in_memory:
            log.warning(
                "stopping: %d captured write(s) are only in memory (durability: none): shipping them to Kafka"
                " for up to %.0fs; each one it does not take is lost (logged with `message lost:`)",
                in_memory,
                timeout,
            )
        if self.spool is not None and self.spool.backlog():
            log.info(
                "stopping: shipping the spool's %d write(s) to Kafka while it takes them; the rest stay in the"
                " spool for the next start",
                self.spool.backlog(),
            )
        self._stop_queue(deadline)
        self.stopping = True
        left_in_spool = self._stop_spool(deadline)
        gevent.killall(self._greenlets, block=True, timeout=1)
        self._report_lost()
        # The producer may still hold writes of the queue (sent without waiting): they get the time left.
        # The spool's it holds need none: what is not acknowledged ships again at the next start.
        flush = self._produced_from_memory or not left_in_spool
        for kafka in self.kafkas:
            kafka.close(timeout=max(1.0, deadline - time.monotonic()) if flush else 0)
        if self.spool is not None:
            self.spool.close()
        self.dead_letters.close()

    def _stop_queue(self, deadline: float) -> None:
        """Let the queue's shipper ship what is queued, until ``deadline``."""
        if not self._queued_at and not self._connected.is_set():
            return  # nothing queued, no producer: nothing to wait for
        try:
            with gevent.Timeout(max(0.0, deadline - time.monotonic())):
                self.queue.put(_STOP)
                self._greenlets[0].join()
        except gevent.Timeout:
            log.error("fanout: %d queued write(s) not shipped before the stop's deadline", len(self._queued_at))

    def _stop_spool(self, deadline: float) -> int:
        """Let the spool's shipper ship while Kafka takes writes, until ``deadline``; how many it left."""
        if self.spool is None or len(self._greenlets) < 2:
            return 0
        shipper = self._greenlets[1]
        why = "Kafka did not take them"
        if not self._connected.is_set():
            why = "Kafka was not reachable"
        else:
            watched_from = time.monotonic()
            while not shipper.dead:
                now = time.monotonic()
                if now >= deadline:
                    why = "the stop's deadline passed"
                    break
                progress = max([watched_from, self._backed_up_at] + [k.last_taken for k in self.kafkas])
                if now - progress >= STALL_SECONDS:
                    why = f"Kafka acknowledged nothing for {STALL_SECONDS:.1f}s"
                    break
                shipper.join(timeout=min(POLL, deadline - now))
        shipper.kill(block=True, timeout=1)  # what it was shipping is not acknowledged: it stays in the spool
        left = self.spool.backlog()
        if left:
            log.warning("stopping: %d captured write(s) stay in the spool (%s); they ship at the next start", left, why)
        return left

    def _report_lost(self) -> None:
        """durability: none — what is still queued once the shippers are gone is lost: each one in the log."""
        while True:
            try:
                item = self.queue.get_nowait()
            except Empty:
                return
            if item is not _STOP:
                log.error("fanout: not shipped before the exit; message lost: %s", item.to_json().decode())
