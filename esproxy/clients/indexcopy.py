"""B's copy of one of A's indices: A's mappings, the chosen settings and aliases.

Shared by the initial copy (``esproxy sync copy``, commands/synccopy.py) and the replay (replay/followcreate.py),
so that a followed index the replay creates in B before the copy reaches it is the index the copy
would have made, and the copy adopts it: :func:`mapping_conflicts` finds none.

- :class:`SettingsChoice` picks A's settings B gets (never those A computed or that name A's nodes);
- :func:`definition` reads an index of A (``GET /<index>``) into a :class:`Definition`;
- :func:`create` creates B's index from it, leaving out a setting B does not know;
- :func:`mapping_conflicts` compares two mappings on the fields both define, in a normal form (the
  values Elasticsearch and OpenSearch write as strings or as booleans/numbers, a 6.x type level).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import quote

from .elastic import Elastic, Response

# Elasticsearch's and OpenSearch's answer to an index setting they do not know.
UNKNOWN_SETTING = re.compile(r"unknown setting \[([^\]]+)\]")
# Index settings A computed or that name A's nodes: never copied (number_of_replicas only when asked).
COMPUTED_SETTINGS = (
    "index.uuid",
    "index.creation_date",
    "index.creation_date_string",
    "index.provided_name",
    "index.version.*",
    "index.routing.*",
    "index.resize.*",
    "index.shrink.*",
    "index.blocks.*",
    "index.history.uuid",
    "index.verified_before_close",
    "index.frozen",
    "index.search.throttled",
    "index.downsample.*",
)
# What B answers when the index exists already (another replay, the copy, an earlier run created it).
ALREADY_EXISTS = (b"resource_already_exists_exception", b"index_already_exists_exception")


def matching(patterns: list[str] | tuple[str, ...], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclass
class SettingsChoice:
    """Which of A's index settings B gets: include/exclude patterns over flat keys (``index.analysis.*``)."""

    include: list[str] = field(default_factory=lambda: ["index.*"])
    exclude: list[str] = field(default_factory=list)
    replicas: bool = False  # number_of_replicas too (B's cluster has its own nodes)
    synced: Optional[Callable[[str], bool]] = None  # a sync rule's choice (follow.Rule.setting_synced) instead

    def choose(self, settings: dict) -> dict[str, Any]:
        if self.synced is not None:
            return {
                k: v
                for k, v in sorted(flatten(settings).items())
                if self.synced(k) and not matching(COMPUTED_SETTINGS, k)
            }
        dropped = list(COMPUTED_SETTINGS) + list(self.exclude)
        if not self.replicas:
            dropped += ["index.number_of_replicas", "index.auto_expand_replicas"]
        return {
            key: value
            for key, value in sorted(flatten(settings).items())
            if matching(self.include, key) and not matching(dropped, key)
        }


@dataclass
class Definition:
    """What B's index is created with."""

    mappings: dict
    settings: dict[str, Any]  # flat keys, as chosen
    aliases: dict[str, dict]  # B's alias names -> their definitions


def definition(
    meta: dict, choice: SettingsChoice, aliases: bool, alias_rename: Callable[[str], str] = lambda a: a
) -> Definition:
    """B's definition of an index of A, from A's ``GET /<index>`` entry for it."""
    return Definition(
        meta.get("mappings") or {},
        choice.choose(meta.get("settings") or {}),
        {alias_rename(a): d for a, d in (meta.get("aliases") or {}).items()} if aliases else {},
    )


def read(source: Elastic, index: str) -> Optional[dict]:
    """A's ``GET /<index>`` entry for ``index``; None if A has no index of that name (404, or the name
    is an alias or a pattern: the answer names other indices). Raises UpstreamError if A cannot be
    asked, ValueError for another status or an answer that is not JSON."""
    r = source.request("GET", "/" + quote(index, safe=""), {}, None)
    if r.status == 404:
        return None
    if r.status != 200:
        raise ValueError(f"status {r.status}: {r.body[:300].decode('utf-8', 'replace')}")
    entry = json.loads(r.body).get(index)
    return entry if isinstance(entry, dict) else None


def create(target: Elastic, name: str, d: Definition, left_out: Callable[[str], None]) -> Response:
    """Create B's index ``name``; a setting B does not know (one of another engine or plugin, such as
    OpenSearch's ``index.replication.type`` on Elasticsearch) is left out of ``d.settings`` and named
    to ``left_out``. B's answer: 2xx, or what it refused (:func:`already_exists` when it has the index)."""
    while True:
        body: dict = {"settings": d.settings, "mappings": d.mappings}
        if d.aliases:
            body["aliases"] = d.aliases
        r = target.request(
            "PUT", "/" + quote(name, safe=""), {"Content-Type": "application/json"}, json.dumps(body).encode()
        )
        unknown = UNKNOWN_SETTING.search(r.body.decode("utf-8", "replace")) if r.status == 400 else None
        if unknown is None or unknown.group(1) not in d.settings:
            return r
        del d.settings[unknown.group(1)]
        left_out(unknown.group(1))


def already_exists(r: Response) -> bool:
    return r.status == 400 and any(marker in r.body for marker in ALREADY_EXISTS)


def mapping_conflicts(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Fields both mappings define, differently. A field only one side has is no conflict: B may
    lack fields A added since (PUT _mapping adds them) or hold fields the stream mapped first. Values
    are compared in a normal form: ``true`` and ``"true"``, ``256`` and ``"256"`` are the same, and a
    mapping under one type name (Elasticsearch 6.x, ``{"_doc": {...}}``) is that type's mapping."""
    return _conflicts(_untyped(ours), _untyped(theirs), path)


def _conflicts(ours: Any, theirs: Any, path: str) -> list[str]:
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return [] if _scalar(ours) == _scalar(theirs) else [path or "(mapping)"]
    conflicts = []
    for key in sorted(ours.keys() & theirs.keys()):
        if key == "properties" or key == "fields" or isinstance(ours[key], dict) and "type" not in ours[key]:
            conflicts += _conflicts(ours[key], theirs[key], f"{path}.{key}" if path else key)
        elif _normal(ours[key]) != _normal(theirs[key]):
            conflicts.append(f"{path}.{key}" if path else key)
    return conflicts


_MAPPING_KEYS = {"properties", "dynamic", "_source", "_routing", "_meta", "dynamic_templates", "enabled"}


def _untyped(mapping: Any) -> Any:
    """``{"_doc": {"properties": ...}}`` (a 6.x mapping under its type) -> ``{"properties": ...}``."""
    if isinstance(mapping, dict) and len(mapping) == 1:
        ((key, value),) = mapping.items()
        if key not in _MAPPING_KEYS and isinstance(value, dict) and (not value or value.keys() & _MAPPING_KEYS):
            return value
    return mapping


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return _scalar(value)
