"""Apply the sync rules (replay/follow.py) to the writes the replay is about to send to B.

Pure: a bean in, what to send out. Each index a write names is looked up in the rules: a followed
index is renamed to its B name, an unfollowed one is dropped from the write (and reported, so the
replay counts it); a write left with nothing to do is skipped. A write that names a followed index in
a way that cannot be rewritten faithfully (a wildcard or date math expression that may match a
followed index, a `_reindex` from an unfollowed index into a followed one...) comes back with a
``problem``: the replay writes it to the dead letters.

What each kind of write becomes (docs/operations.md, Follower sync, says the same for operators):

- document beans and `_bulk` bodies: each action by its own `_index` (else the path's index);
- single-document paths, `_mapping`, `_update_by_query`/`_delete_by_query`, open/close, delete:
  the path's index list, followed parts renamed, unfollowed parts dropped;
- index creation: settings filtered by the rule (follow.Rule.setting_synced), aliases only with
  ``aliases: true``; `_settings` updates only with ``settings: true`` (filtered);
- `_aliases` actions and `/idx/_alias/name`: only with ``aliases: true``, the index renamed, the
  alias name kept (``remove_index`` is an index deletion and is followed whatever ``aliases``);
- index, component and legacy templates: skipped (counted as ``(templates)``), since their
  ``index_patterns`` name A's indices and B's are renamed: create B's templates yourself;
- writes that name no index (cluster settings, pipelines, scripts): replayed as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Optional
from urllib.parse import quote, unquote

from esproxy.core.bean import Bean
from esproxy.core.bulk import BulkFormatError, parse_request

from .follow import Rule, Rules, Target

TEMPLATES = "(templates)"
_TEMPLATE_APIS = ("_template", "_index_template", "_component_template")
_RESIZE_APIS = ("_shrink", "_split", "_clone")
_ALIAS_APIS = ("_alias", "_aliases")


@dataclass
class Outcome:
    """What a write becomes: the beans to send (none: skipped), the A indices dropped from it, or a
    problem (dead letter) when it cannot be rewritten faithfully."""

    beans: list[Bean] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problem: str = ""
    paused: str = ""  # the paused rule a write names: it waits (the replay stops short before it)
    rules: list[Rule] = field(default_factory=list)  # the rules whose indices it names or may match (a wildcard)


class _Seen:
    """The rules, noting the targets looked up (to tell whether a write names a paused rule's index)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.targets: list[Target] = []
        self.wild: list[Rule] = []  # rules a wildcard of the write may match

    def touched(self) -> list[Rule]:
        """The rules of the indices looked up and those a wildcard may match, each once, in that order."""
        found = {t.rule.name: t.rule for t in self.targets}
        for rule in self.wild:
            found.setdefault(rule.name, rule)
        return list(found.values())

    def target(self, index: str) -> Optional[Target]:
        found = self.rules.target(index)
        if found is not None:
            self.targets.append(found)
        return found

    def may_follow(self, pattern: str) -> bool:
        found = self.rules.may_follow_rules(pattern)
        self.wild += found
        return bool(found)

    def paused(self) -> str:
        return next((t.rule.name for t in self.targets if self.rules.paused(t)), "")


class _Unfaithful(Exception):
    pass


def follow_docs(rules: Rules, chunks: list[bytes]) -> tuple[list[bytes], list[str], str]:
    """Versioned document actions (one chunk each: bulk.split_actions) with their `_index` renamed;
    the actions of unfollowed indices dropped, their indices returned; the paused rule one names."""
    seen = _Seen(rules)
    kept: list[bytes] = []
    skipped: list[str] = []
    for chunk in chunks:
        head, nl, rest = chunk.partition(b"\n")
        action = json.loads(head)
        verb, meta = next(iter(action.items()))
        index = str(meta.get("_index", ""))
        target = seen.target(index)
        if target is None:
            skipped.append(index)
        elif target.index == index:
            kept.append(chunk)
        else:
            meta["_index"] = target.index
            kept.append(_line({verb: meta})[:-1] + nl + rest)
    return kept, skipped, seen.paused()


def follow_raw(rules: Rules, bean: Bean) -> Outcome:
    """The writes to send for a bean replayed as sent (not a document bean)."""
    seen = _Seen(rules)
    try:
        outcome = _follow_raw(seen, bean)  # type: ignore[arg-type]  # duck-typed Rules
    except _Unfaithful as e:
        return Outcome(problem=f"{bean.method} {bean.requestUri.split('?', 1)[0]}: {e}", rules=seen.touched())
    outcome.paused = seen.paused()
    outcome.rules = seen.touched()
    return outcome


def _follow_raw(rules: Rules, bean: Bean) -> Outcome:
    path, mark, query = bean.requestUri.partition("?")
    raw = path.strip("/").split("/")
    segments = [unquote(s) for s in raw]
    first = segments[0]
    if not first:
        return Outcome([bean])
    if first.startswith("_") and first != "_all":
        if first == "_bulk":
            return _bulk(rules, bean, None, None, "/_bulk" + mark + query)
        if first == "_aliases":
            return _aliases(rules, bean)
        if first in _TEMPLATE_APIS:
            return Outcome(skipped=[TEMPLATES])
        if first == "_reindex":
            return _reindex(rules, bean)
        return Outcome([bean])  # names no index
    rest = segments[1:]
    if rest and rest[-1] == "_bulk" and len(rest) <= 2:  # /idx/_bulk, /idx/type/_bulk (Elasticsearch 6)
        doc_type = rest[0] if len(rest) == 2 else None
        return _bulk(rules, bean, first, doc_type, "/_bulk" + mark + query)
    targets, skipped = _expression(rules, first)
    api = rest[0] if rest else ""
    if api == "_rollover" and targets:
        raise _Unfaithful("a rollover of a followed alias or index cannot be rewritten: apply it to B yourself")
    if api in _ALIAS_APIS:
        dropped = [name for name, t in targets if not t.rule.aliases]
        targets = [(name, t) for name, t in targets if t.rule.aliases]
        skipped += dropped
    if not targets:
        return Outcome(skipped=skipped)
    if api == "_settings":
        return _settings(bean, targets, skipped, raw, mark, query)
    extra = ""
    if api in _RESIZE_APIS and len(rest) >= 2:
        resized = rules.target(rest[1])
        if resized is None:
            raise _Unfaithful(f'the new index "{rest[1]}" is not followed while its source is')
        extra = resized.index
    body = bean.body
    if not rest and bean.method == "PUT":  # index creation
        body = _creation(bean.body, targets[0][1].rule)
    elif extra:
        body = _creation(bean.body, rules.target(rest[1]).rule)  # type: ignore[union-attr]
    names = ",".join(quote(t.index, safe="") for _, t in targets)
    tail = list(raw[1:])
    if extra:
        tail[1] = quote(extra, safe="")
    uri = "/" + "/".join([names, *tail]) + mark + query
    return Outcome([replace(bean, requestUri=uri, body=body)], skipped)


def document_indices(bean: Bean) -> list[str]:
    """The indices a write replayed as sent puts documents into (which B creates if it lacks them):
    the actions' of a `_bulk` (else the path's index), the path's index of a single-document write;
    none for any other write, and no wildcard, date math or list."""
    path = bean.requestUri.split("?", 1)[0]
    segments = [unquote(s) for s in path.strip("/").split("/")]
    first, rest = segments[0], segments[1:]
    if first == "_bulk" or (rest and rest[-1] == "_bulk" and len(rest) <= 2):
        default = None if first == "_bulk" else first
        try:
            actions = parse_request(bean.body)
        except BulkFormatError:
            return []
        found = (str(a.meta.get("_index") or default or "") for a in actions if a.verb != "delete")
        return _plain(dict.fromkeys(found))
    if first.startswith("_") or not rest or bean.method not in ("PUT", "POST"):
        return []
    api = rest[0]
    if len(rest) == 1 and (api == "_doc" or not api.startswith("_")):  # POST /idx/_doc, /idx/type (6.x)
        return _plain([first]) if bean.method == "POST" else []
    if len(rest) == 2 and api in ("_doc", "_create", "_update"):
        return _plain([first])
    if len(rest) in (2, 3) and not api.startswith("_") and (len(rest) == 2 or rest[2] in ("_create", "_update")):
        return _plain([first])  # Elasticsearch 6.x typed paths
    return []


def _plain(names: Any) -> list[str]:
    return [n for n in names if n and "*" not in n and "," not in n and not n.startswith(("<", "_", "-"))]


def deletes_index(bean: Bean) -> bool:
    """Whether a write may delete an index (``DELETE /idx``, an `_aliases` ``remove_index``): after it,
    what the replay knows of B's indices may be wrong."""
    path = bean.requestUri.split("?", 1)[0].strip("/")
    if bean.method == "DELETE":
        return "/" not in path
    return path == "_aliases" and b"remove_index" in bean.body


def _expression(rules: Rules, expression: str) -> tuple[list[tuple[str, Target]], list[str]]:
    """The followed indices of a comma-separated index expression, with their targets, and the
    unfollowed names; raises _Unfaithful for a wildcard or date math part that may match a followed index."""
    targets: list[tuple[str, Target]] = []
    skipped: list[str] = []
    for part in expression.split(","):
        if part.startswith("<"):
            raise _Unfaithful(f'date math "{part}" cannot be resolved as A did: apply it to B yourself')
        if part.startswith("-") and "*" in expression:
            continue  # narrows a wildcard: decided with it
        if "*" in part or part == "_all":
            if rules.may_follow("*" if part == "_all" else part):
                raise _Unfaithful(f'"{part}" may match a followed index; a wildcard cannot be renamed faithfully')
            skipped.append(part)
            continue
        target = rules.target(part)
        if target is None:
            skipped.append(part)
        else:
            targets.append((part, target))
    return targets, skipped


def _bulk(rules: Rules, bean: Bean, default: Optional[str], doc_type: Optional[str], uri: str) -> Outcome:
    try:
        actions = parse_request(bean.body)
    except BulkFormatError as e:
        raise _Unfaithful(f"a _bulk body esproxy cannot read: {e}") from None
    out: list[bytes] = []
    skipped: list[str] = []
    for action in actions:
        index = str(action.meta.get("_index") or default or "")
        target = rules.target(index) if index else None
        if target is None:
            skipped.append(index or "(no index)")
            continue
        meta = dict(action.meta)
        meta["_index"] = target.index
        if doc_type and "_type" not in meta:
            meta["_type"] = doc_type
        out.append(_line({action.verb: meta}))
        if action.source is not None:
            out.append(action.source + b"\n")
    if not out:
        return Outcome(skipped=skipped)
    return Outcome([replace(bean, requestUri=uri, body=b"".join(out))], skipped)


def _aliases(rules: Rules, bean: Bean) -> Outcome:
    body = _json_body(bean.body)
    kept: list[Any] = []
    skipped: list[str] = []
    for entry in body.get("actions") or []:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _Unfaithful("an _aliases action that is not {verb: {...}}")
        verb, spec = next(iter(entry.items()))
        if not isinstance(spec, dict):
            raise _Unfaithful(f"an _aliases {verb} action that is not an object")
        key = "index" if "index" in spec else "indices"
        named = spec.get(key)
        names = [named] if isinstance(named, str) else list(named or [])
        renamed = []
        for name in names:
            targets, dropped = _expression(rules, str(name))
            for original, target in targets:
                if target.rule.aliases or verb == "remove_index":
                    renamed.append(target.index)
                else:
                    dropped.append(original)
            skipped += dropped
        if renamed:
            spec = dict(spec)
            spec[key] = renamed[0] if key == "index" and len(renamed) == 1 else renamed
            if key == "index" and len(renamed) > 1:
                del spec["index"]
                spec["indices"] = renamed
            kept.append({verb: spec})
    if not kept:
        return Outcome(skipped=skipped)
    new = json.dumps({**body, "actions": kept}, ensure_ascii=False).encode()
    return Outcome([replace(bean, body=new)], skipped)


def _reindex(rules: Rules, bean: Bean) -> Outcome:
    body = _json_body(bean.body)
    source, dest = body.get("source") or {}, body.get("dest") or {}
    if not isinstance(source, dict) or not isinstance(dest, dict) or not isinstance(dest.get("index"), str):
        raise _Unfaithful("a _reindex body without source and dest.index")
    dest_targets, dest_skipped = _expression(rules, dest["index"])
    if not dest_targets:
        return Outcome(skipped=dest_skipped)
    body = {**body, "dest": {**dest, "index": dest_targets[0][1].index}}
    if "remote" not in source:  # from another cluster: its index names are not A's
        named = source.get("index")
        names = [named] if isinstance(named, str) else list(named or [])
        renamed = []
        for name in names:
            targets, dropped = _expression(rules, str(name))
            if dropped:
                raise _Unfaithful(f"reindexes from {', '.join(dropped)}, which is not followed, into a followed index")
            renamed += [t.index for _, t in targets]
        body["source"] = {**source, "index": renamed[0] if len(renamed) == 1 else renamed}
    return Outcome([replace(bean, body=json.dumps(body, ensure_ascii=False).encode())])


def _settings(
    bean: Bean, targets: list[tuple[str, Target]], skipped: list[str], raw: list[str], mark: str, query: str
) -> Outcome:
    """`_settings` updates: one write per rule, with that rule's settings filter."""
    body = _json_body(bean.body)
    settings = body.get("settings", body) if isinstance(body.get("settings"), dict) else body
    flat = flatten_settings(settings)
    by_rule: dict[Rule, list[tuple[str, Target]]] = {}
    for name, target in targets:
        by_rule.setdefault(target.rule, []).append((name, target))
    beans = []
    for rule, group in by_rule.items():
        kept = {k: v for k, v in flat.items() if rule.settings and rule.setting_synced(k)}
        if not kept:
            skipped += [name for name, _ in group]
            continue
        names = ",".join(quote(t.index, safe="") for _, t in group)
        uri = "/" + "/".join([names, *raw[1:]]) + mark + query
        beans.append(replace(bean, requestUri=uri, body=json.dumps(kept, ensure_ascii=False).encode()))
    return Outcome(beans, skipped)


def _creation(body: bytes, rule: Rule) -> bytes:
    """An index creation (or resize) body with the settings the rule syncs, aliases only if it syncs them."""
    if not body.strip():
        return body
    data = _json_body(body)
    out = dict(data)
    settings = data.get("settings")
    if isinstance(settings, dict):
        kept = {k: v for k, v in flatten_settings(settings).items() if rule.setting_synced(k)}
        if kept:
            out["settings"] = kept
        else:
            del out["settings"]
    if "aliases" in out and not rule.aliases:
        del out["aliases"]
    return json.dumps(out, ensure_ascii=False).encode()


def flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"index": {"number_of_shards": 1}}`` and ``{"number_of_shards": 1}`` → ``{"index.number_of_shards": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = prefix + str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten_settings(value, name + "."))
        else:
            flat[name] = value
    return flat if prefix else {k if k.startswith("index.") else "index." + k: v for k, v in flat.items()}


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise _Unfaithful("a body that is not JSON") from None
    if not isinstance(data, dict):
        raise _Unfaithful("a body that is not a JSON object")
    return data


def _line(action: dict[str, Any]) -> bytes:
    return json.dumps(action, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
