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

A write the broker refuses for good (esproxy.dest.refusals: too large for it, invalid...) does not
block the ones behind it, in any mode: it becomes a dead letter (esproxy.dest.refusals.ProxyDeadLetters,
a local file, fsynced before the spool is acknowledged past it) and shipping goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Optional, Union

import gevent
from gevent.event import Event
from gevent.queue import Channel, Queue

from .bean import Bean
from .dest.elastic import Elastic, replay
from .dest.kafka import KafkaDest
from .dest.refusals import ProxyDeadLetters
from .recorder import NotRecorded
from .retry import Aborted, Backoff
from .spool import Spool

log = logging.getLogger("esproxy.fanout")

_STOP = object()
SHIP_BATCH = 500


class Fanout:
    """The :class:`~esproxy.recorder.Recorder` of the process that ships captured writes."""

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

    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._run_queue))
        if self.spool is not None:
            self._greenlets.append(gevent.spawn(self._run_spool))

    # ------------------------------------------------------------------ handlers
    # esproxy.recorder.Recorder; a pre-fork worker calls the same through esproxy.worker.MasterFanout.

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
        except Aborted as e:
            log.error("fanout: %s; %d write(s) not shipped", e, self.depth())
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
                    r = replay(rest, bean, lambda: self.stopping)
                except Aborted as e:
                    log.error("backup %s: %s", rest.target(""), e)
                    continue
                if r.status >= 300:
                    log.warning("backup %s answered %d: %s", rest.target(bean.requestUri), r.status, r.body[:300])

    def stop(self, timeout: float) -> None:
        """Ship what is queued (the spool: what Kafka takes within the timeout; the rest stays on disk)."""
        log.info("flushing %d captured write(s) to Kafka", self.depth() + (self.spool.backlog() if self.spool else 0))
        deadline = time.monotonic() + timeout
        try:
            with gevent.Timeout(timeout):
                self.queue.put(_STOP)
                self._greenlets[0].join()
        except gevent.Timeout:
            log.error("fanout: %d queued write(s) not shipped within %.0fs", self.queue.qsize(), timeout)
        self.stopping = True
        if self.spool is not None and len(self._greenlets) > 1:
            self._greenlets[1].join(timeout=max(0.5, deadline - time.monotonic()))
        gevent.killall(self._greenlets, block=True, timeout=1)
        for kafka in self.kafkas:
            kafka.close(timeout=max(1.0, deadline - time.monotonic()))
        if self.spool is not None:
            self.spool.close()
        self.dead_letters.close()
