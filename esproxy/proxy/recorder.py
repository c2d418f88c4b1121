"""What a request handler calls to record a captured write: the :class:`Recorder` protocol.

Two implementations: :class:`esproxy.proxy.fanout.Fanout` in the process that ships (esproxy.roles), and
:class:`esproxy.proxy.worker.MasterFanout` in a pre-fork worker, which asks its master to do the same.
Which calls apply depends on the proxy's ``durability``: ``spool`` records an intent before
forwarding (:meth:`Recorder.begin`) and closes it with the write's beans (:meth:`Recorder.done`);
``kafka`` waits for the broker (:meth:`Recorder.deliver_now`); ``none`` queues (:meth:`Recorder.put`).
"""

from __future__ import annotations

from typing import Protocol

from esproxy.core.bean import Bean

from .spool import SpoolFull


class NotRecorded(Exception):
    """A write the primary applied was not recorded for replication (Kafka did not take it in time,
    or a pre-fork worker lost its master)."""


class Unavailable(SpoolFull):
    """A write cannot be recorded now (a pre-fork worker lost its master): refused before forwarding."""


class Recorder(Protocol):
    @property
    def records_intents(self) -> bool:
        """Whether there is a spool: a write is recorded as an intent before it is forwarded."""
        ...

    def begin(self, method: str, uri: str, body: bytes) -> str:
        """Before forwarding: room in the spool (else SpoolFull / Unavailable), then an intent; its id."""
        ...

    def done(self, intent_id: str, beans: list[Bean]) -> None:
        """The write's beans are on disk and its intent closed when this returns; else NotRecorded."""
        ...

    def put(self, bean: Bean) -> None:
        """durability: none — queue a bean for the producer (blocks while the queue is full)."""
        ...

    def deliver_now(self, beans: list[Bean], deadline: float) -> None:
        """durability: kafka — every destination has the beans when this returns; else NotRecorded."""
        ...
