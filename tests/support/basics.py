"""Small utilities of every test: free ports, unique names, waiting on a condition, process groups."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]

_counter = itertools.count(1)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()
_ports = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port() -> int:
    """A port free now, for a server the test starts later. Drawn below the kernel's ephemeral range: a port
    the kernel hands out (bind to 0) is also what it gives the next outgoing connection, which can take it
    before the server binds ("Address already in use" seen in CI with many connections to the stand-ins)."""
    low = max(1024, min(20000, _EPHEMERAL_LOW - 4096))
    high = _EPHEMERAL_LOW - 1 if _EPHEMERAL_LOW - 1 > low else 65535
    for _ in range(200):
        port = _ports.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str = "t") -> str:
    """A lowercase name unique in this test session (valid as index, topic and group name)."""
    clean = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")[:40] or "t"
    return f"{clean}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, msg: str = "") -> Any:
    """Poll fn() until it returns a truthy value; return that value. Fails the test on timeout.

    Exceptions raised by fn count as "not yet"; the last one is shown on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_val: Any = None
    while True:
        try:
            last_val = fn()
            if last_val:
                return last_val
        except Exception as exc:  # noqa: BLE001 - polled callables may fail transiently
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last_val!r}"
            pytest.fail(f"timed out after {timeout}s waiting for {msg or fn}; {detail}")
        time.sleep(interval)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of proc (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
