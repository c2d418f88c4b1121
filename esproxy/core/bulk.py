"""The `_bulk` NDJSON format: reading requests, writing versioned actions, reading item results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

# A source line: bytes, or a memoryview of the body it was read from (parse_request(views=True)).
Source = Union[bytes, memoryview]
ACTIONS = ("index", "create", "update", "delete")


class BulkFormatError(ValueError):
    pass


@dataclass
class Action:
    """One bulk action: its verb, its metadata line and, except for delete, its source line."""

    verb: str
    meta: dict[str, Any]
    source: Optional[Source] = None  # the raw line, exactly as the client sent it (parse_request(views=True): a view)
    head: bytes = b""  # the metadata line, exactly as the client sent it
    # Where the metadata line and the source line start in the body parsed (proxy/autoids.py edits it in place).
    at: int = field(default=0, compare=False, repr=False)
    source_at: int = field(default=0, compare=False, repr=False)

    def lines(self) -> bytes:
        """The action as the client sent it: its metadata line and, but for delete, its source line."""
        return self.head + b"\n" + (b"" if self.source is None else bytes(self.source) + b"\n")


def is_bulk_uri(uri: str) -> bool:
    """Whether ``uri`` is a `_bulk` request: ``/_bulk``, ``/{index}/_bulk`` or ``/{index}/{type}/_bulk``, any query."""
    segments = uri.split("?", 1)[0].strip("/").split("/")
    return segments[-1] == "_bulk" and len(segments) <= 3


_BLANKS = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


def lines(body: bytes) -> Iterator[tuple[int, int]]:
    """The (start, end) offsets of the lines of ``body`` that are not blank, each without the blanks
    around it (as ``line.strip()``), read in place: no copy of the body or of its lines."""
    start, size = 0, len(body)
    while start < size:
        end = body.find(b"\n", start)
        if end < 0:
            end = size
        s, e = start, end
        while s < e and body[s] in _BLANKS:
            s += 1
        while e > s and body[e - 1] in _BLANKS:
            e -= 1
        if s < e:
            yield s, e
        start = end + 1


def parse_request(body: bytes, views: bool = False) -> list[Action]:
    """Split a `_bulk` body into actions; raises BulkFormatError like Elasticsearch would reject it.

    ``views``: each action's source is a memoryview of ``body`` rather than a copy of its line (for a
    large body read once and dropped, as the proxy's capture does: the body is then not in memory twice)."""
    view = memoryview(body) if views else None
    actions: list[Action] = []
    pending: Optional[tuple[str, dict[str, Any], bytes, int, int]] = None  # an action waiting for its source line
    n = 0
    for start, end in lines(body):
        n += 1
        if pending is not None:
            verb, meta, head, _, at = pending
            source: Source = view[start:end] if view is not None else body[start:end]
            actions.append(Action(verb, meta, source, head, at, start))
            pending = None
            continue
        line = body[start:end]
        try:
            header = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
            raise BulkFormatError(f"line {n} is not JSON") from None
        if not isinstance(header, dict) or len(header) != 1:
            raise BulkFormatError(f"line {n} is not an action")
        verb, meta = next(iter(header.items()))
        if verb not in ACTIONS or not isinstance(meta, dict):
            raise BulkFormatError(f"line {n}: unknown action {verb!r}")
        if verb == "delete":
            actions.append(Action(verb, meta, head=line, at=start))
        else:
            pending = (verb, meta, line, n, start)
    if pending is not None:
        raise BulkFormatError(f"line {pending[3]}: {pending[0]} without a source line")
    return actions


@dataclass
class Item:
    """One item of a `_bulk` response."""

    verb: str
    status: int
    index: str = ""
    id: str = ""
    seq_no: Optional[int] = None
    version: Optional[int] = None
    result: str = ""
    error: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UnparsableAnswer(ValueError):
    """A `_bulk` answer not shaped as Elasticsearch's: its items cannot be read (the message says why)."""


def parse_response(body: bytes) -> list[Item]:
    """The items of a `_bulk` answer, in the order of the actions; raises UnparsableAnswer for an answer
    not shaped as Elasticsearch's (not JSON, not an object, no ``items`` list, an item without a status...)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        raise _unparsable("is not JSON", body) from None
    if not isinstance(data, dict):
        raise _unparsable(f"is a JSON {type(data).__name__}, not an object", body)
    entries = data.get("items")
    if not isinstance(entries, list):
        raise _unparsable("has no items list", body)
    return [_item(n, entry, body) for n, entry in enumerate(entries, 1)]


def _item(n: int, entry: Any, body: bytes) -> Item:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise _unparsable(f"item {n} is not an object of one action", body)
    verb, r = next(iter(entry.items()))
    if verb not in ACTIONS or not isinstance(r, dict):
        raise _unparsable(f"item {n} is not an index, create, update or delete result", body)
    status = r.get("status")
    if not _is_int(status) or not 100 <= status <= 599:
        raise _unparsable(f"item {n} has no HTTP status ({status!r})", body)
    seq_no, version = r.get("_seq_no"), r.get("_version")
    if not (seq_no is None or _is_int(seq_no)) or not (version is None or _is_int(version)):
        raise _unparsable(f"item {n} has a _seq_no or _version that is not a number", body)
    return Item(
        verb=verb,
        status=status,
        index=str(r.get("_index", "")),
        id=str(r.get("_id", "")),
        seq_no=seq_no,
        version=version,
        result=str(r.get("result", "")),
        error=r.get("error"),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unparsable(what: str, body: bytes) -> UnparsableAnswer:
    start = body[:200].decode("utf-8", "replace")
    more = f"... ({len(body)} bytes)" if len(body) > 200 else ""
    return UnparsableAnswer(f"_bulk answer {what}: {start!r}{more}")


@dataclass
class DocOp:
    """A document write as esproxy replays it: the final state, versioned as capture.doc_version says.

    ``index`` puts the whole source (a create, an update's result or an index); ``delete`` removes.
    ``version`` (max of ``_seq_no`` and ``_version`` on the cluster that applied it) makes the other
    cluster keep the newest state whatever order copies arrive in.
    """

    verb: str  # "index" or "delete"
    index: str
    id: str
    version: int
    source: Optional[Source] = None
    routing: Optional[str] = None
    pipeline: Optional[str] = None
    type: Optional[str] = None  # custom mapping type of Elasticsearch 6 requests

    def lines(self) -> bytes:
        return b"".join(self.parts())

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"_index": self.index, "_id": self.id}
        if self.type:
            meta["_type"] = self.type
        if self.routing is not None:
            meta["routing"] = self.routing
        if self.pipeline and self.verb == "index":
            meta["pipeline"] = self.pipeline
        meta["version"] = self.version
        meta["version_type"] = "external_gte"
        return meta

    def parts(self) -> list[Source]:
        """What lines() joins: its metadata line, then (but for delete) the source as it is, not copied."""
        head = json.dumps({self.verb: self.meta()}, ensure_ascii=False, separators=(",", ":")).encode()
        if self.verb == "delete":
            return [head + b"\n"]
        return [head + b"\n", self.source or b"{}", b"\n"]


def split_actions(body: bytes) -> list[bytes]:
    """Cut a `_bulk` body into one chunk per action (its metadata line and, but for delete, its source)."""
    return [b"".join(parts) for parts in action_parts(body)]


def action_parts(body: bytes) -> Iterator[list[Source]]:
    """What split_actions joins into each chunk: its lines (views of ``body``, not copies) and newlines."""
    view = memoryview(body)
    spans: list[tuple[int, int]] = []  # the lines that are not blank, as they are (not stripped)
    start, size = 0, len(body)
    while start < size:
        end = body.find(b"\n", start)
        if end < 0:
            end = size
        first = start
        while first < end and body[first] in _BLANKS:
            first += 1
        if first < end:
            spans.append((start, end))
        start = end + 1
    i = 0
    while i < len(spans):
        s, e = spans[i]
        width = 1 if body[s : min(e, s + 64)].lstrip().startswith(b'{"delete"') else 2
        parts: list[Source] = []
        for s, e in spans[i : i + width]:
            parts += (view[s:e], b"\n")
        yield parts
        i += width
