"""The budget of request bytes in flight (``maxInFlightBytes``), Elasticsearch's in-flight requests
circuit breaker (``network.breaker.inflight_requests``) for the proxy.

A request with a body reserves ``OVERHEAD`` times its size before its body is read (its Content-Length;
a chunked body as it arrives), and gives it back once its answer is sent (its capture is in the spool,
in Kafka or queued by then). A request that would take the bytes in flight over the budget is refused
429 with Retry-After, in Elasticsearch's ``circuit_breaking_exception`` shape, before it is read or
forwarded: nothing of it reached the primary, the client sends it again later. ``OVERHEAD`` is what
a large write costs the proxy in memory at its peak, about twice its body (the body, then what is made
of it: the body with proxy-assigned ids, the captured beans, their JSON for the spool and Kafka), as
Elasticsearch's ``network.breaker.inflight_requests.overhead`` (2) does: the budget then bounds the
memory those requests take, not only their bodies.

One budget per process group: with ``workers: N`` the master shares it with its workers through a
small shared memory file (memfd), one 8-byte slot per worker slot, each written only by its worker
under a POSIX record lock (fcntl.lockf) taken for the check and the update, so the sum of all the
slots never passes the budget. A worker that dies leaves its slot to the master, which zeroes it
before starting the next worker in that slot.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
from typing import Optional

from esproxy.core.schema import format_size
from esproxy.core.stats import STATS

OVERHEAD = 2  # bytes reserved per byte of body
RETRY_AFTER = 1  # seconds, in the Retry-After of a refusal
ENV = "ESPROXY_INFLIGHT"  # a worker's "FD:SLOT" of the shared budget, set by its master
_SLOT = struct.Struct("=q")


class Shared:
    """The slots of the bytes in flight of each worker of a process group, in a memfd."""

    def __init__(self, fd: int, slots: int, mine: int) -> None:
        self.fd = fd
        self.slots = slots
        self.mine = mine
        self.map = mmap.mmap(fd, slots * _SLOT.size)

    @classmethod
    def create(cls, slots: int) -> Shared:
        fd = os.memfd_create("esproxy-inflight", 0)  # not MFD_CLOEXEC: passed to the workers
        os.ftruncate(fd, slots * _SLOT.size)
        return cls(fd, slots, -1)

    @classmethod
    def of_worker(cls, value: str) -> Shared:
        fd, slot, slots = (int(part) for part in value.split(":"))
        return cls(fd, slots, slot)

    def worker_env(self, slot: int) -> str:
        return f"{self.fd}:{slot}:{self.slots}"

    def total(self) -> int:
        return sum(_SLOT.unpack_from(self.map, i * _SLOT.size)[0] for i in range(self.slots))

    def take(self, n: int, limit: int) -> bool:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            if self.total() + n > limit:
                return False
            self._add(n)
            return True
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def give(self, n: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            self._add(-n)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _add(self, n: int) -> None:
        at = self.mine * _SLOT.size
        _SLOT.pack_into(self.map, at, _SLOT.unpack_from(self.map, at)[0] + n)

    def clear(self, slot: int) -> None:
        """A worker of ``slot`` is gone (the master, before starting the next in that slot)."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            _SLOT.pack_into(self.map, slot * _SLOT.size, 0)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)


class Budget:
    """``limit`` bytes in flight (0: no budget), this process's alone or shared with the other workers."""

    def __init__(self, limit: int = 0, shared: Optional[Shared] = None) -> None:
        self.limit = limit
        self.shared = shared
        self.used = 0  # this process's reservations

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when that would pass the budget."""
        if not self.limit or n <= 0:
            return True
        if self.shared is not None:
            if not self.shared.take(n, self.limit):
                return False
        elif self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        if not self.limit or n <= 0:
            return
        self.used -= n
        if self.shared is not None:
            self.shared.give(n)

    def in_flight(self) -> int:
        """The bytes in flight in the whole process group."""
        return self.shared.total() if self.shared is not None else self.used


BUDGET = Budget()


def configure(limit: int, shared: Optional[Shared] = None) -> None:
    """Set the process's budget (at start: by the proxy role, a worker from its master's ENV)."""
    global BUDGET
    if shared is None and os.environ.get(ENV):
        shared = Shared.of_worker(os.environ[ENV])
    BUDGET = Budget(limit, shared)


def refusal_body(wanted: int, used: int, limit: int) -> bytes:
    """Elasticsearch's answer of its in-flight requests breaker, with esproxy's numbers."""
    reason = (
        f"[in_flight_requests] Data too large, data for [<http_request>] would be [{used + wanted}/"
        f"{format_size(used + wanted)}], which is larger than the limit of [{limit}/{format_size(limit)}]"
        " (esproxy's maxInFlightBytes); retry later"
    )
    cause = {
        "type": "circuit_breaking_exception",
        "reason": reason,
        "bytes_wanted": used + wanted,
        "bytes_limit": limit,
        "durability": "TRANSIENT",
    }
    return json.dumps({"error": {"root_cause": [cause], **cause}, "status": 429}, separators=(",", ":")).encode()


def note_refusal() -> None:
    STATS.inflight_refused += 1
