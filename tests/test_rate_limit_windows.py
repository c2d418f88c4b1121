"""Rate limits measured on B (issue 22, item 1): B's count polled every ~0.15 s while 600 documents
arrive, through the proxy and a follow rule's replay (`maxDocsPerSecond`, `maxBytesPerSecond`, the
default `batchSize`: a poll merges many client `_bulk` requests into one) and through `sync copy`
(`--rate`, `--max-bytes-per-second`). The limits are paid before each send and a merged batch goes
in sends of at most 0.2 s of the limit: the last of the 600 reaches B no sooner than 11 s after the
writes to A (the copy's start), and no 2-second window exceeds 1.2 times the limit plus the 0.2 s
burst (docs/operations.md, "Rate limit")."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from support.basics import free_port
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

COUNT = 600
DOCS_PER_SECOND = 50  # 600 documents: 12 s, 11.8 s after the burst
BURST = 0.2  # seconds: ratelimit.BURST, as docs/operations.md says
PAD = 2000  # bytes of a document's source, so that its `_bulk` action is at least this big
BYTES_PER_SECOND = DOCS_PER_SECOND * (PAD + 1)  # 600 such documents: at least 12 s


def source(n: int) -> str:
    """A document's source, compact (nothing a re-serialization could make smaller), PAD bytes."""
    text = json.dumps({"n": n, "pad": ""}, separators=(",", ":"))
    return text[:-2] + "x" * (PAD - len(text)) + '"}'


class Poller:
    """B's count of ``index`` every ~0.15 s in a thread: (sent, answered, count) samples."""

    def __init__(self, base: str, index: str) -> None:
        self.base, self.index = base, index
        self.samples: list[tuple[float, float, int]] = []
        self.started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s = requests.Session()
        while not self._done.is_set():
            sent = time.monotonic()
            try:
                s.post(f"{self.base}/{self.index}/_refresh", timeout=10)
                r = s.get(f"{self.base}/{self.index}/_count", timeout=10)
                count = r.json().get("count", 0) if r.status_code == 200 else 0
            except requests.RequestException:
                count = None
            if count is not None:
                self.samples.append((sent, time.monotonic(), count))
                if count >= COUNT:
                    return
            self._done.wait(0.15)

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._done.set()
        self._thread.join(5)
        assert self.samples and self.samples[-1][2] == COUNT, f"B holds {self.samples[-1:]} after {timeout}s"

    def took(self) -> float:
        """Seconds at least from the poller's start (just before the documents are written to A) to
        the last document's arrival on B: after the sample before the one that counted them all was
        sent."""
        last = next(i for i, (_, _, c) in enumerate(self.samples) if c >= COUNT)
        return self.samples[last - 1][0] - self.started if last > 0 else 0.0

    def most_in(self, window: float) -> int:
        """The most documents B gained between two samples at most ``window`` apart (from the first's
        sending to the second's answer: whatever arrived between their counts arrived within that)."""
        most = 0
        for i, (sent, _, before) in enumerate(self.samples):
            for _, answered, after in self.samples[i + 1 :]:
                if answered - sent > window:
                    break
                most = max(most, after - before)
        return most


def check(poller: Poller, docs_per_window: float) -> None:
    took, most = poller.took(), poller.most_in(2.0)
    print(f"took {took:.2f}s, most in 2 s {most} (bound {docs_per_window:.0f}), samples {len(poller.samples)}")
    assert took >= 11.0, (took, poller.samples)
    assert most <= docs_per_window, (most, poller.samples)


def docs_bound(per_second: float) -> float:
    """Documents a 2-second window may hold: 1.2 times the limit plus the burst."""
    return 1.2 * per_second * 2 + per_second * BURST


def _stream(es_a, es_b, kafka, esproxy, names, **limit: int) -> None:
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    base, port = names.index("rl"), free_port()
    replay = replay_config(kafka, topic, group, es_b, **limit)  # batchSize: the default (1000)
    replay["follow"] = {"rules": [{"name": "rl", "indices": [base], "rename": "{{remote_index}}-sync"}]}
    esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    poller = Poller(es_b, f"{base}-sync")
    s = requests.Session()
    for n in range(12):  # 12 `_bulk` requests of 50
        lines = []
        for i in range(50):
            lines += [json.dumps({"index": {"_index": base, "_id": f"{n}-{i}"}}), source(n * 50 + i)]
        r = s.post(
            f"http://127.0.0.1:{port}/_bulk",
            data="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert r.status_code == 200 and not r.json()["errors"], r.text[:500]
    poller.wait(60)
    return poller


def test_stream_docs_per_second_holds_on_b(es_a, es_b, kafka, esproxy, names):
    poller = _stream(es_a, es_b, kafka, esproxy, names, maxDocsPerSecond=DOCS_PER_SECOND)
    check(poller, docs_bound(DOCS_PER_SECOND))


@pytest.mark.stand_in_only  # the limiter counts bytes as it counts documents; the docs/s test runs on both
def test_stream_bytes_per_second_holds_on_b(es_a, es_b, kafka, esproxy, names):
    poller = _stream(es_a, es_b, kafka, esproxy, names, maxBytesPerSecond=BYTES_PER_SECOND)
    check(poller, docs_bound(BYTES_PER_SECOND) / (PAD + 1))  # each document's action: PAD + 1 bytes or more


def _copy(es_a: str, es_b: str, names, tmp_path: Path, *limit: str) -> Poller:
    index = names.index("rlc")
    s = requests.Session()
    for start in range(0, COUNT, 200):
        lines = []
        for n in range(start, start + 200):
            lines += [json.dumps({"index": {"_index": index, "_id": str(n)}}), source(n)]
        r = s.post(
            f"{es_a}/_bulk", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"}, timeout=60
        )
        assert r.status_code == 200 and not r.json()["errors"], r.text[:500]
    s.post(f"{es_a}/{index}/_refresh", timeout=60)
    poller = Poller(es_b, index)
    result = subprocess.run(
        [sys.executable, "-m", "esproxy", "sync", "copy", "--source", es_a, "--target", es_b, "--index", index,
         "--settle", "1", *limit],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index} -> {index}: {COUNT} read, {COUNT} written," in result.stdout
    poller.wait(10)
    return poller


def test_sync_copy_rate_holds_on_b(es_a, es_b, names, tmp_path):
    poller = _copy(es_a, es_b, names, tmp_path, "--rate", str(DOCS_PER_SECOND))
    check(poller, docs_bound(DOCS_PER_SECOND))


@pytest.mark.stand_in_only  # the limiter counts bytes as it counts documents; the docs/s test runs on both
def test_sync_copy_bytes_per_second_holds_on_b(es_a, es_b, names, tmp_path):
    poller = _copy(es_a, es_b, names, tmp_path, "--max-bytes-per-second", str(BYTES_PER_SECOND))
    check(poller, docs_bound(BYTES_PER_SECOND) / (PAD + 1))
