"""The bean: one captured write, the only message type that crosses a boundary.

Its JSON is the Go original's (``labels, host, remoteAddr, method, requestUri, header, body,
clusterIds``), so either program can read what the other wrote. Two tolerances for old beans:
keys match case-insensitively, and ``body`` may be an embedded JSON value instead of a string
(the shape the original logs). Fields esproxy adds, which the original ignores: ``bodyEncoding``
(``"base64"`` for a body that is not UTF-8), ``index`` (the index the write is about: the Kafka
key, so that an index's writes stay in order) and ``kind`` (``"docs"``: a `_bulk` of versioned
document states, see proxy/capture.py, which can be batched with its neighbours on replay).

This module and core/messages.py (beans ⇄ Kafka messages) are the contract between the proxy and the
replay: both import it, neither imports the other's modules.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any, Optional
from urllib.parse import unquote

# Bodies over LARGE bytes are turned into JSON PIECE bytes at a time (Bean.json_pieces).
LARGE = 1 << 20
PIECE = 1 << 20
_MARK = "\x00esproxy-body\x00"  # stands for the body in the JSON json_pieces cuts in two
_MARK_JSON = json.dumps(_MARK)
_encode_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes a string as

# A bean of this kind holds versioned document actions in a `_bulk` body (see proxy/capture.py).
DOCS_KIND = "docs"
NDJSON = "application/x-ndjson"


class BeanError(ValueError):
    """A message that is not a usable bean; the text says why."""


@dataclass
class Bean:
    method: str
    requestUri: str
    body: bytes = b""
    header: dict[str, list[str]] = field(default_factory=dict)
    host: str = ""
    remoteAddr: str = ""
    labels: Optional[dict[str, Any]] = None
    clusterIds: list[str] = field(default_factory=list)
    index: str = ""
    kind: str = ""
    # to_json() once: the spool and Kafka both need it. A bean is not changed once serialized.
    _json: Optional[bytes] = field(default=None, init=False, repr=False, compare=False)

    def index_key(self) -> str:
        """The index the write is about: the partition key, so that an index's writes replay in order.
        A bean of the Go original has no ``index``: the first segment of its path (``_bulk`` for a bulk)."""
        return self.index or index_in_path(self.requestUri.split("?", 1)[0])

    def documents(self, index: str, body: bytes) -> Bean:
        """A document bean of ``index`` holding the versioned `_bulk` actions ``body``, from where this one came."""
        return replace(
            self,
            method="POST",
            requestUri="/_bulk",
            header={"Content-Type": [NDJSON]},
            body=body,
            index=index,
            kind=DOCS_KIND,
        )

    def to_dict(self) -> dict[str, Any]:
        out = self.to_dict_without_body()
        try:
            out["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body"] = base64.b64encode(self.body).decode("ascii")
            out["bodyEncoding"] = "base64"
        if self.index:
            out["index"] = self.index
        if self.kind:
            out["kind"] = self.kind
        return out

    def to_dict_without_body(self) -> dict[str, Any]:
        """to_dict() up to the body, which comes next (then ``index`` and ``kind``), for json_pieces."""
        out: dict[str, Any] = {
            "labels": self.labels or None,
            "host": self.host,
            "remoteAddr": self.remoteAddr,
            "method": self.method,
            "requestUri": self.requestUri,
            "header": self.header,
            "clusterIds": self.clusterIds,
        }
        return out

    def to_json(self) -> bytes:
        if self._json is None:
            if len(self.body) > LARGE:
                self._json = b"".join(self.json_pieces())
            else:
                self._json = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self._json

    def json_pieces(self) -> list[bytes]:
        """to_json() in pieces, whose join it is: for a large UTF-8 body, its JSON string is made a slice
        (about PIECE bytes, cut at a newline) at a time, so that the body is in memory about twice at
        most (the body, its JSON) rather than four times (the body, its text, the JSON text, its bytes)."""
        if self._json is not None or len(self.body) <= LARGE:
            return [self.to_json()]
        out = self.to_dict_without_body()
        out["body"] = _MARK
        if self.index:
            out["index"] = self.index
        if self.kind:
            out["kind"] = self.kind
        head, _, tail = json.dumps(out, ensure_ascii=False, separators=(",", ":")).partition(_MARK_JSON)
        pieces = [head.encode("utf-8") + b'"']
        body, start = self.body, 0
        try:
            while start < len(body):
                cut = body.find(b"\n", start + PIECE)
                end = len(body) if cut < 0 else cut + 1  # a newline is never inside a UTF-8 character
                pieces.append(_encode_string(body[start:end].decode("utf-8"))[1:-1].encode("utf-8"))
                start = end
        except UnicodeDecodeError:  # base64, as to_dict writes it
            return [json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")]
        pieces.append(b'"' + tail.encode("utf-8"))
        return pieces

    def forget_json(self, over: int = 1 << 20) -> None:
        """Drop the JSON to_json() keeps if it is larger than ``over`` bytes (to_json makes it again): a
        large bean written to the spool is not kept in memory twice until it is shipped."""
        if self._json is not None and len(self._json) > over:
            self._json = None

    @classmethod
    def from_json(cls, data: bytes) -> Bean:
        return cls.from_obj(loads(data))

    @classmethod
    def from_obj(cls, raw: Any) -> Bean:
        """The bean of a decoded JSON value (see from_json)."""
        if not isinstance(raw, dict):
            raise BeanError(f"not a JSON object but {type(raw).__name__}")
        fields = {str(k).lower(): v for k, v in raw.items()}
        method, uri = fields.get("method"), fields.get("requesturi")
        if not isinstance(method, str) or not method:
            raise BeanError("no method")
        if not isinstance(uri, str) or not uri.startswith("/"):
            raise BeanError("no requestUri (an absolute path)")
        bean = cls(
            method=method.upper(),
            requestUri=uri,
            body=_body(fields.get("body"), fields.get("bodyencoding")),
            header=_header(fields.get("header")),
            host=str(fields.get("host") or ""),
            remoteAddr=str(fields.get("remoteaddr") or ""),
            labels=_labels(fields.get("labels")),
            clusterIds=_cluster_ids(fields.get("clusterids")),
            index=str(fields.get("index") or ""),
            kind=str(fields.get("kind") or ""),
        )
        _check_text(bean)
        return bean


def loads(data: bytes) -> Any:
    """The JSON value of a message; BeanError if it is not JSON (or nested deeper than the decoder goes).
    Bytes are decoded strictly: json.loads would let the UTF-8 form of a lone surrogate through."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BeanError(f"not JSON: {e}") from None


def _check_text(bean: Bean) -> None:
    """BeanError for a text that cannot be written as UTF-8 again: a lone surrogate, which JSON can escape."""
    texts = [bean.method, bean.requestUri, bean.host, bean.remoteAddr, bean.index, bean.kind, *bean.clusterIds]
    texts += [text for name, values in bean.header.items() for text in (name, *values)]
    try:
        "".join(texts).encode("utf-8")
        if bean.labels:
            json.dumps(bean.labels, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BeanError("a text of the bean is not Unicode text (a lone surrogate)") from None


def index_in_path(path: str) -> str:
    """The index a write's path names: its first segment."""
    return unquote(path.lstrip("/").split("/", 1)[0])


def _body(body: Any, encoding: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str) and encoding == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise BeanError("body is not valid base64") from None
    try:
        if isinstance(body, str):
            return body.encode("utf-8")
        # The original logs bodies as embedded JSON; such a bean carries the document itself.
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise BeanError("body is not Unicode text (a lone surrogate)") from None


def _labels(labels: Any) -> Optional[dict[str, Any]]:
    return labels if isinstance(labels, dict) and labels else None  # none are written as null


def _cluster_ids(ids: Any) -> list[str]:
    if ids is None:
        return []
    if not isinstance(ids, list):
        raise BeanError("clusterIds is not a list")
    return [str(c) for c in ids if c]


def _header(header: Any) -> dict[str, list[str]]:
    if header is None:
        return {}
    if not isinstance(header, dict):
        raise BeanError("header is not an object")
    out: dict[str, list[str]] = {}
    for name, values in header.items():
        out[str(name)] = [str(v) for v in values] if isinstance(values, list) else [str(values)]
    return out
