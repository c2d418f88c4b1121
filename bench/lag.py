"""Replication lag while the proxy is under S1's load and the replay runs: measured per sampled write.

A :class:`LagProbe` writes its own documents through the proxy next to wrk's (``POST /<index>/_doc``,
the load's request, on a few connections of its own, at a fixed pace) and watches B for each one
with a realtime ``_mget`` every ``poll`` seconds. A sample's lag is the time B first answered the
document minus the time the proxy acknowledged the write (its 2xx goes out once A applied the write
and the capture was handed on): capture → applied on B, through the spool, Kafka and the replay.
Resolution: one poll interval plus one ``_mget``.

:class:`ReplayLagSampler` records the replay's own view meanwhile: ``/_esproxy/stats``
``replay.consumer_lag[].lag_seconds`` (age of the oldest record fetched and not yet applied).
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit


def percentile(values: list[float], p: float) -> Optional[float]:
    """Nearest-rank percentile ``p`` (0 < p ≤ 100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Sample:
    sent: float  # time.monotonic() when the probe sent the write
    acked: float  # ... when the proxy's 2xx arrived
    seen: Optional[float] = None  # ... when B first answered the document


@dataclass
class LagResult:
    written: int  # probe writes the proxy acknowledged
    failed: int  # probe writes answered otherwise (not sampled)
    lags_ms: list[float]  # acked → seen on B, one per sample seen
    unseen: int  # acknowledged but not on B when the probe gave up
    write_ms: list[float]  # the probe's own write latency through the proxy
    poll_ms: float

    def pct(self, p: float) -> Optional[float]:
        return percentile(self.lags_ms, p)


def _post(
    conn: http.client.HTTPConnection, base_url: str, path: str, body: bytes
) -> tuple[http.client.HTTPConnection, Optional[tuple[int, bytes]]]:
    """POST JSON over a kept-alive connection: the connection to go on with, and (status, body), or
    None after a connection error (the connection is then a new one)."""
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return conn, (r.status, r.read())
    except (OSError, http.client.HTTPException):
        conn.close()
        return _connection(base_url), None


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)


@dataclass
class LagProbe:
    proxy_url: str
    b_url: str
    index: str
    docs: list[str]  # request bodies, used in turn
    rate: float = 25.0  # probe writes per second, all writers together
    writers: int = 5  # connections of its own (a write waits in the proxy's queue like wrk's)
    poll: float = 0.02  # seconds between two _mget of the documents not yet seen on B
    samples: dict[str, Sample] = field(default_factory=dict)  # document id -> times
    failed: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._writing = threading.Event()
        self._done = threading.Event()
        self._next = 0  # index of the next write, shared by the writers (paces them together)
        self._t0 = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._writing.set()
        self._threads = [threading.Thread(target=self._write, daemon=True) for _ in range(self.writers)]
        self._threads.append(threading.Thread(target=self._watch, daemon=True))
        for t in self._threads:
            t.start()

    def finish(self, timeout: float = 60.0) -> LagResult:
        """Stop writing; wait up to ``timeout`` for B to show the writes acknowledged so far."""
        self._writing.clear()
        for t in self._threads[:-1]:
            t.join(timeout=35)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pending():
            time.sleep(self.poll)
        self._done.set()
        self._threads[-1].join(timeout=35)
        with self._lock:
            samples = list(self.samples.values())
        return LagResult(
            written=len(samples),
            failed=self.failed,
            lags_ms=[(s.seen - s.acked) * 1000 for s in samples if s.seen is not None],
            unseen=sum(1 for s in samples if s.seen is None),
            write_ms=[(s.acked - s.sent) * 1000 for s in samples],
            poll_ms=self.poll * 1000,
        )

    def _pending(self) -> list[str]:
        with self._lock:
            return [i for i, s in self.samples.items() if s.seen is None]

    def _write(self) -> None:
        conn = _connection(self.proxy_url)
        try:
            while self._writing.is_set():
                with self._lock:
                    n = self._next
                    self._next += 1
                delay = self._t0 + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not self._writing.is_set():
                    return
                body = self.docs[n % len(self.docs)].encode("utf-8")
                sent = time.monotonic()
                conn, answered = _post(conn, self.proxy_url, f"/{self.index}/_doc", body)
                if answered is None:
                    with self._lock:
                        self.failed += 1
                    continue
                acked = time.monotonic()
                status, answer = answered
                doc_id = json.loads(answer).get("_id") if 200 <= status < 300 else None
                with self._lock:
                    if doc_id:
                        self.samples[doc_id] = Sample(sent, acked)
                    else:
                        self.failed += 1
        finally:
            conn.close()

    def _watch(self) -> None:
        conn = _connection(self.b_url)
        try:
            while not self._done.wait(self.poll):
                pending = self._pending()
                if not pending:
                    continue
                body = json.dumps({"ids": pending}).encode("utf-8")
                conn, answered = _post(conn, self.b_url, f"/{self.index}/_mget", body)
                if answered is None:
                    continue
                status, answer = answered
                seen = time.monotonic()
                if status != 200:  # e.g. the index does not exist on B yet
                    continue
                found = [d["_id"] for d in json.loads(answer).get("docs", []) if d.get("found")]
                with self._lock:
                    for doc_id in found:
                        if self.samples[doc_id].seen is None:
                            self.samples[doc_id].seen = seen
        finally:
            conn.close()


@dataclass
class ReplayLagSampler:
    """The replay's own view: the largest ``lag_seconds`` over its partitions, every ``interval`` seconds."""

    admin_url: str
    interval: float = 0.25
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seconds

    def _run(self) -> None:
        conn = _connection(self.admin_url)
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.request("GET", "/_esproxy/stats")
                    r = conn.getresponse()
                    answer = r.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = _connection(self.admin_url)
                    continue
                if r.status == 200:
                    rows = json.loads(answer).get("replay", {}).get("consumer_lag", [])
                    self.seconds.append(max((row.get("lag_seconds") or 0.0 for row in rows), default=0.0))
        finally:
            conn.close()
