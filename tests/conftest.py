"""Shared fixtures: real demo servers (osmem, Tansu) and esproxy processes. Nothing is mocked.

Session-wide servers are shared by all tests; tests isolate themselves by unique index, topic
and group names (see `names`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.basics import free_port, unique
from support.configs import expected_ready_lines
from support.process import Esproxy
from support.servers import DemoServer


def pytest_configure(config):
    # kafka-python's protocol loader uses deprecated importlib.resources calls: not our concern.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def es_a(servers_dir):
    """Cluster A (osmem), URL like http://127.0.0.1:PORT."""
    srv = DemoServer("osmem", servers_dir)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session")
def es_b(servers_dir):
    """Cluster B (osmem), URL like http://127.0.0.1:PORT."""
    srv = DemoServer("osmem", servers_dir)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session")
def kafka(servers_dir):
    """The Tansu broker, "127.0.0.1:PORT"."""
    srv = DemoServer("tansu", servers_dir)
    yield srv.addr
    srv.stop()


@pytest.fixture
def own_server(tmp_path):
    """Start servers of this test's own, which it may pause (SIGSTOP) without disturbing other tests:
    `srv = own_server("tansu")` (or "osmem"); resumed and killed at teardown."""
    started: list = []

    def start(kind: str) -> DemoServer:
        srv = DemoServer(kind, tmp_path)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        try:
            os.killpg(srv.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        srv.stop()


@pytest.fixture
def osmem_factory(own_server):
    """Start pristine osmem clusters: `url = osmem_factory()`; all are killed at teardown."""
    return lambda: own_server("osmem").url


class Names:
    """Unique names for one test (tests share the clusters and the broker)."""

    def __init__(self, base: str):
        self.base = base

    def index(self, suffix: str = "idx") -> str:
        return unique(f"{self.base}-{suffix}")

    def topic(self, suffix: str = "topic") -> str:
        return unique(f"{self.base}-{suffix}")

    def group(self, suffix: str = "group") -> str:
        return unique(f"{self.base}-{suffix}")


@pytest.fixture
def names(request) -> Names:
    return Names(request.node.name[:24])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def esproxy(tmp_path):
    """Start esproxy processes: `p = esproxy(config_dict, wait=True)`.

    Writes the config as YAML into tmp_path, runs `python -m esproxy -c <file>` with cwd=tmp_path,
    and (wait=True) waits for the spec's readiness lines: `proxy listening on` per enabled proxy,
    `assigned partitions` per enabled Kafka source. Teardown: SIGTERM, 15 s, then SIGKILL.
    """
    started: list = []

    def start(config, wait: bool = True, ready=None, timeout: float = 30.0) -> Esproxy:
        proc = Esproxy(config, tmp_path, name=f"esproxy{len(started) + 1}")
        started.append(proc)
        if wait:
            for needle, count in ready if ready is not None else expected_ready_lines(config):
                proc.wait_log(needle, count=count, timeout=timeout)
        return proc

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def recorder():
    """Start RecordingServer instances: `srv = recorder()`; stopped at teardown."""
    from support.servers import RecordingServer

    started: list = []

    def start() -> RecordingServer:
        srv = RecordingServer()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
