"""Index names of a read sent to a follower: A's names in the request, B's names in B's answer.

Pure logic, no I/O. The follow rules (replay/follow.py) write A's index ``logs-1`` into B as, say,
``logs-1-replica``. A client of the proxy speaks A's names; a read the proxy routes to B must name
B's indices, and B's answer must come back with A's names. Only followed indices have a copy in B,
so only reads of followed indices can be served there (a rule that keeps the name matters too).

The API (for the read routing)::

    rewritten = follower_request(rules, method, uri, body)   # body: the plain request body
    if rewritten is None:
        ...  # send the read to the leader (A) as it is
    else:
        r = follower.request(method, rewritten.uri, headers, rewritten.body)
        answer = rewritten.answer(r.status, plain_body_of(r))
        if answer is None:
            ...  # B's answer cannot stand for A's (an index B lacks...): ask the leader instead
        else:
            ...  # answer the client with r's status and headers, and ``answer`` as the body
            # (plain: drop B's Content-Encoding and Content-Length, or ask B with no Accept-Encoding)

Faithful or None: :func:`follower_request` returns None whenever B's answer could differ from A's
for reasons of names. Supported: ``GET|HEAD /<idx>/_doc/<id>``, ``/<idx>/_source/<id>``,
``GET|POST /<idx>/_search``, ``/<idx>/_count``, ``[/<idx>]/_mget``, ``[/<idx>]/_msearch``, where
every index is an exact name some rule follows. None for: wildcards, ``_all``, date math, ``-x``,
remote ``cluster:idx``; a name no rule follows; reads that name no index (``/_search``) or an API not
listed (``_cat``, ``_cluster``, ``_nodes``, scroll and point-in-time reads, ``_field_caps``...);
``scroll``, ``ignore_unavailable`` or ``explain`` parameters, and any parameter naming ``_index``;
bodies with an ``index``/``indices``/``_index`` key (terms lookups, more_like_this docs, shapes),
``indices_boost``, ``pit``, scripts or runtime mappings (they may read ``_index``), ``profile`` or
``explain``, or a string mentioning ``_index`` (a query, sort or aggregation on the index name).
An alias of A that a rule's pattern matches cannot be told from an index here: B then has no index
of that name, and :meth:`Rewritten.answer` sends the read to the leader on ``index_not_found``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any, Optional
from urllib.parse import parse_qsl, quote, unquote

from esproxy.core import routing
from esproxy.replay import Rules, name_problem

_DOC_APIS = frozenset({"_doc", "_source"})
_SEARCH_APIS = frozenset({"_search", "_count"})
_FORBIDDEN_PARAMS = frozenset({"scroll", "ignore_unavailable", "explain"})
_FORBIDDEN_KEYS = frozenset(
    {"index", "indices", "_index", "indices_boost", "pit", "script", "runtime_mappings", "script_fields"}
)
_TRUE_FORBIDDEN_KEYS = frozenset({"profile", "explain"})
_MSEARCH_HEADER_KEYS = frozenset(
    {"index", "indices", "search_type", "preference", "routing", "request_cache", "allow_partial_search_results"}
)
_MGET_DOC_KEYS = frozenset(
    {"_index", "_id", "_type", "routing", "_routing", "_source", "stored_fields", "version", "version_type"}
)
# Keys of an answer whose string values (or lists of them) are index names; reasons name them in [].
_NAME_KEYS = frozenset({"_index", "index", "resource.id", "indices"})
_BRACKETED_KEYS = frozenset({"reason", "_shard"})
# Parts of an answer that hold the client's data or values computed from it: never rewritten.
_DATA_KEYS = frozenset({"_source", "fields", "highlight", "aggregations", "suggest", "_explanation", "sort"})
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_WHITESPACE_CHARS = (" ", "\t", "\n", "\r")
_SCAN = json.JSONDecoder().scan_once  # one JSON value at an offset: (value, end); C-accelerated


class _Unfaithful(Exception):
    pass


@dataclass(frozen=True)
class Rewritten:
    """A read in B's names, and how to turn B's answer back into A's names."""

    uri: str
    body: bytes
    names: dict[str, str] = field(default_factory=dict)  # B's index name -> A's
    head: bool = False
    data: bool = False  # a 2xx answer is the client's document itself (``_source``): nothing to rename

    def answer(self, status: int, body: bytes) -> Optional[bytes]:
        """B's (plain) answer body with A's index names; None when it cannot stand for A's answer:
        B lacks an index it was asked for (not created yet, or the name is an alias in A), the body
        is not JSON, or it names a B index that is none of the request's."""
        if self.head:
            return None if status == 404 else body  # a 404 may be an index B lacks: the leader knows
        if not body or (self.data and 200 <= status < 300):
            return body
        try:
            return _rewrite_answer(body.decode("utf-8"), self.names).encode("utf-8")
        except (_Unfaithful, UnicodeDecodeError):
            return None


def follower_request(rules: Rules, method: str, uri: str, body: bytes) -> Optional[Rewritten]:
    """The read in B's index names, or None when it cannot be served by B faithfully (see the module)."""
    if routing.is_write(method, uri):
        return None
    path, mark, query = uri.partition("?")
    try:
        _check_params(query)
        raw = path.strip("/").split("/")
        segments = [unquote(s) for s in raw]
        names: dict[str, str] = {}
        if segments[0] == "_mget" and len(segments) == 1:
            new_body = _mget(rules, None, body, names)
            return Rewritten(uri, new_body, names)
        if segments[0] == "_msearch" and len(segments) == 1:
            new_body = _msearch(rules, None, body, names)
            return Rewritten(uri, new_body, names)
        if len(segments) < 2 or segments[0].startswith("_"):
            return None
        expression, api, rest = segments[0], segments[1], segments[2:]
        if api in _DOC_APIS and len(rest) == 1 and method in ("GET", "HEAD"):
            if "," in expression:
                return None
            new_body = body
        elif api in _SEARCH_APIS and not rest:
            _check_search_body(body)
            new_body = body
        elif api == "_mget" and not rest:
            new_body = _mget(rules, expression, body, names)
        elif api == "_msearch" and not rest:
            new_body = _msearch(rules, expression, body, names)
        else:
            return None
        b_expression = _rename(rules, expression, names)
        new_uri = "/" + "/".join([quote(b_expression, safe=","), *raw[1:]]) + mark + query
        return Rewritten(new_uri, new_body, names, head=method == "HEAD", data=api == "_source")
    except _Unfaithful:
        return None


def _rename(rules: Rules, expression: str, names: dict[str, str]) -> str:
    """A comma-separated list of exact followed names in B's names; _Unfaithful for anything else."""
    out = []
    for part in expression.split(","):
        if ":" in part or name_problem(part) is not None:  # wildcards, date math, -x, remote clusters
            raise _Unfaithful(part)
        target = rules.target(part)
        if target is None:
            raise _Unfaithful(part)  # not followed: B has no copy
        names[target.index] = part
        out.append(target.index)
    return ",".join(out)


def _check_params(query: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _FORBIDDEN_PARAMS or "_index" in key or "_index" in value:
            raise _Unfaithful(key)


def _check_search_body(body: bytes) -> None:
    if not body.strip():
        return
    try:
        data = json.loads(body)
    except ValueError:
        raise _Unfaithful("not JSON") from None
    if not isinstance(data, dict):
        raise _Unfaithful("not an object")
    _check_value(data)


def _check_value(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _FORBIDDEN_KEYS or "_index" in key:
                raise _Unfaithful(key)
            if key in _TRUE_FORBIDDEN_KEYS and item not in (False, None):
                raise _Unfaithful(key)
            _check_value(item)
    elif isinstance(value, list):
        for item in value:
            _check_value(item)
    elif isinstance(value, str) and "_index" in value:
        raise _Unfaithful(value)


def _mget(rules: Rules, default: Optional[str], body: bytes, names: dict[str, str]) -> bytes:
    try:
        data = json.loads(body) if body.strip() else None
    except ValueError:
        raise _Unfaithful("not JSON") from None
    if not isinstance(data, dict) or set(data) - {"docs", "ids"}:
        raise _Unfaithful("an _mget body esproxy does not know")
    if "ids" in data:
        if default is None or "docs" in data:
            raise _Unfaithful("ids without an index")
        return body  # the path's index is renamed by the caller
    docs = data.get("docs")
    if not isinstance(docs, list):
        raise _Unfaithful("docs is not a list")
    renamed = []
    for doc in docs:
        if not isinstance(doc, dict) or set(doc) - _MGET_DOC_KEYS:
            raise _Unfaithful("an _mget doc esproxy does not know")
        index = doc.get("_index", default)
        if not isinstance(index, str) or "," in index:
            raise _Unfaithful("an _mget doc without one index")
        doc = dict(doc)
        if "_index" in doc:
            doc["_index"] = _rename(rules, index, names)
        elif default is not None:
            _rename(rules, default, names)
        renamed.append(doc)
    return json.dumps({"docs": renamed}, ensure_ascii=False, separators=(",", ":")).encode()


def _msearch(rules: Rules, default: Optional[str], body: bytes, names: dict[str, str]) -> bytes:
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines or len(lines) % 2:
        raise _Unfaithful("an _msearch body esproxy cannot read")
    out: list[bytes] = []
    for header_line, search_line in zip(lines[::2], lines[1::2]):
        try:
            header = json.loads(header_line)
        except ValueError:
            raise _Unfaithful("an _msearch header that is not JSON") from None
        if not isinstance(header, dict) or set(header) - _MSEARCH_HEADER_KEYS:
            raise _Unfaithful("an _msearch header esproxy does not know")
        named = header.get("index", header.get("indices", default))
        if "index" in header and "indices" in header:
            raise _Unfaithful("index and indices")
        if isinstance(named, list) and all(isinstance(n, str) for n in named):
            named = ",".join(named)
        if not isinstance(named, str):
            raise _Unfaithful("an _msearch search without an index")
        b_names = _rename(rules, named, names)
        _check_search_body(search_line)
        if "index" in header or "indices" in header:
            header = {k: v for k, v in header.items() if k != "indices"}
            header["index"] = b_names
            header_line = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
        out += [header_line.strip(), search_line.strip()]
    return b"\n".join(out) + b"\n"


def _rewrite_answer(text: str, names: dict[str, str]) -> str:
    """The answer's JSON text with B's index names (in index-name places only) replaced by A's; the
    rest byte for byte. _Unfaithful when B reports a missing index or a hit from an unknown index."""
    if '"index_not_found_exception"' in text:
        raise _Unfaithful("index_not_found")
    if text.lstrip()[:1] not in ("{", "["):
        raise _Unfaithful("not JSON")
    if all(b == a for b, a in names.items()):
        return text  # same names: nothing to rewrite
    if '"_index"' not in text and not any(b in text for b in names):
        try:
            json.loads(text)  # in C: cheaper than a walk
        except (ValueError, RecursionError):
            raise _Unfaithful("not JSON") from None
        return text  # no hit, no name (a count, an empty search): nothing to rewrite
    edits: list[tuple[int, int, str]] = []
    try:
        end = _walk(text, 0, None, names, edits)
    except (ValueError, StopIteration, IndexError, RecursionError):
        raise _Unfaithful("not JSON") from None
    if text[_space(text, end) :]:
        raise _Unfaithful("not one JSON value")
    out, done = [], 0
    for start, stop, new in edits:
        out += [text[done:start], new]
        done = stop
    out.append(text[done:])
    return "".join(out)


def _walk(text: str, i: int, key: Optional[str], names: dict[str, str], edits: list[tuple[int, int, str]]) -> int:
    """Walk the JSON value at ``i`` (the value of ``key``), noting the index names to rename; its end.
    The client's data (``_source``, aggregations...) is skipped by the C scanner, not walked."""
    i = _space(text, i)
    first = text[i]
    if key in _DATA_KEYS or first not in '{["':
        return _SCAN(text, i)[1]
    if first == '"':
        value, end = scanstring(text, i + 1)
        new = _renamed(value, key, names)
        if new is not None:
            edits.append((i, end, json.dumps(new, ensure_ascii=False)))
        return end
    closing = "}" if first == "{" else "]"
    i = _space(text, i + 1)
    if text[i] == closing:
        return i + 1
    while True:
        item_key = key
        if closing == "}":
            if text[i] != '"':
                raise ValueError("a key expected")
            item_key, i = scanstring(text, i + 1)
            i = _space(text, i)
            if text[i] != ":":
                raise ValueError(": expected")
            i += 1
        i = _space(text, _walk(text, i, item_key, names, edits))
        if text[i] == closing:
            return i + 1
        if text[i] != ",":
            raise ValueError(", expected")
        i = _space(text, i + 1)


def _space(text: str, i: int) -> int:
    if text[i : i + 1] not in _WHITESPACE_CHARS:  # answers are mostly compact: no call for them
        return i
    return _WHITESPACE.match(text, i).end()  # type: ignore[union-attr]  # matches the empty string too


def _renamed(value: str, key: Optional[str], names: dict[str, str]) -> Optional[str]:
    """A's name for an index-name string of B's answer (or a reason naming one); None: unchanged."""
    if key in _NAME_KEYS:
        if value in names:
            return names[value]
        if key == "_index":
            raise _Unfaithful(f"a hit from {value}, not a requested index")
    elif key in _BRACKETED_KEYS:
        new = value
        for b, a in names.items():
            new = new.replace(f"[{b}]", f"[{a}]")
        if new != value:
            return new
    return None
