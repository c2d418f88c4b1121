"""The bounded queue between request handlers and destinations, drained by one greenlet.

``chanSize`` is its capacity; 0 makes it a direct hand-off (the handler waits until the
producer greenlet takes the bean). A full queue blocks the handler before it answers the client:
backpressure, never a silent drop.
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import gevent
from gevent.queue import Channel, Queue

from .bean import Bean
from .dest.elastic import Aborted, Elastic, replay
from .dest.kafka import KafkaDest

log = logging.getLogger("esproxy.fanout")

_STOP = object()


class Fanout:
    def __init__(self, chan_size: int, kafkas: list[KafkaDest], rests: list[Elastic]) -> None:
        self.queue: Union[Queue, Channel] = Queue(chan_size) if chan_size > 0 else Channel()
        self.kafkas = kafkas
        self.rests = rests
        self.stopping = False
        self._greenlet: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def put(self, bean: Bean) -> None:
        self.queue.put(bean)

    def depth(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        try:
            for kafka in self.kafkas:
                kafka.connect(lambda: self.stopping)
        except Aborted as e:
            log.error("fanout: %s; %d queued write(s) not shipped", e, self.depth())
            return
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                self._deliver(item)
            except Exception:  # a bug must not stop the shipping of every later write
                log.exception("fanout: delivering %s %s failed", item.method, item.requestUri)

    def _deliver(self, bean: Bean) -> None:
        for kafka in self.kafkas:
            if kafka.matches(bean.labels):
                kafka.write(bean)
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
        """Ship what is queued, flush the producers, close them."""
        if self._greenlet is not None:
            log.info("flushing %d queued write(s) to Kafka", self.depth())
            try:
                with gevent.Timeout(timeout):
                    self.queue.put(_STOP)
                    self._greenlet.join()
            except gevent.Timeout:
                log.error("fanout: %d queued write(s) not shipped within %.0fs", self.depth(), timeout)
            self.stopping = True
            self._greenlet.kill(block=True, timeout=1)
        for kafka in self.kafkas:
            kafka.close(timeout=timeout)
