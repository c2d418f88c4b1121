"""Load that runs beside a test: a writer thread with known ids."""

from __future__ import annotations

import threading
import time

import requests


class WriterThread(threading.Thread):
    """Calls ``write(session, i)`` for i in 0..count-1 until stopped; ``write`` says whether the write
    was acknowledged. Counts failures; after a connection error it goes on with a new session."""

    def __init__(self, base: str, index: str, count: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.base, self.index, self.count, self.pause = base, index, count, pause
        self.failed = 0
        self.stop = False

    def write(self, s: requests.Session, i: int) -> bool:
        raise NotImplementedError

    def run(self) -> None:
        s = requests.Session()
        for i in range(self.count):
            if self.stop:
                return
            try:
                if not self.write(s, i):
                    self.failed += 1
            except requests.RequestException:
                self.failed += 1
                s = requests.Session()
                time.sleep(0.05)
            if self.pause:
                time.sleep(self.pause)


class Writer(WriterThread):
    """Writes (and sometimes updates) documents with known ids; remembers which were acknowledged."""

    def __init__(self, base: str, index: str, count: int, pause: float = 0.0) -> None:
        super().__init__(base, index, count, pause)
        self.acked: list[int] = []

    timeout = 10.0  # seconds per request

    def write(self, s: requests.Session, i: int) -> bool:
        if i % 5 == 4:
            r = s.post(f"{self.base}/{self.index}/_update/{i - 1}", json={"doc": {"u": i}}, timeout=self.timeout)
        else:
            r = s.put(f"{self.base}/{self.index}/_doc/{i}", json={"n": i}, timeout=self.timeout)
        if 200 <= r.status_code < 300:
            self.acked.append(i)
            return True
        self.refused(r, i)
        return False

    def refused(self, r: requests.Response, i: int) -> None:
        """Write ``i`` was answered ``r``, not 2xx (a hook)."""


class Churn(threading.Thread):
    """Rewrites, partly updates and deletes documents ``0..existing-1`` that an index already holds
    and creates new ones (``new-<i>``), until stopped; counts what was acknowledged per kind."""

    def __init__(self, base: str, index: str, existing: int, pause: float = 0.0, timeout: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.base, self.index, self.existing, self.pause = base, index, existing, pause
        self.timeout = timeout  # generous: a busy 2-core machine can hold one write for seconds
        self.acked = {"index": 0, "update": 0, "delete": 0, "create": 0}
        self.failed = 0
        self.errors: list[str] = []  # the first few failures, to show
        self.stop = False

    def _failure(self, what: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(what)

    def run(self) -> None:
        s = requests.Session()
        step = 0
        while not self.stop:
            doc = str((step * 7919) % self.existing)  # spread over the index, so the copy meets them anywhere
            kind = ("index", "update", "delete", "create")[step % 4]
            try:
                if kind == "index":
                    r = s.put(f"{self.base}/{self.index}/_doc/{doc}", json={"n": -step}, timeout=self.timeout)
                elif kind == "update":
                    r = s.post(
                        f"{self.base}/{self.index}/_update/{doc}", json={"doc": {"u": step}}, timeout=self.timeout
                    )
                elif kind == "delete":
                    r = s.delete(f"{self.base}/{self.index}/_doc/{doc}", timeout=self.timeout)
                else:
                    r = s.put(f"{self.base}/{self.index}/_doc/new-{step}", json={"n": step}, timeout=self.timeout)
                if 200 <= r.status_code < 300:
                    self.acked[kind] += 1
                elif r.status_code != 404:  # an update or delete of a document deleted before
                    self._failure(f"{kind} {doc}: {r.status_code} {r.text[:200]}")
            except requests.RequestException as e:
                self._failure(f"{kind} {doc}: {e}")
                s = requests.Session()
                time.sleep(0.05)
            step += 1
            if self.pause:
                time.sleep(self.pause)
