"""The monitor: once a second, a canary write through the proxy (`<tag>-canary/_doc/c`, {"n": i}), the canary
as B holds it, and `/_esproxy/health` of the proxy and of the replay. From that the checker tells when
replication could not progress (an acknowledged canary write not on B for long) and what health said then."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional

import requests

INTERVAL = 1.0


@dataclass
class Sample:
    t: float
    b_canary: Optional[int]  # the canary's n on B (None: B did not answer)
    proxy_health: Optional[int]  # the status (None: no answer)
    replay_health: Optional[int]


def status_of(url: str, timeout: float = 2.0) -> Optional[int]:
    try:
        return requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        return None


class Monitor(threading.Thread):
    def __init__(self, proxy: str, replay_admin: str, b_url: str, canary_index: str) -> None:
        super().__init__(daemon=True, name="monitor")
        self.proxy, self.replay_admin, self.b_url, self.index = proxy, replay_admin, b_url, canary_index
        self.acked: list[tuple[int, float]] = []  # (n, time acknowledged)
        self.samples: list[Sample] = []
        self.halt = threading.Event()
        self.t0 = time.time()
        self.writing = True  # canary writes; off once the load ends (B is then compared with a still A)

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            began = time.time()
            try:
                if not self.writing:
                    raise requests.RequestException("canary writes off")
                n += 1
                r = requests.put(f"{self.proxy}/{self.index}/_doc/c", json={"n": n}, timeout=(2, 5))
                if 200 <= r.status_code < 300:
                    self.acked.append((n, time.time()))
            except requests.RequestException:
                pass
            b_canary = None
            try:
                r = requests.get(f"{self.b_url}/{self.index}/_doc/c", timeout=2)
                if r.status_code in (200, 404):
                    b_canary = (r.json().get("_source") or {}).get("n", 0)
            except (requests.RequestException, ValueError):
                pass
            self.samples.append(
                Sample(
                    time.time(),
                    b_canary,
                    status_of(f"{self.proxy}/_esproxy/health"),
                    status_of(f"{self.replay_admin}/_esproxy/health"),
                )
            )
            self.halt.wait(max(0.0, INTERVAL - (time.time() - began)))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)
