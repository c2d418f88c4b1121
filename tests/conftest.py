"""Shared fixtures: real demo servers (osmem, Tansu) and esproxy processes. Nothing is mocked.

Session-wide servers are shared by all tests; tests isolate themselves by unique index, topic
and group names (see `names`).
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.basics import free_port, unique
from support.configs import expected_ready_lines
from support.fuzz import CI_EXAMPLES
from support.process import Esproxy
from support.servers import DemoServer

# Property-based tests (tests/test_fuzz_*.py): "ci" keeps `make test` bounded; `make fuzz` runs "long".
settings.register_profile(
    "ci", max_examples=CI_EXAMPLES, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, print_blob=True, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--engines",
        choices=("demo", "real"),
        default=os.environ.get("ESPROXY_ENGINES", "demo"),
        help="demo: osmem + Tansu (default); real: Apache Kafka, Elasticsearch, OpenSearch (needs java, mvn; "
        "runs only tests marked `real`)",
    )
    parser.addoption(
        "--real-pair",
        choices=("es-os", "os-es"),
        default=os.environ.get("ESPROXY_REAL_PAIR", "es-os"),
        help="with --engines=real: A=Elasticsearch, B=OpenSearch (es-os) or the other way round (os-es)",
    )


def real_engines_wanted(config) -> bool:
    return config.getoption("--engines") == "real"


def pytest_collection_modifyitems(config, items):
    if not real_engines_wanted(config):
        return

    def wanted(item) -> bool:
        return bool(item.get_closest_marker("real")) and not item.get_closest_marker("stand_in_only")

    config.hook.pytest_deselected(items=[item for item in items if not wanted(item)])
    items[:] = [item for item in items if wanted(item)]


REAL_ENGINES = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if REAL_ENGINES in config.stash:
        terminalreporter.write_line(f"real engines: {config.stash[REAL_ENGINES]}")


def pytest_configure(config):
    config.addinivalue_line("markers", "real: also runs on the real engines (`make test-real`, --engines=real)")
    config.addinivalue_line(
        "markers",
        "stand_in_only: a variant of a `real` test that adds nothing on the real engines (logic the engines"
        " do not touch): `make test` only",
    )
    # kafka-python's protocol loader uses deprecated importlib.resources calls: not our concern.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def real_engines(request, servers_dir):
    """With --engines=real: {"kafka", "a", "b"} engines of tests/engines, started together; else None."""
    if not real_engines_wanted(request.config):
        yield None
        return
    import engines

    if not engines.tools_present():
        pytest.exit("--engines=real needs java and mvn on PATH", returncode=2)
    engines.kill_leftovers()
    es_os = request.config.getoption("--real-pair") == "es-os"
    kinds = {
        "kafka": "kafka",
        "a": "elasticsearch" if es_os else "opensearch",
        "b": "opensearch" if es_os else "elasticsearch",
    }
    running = dict(zip(kinds, engines.start_all(list(kinds.values()), [servers_dir / f"real-{k}" for k in kinds])))
    request.config.stash[REAL_ENGINES] = "; ".join(f"{role}={e.describe()}" for role, e in running.items())
    yield running
    for e in running.values():
        e.stop()


@pytest.fixture(scope="session")
def engine_kinds(real_engines) -> dict:
    """What es_a, es_b and kafka are: {"a": (engine, version), "b": ..., "kafka": ...}."""
    if not real_engines:
        return {"a": ("osmem", ""), "b": ("osmem", ""), "kafka": ("tansu", "")}
    return {role: (e.name, e.version) for role, e in real_engines.items()}


@pytest.fixture(scope="session")
def es_a(servers_dir, real_engines):
    """Cluster A (osmem, or a real node with --engines=real), URL like http://127.0.0.1:PORT."""
    if real_engines:
        yield real_engines["a"].url
        return
    srv = DemoServer("osmem", servers_dir)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session")
def es_b(servers_dir, real_engines):
    """Cluster B (osmem, or a real node of the other kind with --engines=real), URL like http://127.0.0.1:PORT."""
    if real_engines:
        yield real_engines["b"].url
        return
    srv = DemoServer("osmem", servers_dir)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session")
def kafka(servers_dir, real_engines):
    """The Tansu broker (a real Kafka broker with --engines=real), "127.0.0.1:PORT"."""
    if real_engines:
        yield real_engines["kafka"].addr
        return
    srv = DemoServer("tansu", servers_dir)
    yield srv.addr
    srv.stop()


class OwnServers:
    """`own_server(kind)` starts a DemoServer of this test's own; resume() and stop() act on all of them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[DemoServer] = []

    def __call__(self, kind: str) -> DemoServer:
        srv = DemoServer(kind, self.tmp_path)
        self.started.append(srv)
        return srv

    def resume(self) -> None:
        """SIGCONT each server a test may have left paused."""
        for srv in self.started:
            try:
                os.killpg(srv.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.resume()
        for srv in self.started:
            srv.stop()


@pytest.fixture
def own_server(tmp_path):
    """Start servers of this test's own, which it may pause (SIGSTOP) without disturbing other tests:
    `srv = own_server("tansu")` (or "osmem"); resumed and killed at teardown, after the esproxy processes
    (see the esproxy fixture)."""
    servers = OwnServers(tmp_path)
    yield servers
    servers.stop()


@pytest.fixture
def osmem_factory(request, own_server, real_engines):
    """Start pristine osmem clusters: `url = osmem_factory()`; all are killed at teardown.

    With --engines=real it hands out the session's real clusters instead, A then B, leaving out one the test
    already has as es_a / es_b; they are shared, so such a test must confine itself to its own indices.
    """
    if not real_engines:
        return lambda: own_server("osmem").url
    spare = [real_engines[role].url for role in ("a", "b") if f"es_{role}" not in request.fixturenames]

    def hand_out() -> str:
        if not spare:
            pytest.skip("the real engines are two clusters; this test wants more")
        return spare.pop(0)

    return hand_out


class Names:
    """Unique names for one test (tests share the clusters and the broker)."""

    def __init__(self, base: str):
        self.base = base
        self.indices = f"{base}-{uuid.uuid4().hex[:6]}"  # this test's index names start so, and no other's

    def index(self, suffix: str = "idx") -> str:
        return unique(f"{self.indices}-{suffix}")

    def topic(self, suffix: str = "topic") -> str:
        return unique(f"{self.base}-{suffix}")

    def group(self, suffix: str = "group") -> str:
        return unique(f"{self.base}-{suffix}")

    def pattern(self) -> str:
        """An index pattern that matches every index this test named with index(), and no other test's."""
        return unique(self.indices).rsplit("-", 2)[0] + "-*"


@pytest.fixture
def names(request) -> Names:
    return Names(request.node.name[:24])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def esproxy(tmp_path, own_server):
    """Start esproxy processes: `p = esproxy(config_dict, wait=True)` (`env=`: variables added to its environment).

    Writes the config as YAML into tmp_path, runs `python -m esproxy -c <file>` with cwd=tmp_path,
    and (wait=True) waits for the spec's readiness lines: `proxy listening on` per enabled proxy,
    `assigned partitions` per enabled Kafka source. Teardown: SIGTERM, 15 s, then SIGKILL.
    It uses own_server so that the test's own servers outlive its esproxy processes, resumed first if the
    test left them paused: stopped while its broker and clusters answer, a replay finishes, commits and
    leaves its group at once, instead of waiting on a dead or paused one.
    """
    started: list = []

    def start(config, wait: bool = True, ready=None, timeout: float = 30.0, env=None) -> Esproxy:
        proc = Esproxy(config, tmp_path, name=f"esproxy{len(started) + 1}", env=env)
        started.append(proc)
        if wait:
            for needle, count in ready if ready is not None else expected_ready_lines(config):
                proc.wait_log(needle, count=count, timeout=timeout)
        return proc

    yield start
    own_server.resume()
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
