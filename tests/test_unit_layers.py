"""The proxy and the replay share only the contract (bean, messages, bulk, dead-letter format) and
the common modules: neither imports the other's modules, so either can change without the other."""

from __future__ import annotations

import ast
from pathlib import Path

import esproxy

ROOT = Path(esproxy.__file__).parent

PROXY = {
    "esproxy.proxy.handler",
    "esproxy.proxy.httpheaders",
    "esproxy.proxy.capture",
    "esproxy.proxy.autoids",
    "esproxy.proxy.settle",
    "esproxy.proxy.spool",
    "esproxy.proxy.fanout",
    "esproxy.clients.producer",
    "esproxy.clients.refusals",
}
REPLAY = {
    "esproxy.replay.consumer",
    "esproxy.replay.lanes",
    "esproxy.replay.deadletters",
    "esproxy.replay.followcreate",
    "esproxy.replay.record",
    "esproxy.replay.steps",
    "esproxy.replay.assembly",
    "esproxy.replay.writes",
    "esproxy.replay.rebalance",
}
# What both import: the message contract and the common modules, which import neither role.
SHARED = {
    "esproxy.core.bean",
    "esproxy.core.messages",
    "esproxy.core.bulk",
    "esproxy.core.deadletters",
    "esproxy.core.retry",
    "esproxy.core.config",
    "esproxy.core.stats",
    "esproxy.core.logs",
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The esproxy modules ``path`` imports (``from .x import y`` counts x, and x.y if y is a module)."""
    package = _module(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            levels = package.split(".")
            base = levels[: len(levels) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("esproxy")}


def _crossings() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module(path)
        for mine, theirs in ((PROXY, REPLAY), (REPLAY, PROXY), (SHARED, PROXY | REPLAY)):
            if module in mine:
                out += [f"{module} imports {name}" for name in sorted(_imports(path) & theirs)]
    return out


def test_every_role_module_exists() -> None:
    modules = {_module(path) for path in ROOT.rglob("*.py")}
    assert PROXY | REPLAY | SHARED <= modules


def test_no_role_imports_the_other() -> None:
    assert _crossings() == []


def test_relative_imports_are_resolved() -> None:
    replay = _imports(ROOT / "replay" / "consumer.py")
    assert {"esproxy.replay.lanes", "esproxy.core.config", "esproxy.clients.elastic"} <= replay
    assert "esproxy.proxy.httpheaders" in _imports(ROOT / "proxy" / "connection.py")
