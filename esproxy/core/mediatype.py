"""Elasticsearch's REST API compatibility media types, and what to send a cluster that does not know them.

The official clients since elasticsearch-py 8 (and the Java, Go... clients 8) send
``Content-Type: application/vnd.elasticsearch+json; compatible-with=8`` (``+x-ndjson`` for `_bulk`) and the same
JSON type as Accept.
Elasticsearch 7.11+ understands it; OpenSearch and Elasticsearch before 7.11 refuse it with 406.
A write captured from such a client keeps its Content-Type in the bean (not its Accept: the replay adds it back,
see accept_for), so the replay into a cluster
that refuses it sends the plain media type of the same body format instead: the body is unchanged
(only the compatibility request is dropped, and that cluster could not have honoured it anyway).
"""

from __future__ import annotations

import re
from typing import Optional

_COMPATIBLE = re.compile(r"^\s*application/vnd\.elasticsearch\+([a-z-]+)\s*(;.*)?$", re.IGNORECASE)
_PLAIN = {
    "json": "application/json",
    "x-ndjson": "application/x-ndjson",
    "yaml": "application/yaml",
    "cbor": "application/cbor",
    "smile": "application/smile",
}


def plain(content_type: str) -> Optional[str]:
    """The plain media type for a compatibility one (``...+x-ndjson; compatible-with=8`` -> ``application/x-ndjson``),
    keeping a ``charset`` parameter; None for anything else."""
    m = _COMPATIBLE.match(content_type or "")
    if not m or m.group(1).lower() not in _PLAIN:
        return None
    charset = re.search(r"charset\s*=\s*[^;\s]+", m.group(2) or "", re.IGNORECASE)
    return _PLAIN[m.group(1).lower()] + (f"; {charset.group(0)}" if charset else "")


def accept_for(content_type: str) -> str:
    """The Accept header the official clients send along with a compatibility Content-Type: the JSON flavour with the
    same compatible-with (Elasticsearch 8 refuses a compatibility Content-Type that comes without it)."""
    m = _COMPATIBLE.match(content_type or "")
    version = re.search(r"compatible-with\s*=\s*(\d+)", (m.group(2) or "") if m else "")
    return "application/vnd.elasticsearch+json" + (f"; compatible-with={version.group(1)}" if version else "")


def refused(status: int, body: bytes) -> bool:
    """Did the cluster refuse the request's media type? 406 (OpenSearch, Elasticsearch < 7.11), or Elasticsearch's
    400 media_type_header_exception (a compatible-with version it does not support)."""
    return status == 406 or (status == 400 and b"media_type_header_exception" in body)
