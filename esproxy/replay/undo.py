"""The undo window's pure logic: which writes a sync rule's ``guard`` holds, and when a delayed write is due.

A rule's ``guard`` lists kinds of destructive writes (:data:`GUARD_KINDS`); :func:`write_kind` says which
kind a captured write is, from its method and path alone (the body only for `_aliases`):

- ``index_delete``: ``DELETE /<expression>`` (an index, a list, a wildcard, ``_all``), an `_aliases` call
  with a ``remove_index`` action;
- ``delete_by_query``: ``POST /<expression>/_delete_by_query``;
- ``update_by_query``: ``POST /<expression>/_update_by_query``;
- ``close``: ``POST /<expression>/_close``.

Document writes (single-document APIs, `_bulk`, the proxy's document beans) are never guarded: a delay is
the undo window for them. Which rules a write touches (and so whether their guard applies) is the sync
rules' business (replay/followed.py): an index a rule follows, or a wildcard or ``_all`` that may match one.

Example: ``DELETE /orders`` → ``index_delete``; ``POST /orders/_delete_by_query?conflicts=proceed`` →
``delete_by_query``; ``DELETE /orders/_doc/1`` → None; ``POST /_aliases`` with
``{"actions":[{"remove_index":{"index":"orders"}}]}`` → ``index_delete``.
"""

from __future__ import annotations

import time
from typing import Optional
from urllib.parse import unquote

from esproxy.core.bean import DOCS_KIND, Bean

INDEX_DELETE, DELETE_BY_QUERY, UPDATE_BY_QUERY, CLOSE = "index_delete", "delete_by_query", "update_by_query", "close"
GUARD_KINDS = (INDEX_DELETE, DELETE_BY_QUERY, UPDATE_BY_QUERY, CLOSE)
_APIS = {"_delete_by_query": DELETE_BY_QUERY, "_update_by_query": UPDATE_BY_QUERY, "_close": CLOSE}


def guard_problem(kind: str) -> Optional[str]:
    """Why ``kind`` is not a guard kind; None if it is."""
    if kind in GUARD_KINDS:
        return None
    return f'"{kind}" is not a kind of write a guard holds (one of: {", ".join(GUARD_KINDS)})'


def write_kind(bean: Bean) -> Optional[str]:
    """The guard kind of a captured write, None for any other write (see the module)."""
    if bean.kind == DOCS_KIND:
        return None
    path = bean.requestUri.split("?", 1)[0].strip("/")
    segments = [unquote(s) for s in path.split("/")] if path else []
    if not segments:
        return None
    method = bean.method.upper()
    first = segments[0]
    if method == "DELETE" and len(segments) == 1 and (not first.startswith("_") or first == "_all"):
        return INDEX_DELETE
    if first == "_aliases" and len(segments) == 1 and method in ("POST", "PUT") and b"remove_index" in bean.body:
        return INDEX_DELETE
    if method in ("POST", "PUT") and len(segments) in (2, 3) and (not first.startswith("_") or first == "_all"):
        return _APIS.get(segments[-1])  # /idx/_delete_by_query, Elasticsearch 6's /idx/type/_delete_by_query
    return None


def captured_at(timestamp_ms: Optional[int], now: Optional[float] = None) -> float:
    """A record's capture time in seconds since the epoch: its Kafka timestamp (set by the proxy's producer
    when the write was captured); ``now`` (time.time()) for a record without one (a pre-0.10 message format)."""
    if timestamp_ms is not None and timestamp_ms >= 0:
        return timestamp_ms / 1000
    return time.time() if now is None else now


def due_at(captured: float, delay: float) -> float:
    """When a write captured at ``captured`` may be applied under a rule's ``delay`` (seconds)."""
    return captured + max(0.0, delay)


def lag_beyond(now: float, due: float) -> float:
    """How late a write due at ``due`` is at ``now``: 0 while it is inside its delay."""
    return max(0.0, now - due)
