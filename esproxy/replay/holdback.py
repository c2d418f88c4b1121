"""The undo window: writes a sync rule delays (``delay``) or holds (``guard``) wait in the rule's own lane.

A partition's lane (lanes.py) hands such a write here instead of applying it (steps.py, ``Steps.route``) and
goes on with the next record, so the other rules' writes in the partition are not held back. Each
``RuleLane`` (one per rule and partition: offsets in it only grow) applies its writes in order, each no
earlier than its capture time (the record's Kafka timestamp) plus the rule's delay; a guarded write at its
head stops it until an operator decides (``esproxy sync approve|reject RULE``; ``Board``). The rule's later
writes of that partition queue behind it, whatever their kind, so the rule's order is kept.

Nothing is lost across a restart: the partition's offsets are committed no further than the first write a
rule lane still holds (``Holdback.low_water``, as assembly.py does for chunk sets), so a restarted replay
reads it again, finds it delayed (from the same capture time) or held (since the time the state file kept)
again. What the partition's lane applied after it is applied again then (at-least-once, as always).

Example: rule ``orders`` has ``delay: 30m`` and ``guard: [index_delete]``; writes-0 holds @10 (a document of
``orders``), @11 (a document of ``logs``, another rule), @12 ``DELETE /orders``. @10 goes to the lane
(orders, writes-0), due at its capture + 30 min; @11 is applied at once; @12 queues behind @10. The commit
stops at offset 10. 30 minutes later @10 is applied; @12 is due, and held: ``sync list`` shows ``orders``
``held`` (DELETE /orders, since..., from client 10.0.0.7 through proxy host a-proxy:2900); the commit stops
at 12 until ``esproxy sync reject orders`` writes @12's dead letter, when the lane goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from esproxy.core.bean import DOCS_KIND, Bean
from esproxy.core.bulk import BulkFormatError, parse_request

from .record import Record, where
from .undo import lag_beyond

log = logging.getLogger("esproxy.follow")

APPROVE, REJECT = "approve", "reject"
RETRY_AFTER = 1.0  # seconds before a rule lane tries again a write it could not apply (B down, a paused rule)


@dataclass
class Entry:
    """A write waiting in a rule lane."""

    record: Record  # the record it came in (a chunked bean's: the last chunk's Standin)
    bean: Bean
    low: int  # the first offset of the partition the commit must not pass while it waits (its first chunk's)
    captured: float  # capture time, seconds since the epoch (the record's Kafka timestamp)
    due: float  # when it may be applied: captured + the rule's delay
    rules: tuple[str, ...]  # the rules whose indices it names (their skips apply to it)
    guard: str = ""  # the guard kind that holds it ("": not held, only delayed)

    @property
    def place(self) -> str:
        return where(self.record)

    def describe(self) -> str:
        """``DELETE /orders``; a document bean by its first action: ``index products/7`` (``+2 more``)."""
        if self.bean.kind == DOCS_KIND:
            try:
                actions = parse_request(self.bean.body)
            except BulkFormatError:
                actions = []
            if actions:
                first = actions[0]
                more = f" (+{len(actions) - 1} more)" if len(actions) > 1 else ""
                return f"{first.verb} {first.meta.get('_index', self.bean.index)}/{first.meta.get('_id', '?')}{more}"
        return f"{self.bean.method} {self.bean.requestUri.split('?', 1)[0]}"

    def origin(self) -> dict[str, Any]:
        """Where the write came from, as the bean says: the client's address, the Host it asked (the proxy), the
        proxy's labels, the clusters it was written to."""
        return {
            "client": self.bean.remoteAddr,
            "proxy": self.bean.host,
            "labels": self.bean.labels or {},
            "clusters": list(self.bean.clusterIds),
        }


class Board:
    """What operators decided about held writes and skips, shared by every replay of the process and kept in the
    state file by replay/followcontrol.py (``save``): ``holds`` (place → rule, since, decision, reason) and
    ``skips`` (rule → capture time before which its writes are dead-lettered)."""

    def __init__(self, holds: Optional[dict[str, dict[str, Any]]] = None, skips: Optional[dict[str, float]] = None):
        self.holds: dict[str, dict[str, Any]] = dict(holds or {})
        self.skips: dict[str, float] = {k: float(v) for k, v in (skips or {}).items()}
        self.holdbacks: list[Holdback] = []
        self.save: Callable[[], None] = lambda: None

    # what the rule lanes ask

    def held(self, rule: str, entry: Entry) -> dict[str, Any]:
        """``entry`` holds ``rule``'s lane: its hold record (made, and saved, the first time)."""
        hold = self.holds.get(entry.place)
        if hold is None:
            hold = self.holds[entry.place] = {"rule": rule, "since": time.time()}
            log.warning(
                "sync rule %s holds %s at %s (guard %s; captured %s from client %s through %s):"
                " esproxy sync approve|reject %s",
                rule,
                entry.describe(),
                entry.place,
                entry.guard,
                _iso(entry.captured),
                entry.bean.remoteAddr or "?",
                entry.bean.host or "?",
                rule,
            )
            self.save()
        return hold

    def decision(self, entry: Entry) -> Optional[tuple[str, str]]:
        hold = self.holds.get(entry.place)
        if hold is None or not hold.get("decision"):
            return None
        return hold["decision"], hold.get("reason", "")

    def done(self, entry: Entry) -> None:
        if self.holds.pop(entry.place, None) is not None:
            self.save()

    def skip_until(self, rules: tuple[str, ...]) -> tuple[str, float]:
        """The rule among ``rules`` with the latest skip, and its time (0: none skips)."""
        found = max(((self.skips.get(r, 0.0), r) for r in rules), default=(0.0, ""))
        return found[1], found[0]

    # what operators do (replay/followcontrol.py)

    def lanes_of(self, rule: str) -> list[RuleLane]:
        return [lane for h in self.holdbacks for lane in h.lanes.values() if lane.rule == rule]

    def holding(self, rule: str) -> list[tuple[RuleLane, Entry]]:
        """The lanes of ``rule`` stopped at a held write, oldest capture first."""
        found = [(lane, lane.entries[0]) for lane in self.lanes_of(rule) if lane.held()]
        return sorted(found, key=lambda pair: pair[1].captured)

    def decide(self, rule: str, decision: str, reason: str = "") -> Entry:
        """Approve or reject the oldest write held for ``rule``; LookupError when none is."""
        held = self.holding(rule)
        if not held:
            raise LookupError(f"rule {rule} holds no write")
        lane, entry = held[0]
        hold = self.holds.setdefault(entry.place, {"rule": rule, "since": time.time()})
        hold.update(decision=decision, reason=reason, decided=time.time())
        self.save()
        log.warning("sync rule %s: %s %s at %s (%s)", rule, decision, entry.describe(), entry.place, reason or "-")
        lane.wake()
        return entry

    def skip(self, rule: str, until: float) -> None:
        self.skips[rule] = max(until, self.skips.get(rule, 0.0))
        self.save()
        log.warning("sync rule %s: writes captured before %s are skipped (dead letters)", rule, _iso(until))
        for lane in self.lanes_of(rule):
            lane.wake()

    def rows(self) -> list[dict[str, Any]]:
        return [row for h in self.holdbacks for row in h.rows()]


class RuleLane:
    """One rule's delayed or held writes of one partition, applied in offset order by a greenlet of its own."""

    def __init__(self, holdback: Holdback, rule: str, topic: str, partition: int) -> None:
        self.holdback = holdback
        self.rule = rule
        self.topic, self.partition = topic, partition
        self.entries: deque[Entry] = deque()
        self.progress_at = time.monotonic()  # the last write applied, or the first one waiting
        self.paused = False  # the rule was paused at the last try
        self._closed = False
        self._ready = Event()
        self._greenlet = gevent.spawn(self._loop)

    def push(self, entry: Entry) -> None:
        if not self.entries:
            self.progress_at = time.monotonic()
        self.entries.append(entry)
        self._ready.set()

    def wake(self) -> None:
        self._ready.set()

    def held(self) -> bool:
        """Whether the lane is stopped at a guarded write no one decided about yet."""
        if not self.entries or not self.entries[0].guard:
            return False
        head = self.entries[0]
        return self.holdback.board.decision(head) is None and not self.skipped(head)

    def skipped(self, entry: Entry) -> bool:
        rule, until = self.holdback.board.skip_until(entry.rules)
        return bool(rule) and entry.captured < until

    def low_water(self) -> Optional[int]:
        return self.entries[0].low if self.entries else None

    def close(self) -> None:
        """End the apply in flight and apply nothing more; what waits still holds the commit back (``low_water``)
        until the lane is forgotten: the partition's next reader reads it again."""
        self._closed = True
        self._ready.set()
        self._greenlet.join()

    def stopping(self) -> bool:
        return self._closed or self.holdback.stopping()

    def _loop(self) -> None:
        while not self._closed:
            wait = self._turn() if self.entries else None
            if wait == 0.0:
                continue
            self._ready.wait(timeout=wait)
            self._ready.clear()

    def _turn(self) -> Optional[float]:
        """Apply what is due at the head: 0.0 when something was done, else how long to wait (None: a decision)."""
        head = self.entries[0]
        if head.guard and not self.skipped(head):
            if self.holdback.board.decision(head) is None:
                self.holdback.board.held(self.rule, head)
                return None  # woken by approve, reject, skip, close
            batch = [head]
        else:
            now = time.time()
            if head.due > now and not self.skipped(head):
                return head.due - now
            batch = []
            for entry in self.entries:
                if len(batch) >= self.holdback.batch_size or (entry.guard and not self.skipped(entry)):
                    break
                if entry.due > now and not self.skipped(entry):
                    break
                batch.append(entry)
        with self.holdback.gate:
            if self._closed:
                return None
            done = self.holdback.apply(self, batch, self.stopping)
        for entry in batch[:done]:
            self.entries.popleft()
            if entry.guard:
                self.holdback.board.done(entry)
        if done:
            self.progress_at = time.monotonic()
        return 0.0 if done == len(batch) else RETRY_AFTER


# (rule lane, entries in offset order, stop) -> how many of them are done (applied or dead-lettered), in order
Apply = Callable[[RuleLane, list[Entry], Callable[[], bool]], int]


@dataclass
class Holdback:
    """One replay's rule lanes (``source.kafkas[]`` entry), and what its commit must not pass."""

    board: Board
    group: str
    gate: Semaphore
    stopping: Callable[[], bool]
    batch_size: int = 1000
    apply: Apply = field(default=lambda lane, entries, stop: 0)
    lanes: dict[tuple[str, str, int], RuleLane] = field(default_factory=dict)
    # per partition: offsets handed to a rule lane and not yet committed past (a partition read again after a
    # failure hands them again: they are done already)
    taken: dict[tuple[str, int], set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.board.holdbacks.append(self)

    def waiting(self, rule: str, topic: str, partition: int) -> bool:
        lane = self.lanes.get((rule, topic, partition))
        return lane is not None and bool(lane.entries)

    def seen(self, record: Record) -> bool:
        return record.offset in self.taken.get((record.topic, record.partition), ())

    def push(self, rule: str, entry: Entry) -> None:
        record = entry.record
        key = (rule, record.topic, record.partition)
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = RuleLane(self, rule, record.topic, record.partition)
        self.taken.setdefault((record.topic, record.partition), set()).add(record.offset)
        lane.push(entry)

    def committed(self, topic: str, partition: int, offset: int) -> None:
        """The partition's offsets below ``offset`` are committed: they are never handed again."""
        taken = self.taken.get((topic, partition))
        if taken:
            taken.difference_update([o for o in taken if o < offset])

    def low_water(self, topic: str, partition: int) -> Optional[int]:
        """The first offset of the partition a rule lane still holds: the commit must not pass it."""
        lows = [
            low
            for (_, t, p), lane in self.lanes.items()
            if t == topic and p == partition and (low := lane.low_water()) is not None
        ]
        return min(lows, default=None)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked (or the replay stops): its rule lanes drop what waits; its next reader
        reads it again from the committed offset."""
        for key in [k for k in self.lanes if k[1] == topic and k[2] == partition]:
            self.lanes.pop(key).close()
        self.taken.pop((topic, partition), None)

    def close(self) -> None:
        """The replay stops: every rule lane ends; what waits keeps holding the last commit back."""
        for lane in self.lanes.values():
            lane.close()

    def rows(self, now: Optional[float] = None, mono: Optional[float] = None) -> list[dict[str, Any]]:
        """Per rule lane with writes waiting: what waits, the delay, the lag beyond it, the hold."""
        now = time.time() if now is None else now
        mono = time.monotonic() if mono is None else mono
        out = []
        for (rule, topic, partition), lane in sorted(self.lanes.items()):
            if not lane.entries:
                continue
            head = lane.entries[0]
            held = lane.held()
            beyond = 0.0 if held else lag_beyond(now, head.due)
            hold = None
            if held:
                since = self.board.holds.get(head.place, {}).get("since", now)
                hold = {
                    "kind": head.guard,
                    "what": head.describe(),
                    "where": head.place,
                    "since": round(since, 3),
                    "held_seconds": round(max(0.0, now - since), 3),
                    "captured": round(head.captured, 3),
                    "from": head.origin(),
                }
            out.append(
                {
                    "group": self.group,
                    "rule": rule,
                    "topic": topic,
                    "partition": partition,
                    "waiting": len(lane.entries),
                    "oldest_offset": head.record.offset,
                    "oldest_captured": round(head.captured, 3),
                    "delay_seconds": round(head.due - head.captured, 3),
                    "due_in_seconds": round(max(0.0, head.due - now), 3),
                    "lag_beyond_delay_seconds": round(beyond, 3),
                    "stalled_seconds": round(mono - lane.progress_at, 3) if beyond > 0 and not lane.paused else 0.0,
                    "held": hold,
                }
            )
        return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
