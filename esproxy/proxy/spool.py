"""The write-ahead spool: captured writes on disk before the client's answer, until Kafka has them.

Segment files ``<dir>/NNNNNNNNNN.log`` hold records ``[length u32][crc32 u32][type u8][payload]``:

- ``INTENT`` — a write is about to be forwarded (method, path, and for `_bulk` the body): JSON;
- ``INTENT_BODY`` — the same, its JSON without the body, then a newline, then the body's bytes as they
  are (written so since issue 22.6: a large body is written from the request's own buffer, not copied
  into a JSON string first; an esproxy older than that does not read it);
- ``DONE`` — its outcome is known (its beans, if any, are the records just before);
- ``BEAN`` — a captured write to ship to Kafka, in order.

Appends are group-committed: every record waiting when the committer runs is written, then one
fsync (in gevent's thread pool, so the hub keeps serving) acknowledges them all. While other writes
are in flight the committer first waits ``commit_delay`` for them to join (an fsync and its hand-off
to a thread cost far more CPU than waiting). The shipper takes
beans in order (at most every SHIP_EVERY seconds, so that a produce request carries many) and
acknowledges what Kafka took; ``position`` records how far that is (written at
most once a second, when idle and at close: a crash ships the last second's beans again). A
segment is deleted once it is shipped and none of its intents is still open. On start, beans past
``position`` are shipped again first, and intents without a DONE are handed back for settling
(see proxy/settle.py). A torn record at the end of the last segment (a crash mid-write) is cut off.

Each unshipped bean keeps the wall-clock time it was appended (for ``oldest_age``, read by
``/_esproxy/health``); a bean recovered at start gets its segment file's mtime: the time of the
segment's last append, so the age shown after a restart is a lower bound, never an overstatement.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import gevent
from gevent.event import AsyncResult, Event

from esproxy.core.bean import Bean
from esproxy.core.stats import STATS

log = logging.getLogger("esproxy.spool")

BEAN, INTENT, DONE, INTENT_BODY = 1, 2, 3, 4
_HEADER = struct.Struct(">IIB")
SMALL = 64 * 1024  # records up to this size are joined into one buffer for the write; larger ones are not copied
IOV_MAX = 1024  # buffers per writev(2)
SEGMENT_BYTES = 64 * 1024 * 1024
SHIP_EVERY = 0.1  # seconds: the shortest time between two takes of the shipper
POSITION_INTERVAL = 1.0  # seconds; its rename(2) after every Kafka acknowledgement blocked the hub


def intent_record(intent_id: str, method: str, uri: str, body: bytes, sent: Optional[float] = None) -> dict[str, Any]:
    """What settling a write of unknown outcome needs (proxy/settle.py): the request, and when it was sent
    (wall clock, so that it means the same after a restart). The proxy passes no body for a
    single-document write (the hot path): settling reads the named document back from A. Any other
    write needs its body: a `_bulk` names its documents there, a write replayed as sent (mappings...)
    is replayed whole."""
    record: dict[str, Any] = {"id": intent_id, "method": method, "uri": uri, "time": round(sent or time.time(), 3)}
    if body:
        record["body"] = body.decode("utf-8", "replace")
    return record


Payload = Union[bytes, tuple[bytes, ...]]  # a record's payload, or the pieces it is written from


def _size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(len(p) for p in payload)


def _json_payload(bean: Bean) -> Payload:
    """A bean's JSON as a record's payload: a large one in pieces (Bean.json_pieces), never joined."""
    pieces = bean.json_pieces()
    return pieces[0] if len(pieces) == 1 else tuple(pieces)


def _read_intent(kind: int, payload: bytes) -> dict[str, Any]:
    """An INTENT record's JSON, or an INTENT_BODY's JSON with its body put back (as INTENT has it)."""
    if kind == INTENT:
        return json.loads(payload)
    head, _, body = payload.partition(b"\n")
    intent = json.loads(head)
    if body:
        intent["body"] = body.decode("utf-8", "replace")
    return intent


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """All of ``buffers``, in order, in as few writev(2) calls as the kernel allows."""
    views = [memoryview(b) for b in buffers if len(b)]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + IOV_MAX])
        while written:
            n = views[first].nbytes
            if written >= n:
                written -= n
                first += 1
            else:
                views[first] = views[first][written:]
                written = 0


class SpoolFull(Exception):
    """The spool holds maxBytes of writes Kafka has not taken yet."""


@dataclass
class Position:
    segment: int
    offset: int  # bytes into the segment, just after a record

    def __le__(self, other: Position) -> bool:
        return (self.segment, self.offset) <= (other.segment, other.offset)


class Spool:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        block_when_full: bool = True,
        fsync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
        commit_delay: float = 0.0,
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.block_when_full = block_when_full
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.commit_delay = commit_delay
        self._pending: list[tuple[int, Payload, Optional[Bean], AsyncResult]] = []
        self._wake = Event()
        self._unshipped: deque[tuple[Position, Bean, int, float]] = deque()  # ..., size, time appended
        self._available = Event()
        self._space = Event()
        self._space.set()
        self.backlog_bytes = 0
        self.open_intents: dict[str, int] = {}  # intent id -> segment holding it
        self._fd = -1
        self._segment = 0
        self._size = 0
        self._committer: Optional[gevent.Greenlet] = None
        self._next_intent = 0
        self._inflight: set[str] = set()  # intents of this run, from intent() to the end of done()
        self._pid = os.getpid()  # of the process that opened the spool: the one that writes it
        self._shipped: Optional[Position] = None  # acknowledged by Kafka, not yet in ``position``
        self._position_written = 0.0  # time.monotonic() of the last write of ``position``
        self._position_failing = False  # its last write failed (logged once until one succeeds)
        self._oldest_segment = 0  # no segment file below this one
        self._last_take = 0.0

    # ------------------------------------------------------------------ start / stop

    def open(self) -> list[dict[str, Any]]:
        """Recover what a previous run left; return the intents it left open."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        shipped = self._read_position()
        segments = sorted(int(p.stem) for p in self.dir.glob("*.log") if p.stem.isdigit())
        intents: dict[str, dict[str, Any]] = {}
        for seg in segments:
            appended = self._segment_path(seg).stat().st_mtime
            for pos, kind, payload in self._scan(seg, last=seg == segments[-1]):
                if kind == BEAN and not pos <= shipped:
                    bean = Bean.from_json(payload)
                    self._unshipped.append((pos, bean, len(payload), appended))
                    self.backlog_bytes += len(payload)
                elif kind in (INTENT, INTENT_BODY):
                    intent = _read_intent(kind, payload)
                    intent["_segment"] = seg
                    intents[intent["id"]] = intent
                elif kind == DONE:
                    intents.pop(json.loads(payload)["id"], None)
        self._segment = (segments[-1] + 1) if segments else 1
        self._oldest_segment = segments[0] if segments else self._segment
        self._open_segment()
        for intent in intents.values():
            self.open_intents[intent["id"]] = intent.pop("_segment")
        self._publish()
        if self._unshipped or intents:
            log.info(
                "spool %s: %d write(s) (%d bytes) not yet in Kafka, %d write(s) in flight at the last stop",
                self.dir,
                len(self._unshipped),
                self.backlog_bytes,
                len(intents),
            )
        self._committer = gevent.spawn(self._commit_loop)
        return list(intents.values())

    def close(self) -> None:
        if self._committer is not None:
            self._committer.kill(block=True, timeout=5)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._flush_position()
        if self._unshipped:
            log.info("spool %s: %d write(s) left to ship at the next start", self.dir, len(self._unshipped))

    # ------------------------------------------------------------------ appends (request handlers)

    def check_space(self) -> None:
        """Before forwarding a write: raise SpoolFull, or wait for room (whenFull: block)."""
        while self.backlog_bytes >= self.max_bytes:
            if not self.block_when_full:
                raise SpoolFull(f"the spool holds {self.backlog_bytes} bytes not yet taken by Kafka")
            self._space.clear()
            self._space.wait(1)

    def intent(self, method: str, uri: str, body: bytes) -> str:
        """Durably note that a write is about to be forwarded; returns its id. A body is written as it is
        (an INTENT_BODY record), from the caller's buffer: never copied, however large."""
        self._next_intent += 1
        intent_id = f"{self._pid}-{self._next_intent}"
        record = intent_record(intent_id, method, uri, b"")
        self.open_intents[intent_id] = self._segment
        self._inflight.add(intent_id)
        try:
            head = json.dumps(record).encode()
            if body:
                self._append([(INTENT_BODY, (head + b"\n", body), None)])
            else:
                self._append([(INTENT, head, None)])
        except BaseException:  # not recorded, so never forwarded: no done() will follow
            self._inflight.discard(intent_id)
            raise
        return intent_id

    def done(self, intent_id: str, beans: list[Bean]) -> None:
        """Durably add the beans of a forwarded write and close its intent."""
        records: list[tuple[int, Payload, Optional[Bean]]] = [(BEAN, _json_payload(b), b) for b in beans]
        records.append((DONE, b'{"id": "%s"}' % intent_id.encode(), None))  # our ids need no escaping
        try:
            self._append(records)
        finally:
            self._inflight.discard(intent_id)  # an intent of an earlier run was never in it
        self.open_intents.pop(intent_id, None)

    def _append(self, records: list[tuple[int, Payload, Optional[Bean]]]) -> None:
        result: AsyncResult = AsyncResult()
        self._pending.extend((kind, payload, bean, result) for kind, payload, bean in records)
        self._wake.set()
        result.get()  # raises what the commit raised (a full disk...)

    def _commit_loop(self) -> None:
        while True:
            self._wake.wait()
            gevent.sleep(0)  # after the handlers that are ready to run: they may append too
            if self.commit_delay and len(self._inflight) > 1:
                gevent.sleep(self.commit_delay)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                positions = self._write(batch)
                if self.fsync:
                    gevent.get_hub().threadpool.apply(os.fsync, (self._fd,))
            except OSError as e:
                log.error("spool %s: write failed: %s", self.dir, e)
                self._cut_torn()
                for *_, result in batch:
                    if not result.ready():
                        result.set_exception(e)
                continue
            self._committed(batch, positions)
            del batch  # the payloads (a large bean's JSON) go now, not at the next commit
            self._publish()
            self._available.set()
            if self._size >= self.segment_bytes:
                os.close(self._fd)
                self._segment += 1
                self._open_segment()

    def _cut_torn(self) -> None:
        """After a failed append (a full disk): cut what part of it was written, so that the records appended
        next follow the last whole one (a torn record inside a segment would end its reading at a restart)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as e:
            log.error("spool %s: cannot cut a failed append off its segment: %s", self.dir, e)

    def _committed(
        self, batch: list[tuple[int, Payload, Optional[Bean], AsyncResult]], positions: list[Position]
    ) -> None:
        now = time.time()
        for (kind, payload, bean, _), pos in zip(batch, positions):
            if kind == BEAN and bean is not None:
                size = _size(payload)
                self._unshipped.append((pos, bean, size, now))
                self.backlog_bytes += size
                bean.forget_json()  # on disk: a large one is made again when shipped, not kept twice
        for *_, result in batch:
            if not result.ready():
                result.set(None)

    def _write(self, batch: list[tuple[int, Payload, Optional[Bean], AsyncResult]]) -> list[Position]:
        """Append the records: small ones joined, a large payload written from its own buffer (writev)."""
        buffers: list[bytes] = []
        small: list[bytes] = []
        positions, offset = [], self._size
        for kind, payload, _, _ in batch:
            pieces = (payload,) if isinstance(payload, bytes) else payload
            size, crc = 0, 0
            for piece in pieces:
                size += len(piece)
                crc = zlib.crc32(piece, crc)
            header = _HEADER.pack(size, crc, kind)
            if size <= SMALL:
                small.append(header)
                small.extend(pieces)
            else:
                small.append(header)
                buffers.append(b"".join(small))
                small = []
                buffers.extend(pieces)
            offset += _HEADER.size + size
            positions.append(Position(self._segment, offset))
        if small:
            buffers.append(b"".join(small))
        _write_all(self._fd, buffers)
        self._size = offset
        return positions

    # ------------------------------------------------------------------ shipping (one greenlet)

    def take(self, limit: int, timeout: float) -> list[tuple[Position, Bean]]:
        """Up to ``limit`` unshipped beans in order, waiting up to ``timeout`` for the first."""
        if not self._unshipped:
            self._flush_position()
            self._available.clear()
            self._available.wait(timeout)
        gap = self._last_take + SHIP_EVERY - time.monotonic()
        if gap > 0 and len(self._unshipped) < limit:
            gevent.sleep(gap)  # fewer, larger produce requests: each costs far more CPU than a message
        self._last_take = time.monotonic()
        return [(pos, bean) for pos, bean, _, _ in itertools.islice(self._unshipped, limit)]

    def ack(self, count: int) -> None:
        """The first ``count`` beans are in Kafka: forget them, note the position, free segments."""
        last: Optional[Position] = None
        for _ in range(count):
            last, _, size, _ = self._unshipped.popleft()
            self.backlog_bytes -= size
        if last is None:
            return
        self._shipped = last
        if time.monotonic() - self._position_written >= POSITION_INTERVAL:
            self._flush_position()
        # An intent's segment is noted before its record is written, so it is a lower bound.
        oldest_open = min(self.open_intents.values(), default=last.segment)
        keep = min(last.segment, oldest_open)
        if keep > self._oldest_segment:
            for path in self.dir.glob("*.log"):
                seg = int(path.stem) if path.stem.isdigit() else None
                if seg is not None and seg < keep:
                    path.unlink(missing_ok=True)
            self._oldest_segment = keep
        self._publish()
        self._space.set()

    def backlog(self) -> int:
        return len(self._unshipped)

    def oldest_age(self) -> float:
        """Seconds the oldest bean not yet taken by Kafka has waited (0 when there is none)."""
        if not self._unshipped:
            return 0.0
        return max(0.0, time.time() - self._unshipped[0][3])

    def _publish(self) -> None:
        STATS.spool_records = len(self._unshipped)
        STATS.spool_bytes = self.backlog_bytes

    # ------------------------------------------------------------------ files

    def _segment_path(self, segment: int) -> Path:
        return self.dir / f"{segment:010d}.log"

    def _open_segment(self) -> None:
        path = self._segment_path(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size

    def _scan(self, segment: int, last: bool):
        path = self._segment_path(segment)
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                break
            length, crc, kind = _HEADER.unpack_from(data, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + length
            payload = data[start:end]
            if end > len(data) or zlib.crc32(payload) != crc:
                break
            offset = end
            yield Position(segment, offset), kind, payload
        if offset < len(data):
            if last:
                log.warning("spool %s: cutting a torn record at the end of %s (a crash mid-write)", self.dir, path)
                os.truncate(path, offset)
            else:
                log.error("spool %s: %s is damaged after byte %d; the rest of it is skipped", self.dir, path, offset)

    def _read_position(self) -> Position:
        try:
            raw = json.loads((self.dir / "position").read_text())
            return Position(int(raw["segment"]), int(raw["offset"]))
        except (OSError, ValueError, KeyError):
            return Position(0, 0)

    def _flush_position(self) -> None:
        shipped, self._shipped = self._shipped, None
        if shipped is not None:
            try:
                # Off the hub: its rename(2) waits for the journal, which the spool's fsyncs keep busy.
                gevent.get_hub().threadpool.apply(self._write_position, (shipped,))
            except OSError as e:  # a full disk: written later; meanwhile a restart ships some beans again
                if self._shipped is None:
                    self._shipped = shipped
                if not self._position_failing:
                    log.error("spool %s: position not written (written again later): %s", self.dir, e)
                self._position_failing = True
            else:
                self._position_failing = False
            self._position_written = time.monotonic()

    def _write_position(self, pos: Position) -> None:
        # Written without fsync: losing it only ships some beans again, and replaying is idempotent.
        tmp = self.dir / "position.tmp"
        tmp.write_text(json.dumps({"segment": pos.segment, "offset": pos.offset}))
        os.replace(tmp, self.dir / "position")
