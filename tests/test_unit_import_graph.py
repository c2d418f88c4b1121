"""The import graph of the esproxy package, read with ``ast``: every import, function-level ones
included (they run too, only later), ``if TYPE_CHECKING:`` blocks excluded (they never run).

The packages are floors that only look down (``cli`` -> ``roles``/``commands`` -> ``configfile`` ->
``proxy`` -> ``replay`` -> ``admin`` -> ``clients`` -> ``core``, docs/architecture.md); lint-imports
checks the floors and the roles' faces (pyproject.toml, ``[tool.importlinter]``, run by ``make lint``),
this test that no circle is left between modules, even within a package, and between packages.

The ties that pointed up after the move (issue 23) are cut: the settings declaration (``core.config``)
no longer imports the follow rules or the Kafka security checks (esproxy/configfile.py runs them
after loading); the admin reads the proxy's bytes in flight through ``AdminView`` and types the
pre-fork workers it profiles with a Protocol of its own. A cycle found here is a new one: cut it,
do not list it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import esproxy

ROOT = Path(esproxy.__file__).parent

# Cycles between modules, each as the sorted list of its modules (strongly connected components).
KNOWN_MODULE_CYCLES: list[list[str]] = []
# Cycles between packages (esproxy.cli, esproxy.roles, esproxy.configfile and esproxy.__main__ are the package
# "esproxy").
KNOWN_PACKAGE_CYCLES: list[list[str]] = []


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
    assert {"esproxy.core.labels", "esproxy.core.secretrefs"} <= edges["esproxy.core.config"]  # from . import
    assert "esproxy.clients.kafkasecurity" in edges["esproxy.configfile"]  # from a package import a module
    assert "esproxy.core.config" not in edges["esproxy.replay.follow"]  # only under TYPE_CHECKING


def test_no_module_cycles_but_the_known_ones() -> None:
    assert _cycles(graph()) == KNOWN_MODULE_CYCLES


def test_no_package_cycles_but_the_known_ones() -> None:
    assert _cycles(package_graph(graph())) == KNOWN_PACKAGE_CYCLES
