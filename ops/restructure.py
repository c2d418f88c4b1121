#!/usr/bin/env python3
"""Issue 23, "a house a newcomer can read": move esproxy's modules into packages by role.

    python ops/restructure.py            # from the repository root, on a clean tree of the flat layout
    python ops/restructure.py --dry-run  # print what it would do, change nothing

Deterministic and re-runnable on any later main of the flat layout: it refuses to run on a dirty tree,
on a tree already restructured, or when esproxy/ holds a module the table below does not place (add it to
MOVES or TOP_LEVEL first). Then it:

1. rewrites every import of a moved module, in every Python file of the repository (esproxy/, tests/,
   bench/, ops/): within a package relative (``from .spool import Spool``), across packages absolute
   (``from esproxy.core.config import Config``); ``from esproxy import config`` and ``from . import
   kafkasecurity, labels`` are split by the package each module now lives in;
2. rewrites dotted module paths (``esproxy.source.kafka.KafkaReplay``) in code, strings, docstrings and
   comments, except logger names (``logging.getLogger("esproxy.spool")``, ``logger=...``): those are
   what operators see and grep, and do not move;
3. rewrites file paths of moved modules (``source/kafka.py``, ``esproxy/capture.py``, ``capture.py``) in
   every text file (docs, README, comments), keeping the columns of the ASCII diagrams in code blocks;
4. ``git mv``s the files, writes each new package's ``__init__.py`` (a docstring, no imports: a worker
   imports what it needs and nothing more), removes esproxy/source/ and esproxy/dest/;
5. applies the fixups a text rewrite cannot see (FIXUPS: file basenames and path segments in tests,
   pyproject's package list), then ``ruff check --select I --fix`` (import order) and ``ruff format``.

Nothing is committed: review with ``git status`` / ``git diff --cached`` and commit.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

# ---------------------------------------------------------------------------------------------------
# The mapping table: today's module (flat layout) -> its new home. Every module of esproxy/ must be
# either here or in TOP_LEVEL; the script refuses to run otherwise.
MOVES: dict[str, str] = {
    # proxy/: the proxy role, the HTTP front of cluster A, and its pre-fork workers
    "source.proxy": "proxy.handler",  # the request handler (ProxyApp)
    "source.limits": "proxy.limits",
    "source.httpheaders": "proxy.httpheaders",
    "source.readroute": "proxy.readroute",
    "capture": "proxy.capture",
    "autoids": "proxy.autoids",
    "settle": "proxy.settle",
    "spool": "proxy.spool",
    "fanout": "proxy.fanout",
    "recorder": "proxy.recorder",
    "prefork": "proxy.prefork",
    "worker": "proxy.worker",
    "listeners": "proxy.listeners",
    "readnames": "proxy.readnames",
    "readonly": "proxy.readonly",
    "leadership": "proxy.leadership",
    "channel": "proxy.channel",
    "inflight": "proxy.inflight",  # maxInFlightBytes, shared by the workers
    # replay/: the replay role, Kafka -> cluster B, and the follower sync rules
    "source.kafka": "replay.consumer",  # the consumer group (KafkaReplay)
    "source.lanes": "replay.lanes",
    "source.followcreate": "replay.followcreate",
    "source.groupwatch": "replay.groupwatch",
    "source.followed": "replay.followed",
    "source.kafka_deadletters": "replay.deadletters",  # the replay's dead letters (topic or file)
    "follow": "replay.follow",
    "followcontrol": "replay.followcontrol",
    "ratelimit": "replay.ratelimit",
    # commands/: the one-shot commands of the CLI
    "compare": "commands.compare",
    "repair": "commands.repair",
    "synccopy": "commands.synccopy",
    "syncctl": "commands.syncctl",
    "switchover": "commands.switchover",
    "dlq": "commands.dlq",
    # admin/: the admin endpoints and what they read
    "admin": "admin.server",  # /_esproxy/health|stats|metrics (Admin)
    "health": "admin.health",
    "profiling": "admin.profiling",
    # clients/: talking to Elasticsearch and Kafka
    "dest.elastic": "clients.elastic",
    "dest.lean": "clients.lean",
    "dest.kafka": "clients.producer",  # the proxy's producer (KafkaDest)
    "dest.refusals": "clients.refusals",
    "indexcopy": "clients.indexcopy",  # an index's definition read from A, created in B (copy and replay)
    "kafkaconnect": "clients.kafkaconnect",
    "kafkasecurity": "clients.kafkasecurity",
    "tls": "clients.tls",
    # core/: the contract (beans, messages, dead letters) and what every floor uses
    "bean": "core.bean",
    "messages": "core.messages",
    "bulk": "core.bulk",
    "deadletters": "core.deadletters",  # the dead-letter format both roles write (the design put it in replay/)
    "routing": "core.routing",
    "mediatype": "core.mediatype",
    "labels": "core.labels",
    "retry": "core.retry",
    "deadlines": "core.deadlines",
    "signals": "core.signals",
    "secretrefs": "core.secretrefs",
    "schema": "core.schema",
    "config": "core.config",
    "logs": "core.logs",
    "stats": "core.stats",  # the counters every floor increments (the design put it in admin/)
    "wsgi": "core.wsgi",
}
TOP_LEVEL = {"__init__", "__main__", "cli", "roles"}
GONE_PACKAGES = ["source", "dest"]  # today's subpackages, emptied by the move

# Each new package's __init__.py: what it is, and what it may import.
PACKAGES: dict[str, str] = {
    "commands": (
        "The one-shot commands of the CLI: compare, repair, the initial copy and the follow rules' control\n"
        "(``esproxy sync``), switchover and failover, dead letters (``esproxy dlq``). Each is a ``main`` that\n"
        "cli.py dispatches to; they reach the clusters, Kafka and the roles' admin endpoints through\n"
        "clients/, and use the proxy's and the replay's own pieces where they must agree with them (the\n"
        "capture's versions, the switchover's state, the follow rules)."
    ),
    "proxy": (
        "The proxy role: the HTTP front of cluster A. The request handler forwards each request to A,\n"
        "captures the answer of a successful write as beans and keeps them (write-ahead spool or in-memory\n"
        "queue) until the producer has shipped them to Kafka; with ``workers: N`` a master and its pre-fork\n"
        "workers share the listeners. Also the reads routed to followers and the switchover's leader and\n"
        "write pause. Uses the follow rules of replay/ (B's index names, read-only followers), admin/ (a\n"
        "worker's admin endpoints and profiles), clients/ and core/."
    ),
    "replay": (
        "The replay role: a Kafka consumer group that replays the captured writes into cluster B, one lane\n"
        "per partition, through the follower sync rules (which of A's indices are followed, under which\n"
        "names, at which rate; changed at runtime through the admin port), with its dead letters. Uses\n"
        "clients/ and core/; never the proxy's modules."
    ),
    "admin": (
        "What a running role says about itself: the admin endpoints ``/_esproxy/health|stats|metrics``,\n"
        "the health verdict, and the SIGUSR1 profiles. Uses clients/ and core/."
    ),
    "clients": (
        "Talking to the outside: pooled HTTP to an Elasticsearch/OpenSearch cluster (and the lean request\n"
        "path on geventhttpclient), the proxy's Kafka producer and which of its refusals are for good, the\n"
        "Kafka connection settings (security, SASL) and TLS contexts. Uses core/ only."
    ),
    "core": (
        "What every floor uses: the message contract (beans, Kafka messages, the dead-letter format,\n"
        "``_bulk``), the settings declaration and its loader, the counters, retries and deadlines, the log\n"
        "format and secret masking, signals, and the WSGI error bodies every listener answers with. Imports\n"
        "nothing above it but for two ties (the config checks the follow rules and the Kafka security\n"
        "settings, see tests/test_unit_import_graph.py)."
    ),
}
ORDER = list(PACKAGES)  # top to bottom: each imports only the ones after it (but for the known ties)

# Text files the rewrite looks at (besides Python files), by name or suffix.
TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".ini", ".txt", ".yml", ".yaml", ".conf", ".sh"}
TEXT_NAMES = {"Makefile"}
SELF = "ops/restructure.py"


# Fixups a text rewrite cannot see, applied to today's text before the rewrite: (file, old text, new
# text, strict). Each must match exactly once; a strict one that does not stops the script (a test or
# the code would break), a loose one (docs) is skipped with a warning.
def fixups() -> list[tuple[str, str, str, bool]]:
    profiling = "tests/test_ops_profiling.py"
    return [
        # cProfile's rows name a function by its file's basename: the handler is handler.py now.
        (profiling, '("proxy.py", "_handle") in funcs', '("handler.py", "_handle") in funcs', True),
        (profiling, '("proxy.py", "_handle") in _functions', '("handler.py", "_handle") in _functions', True),
        # The longer module paths would make this docstring line 121 characters long.
        (
            "esproxy/admin.py",
            "esproxy.followcontrol) or the switchover (the proxy's; esproxy.leadership); None for other paths.",
            "esproxy.followcontrol) or the switchover (the proxy's; esproxy.leadership); None for\n"
            "        other paths.",
            True,
        ),
        # The diagram, redrawn with the new paths (a rewrite in place would break its columns).
        ("docs/architecture.md", DIAGRAM_BEFORE, DIAGRAM_AFTER, False),
        # A newcomer's map: the packages, from PACKAGES below, before the module list.
        ("docs/architecture.md", "\n## Modules\n", "\n" + packages_section() + "\n## Modules\n", False),
    ]


DIAGRAM_BEFORE = """\
```
 proxy role (conf1.yml)                                            replay role (conf2.yml)

 client ─HTTP─▶ source/proxy.py ──forward──▶ dest/elastic.py ─▶ A
                 │  autoids.py  (ids for auto-id writes)
                 │  capture.py  (A's answer → beans)
                 │  settle.py   (writes of unknown outcome, after a crash)
                 ▼
      recorder.py: Recorder ── fanout.py ─┬─ spool.py (write-ahead, fsync)
      (worker.py: MasterFanout            └─ in-memory queue (durability: none)
       through prefork.py/channel.py)       │
                                            ▼
                                  dest/kafka.py ── messages.py ──▶ Kafka ──▶ source/kafka.py
                                  (refused for good:                        │  source/lanes.py (one per partition)
                                   dest/refusals.py →                       │  messages.Assembler (chunks)
                                   spool/deadletters.jsonl)                 ▼
                                  dest/elastic.py (rests: HTTP backups)   dest/elastic.py ─▶ B
                                                                          (never applicable:
                                                                           source/kafka_deadletters.py)
```

"""
DIAGRAM_AFTER = """\
```
 proxy role (conf1.yml)                                              replay role (conf2.yml)

 client ─HTTP─▶ proxy/handler.py ──forward──▶ clients/elastic.py ─▶ A
                 │  proxy/autoids.py  (ids for auto-id writes)
                 │  proxy/capture.py  (A's answer → beans)
                 │  proxy/settle.py   (writes of unknown outcome, after a crash)
                 ▼
      proxy/recorder.py: Recorder ── proxy/fanout.py ─┬─ proxy/spool.py (write-ahead, fsync)
      (proxy/worker.py: MasterFanout through          └─ in-memory queue (durability: none)
       proxy/prefork.py and proxy/channel.py)            │
                                                         ▼
                      clients/producer.py ── core/messages.py ──▶ Kafka ──▶ replay/consumer.py
                      (refused for good:                                    │  replay/lanes.py (one per partition)
                       clients/refusals.py →                                │  messages.Assembler (chunks)
                       spool/deadletters.jsonl)                             ▼
                      clients/elastic.py (rests: HTTP backups)            clients/elastic.py ─▶ B
                                                                          (never applicable:
                                                                           replay/deadletters.py)
```
"""


def packages_section() -> str:
    """docs/architecture.md's list of packages, from each package's docstring."""
    lines = [
        "## Packages",
        "",
        "`ls esproxy/` says what the program is. Each package imports only the ones below it in this list",
        "(but for two ties of core/'s config, listed in `tests/test_unit_import_graph.py`):",
        "",
        "- `cli.py` (the command line, `__main__.py`) and `roles.py` (starts what a config enables, stops it",
        "  on signals; the master of the pre-fork workers) — the top.",
    ]
    for package in ORDER:
        doc = " ".join(PACKAGES[package].replace("``", "`").split())
        words, line, out = doc.split(), f"- `{package}/` —", []
        for word in words:
            if len(line) + 1 + len(word) > 100:
                out.append(line)
                line = " "
            line += " " + word
        lines += [*out, line]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
OLD = {f"esproxy.{k}": f"esproxy.{v}" for k, v in MOVES.items()}
OLD_PACKAGES = {f"esproxy.{p}" for p in GONE_PACKAGES}
NEW_PACKAGES = {f"esproxy.{p}" for p in PACKAGES}


def die(message: str) -> None:
    print(f"restructure: {message}", file=sys.stderr)
    sys.exit(2)


def git(*args: str, capture: bool = True) -> str:
    run = subprocess.run(["git", *args], check=True, text=True, capture_output=capture)
    return run.stdout if capture else ""


def old_module_of(path: str) -> str | None:
    """esproxy/source/kafka.py -> esproxy.source.kafka; esproxy/dest/__init__.py -> esproxy.dest."""
    if not (path.startswith("esproxy/") and path.endswith(".py")):
        return None
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def new_module(old: str) -> str:
    return OLD.get(old, old)


def new_path(old: str) -> str:
    return new_module(old).replace(".", "/") + ".py"


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rsplit(".", 1)[0]


# --- checks ----------------------------------------------------------------------------------------
def preflight(files: list[str]) -> None:
    if not Path("pyproject.toml").is_file() or not Path("esproxy/__init__.py").is_file():
        die("run me from the repository root (where pyproject.toml and esproxy/ are)")
    if git("status", "--porcelain", "--untracked-files=no").strip():
        die("the tree has uncommitted changes: commit or stash them first")
    done = [p for p in PACKAGES if Path("esproxy", p, "__init__.py").exists()]
    if done or not Path("esproxy/source").is_dir():
        die(f"already restructured (esproxy/{', esproxy/'.join(done) or '?'} exists, esproxy/source does not?)")
    modules = {old_module_of(f) for f in files if old_module_of(f)}
    unplaced = sorted(
        m
        for m in modules
        if m not in OLD and m not in OLD_PACKAGES and m != "esproxy" and m.split(".", 1)[1] not in TOP_LEVEL
    )
    if unplaced:
        die(f"modules the table does not place: {', '.join(unplaced)}; add them to MOVES (or TOP_LEVEL)")
    missing = sorted(m for m in OLD if m not in modules)
    if missing:
        die(f"modules of the table that are gone: {', '.join(missing)}; update MOVES")
    for pkg in GONE_PACKAGES:
        init = Path("esproxy", pkg, "__init__.py")
        leftover = [
            n for n in ast.parse(init.read_text(encoding="utf-8")).body if not isinstance(n, ast.Expr)
        ]  # a docstring only
        if leftover:
            die(f"{init} holds code; move it by hand first")


# --- Python rewrite ---------------------------------------------------------------------------------
class Edits:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.edits: list[tuple[int, int, str]] = []
        self.protected: list[tuple[int, int]] = []

    def offset(self, lineno: int, col: int) -> int:
        """ast's (line, UTF-8 byte column) -> offset in text."""
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def is_protected(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.protected)

    def apply(self) -> str:
        text = self.text
        for start, end, new in sorted(self.edits, reverse=True):
            text = text[:start] + new + text[end:]
        return text


def resolve(level: int, module: str | None, package: str | None) -> str | None:
    if not level:
        return module
    if package is None:
        return None  # a relative import outside esproxy: not ours
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - level + 1]
    return ".".join(base + ([module] if module else []))


def reference(target: str, here_package: str | None) -> str:
    """How a file in ``here_package`` (None: outside esproxy) names ``target`` in a from-import."""
    if here_package is None:
        return target
    if target == here_package:
        return "."
    if target.rsplit(".", 1)[0] == here_package and target != "esproxy" and target not in NEW_PACKAGES:
        return "." + target.rsplit(".", 1)[1]
    return target


def rewrite_imports(tree: ast.AST, edits: Edits, old_package: str | None, new_package: str | None) -> int:
    changed = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        start, end = edits.span(node)
        edits.protected.append((start, end))
        target = resolve(node.level, node.module, old_package)
        if target is None or not (target == "esproxy" or target.startswith("esproxy.")):
            continue
        if target in OLD_PACKAGES or target == "esproxy":
            # from esproxy import config, labels / from . import kafkasecurity / from esproxy.dest import lean
            groups: dict[str, list[str]] = {}
            moved = False
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in OLD:
                    moved = True
                    where, leaf = OLD[sub].rsplit(".", 1)
                    name = leaf if (alias.asname or alias.name) == leaf else f"{leaf} as {alias.asname or alias.name}"
                else:
                    if target in OLD_PACKAGES:
                        die(f"{alias.name} of {target}: not in the table")
                    where, name = target, alias.name if not alias.asname else f"{alias.name} as {alias.asname}"
                groups.setdefault(where, []).append(name)
            if not moved and reference(target, new_package) == _spec(edits.text[start:end]):
                continue
            indent = re.match(r"[ \t]*", edits.lines[node.lineno - 1]).group(0)
            statements = [
                f"from {reference(where, new_package)} import {', '.join(names)}" for where, names in groups.items()
            ]
            edits.edits.append((start, end, f"\n{indent}".join(statements)))
            changed += 1
            continue
        spec = reference(new_module(target), new_package)
        source = edits.text[start:end]
        m = re.match(r"from\s+([.\w\s]+?)\s+import\b", source)
        if m is None:
            die(f"cannot read the import {source!r}")
        if re.sub(r"\s", "", m.group(1)) != spec:
            edits.edits.append((start + m.start(1), start + m.end(1), spec))
            changed += 1
    return changed


def _spec(statement: str) -> str:
    m = re.match(r"from\s+([.\w\s]+?)\s+import\b", statement)
    return re.sub(r"\s", "", m.group(1)) if m else ""


def protect_logger_names(tree: ast.AST, edits: Edits) -> None:
    """Logger names look like module paths but are what operators see: they do not move."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            args = list(node.args[:1]) if name == "getLogger" else []
            args += [k.value for k in node.keywords if k.arg == "logger"]
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    edits.protected.append(edits.span(arg))


# Dotted paths: esproxy.source.kafka(.X) -> esproxy.replay.consumer(.X); longest first.
_DOTTED = re.compile(
    r"(?<![\w.])esproxy\.(" + "|".join(re.escape(k) for k in sorted(MOVES, key=len, reverse=True)) + r")(?!\w)"
)


def dotted(text: str, edits: Edits | None) -> list[tuple[int, int, str]]:
    out = []
    for m in _DOTTED.finditer(text):
        if edits is not None and edits.is_protected(m.start(), m.end()):
            continue
        out.append((m.start(), m.end(), "esproxy." + MOVES[m.group(1)]))
    return out


# File paths: (esproxy/)source/kafka.py -> (esproxy/)replay/consumer.py; bare top-level names too.
_PATHS = {k.replace(".", "/"): v.replace(".", "/") for k, v in MOVES.items()}
_PATH = re.compile(
    r"(?<![\w/.-])(esproxy/)?(" + "|".join(re.escape(k) for k in sorted(_PATHS, key=len, reverse=True)) + r")\.py(?!\w)"
)


def paths(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), (m.group(1) or "") + _PATHS[m.group(2)] + ".py") for m in _PATH.finditer(text)]


def overlapping(edit: tuple[int, int, str], others: list[tuple[int, int, str]]) -> bool:
    return any(edit[0] < e and s < edit[1] for s, e, _ in others)


# Path segments in code: ROOT / "source" / "kafka.py" -> ROOT / "replay" / "consumer.py".
_SEGMENTS = re.compile(r'"(' + "|".join(GONE_PACKAGES) + r')" / "(\w+)\.py"')


def segments(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _SEGMENTS.finditer(text):
        new = MOVES.get(f"{m.group(1)}.{m.group(2)}")
        if new is None:
            die(f"{m.group(0)}: not in the table")
        package, leaf = new.split(".")
        out.append((m.start(), m.end(), f'"{package}" / "{leaf}.py"'))
    return out


def rewrite_python(path: str, text: str) -> tuple[str, int]:
    old = old_module_of(path)
    if old is None:
        old_package = new_package = None
    else:
        is_package = path.endswith("__init__.py")
        old_package = package_of(old, is_package)
        new_package = package_of(new_module(old), is_package)
    tree = ast.parse(text, filename=path)
    edits = Edits(text)
    changed = rewrite_imports(tree, edits, old_package, new_package)
    protect_logger_names(tree, edits)
    more = [e for e in dotted(text, edits) + paths(text) + segments(text) if not edits.is_protected(e[0], e[1])]
    edits.edits += [e for e in more if not overlapping(e, edits.edits)]
    return edits.apply(), changed + len(more)


def rewrite_text(path: str, text: str) -> tuple[str, int]:
    """Docs and other text: dotted module paths and file paths; in code blocks, keep the columns."""
    found = sorted(dotted(text, None) + paths(text))
    if not found:
        return text, 0
    fences = [m.start() for m in re.finditer(r"^```", text, re.M)] if path.endswith(".md") else []

    def in_block(pos: int) -> bool:
        return sum(1 for f in fences if f < pos) % 2 == 1

    out, last = [], 0
    for start, end, new in found:
        out.append(text[last:start])
        out.append(new)
        last = end
        if in_block(start):
            # eat (or add) as many spaces from the next run of 2+ spaces on this line as the name grew
            grow = len(new) - (end - start)
            eol = text.find("\n", end)
            eol = len(text) if eol < 0 else eol
            gap = re.compile(r"  +").search(text, end, eol)
            if gap and grow and not any(end <= s < gap.end() for s, _, _ in found):
                width = max(1, len(gap.group(0)) - grow)
                out.append(text[end : gap.start()] + " " * width)
                last = gap.end()
    out.append(text[last:])
    return "".join(out), len(found)


# --- main -------------------------------------------------------------------------------------------
def is_text_target(path: str) -> bool:
    if path == SELF or path.startswith("tests/engines/") and not path.endswith(".py"):
        return False
    p = Path(path)
    if p.name in TEXT_NAMES or p.suffix in TEXT_SUFFIXES:
        return True
    if not p.suffix and p.is_file():
        head = p.read_bytes()[:64]
        return head.startswith(b"#!") and (b"python" in head or b"sh" in head)
    return False


def is_python(path: str, text: str) -> bool:
    return path.endswith(".py") or (not Path(path).suffix and text.startswith("#!") and "python" in text[:64])


def ruff() -> list[str]:
    local = Path(".venv/bin/ruff")
    exe = str(local) if local.exists() else shutil.which("ruff")
    if exe is None:
        die("ruff not found (make install, or put ruff on PATH)")
    return [exe]


def main() -> int:
    dry = "--dry-run" in sys.argv[1:]
    files = sorted(git("ls-files").splitlines())
    preflight(files)

    # 0: the fixups, on today's text; 1-3: every file's new text, computed before anything moves.
    originals: dict[str, str] = {}
    for path, old_text, new_text, strict in fixups():
        text = originals.get(path, Path(path).read_text(encoding="utf-8"))
        if text.count(old_text) != 1:
            message = f"fixup of {path} no longer applies: {old_text[:60]!r}... found {text.count(old_text)} times"
            if strict:
                die(message + "; update fixups()")
            print(f"WARNING  {message}: skipped, see to it by hand")
            continue
        originals[path] = text.replace(old_text, new_text)
        print(f"fixup    {path}: {old_text[:50]!r}...")
    new_texts: dict[str, str] = {}
    for path in files:
        if not is_text_target(path) or not Path(path).is_file():
            continue
        before = Path(path).read_text(encoding="utf-8")
        text = originals.get(path, before)
        updated, count = rewrite_python(path, text) if is_python(path, text) else rewrite_text(path, text)
        if updated != before:
            new_texts[path] = updated
            print(f"rewrite  {path} ({count} references)")
    if dry:
        for old in OLD:
            print(f"move     {old.replace('.', '/')}.py -> {new_path(old)}")
        return 0

    # 4: move.
    for package in PACKAGES:
        Path("esproxy", package).mkdir(exist_ok=True)
    for old in OLD:
        src = old.replace(".", "/") + ".py"
        dst = new_path(old)
        git("mv", src, dst)
        print(f"move     {src} -> {dst}")
        if src in new_texts:
            new_texts[dst] = new_texts.pop(src)
    for package in GONE_PACKAGES:
        git("rm", "-q", f"esproxy/{package}/__init__.py")
        shutil.rmtree(f"esproxy/{package}", ignore_errors=True)  # __pycache__
        print(f"remove   esproxy/{package}/")
    for package, doc in PACKAGES.items():
        init = Path("esproxy", package, "__init__.py")
        init.write_text(f'"""{doc}\n"""\n', encoding="utf-8")
        print(f"create   {init}")
    for path, text in new_texts.items():
        Path(path).write_text(text, encoding="utf-8")

    # 5: pyproject's package list, then import order and format.
    pyproject = Path("pyproject.toml")
    text = pyproject.read_text(encoding="utf-8")
    listed = ", ".join(f'"esproxy.{p}"' for p in PACKAGES)
    text, n = re.subn(r"(?m)^packages = \[.*\]$", f'packages = ["esproxy", {listed}]', text)
    if n != 1:
        die("pyproject.toml: no `packages = [...]` line under [tool.setuptools]")
    pyproject.write_text(text, encoding="utf-8")
    print("fixup    pyproject.toml: [tool.setuptools] packages")

    python = sorted({*[p for p in new_texts if p.endswith(".py")], *(f"esproxy/{p}/__init__.py" for p in PACKAGES)})
    scripts = [p for p in new_texts if not p.endswith(".py") and is_python(p, new_texts[p])]
    subprocess.run([*ruff(), "check", "-q", "--select", "I", "--fix", *python, *scripts], check=False)
    subprocess.run([*ruff(), "format", "-q", "esproxy", "tests", "bench"], check=True)
    git("add", "-u")
    git("add", *(f"esproxy/{p}/__init__.py" for p in PACKAGES))
    return check()


def check() -> int:
    """What the move must leave: no name of the flat layout, every module importable, ruff clean."""
    problems = 0
    stale = re.compile(r"esproxy[./](source|dest)\b|from \.(source|dest)\b")
    for path in sorted(git("ls-files").splitlines()):
        if path != SELF and is_text_target(path) and Path(path).is_file():
            for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
                if stale.search(line):
                    print(f"CHECK    {path}:{n}: still names the flat layout: {line.strip()}")
                    problems += 1
    modules = sorted(
        ".".join(Path(p).with_suffix("").parts).removesuffix(".__init__")
        for p in git("ls-files", "esproxy").splitlines()
        if p.endswith(".py") and not p.endswith("__main__.py")
    )
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    python = ".venv/bin/python" if Path(".venv/bin/python").exists() else sys.executable
    if subprocess.run([python, "-c", code, *modules]).returncode:
        print("CHECK    a module does not import (above)")
        problems += 1
    lint = ["esproxy", "tests", "bench", "ops/demo-server", "ops/update-config-reference"]
    if subprocess.run([*ruff(), "check", "-q", *lint]).returncode:
        print("CHECK    ruff check (above)")
        problems += 1
    if problems:
        print(f"staged, with {problems} problem(s) to see to before committing")
        return 1
    print(f"staged: {len(modules)} modules import, ruff clean; review with `git diff --cached --stat`, then commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
