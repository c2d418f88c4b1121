"""Beans as the tests write and read them: the Go original's shape, and what a bean does."""

from __future__ import annotations

import json
from typing import Any

from esproxy.core.bean import Bean
from esproxy.core.messages import Assembler, Chunk, decode


def make_bean(method: str, uri: str, body: str = "", content_type: str = "application/json", **extra: Any) -> bytes:
    """A bean as the Go original writes it (raw JSON bytes)."""
    bean = {
        "labels": None,
        "host": "127.0.0.1:2900",
        "remoteAddr": "127.0.0.1:1234",
        "method": method,
        "requestUri": uri,
        "header": {"Content-Type": [content_type]},
        "body": body,
        "clusterIds": ["some-other-cluster"],
    }
    bean.update(extra)
    return json.dumps(bean, ensure_ascii=False).encode("utf-8")


def writes_of(bean: dict) -> list[tuple]:
    """What a bean does, whatever its form.

    A document bean (`"kind": "docs"`, a `_bulk` of versioned actions) gives one
    ("index"|"delete", index, id, source-or-None) per action; a write replayed as sent gives
    (method, requestUri).
    """
    if bean.get("kind") != "docs":
        return [(bean["method"], bean["requestUri"])]
    lines = [json.loads(line) for line in bean["body"].splitlines() if line.strip()]
    out, i = [], 0
    while i < len(lines):
        verb, meta = next(iter(lines[i].items()))
        assert meta.get("version_type") == "external_gte" and isinstance(meta.get("version"), int), meta
        if verb == "delete":
            out.append(("delete", meta["_index"], meta["_id"], None))
            i += 1
        else:
            out.append((verb, meta["_index"], meta["_id"], lines[i + 1]))
            i += 2
    return out


def doc_writes(beans: list) -> list[tuple]:
    return [w for b in beans for w in writes_of(b)]


def reassembled(values: list[bytes], assembler: Assembler) -> list[Bean]:
    """What the replay gets out of these messages of one partition, in order."""
    out = []
    for offset, value in enumerate(values):
        item = decode(value)
        if isinstance(item, Bean):
            out.append(item)
        elif isinstance(item, Chunk):
            complete = assembler.add(item, offset, 0)
            if complete is not None:
                out.append(Bean.from_json(complete.bean_json()))
                assembler.release(complete.id)
    return out
