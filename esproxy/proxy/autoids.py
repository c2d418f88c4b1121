"""Proxy-assigned document ids: a write that would let the primary choose the id gets one first.

`POST /idx/_doc` (or Elasticsearch 6's `POST /idx/type`) and `_bulk` index/create actions
without `_id` name no document. If the proxy dies while such a write is in flight, nothing can
say which document it became, so proxy/settle.py cannot make B match A. Naming the document before it
is forwarded closes that gap; the spool's intent then holds the rewritten request.

The ids have Elasticsearch's own format (see :class:`IdGenerator`), and the client's answer keeps
its shape: a single document goes as `POST /idx/_doc/<id>?op_type=create` (what Elasticsearch
7.5+ itself does for an auto-id POST without `op_type`: 201, `"result": "created"`), a bulk
action keeps its verb and gains an `_id`, so its response item has the key the client sent.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from typing import Callable, Optional, Union
from urllib.parse import parse_qs

from esproxy.core.bulk import Action, BulkFormatError

from .request import Request


class IdGenerator:
    """Elasticsearch's time-based ids (TimeBasedUUIDGenerator): 15 bytes, URL-safe base64, 20 chars.

    The bytes are a 24-bit sequence, a 48-bit millisecond timestamp that never goes backwards,
    and 6 random "node" bytes (Elasticsearch munges the MAC address with random bytes), laid out
    as Elasticsearch does so that Lucene's terms dictionary sees the same prefixes it would.
    Each process (each worker) draws its own node bytes and sequence start: ids of workers, of
    restarts and of other proxies do not collide.
    """

    def __init__(self, clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = 0

    def _start(self) -> None:
        self._pid = os.getpid()
        self._node = os.urandom(6)
        self._sequence = int.from_bytes(os.urandom(3), "big")
        self._last = 0

    def next_id(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: never reuse the parent's
                self._start()
            self._sequence = seq = (self._sequence + 1) & 0xFFFFFF
            ts = max(self._last, self._clock())
            if seq == 0:  # the sequence wrapped: move the clock on so that no id repeats
                ts += 1
            self._last = ts
        raw = (
            bytes((seq & 0xFF, (seq >> 16) & 0xFF, (ts >> 16) & 0xFF, (ts >> 24) & 0xFF, (ts >> 32) & 0xFF))
            + bytes(((ts >> 40) & 0xFF,))
            + self._node
            + bytes(((ts >> 8) & 0xFF, (seq >> 8) & 0xFF, ts & 0xFF))
        )
        return base64.urlsafe_b64encode(raw).decode("ascii")  # 15 bytes: 20 characters, no padding


GENERATOR = IdGenerator()

# A write without an id that carries one of these is invalid ("an id must be provided if version
# type or value are set"): it goes as sent, for A to reject it with its own error.
CONDITIONS = frozenset(("version", "version_type", "if_seq_no", "if_primary_term", "_version", "_version_type"))
# The start of a bulk action line up to the inside of its metadata object: `{"index": {`.
_ACTION_OPEN = re.compile(rb'\s*\{\s*"((?:[^"\\]|\\.)*)"\s*:\s*\{')


def assign_ids(
    method: str, uri: str, body: bytes, new_id: Callable[[], str] = GENERATOR.next_id
) -> Optional[tuple[str, bytes]]:
    """The (uri, body) to forward instead, or None when the write names all its documents already
    (:func:`assign` on a request made of these; ``body`` is the plain request body)."""
    request = Request(method, uri, body)
    return (request.uri, request.body) if assign(request, new_id) else None


def assign(request: Request, new_id: Callable[[], str] = GENERATOR.next_id) -> bool:
    """Give ids to the documents ``request`` would let the primary name; whether it changed.

    Only what gets an id changes: the path of a single document (plus `op_type=create` unless the
    client chose an op_type), or the metadata line of a bulk action; every other byte, and the rest of
    the query string, stay as sent. A changed body is plain (Request.rewritten), with its actions."""
    kind = request.kind
    segments = request.segments
    if kind == "bulk":
        default_index = segments[0] if len(segments) >= 2 else None
        try:
            actions = request.actions
        except BulkFormatError:
            return False  # not a valid bulk body: the primary rejects it as sent, there is nothing to name
        rewritten = _bulk_with_ids(request.plain, actions, default_index, new_id)
        if rewritten is None:
            return False
        request.rewritten(*rewritten)
        return True
    if kind == "index" and len(segments) == 2:  # POST /idx/_doc or /idx/type: the primary would choose
        path, _, query = request.uri.partition("?")
        params = parse_qs(query, keep_blank_values=True)
        if CONDITIONS.intersection(params):
            return False
        if "op_type" not in params:
            query = f"{query}&op_type=create" if query else "op_type=create"
        doc_id = new_id()
        request.named(f"{path.rstrip('/')}/{doc_id}?{query}", [*segments, doc_id])
        return True
    return False


def _bulk_with_ids(
    body: bytes, actions: list[Action], default_index: Optional[str], new_id: Callable[[], str]
) -> Optional[tuple[bytes, list[Action]]]:
    """The body with an `_id` in each index/create action that has none, and its actions; None if none
    changed.

    The actions are the body's, read once (Request.actions): each says where its lines start. The new
    body is made in one join of the unchanged stretches (views) and the ids, and the actions are moved
    onto it (their sources views of it): a large body is in memory twice at most, and only while the
    new one is made."""
    view = memoryview(body)
    parts: list[Union[bytes, memoryview]] = []
    copied = 0  # body[:copied] is in parts
    inserted: dict[int, tuple[int, bytes, str]] = {}  # action's position -> (where in its line, what, the id)
    for n, action in enumerate(actions):
        meta = action.meta
        if action.verb not in ("index", "create") or "_id" in meta or not (meta.get("_index") or default_index):
            continue  # names its document, or fails on the primary anyway (no index)
        if CONDITIONS.intersection(meta):
            continue
        opening = _ACTION_OPEN.match(action.head)
        if opening is None:  # not for a line that is a JSON object of one object
            return None
        doc_id = new_id()
        text = b'"_id":"' + doc_id.encode("ascii") + (b'",' if meta else b'"')
        at = action.at + opening.end()
        parts += (view[copied:at], text)
        copied = at
        inserted[n] = (opening.end(), text, doc_id)
    if not parts:
        return None
    parts.append(view[copied:])
    new_body = b"".join(parts)
    del parts, view
    new_view = memoryview(new_body)
    shift = 0  # bytes inserted before the action at hand
    for n, action in enumerate(actions):  # each moved onto the new body, in place: no second list
        action.at += shift
        if n in inserted:
            where, text, doc_id = inserted[n]
            action.head, action.meta = action.head[:where] + text + action.head[where:], {"_id": doc_id, **action.meta}
            shift += len(text)
        if action.source is not None:
            action.source_at += shift
            action.source = new_view[action.source_at : action.source_at + len(action.source)]
    return new_body, actions
