"""The import graph of the esproxy package, read with ``ast``: every import, function-level ones
included (they run too, only later), ``if TYPE_CHECKING:`` blocks excluded (they never run).

The packages are floors that only look down (``cli``/``roles`` -> ``commands`` -> ``proxy`` ->
``replay`` -> ``admin`` -> ``clients`` -> ``core``, docs/architecture.md). Two ties of the config
still point up, each a design decision rather than a file move (issue 23); they are listed here so
that a new cycle fails this test, and so does a fixed one (then take it off the list):

- ``core.config`` imports ``clients.kafkasecurity`` (to check a Kafka entry's security settings),
  which imports ``core.config`` back, and ``clients.tls`` (function-level), which imports it too:
  a cycle of modules;
- ``core.config`` imports ``replay.follow`` (``Rules``, to check the follow rules), which imports
  ``core.schema``: a cycle of packages (``follow`` imports ``config`` only for type checking).

``proxy.prefork`` imports ``admin.profiling`` and ``admin.profiling`` names ``proxy.prefork.WorkerPool``
only for type checking: no cycle at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import esproxy

ROOT = Path(esproxy.__file__).parent

# Cycles between modules, each as the sorted list of its modules (strongly connected components).
KNOWN_MODULE_CYCLES = [["esproxy.clients.kafkasecurity", "esproxy.clients.tls", "esproxy.core.config"]]
# Cycles between packages (esproxy.cli, esproxy.roles and esproxy.__main__ are the package "esproxy").
KNOWN_PACKAGE_CYCLES = [["esproxy.admin", "esproxy.proxy"], ["esproxy.clients", "esproxy.core", "esproxy.replay"]]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that can run: all of them but the body of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the esproxy modules it imports (``from . import x`` counts the module x)."""
    paths = {_module(p): p for p in sorted(ROOT.rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        out: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    levels = package.split(".")
                    base = ".".join(levels[: len(levels) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names]
            for name in names:
                while name and name not in paths:  # esproxy.core.config.X -> esproxy.core.config
                    name = name.rpartition(".")[0]
                if name.startswith("esproxy") and name != module:
                    out.add(name)
        edges[module] = out
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / parts[-1]).is_dir() else "esproxy"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in edges.items():
        mine = _package(module)
        out.setdefault(mine, set()).update(p for p in map(_package, targets) if p != mine and p != "esproxy")
    return out


def test_the_graph_sees_relative_function_level_and_package_imports() -> None:
    edges = graph()
    assert "esproxy.commands.compare" in edges["esproxy.cli"]  # a function-level absolute import
    assert "esproxy.replay.lanes" in edges["esproxy.replay.consumer"]  # a relative one
    assert {"esproxy.core.labels", "esproxy.clients.kafkasecurity"} <= edges["esproxy.core.config"]  # from . import
    assert "esproxy.proxy.prefork" not in edges["esproxy.admin.profiling"]  # only under TYPE_CHECKING


def test_no_module_cycles_but_the_known_ones() -> None:
    assert _cycles(graph()) == KNOWN_MODULE_CYCLES


def test_no_package_cycles_but_the_known_ones() -> None:
    assert _cycles(package_graph(graph())) == KNOWN_PACKAGE_CYCLES
