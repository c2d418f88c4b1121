"""Settle writes whose outcome is unknown: forwarded to A, but the proxy never saw the answer.

That happens when the proxy died mid-request (an intent left open in the spool) or A timed out.
A may or may not have applied such a write, so B must copy what A holds now:

- a write to a known document id (index, create, update, delete, and `_bulk` actions that name
  their `_id`): the document's current state on A is replayed as a versioned document bean, or a
  delete if A does not have it;
- a write A would have given an id to (`POST /idx/_doc`, bulk actions without `_id`): nothing can
  say which document it became; logged, for the operator to check with `esproxy compare`. With
  `assignIds` (the default) the proxy names those documents before forwarding (proxy/autoids.py), so
  this happens only with `assignIds: false`;
- any other write (index creation, mappings, settings...): replayed as sent, since those are
  idempotent or fail harmlessly the second time; `_update_by_query`/`_delete_by_query` are logged.
"""

from __future__ import annotations

import logging
from typing import Any, Optional
from urllib.parse import parse_qs, quote

from esproxy.clients.elastic import Elastic
from esproxy.core.bean import Bean, index_in_path
from esproxy.core.bulk import DocOp

from .request import Request

log = logging.getLogger("esproxy.settle")

UNSETTLED = ("_update_by_query", "_delete_by_query", "_reindex")


def settle(intent: dict[str, Any], primary: Elastic, template: Bean, request: Optional[Request] = None) -> list[Bean]:
    """Beans that make B match A for one write of unknown outcome (``template`` gives labels, ids...).

    ``request``: the intent's request as the proxy's stages have it (what it is, a `_bulk`'s actions,
    read once); none (an intent read back from the spool): one is made of the intent."""
    method, uri = intent["method"], intent["uri"]
    if request is None:
        request = Request(method, uri, intent.get("body", "").encode())
    path, _, query = uri.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    segments = request.segments
    kind = request.kind
    targets: list[tuple[str, str, Optional[str]]] = []
    if kind == "bulk":
        default_index = segments[0] if len(segments) >= 2 else None
        for action in request.actions:
            index, doc_id = action.meta.get("_index", default_index), action.meta.get("_id")
            if index and doc_id is not None:
                targets.append((index, str(doc_id), action.meta.get("routing", params.get("routing"))))
            else:
                log.error(
                    "cannot settle a %s action without _id of %s %s: check it with esproxy compare",
                    action.verb,
                    method,
                    uri,
                )
    elif kind and len(segments) >= 3:  # /idx/_doc/id, /idx/_update/id, /idx/type/id[/_update]
        targets.append((segments[0], segments[2], params.get("routing")))
    elif kind:  # index with an id A chose
        log.error("cannot settle %s %s (A chose the document id): check it with esproxy compare", method, uri)
        return []
    elif any(s in UNSETTLED for s in segments):
        log.error("cannot settle %s %s (a by-query write): check it with esproxy compare", method, uri)
        return []
    else:
        log.warning("settling %s %s by replaying it as sent", method, uri)
        return [
            Bean(
                method,
                uri,
                request.plain,
                template.header,
                template.host,
                template.remoteAddr,
                template.labels,
                template.clusterIds,
                index=index_in_path(path),
            )
        ]
    return _current_states(targets, primary, template)


def _current_states(targets: list[tuple[str, str, Optional[str]]], primary: Elastic, template: Bean) -> list[Bean]:
    if not targets:
        return []
    current = primary.current_docs(targets)
    by_id = {doc_id: state for (_, doc_id), state in current.items()}
    beans = []
    for index, doc_id, routing in targets:
        state = by_id.get(doc_id)
        if state is None:
            # Not on A (deleted, or never written): an unversioned delete makes B agree.
            path = f"/{quote(index, safe='')}/_doc/{quote(doc_id, safe='')}"
            path += f"?routing={quote(routing, safe='')}" if routing else ""
            beans.append(
                Bean(
                    "DELETE",
                    path,
                    b"",
                    template.header,
                    template.host,
                    template.remoteAddr,
                    template.labels,
                    template.clusterIds,
                    index=index,
                )
            )
            continue
        source, version = state
        beans.append(template.documents(index, DocOp("index", index, doc_id, version, source, routing).lines()))
    log.info("settled %d document(s) of a write whose outcome was unknown (a crash or timeout in flight)", len(beans))
    return beans
