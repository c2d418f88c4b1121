"""Questions the bench asks the servers: document counts, records in a topic."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Callable, Optional


def http(method: str, url: str, body: Optional[bytes] = None, ctype: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def es_count(base: str, index: str) -> int:
    """Documents in ``index`` (0 if it does not exist), after a refresh."""
    http("POST", f"{base}/{index}/_refresh")
    status, body = http("GET", f"{base}/{index}/_count")
    return int(json.loads(body).get("count", 0)) if status == 200 else 0


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.25) -> tuple[Any, float]:
    """Poll ``fn`` until truthy or ``timeout``; (last value, seconds waited)."""
    t0 = time.monotonic()
    while True:
        value = fn()
        if value or time.monotonic() - t0 > timeout:
            return value, time.monotonic() - t0
        time.sleep(interval)


def topic_stats(bootstrap: str, topic: str, timeout: float = 120.0) -> tuple[int, int]:
    """(records in ``topic``, sum of its end offsets).

    The records are read from the beginning: on Tansu the end offset of a partition is the base offset
    of its last record batch + 1, so a batch of many records moves it by one and end offsets undercount.
    """
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
    )
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            return 0, 0
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        end = c.end_offsets(tps)
        c.assign(tps)
        c.seek_to_beginning(*tps)
        count = 0
        deadline = time.monotonic() + timeout
        pending = [tp for tp in tps if end[tp] > 0]
        while pending and time.monotonic() < deadline:
            count += sum(len(recs) for recs in c.poll(timeout_ms=200).values())
            pending = [tp for tp in pending if c.position(tp) < end[tp]]
        if pending:
            raise RuntimeError(f"reading {topic}: positions never reached the end offsets {end} in {timeout:.0f}s")
        return count, sum(end.values())
    finally:
        c.close()
