"""`esproxy sync copy`'s plan: which of A's indices are copied, under which names in B, with which
mappings, settings and aliases (:func:`plan_indices`), and how it is printed (``--dry-run``)."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.clients.indexcopy import SettingsChoice, definition, mapping_conflicts, matching

from .compare import call, indices

TEMPLATE_VARIABLE = "{{remote_index}}"
_INVALID_NAME = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class UsageError(Exception):
    """Bad flags or patterns: exit 2 with this one line."""


# ---------------------------------------------------------------------------------------- naming


def template_rename(template: str) -> Callable[[str], str]:
    """``{{remote_index}}-sync`` -> a function from A's index name to B's."""
    if TEMPLATE_VARIABLE not in template:
        raise UsageError(f"--rename {template!r}: the template must contain {TEMPLATE_VARIABLE}")
    probe = template.replace(TEMPLATE_VARIABLE, "x")
    if _INVALID_NAME.search(probe) or probe[0] in "-_+" or probe in (".", ".."):
        raise UsageError(f'--rename {template!r}: gives invalid index names (lowercase, no \\ / * ? " < > | , # :)')
    return lambda index: template.replace(TEMPLATE_VARIABLE, index)


def split_patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


# SettingsChoice, mapping_conflicts and the index creation live in clients/indexcopy.py: the replay creates a
# followed index B lacks the same way (replay/followcreate.py), so that the copy adopts it.


# ---------------------------------------------------------------------------------------- the plan


@dataclass
class IndexPlan:
    source: str
    target: str
    count: int
    mappings: dict
    settings: dict[str, Any]  # flat keys, as chosen
    aliases: dict[str, dict]  # B's alias names -> their definitions
    exists: bool = False  # the target index exists already (with a compatible mapping)
    refused: str = ""  # why this index is not copied


@dataclass
class CopyOptions:
    batch: int = 500
    rate: Optional[float] = None  # documents/s
    max_bytes_per_second: Optional[float] = None
    concurrency: int = 1  # indices copied in parallel
    settings: SettingsChoice = field(default_factory=SettingsChoice)
    aliases: bool = True
    alias_rename: Optional[Callable[[str], str]] = None  # default: the index rename, else identity
    # per index: its settings choice and whether its aliases are copied (a sync rule's), else the above
    per_index: Optional[Callable[[str], tuple[SettingsChoice, bool]]] = None
    settle: float = 30.0  # seconds the final compare waits for the live stream to catch up
    show: int = 20


def plan_indices(
    source: Elastic,
    target: Elastic,
    patterns: list[str],
    exclude: list[str],
    rename: Callable[[str], Optional[str]],
    options: CopyOptions,
) -> list[IndexPlan]:
    found = indices(source, ",".join(patterns))
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(i, p) for i in found)]
    if unmatched:
        raise UsageError(f"no index in the source matches {', '.join(unmatched)}")
    chosen = sorted(i for i in found if not matching(exclude, i) and rename(i) is not None)
    if not chosen:
        raise UsageError(f"every index matching {','.join(patterns)} is excluded")
    names: dict[str, str] = {}
    for index in chosen:
        name = rename(index) or index
        if name in names:
            raise UsageError(f"{names[name]} and {index} would both be copied into {name}")
        names[name] = index
    alias_rename = options.alias_rename or (lambda a: rename(a) or a)
    plans = []
    for index in chosen:
        meta = call(source, "GET", f"/{index}")[index]
        choice, with_aliases = options.per_index(index) if options.per_index else (options.settings, options.aliases)
        d = definition(meta, choice, with_aliases, alias_rename)
        count = call(source, "GET", f"/{index}/_count").get("count", 0)
        plan = IndexPlan(index, rename(index) or index, count, d.mappings, d.settings, d.aliases)
        existing = target.request("GET", f"/{plan.target}/_mapping", {}, None)
        if existing.status == 200:
            plan.exists = True
            theirs = next(iter(json.loads(existing.body).values()), {}).get("mappings") or {}
            conflicts = mapping_conflicts(plan.mappings, theirs)
            if conflicts:
                plan.refused = f"{plan.target} exists in the target with another mapping ({', '.join(conflicts[:3])})"
        elif existing.status != 404:
            raise UpstreamError(target.target(f"/{plan.target}/_mapping"), f"status {existing.status}", timeout=False)
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------------- output


def print_plan(plans: list[IndexPlan], out: TextIO) -> None:
    for p in plans:
        if p.refused:
            print(f"{p.source} -> {p.target}: refused: {p.refused}", file=out)
            continue
        how = "exists in the target (compatible mapping): documents only" if p.exists else "create"
        print(f"{p.source} -> {p.target}: {p.count} docs, {how}", file=out)
        if not p.exists:
            print(f"  settings: {json.dumps(p.settings, sort_keys=True)}", file=out)
        print(f"  mappings: {json.dumps(p.mappings, sort_keys=True)}", file=out)
        if p.aliases:
            print(f"  aliases: {', '.join(sorted(p.aliases))}", file=out)
