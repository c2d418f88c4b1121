"""Small utilities of every test: free ports, unique names, waiting on a condition, process groups."""

from __future__ import annotations

import itertools
import os
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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
