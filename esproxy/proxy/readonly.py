"""Read-only followed indices: which writes a proxy in front of a follower (B) refuses.

Pure logic, no I/O. A proxy with ``source.proxies[].followerReadOnly: true`` stands in front of B,
whose followed indices the replay writes (replay/follow.py; ``follow.rules[]`` of the same config, none:
every index is followed under its own name). A client write to one of them would be overwritten by
the replay, or would make B differ from A for good, so the proxy refuses it with 403 before it is
forwarded (nothing is captured). What is a write is :attr:`Request.writing` (:func:`routing.is_write`),
less the maintenance APIs that change no data (:data:`MAINTENANCE`).

Conservative: a write whose target may be a followed index but cannot be told for sure (a wildcard
or date math that may match one, a rollover without a new index name, a body esproxy cannot read,
a snapshot restore) is refused too. A `_bulk` naming a followed index in any item is refused whole.
Not seen: a write through an alias of B that points to a followed index (the alias name is checked
as an index name: resolving it would need B's aliases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from esproxy.core.bulk import BulkFormatError
from esproxy.replay import Rules

from .request import BadBody, Request

KIND = "esproxy_follower_index_read_only_exception"
STATUS = 403
# Index APIs that change no document, mapping, setting or alias: allowed on followed indices.
MAINTENANCE = frozenset({"_refresh", "_flush", "_forcemerge", "_cache"})
# APIs that, without an index in the path, apply to every index.
_EVERY_INDEX_APIS = frozenset(
    {"_settings", "_mapping", "_mappings", "_update_by_query", "_delete_by_query", "_close", "_open", "_alias"}
)
_RESIZE_APIS = frozenset({"_shrink", "_split", "_clone"})


@dataclass(frozen=True)
class Refusal:
    """Why a write is refused: an Elasticsearch-style error's reason (status :data:`STATUS`, type :data:`KIND`)."""

    reason: str


class _Refused(Exception):
    pass


def refusal(rules: Rules, method: str, uri: str, body: bytes) -> Optional[Refusal]:
    """The refusal of a write to B that names a followed index; None when it may go to B.

    ``body`` is the plain (decompressed) request body.
    """
    return refused(rules, Request(method, uri, body))


def refused(rules: Rules, request: Request) -> Optional[Refusal]:
    """:func:`refusal` of the request as the proxy's stages have it (its body decompressed here, once)."""
    if not request.writing:
        return None
    try:
        body = request.plain
    except BadBody:
        return Refusal("a compressed body that does not decompress: cannot tell what it writes")
    try:
        for expression, what in _named(request, body):
            _check(rules, expression, what)
    except _Refused as e:
        return Refusal(str(e))
    return None


def _named(request: Request, body: bytes) -> Iterator[tuple[str, str]]:
    """The index expressions a write names, each with how the request names it (for the reason);
    ``body``: the request's plain body."""
    segments = request.segments
    first, rest = segments[0], segments[1:]
    api = rest[0] if rest else ""
    if not first or (first.startswith("_") and first != "_all"):
        if first in MAINTENANCE:
            return
        if first == "_bulk":
            yield from _bulk(None, request)
        elif first == "_reindex":
            dest = _json(body, "_reindex").get("dest")
            if not isinstance(dest, dict) or not isinstance(dest.get("index"), str):
                raise _Refused("a _reindex without dest.index: cannot tell whether it writes a followed index")
            yield dest["index"], "_reindex dest.index"
        elif first == "_aliases":
            yield from _aliases(body)
        elif first in _EVERY_INDEX_APIS:
            yield "*", f"{first} (every index)"
        elif first == "_data_stream" and api:
            yield api, "_data_stream"
        elif first == "_snapshot" and segments[-1] == "_restore":
            raise _Refused("a snapshot restore may overwrite followed indices: restore into the leader instead")
        return  # names no index: cluster settings, templates, pipelines, scripts...
    if api in MAINTENANCE:
        return
    if api == "_bulk" or (len(rest) == 2 and rest[1] == "_bulk"):  # /idx/_bulk, /idx/type/_bulk
        yield from _bulk(first, request)
        return
    yield first, "the path"
    if api in _RESIZE_APIS and len(rest) >= 2:
        yield rest[1], f"the {api} target"
    if api == "_rollover":
        if len(rest) < 2:
            raise _Refused("a _rollover without a new index name: cannot tell whether it creates a followed index")
        yield rest[1], "the _rollover target"


def _bulk(default: Optional[str], request: Request) -> Iterator[tuple[str, str]]:
    try:
        actions = request.actions
    except BulkFormatError as e:
        unreadable = f"a _bulk body esproxy cannot read ({e})"
        raise _Refused(f"{unreadable}: cannot tell whether it writes a followed index") from None
    for n, action in enumerate(actions, 1):
        index = action.meta.get("_index") or default  # none: Elasticsearch fails that item itself
        if isinstance(index, str) and index:
            yield index, f"_bulk item {n} of {len(actions)}; the whole _bulk is refused"


def _aliases(body: bytes) -> Iterator[tuple[str, str]]:
    actions = _json(body, "_aliases").get("actions")
    for n, entry in enumerate(actions if isinstance(actions, list) else [], 1):
        if not isinstance(entry, dict) or len(entry) != 1 or not isinstance(next(iter(entry.values())), dict):
            unknown = f"_aliases action {n} is not {{verb: {{...}}}}"
            raise _Refused(f"{unknown}: cannot tell whether it names a followed index")
        verb, spec = next(iter(entry.items()))
        for key in ("index", "indices"):
            named = spec.get(key)
            for name in [named] if isinstance(named, str) else named if isinstance(named, list) else []:
                yield str(name), f"_aliases action {n} ({verb})"


def _json(body: bytes, api: str) -> dict[str, Any]:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Refused(f"a {api} body that is not a JSON object: cannot tell whether it writes a followed index")
    return data


def _check(rules: Rules, expression: str, what: str) -> None:
    """Raise _Refused if a part of the index ``expression`` is, or may be, a followed index of B."""
    for part in expression.split(","):
        if part.startswith("<"):
            if rules.may_be_target("*"):
                raise _Refused(f'{what}: date math "{part}" may name a followed index (read-only on this cluster)')
            continue
        if part.startswith("-") and "*" in expression:
            continue  # narrows a wildcard: the wildcard decides
        if "*" in part or part == "_all":
            if rules.may_be_target("*" if part == "_all" else part):
                raise _Refused(f'{what}: "{part}" may match a followed index (read-only on this cluster)')
            continue
        origin = rules.source(part)
        if origin is None:
            continue
        if not rules.active:
            rule = "no follow.rules: every index is followed under its own name"
        else:
            position = rules.rules.index(origin.rule)
            rule = f'follow.rules[{position}] "{origin.rule.name}" (indices "{origin.pattern()}")'
        raise _Refused(
            f"index [{part}] is a follower index, read-only on this cluster ({what}): {rule} writes it"
            f" from the leader's index [{origin.index}]; write to the leader instead"
        )
