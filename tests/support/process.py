"""esproxy itself, run as a subprocess with its log captured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from .basics import kill_group

READY_TIMEOUT = 30.0

STOP_TIMEOUT = 15.0


class Esproxy:
    """A running `python -m esproxy -c conf.yml`, stdout+stderr captured into a log file."""

    def __init__(self, config: Any, workdir: Path, name: str = "esproxy", env: Optional[dict] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / f"{name}.yml"
        self.log_path = self.workdir / f"{name}.log"
        if isinstance(config, str):
            self.conf_path.write_text(config)
        else:
            self.conf_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esproxy", "-c", str(self.conf_path)],
            cwd=str(self.workdir),
            env={**os.environ, **env} if env else None,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def count_in_log(self, needle: str) -> int:
        return self.log().count(needle)

    def wait_log(self, needle: str, count: int = 1, timeout: float = READY_TIMEOUT) -> None:
        """Wait until needle occurs count times in the log; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count_in_log(needle) >= count:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"esproxy exited with {self.proc.returncode} before logging {needle!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"esproxy did not log {needle!r} x{count} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, wait up to timeout, then SIGKILL the group. Returns the exit code after SIGTERM,
        or None if it had to be killed."""
        if self.proc.poll() is not None:
            self._close()
            return self.proc.returncode
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc: Optional[int] = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        kill_group(self.proc, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._close()
        return rc

    def _close(self) -> None:
        if not self._logf.closed:
            self._logf.close()


def esproxy_cli(*args: str, cwd: Optional[Path | str] = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run an `esproxy` command (compare, dlq, repair, --check...) to completion; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "esproxy", *args],
        cwd=str(cwd) if cwd is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
