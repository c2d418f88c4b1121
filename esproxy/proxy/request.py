"""One client request as the proxy's stages see it, made once and handed from stage to stage.

:class:`Request` is made by ProxyApp once a request's head (and body) is read, and handed in order to
the stages: the read-only guard (proxy/readonly.py), assigned ids (proxy/autoids.py), read routing
(proxy/readroute.py), the forward, then capture (proxy/capture.py) or settle (proxy/settle.py). The
stages read and decide; what the request *is* is worked out here, once: whether it writes
(:func:`routing.is_write`), its path segments, which document write it is (:func:`write_kind`), its
body decompressed, and a `_bulk`'s actions (:func:`bulk.parse_request`, called from here only).

Everything but ``writing`` is worked out when a stage first asks (a read pays for none of it), and kept.
A stage that changes the request (autoids gives documents ids) replaces what it changed through
:meth:`Request.named` and :meth:`Request.rewritten`, so the stages after it see the request as forwarded
without working anything out again. The model is mitmproxy's flow: the core parses, the addons decide.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Optional, Union
from urllib.parse import unquote

from esproxy.core.bulk import Action, BulkFormatError, parse_request
from esproxy.core.routing import READ_METHODS, is_write


class BadBody(ValueError):
    """A body that is not the compression its Content-Encoding names (the message says why)."""


class Request:
    """A request: ``method``, ``uri`` (the target as the client sent it: raw, with its query), ``body``
    (as sent, compressed or not) and ``encoding`` (its Content-Encoding, lowercased; "" for none)."""

    __slots__ = ("method", "uri", "body", "encoding", "writing", "_segments", "_kind", "_plain", "_actions")

    def __init__(self, method: str, uri: str, body: bytes = b"", encoding: str = "") -> None:
        self.method = method
        self.uri = uri
        self.body = body
        self.encoding = encoding
        # A 2xx answer may have changed the cluster's data (a GET's answer is known without a call).
        self.writing = method not in READ_METHODS and is_write(method, uri)
        self._segments: Optional[list[str]] = None
        self._kind: Optional[str] = None
        self._plain: Optional[bytes] = None
        self._actions: Union[None, list[Action], BulkFormatError] = None

    @property
    def segments(self) -> list[str]:
        """The path's segments, percent-decoded (``/a%2Fb/_doc/1?x`` -> ``["a/b", "_doc", "1"]``)."""
        if self._segments is None:
            self._segments = [unquote(s) for s in self.uri.split("?", 1)[0].strip("/").split("/")]
        return self._segments

    @property
    def kind(self) -> str:
        """Which document write it is: 'bulk', 'index', 'update', 'delete', or '' (see :func:`write_kind`)."""
        if self._kind is None:
            self._kind = write_kind(self.method, self.segments)
        return self._kind

    @property
    def plain(self) -> bytes:
        """The body decompressed as its Content-Encoding says (once); BadBody if it does not decode."""
        if self.encoding not in ("gzip", "deflate"):
            return self.body
        if self._plain is None:
            try:
                self._plain = decompress(self.body, self.encoding)
            except (OSError, EOFError, zlib.error) as e:
                raise BadBody(f"the body is not {self.encoding}: {e}") from None
        return self._plain

    @property
    def actions(self) -> list[Action]:
        """A `_bulk`'s actions, read from :attr:`plain` once (sources are views of it, not copies);
        BulkFormatError (each time asked) for a body that is not a `_bulk` body."""
        actions = self._actions
        if actions is None:
            try:
                actions = self._actions = parse_request(self.plain, views=True)
            except BulkFormatError as e:
                actions = self._actions = e
        if isinstance(actions, BulkFormatError):
            raise actions
        return actions

    def named(self, uri: str, segments: list[str]) -> None:
        """A new target for the same write (autoids named its document): ``segments`` are its path's."""
        self.uri, self._segments = uri, segments

    def rewritten(self, body: bytes, actions: list[Action]) -> None:
        """A new plain body (autoids gave actions ids) with its actions (views of it): sent uncompressed."""
        self.body, self.encoding, self._plain, self._actions = body, "", None, actions

    def sent(self) -> None:
        """The request was forwarded and its answer recorded: its body (and what was read from it) goes."""
        self.body, self._plain, self._actions = b"", None, None


def write_kind(method: str, s: list[str]) -> str:
    """'bulk', 'index', 'update', 'delete', or '' for a write that is not a document write (path segments ``s``)."""
    if s[-1] == "_bulk" and len(s) <= 3:
        return "bulk"
    if not s or s[0].startswith("_"):
        return ""
    if len(s) == 2 and method == "POST" and (s[1] == "_doc" or not s[1].startswith("_")):
        return "index"  # auto-generated id (`_doc`, or an Elasticsearch 6 type)
    if len(s) == 3:
        if s[1] in ("_doc", "_create") or not s[1].startswith("_"):
            if method in ("PUT", "POST"):
                return "index"
            if method == "DELETE" and s[1] != "_create":
                return "delete"
        if s[1] == "_update" and method == "POST":
            return "update"
    if len(s) == 4 and (s[1] == "_doc" or not s[1].startswith("_")) and method in ("PUT", "POST"):
        return {"_create": "index", "_update": "update"}.get(s[3], "")  # Elasticsearch 6 typed paths
    return ""


def decompress(body: bytes, encoding: str) -> bytes:
    """A gzip or deflate body, plain (the bean carries the body plain for any replayer)."""
    return gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
