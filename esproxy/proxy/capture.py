"""Turn a write that cluster A applied into the beans that reproduce it exactly on cluster B.

Document writes (single-document APIs and `_bulk`) become *document beans*: a `_bulk` body of
versioned actions (``version_type=external_gte``, version = ``max(_seq_no, _version)`` of that
document on the cluster that applied it, see :func:`doc_version`) that put the document's final state:

- the ``_id`` is the one A answered with, so auto-generated ids are the same on B;
- only the bulk items A applied (2xx) are kept; failed ones are dropped with their source lines;
- an update (partial, scripted, upsert) becomes the whole document as A holds it after the update,
  read back from A with `_mget`: replaying it twice, or after a later write, changes nothing;
- the version makes B keep the newest state whatever order two copies arrive in, which covers
  clients racing on one document and replays after a crash.

One bean per index, keyed by that index, so all writes to an index replay in order. Any other
write (index creation, mappings, aliases, templates, by-query APIs...) is replayed as it was sent,
keyed by the index it names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Callable, Optional
from urllib.parse import parse_qs

from esproxy.core.bean import Bean, index_in_path
from esproxy.core.bulk import Action, DocOp, Item, Source, parse_response

from .request import Request

log = logging.getLogger("esproxy.capture")

# (index, id, routing) of updated documents -> their (source, doc_version) on A now, or None if gone.
Fetch = Callable[[list[tuple[str, str, Optional[str]]]], dict[tuple[str, str], Optional[tuple[bytes, int]]]]


def capture(template: Bean, response: bytes, fetch: Fetch, request: Optional[Request] = None) -> list[Bean]:
    """Beans for ``template`` (the request as the client sent it, body decoded) given A's 2xx answer.

    ``request``: the same request as the proxy's stages have it (what it is and, for a `_bulk`, its
    actions, read once); none: one is made of the template."""
    if request is None:
        request = Request(template.method, template.requestUri, template.body)
    path, _, query = template.requestUri.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    segments = request.segments
    try:
        kind = request.kind
        if kind == "bulk":
            ops = _bulk_ops(request.actions, segments, params, response, fetch)
        elif kind:
            ops = _single_op(kind, segments, params, template.body, response, fetch)
        else:
            ops = None
    except Exception as e:  # an answer we cannot read, or A unreachable for the update's read-back
        log.warning("%s %s: replaying as sent (%s)", template.method, template.requestUri, e)
        ops = None
    if ops is None:
        return [dataclasses.replace(template, index=index_in_path(path))]
    return _beans(template, ops)


def single_document(method: str, uri: str) -> bool:
    """Whether a request writes one document it names or lets A name (not `_bulk`, not an index-level write)."""
    return Request(method, uri).kind not in ("", "bulk")


def doc_version(seq_no: int, version: Optional[int]) -> int:
    """The external version a replayed write carries: ``max(_seq_no, _version)`` on the cluster that applied it.

    ``_seq_no`` alone orders the writes of one leader, but the sequence numbers of two clusters are not
    comparable: after a switchover the new leader's could be lower than the ones the old leader gave the
    same document, and its writes would be refused (409) as older. ``_version`` carries over: a follower
    written with external versions holds the leader's value as the document's ``_version``, and a client's
    write on it (once it leads) increments that. Both numbers grow with every write of a document on one
    cluster, so their max does too, on either side of a switch.
    """
    return max(seq_no, version or 0)


def _doc_type(s: list[str]) -> Optional[str]:
    return s[1] if len(s) > 1 and not s[1].startswith("_") else None


def _single_op(
    kind: str, s: list[str], params: dict[str, str], body: bytes, response: bytes, fetch: Fetch
) -> Optional[list[DocOp]]:
    r = json.loads(response)
    if r.get("result") == "noop":
        return []
    if r.get("_seq_no") is None:
        return None  # no sequence number to version with: replay as sent
    routing = params.get("routing")
    item = Item(kind, 200, str(r["_index"]), str(r["_id"]), int(r["_seq_no"]), r.get("_version"), r.get("result", ""))
    source = body.strip() if kind == "index" else None
    action = Action("update" if kind == "update" else kind, {}, source)
    op = _op(action, item, routing, params.get("pipeline"), _doc_type(s))
    return _resolve_updates([(op, item)] if op else [], fetch)


def _bulk_ops(
    actions: list[Action], s: list[str], params: dict[str, str], response: bytes, fetch: Fetch
) -> Optional[list[DocOp]]:
    """``actions``: the request's, their sources views of its body (not copies)."""
    items = parse_response(response)
    if len(actions) != len(items):
        raise ValueError(f"{len(actions)} actions but {len(items)} response items")
    default_type = s[1] if len(s) == 3 else None
    pending = []
    for action, item in zip(actions, items):
        if not item.ok or item.result == "noop":
            continue  # A did not apply it: B must not either
        if item.seq_no is None:
            return None
        meta = action.meta
        routing = meta.get("routing", meta.get("_routing", params.get("routing")))
        pipeline = meta.get("pipeline", params.get("pipeline"))
        doc_type = meta.get("_type", default_type)
        op = _op(action, item, routing, pipeline, doc_type if doc_type not in (None, "_doc") else None)
        if op:
            pending.append((op, item))
    return _resolve_updates(pending, fetch)


def _op(
    action: Action, item: Item, routing: Optional[str], pipeline: Optional[str], doc_type: Optional[str]
) -> Optional[DocOp]:
    verb = "delete" if action.verb == "delete" else "index"
    version = doc_version(int(item.seq_no or 0), item.version)
    op = DocOp(verb, item.index, item.id, version, action.source, routing, pipeline, doc_type)
    if action.verb == "update":
        op.source = None  # filled in from A by _resolve_updates
        op.pipeline = None  # the fetched document is already the pipeline's output
    return op


def _resolve_updates(pending: list[tuple[DocOp, Item]], fetch: Fetch) -> list[DocOp]:
    wanted = [(op.index, op.id, op.routing) for op, _ in pending if op.verb == "index" and op.source is None]
    current = fetch(wanted) if wanted else {}
    ops = []
    for op, _ in pending:
        if op.verb == "index" and op.source is None:
            found = current.get((op.index, op.id))
            if found is None:
                continue  # deleted on A since: that delete is captured and replays too
            op.source, version = found
            op.version = max(op.version, version)
        ops.append(op)
    return ops


def _beans(template: Bean, ops: list[DocOp]) -> list[Bean]:
    by_index: dict[str, list[Source]] = {}
    for op in ops:
        by_index.setdefault(op.index, []).extend(op.parts())
    ops.clear()  # the sources (views of the request's body) go with their parts
    beans = []
    while by_index:  # each index's body made in one join, its parts dropped at once
        index, parts = by_index.popitem()
        beans.append(template.documents(index, b"".join(parts)))
        del parts
    beans.reverse()
    return beans
