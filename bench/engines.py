"""Real engines for ``python -m bench --engines real``: Elasticsearch, OpenSearch and Apache Kafka.

bench does not import the tests package; it loads tests/engines/__init__.py by path instead. That is
the launcher `make test-real` uses (its jars, cache, JVM flags and leftover-killing), and in-process
the bench gets what it needs from it: each JVM's pid (CPU seconds, like the stand-ins'), its port and
version, and a ``stop()`` for the ``finally``. Running ``python tests/engines up`` as a subprocess
would only give text to parse, and one more process between the bench and the JVMs it must stop.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from types import ModuleType
from typing import Optional

from .servers import REPO

LAUNCHER = REPO / "tests" / "engines" / "__init__.py"
PAIRS = {"es-os": ("elasticsearch", "opensearch"), "os-es": ("opensearch", "elasticsearch")}


def launcher() -> ModuleType:
    name = "esproxy_bench_engines"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCHER)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the engine launcher {LAUNCHER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Engine:
    """A started engine JVM, with the attributes the scenarios use of a stand-in :class:`servers.Proc`."""

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.name = engine.name
        self.version = engine.version
        self.port = engine.port
        self.pid = engine.proc.pid
        self.log_path = engine.log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.engine.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return f"{self.engine.name} {self.version}"

    def stop(self) -> Optional[int]:
        self.engine.stop()
        shutil.rmtree(self.engine.home, ignore_errors=True)
        return None


def start(pair: str) -> tuple[Engine, Engine, Engine]:
    """Start (A, B, Kafka) for ``pair`` at once; raise if the tools or an engine are missing."""
    engines = launcher()
    if not engines.tools_present():
        raise RuntimeError("--engines real needs java (17+), javac and mvn on PATH (see docs/real-engines.md)")
    kinds = [*PAIRS[pair], "kafka"]
    for kind in kinds:
        engines.classpath(engines.ENGINES[kind].maven_project)
    a, b, kafka = (Engine(e) for e in engines.start_all(kinds))
    return a, b, kafka
