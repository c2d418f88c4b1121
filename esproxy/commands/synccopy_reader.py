"""`esproxy sync copy`'s reading: A's documents of one index in pages, by point in time + ``search_after``
(sorted on ``_shard_doc``, or on ``_doc`` one shard at a time where the engine lacks it) or by scroll, with a
position that a checkpoint keeps and another process resumes (see esproxy/commands/synccopy.py)."""

from __future__ import annotations

import json
from typing import Iterator

from esproxy.clients.elastic import Elastic, UpstreamError

from .compare import call

KEEP_ALIVE = "10m"  # of the point in time or scroll between two batches: how long a killed copy can still resume


class Reader:
    """A's documents of one index in pages, by point in time + search_after or by scroll; the
    position after each page can be saved and, for a point in time, resumed by another process."""

    # The orders a point in time is paged in, the first the engine takes: see _pit_pages.
    ORDERS: tuple[str, ...] = ("shard_doc", "doc")

    def __init__(self, cluster: Elastic, index: str, page: int, state: dict) -> None:
        self.cluster, self.index, self.page = cluster, index, page
        # kind ("pit" or "scroll"), flavor, id, order, slice, slices, after: resumed when present
        self.state = state
        self.restarted = False

    def pages(self) -> Iterator[list[dict]]:
        if self.state.get("kind") == "pit" and self.state.get("after") is not None:
            try:
                yield from self._pit_pages()
                return
            except _Expired:
                self.restarted = True
                self.state = {}
        elif self.state.get("kind"):  # a scroll, or a point in time before its first page: from the start
            self.restarted = bool(self.state.get("after") is not None or self.state.get("kind") == "scroll")
            self.state = {}
        if self._open_pit():
            for order in self.ORDERS:
                self.state.update(order=order, slice=0, slices=self._slices() if order == "doc" else 0)
                try:
                    yield from self._pit_pages()
                    return
                except _Unsupported:  # the point in time cannot be paged in this order: the next one
                    pass
            self.close()  # a point in time the engine pages in neither order: scroll
        yield from self._scroll_pages()

    def close(self) -> None:
        """Release the point in time or scroll (only once the index is done: a killed copy resumes it)."""
        kind, flavor, ident = self.state.get("kind"), self.state.get("flavor"), self.state.get("id")
        if not ident:
            return
        if kind == "pit":
            uri, body = (
                ("/_search/point_in_time", {"pit_id": [ident]}) if flavor == "opensearch" else ("/_pit", {"id": ident})
            )
        else:
            uri, body = "/_search/scroll", {"scroll_id": ident}
        try:
            self.cluster.request("DELETE", uri, {"Content-Type": "application/json"}, json.dumps(body).encode())
        except UpstreamError:
            pass

    def page_done(self, hits: list[dict]) -> None:
        """The page is written: the position to go on from (a crash before this re-reads the page)."""
        if self.state.get("kind") == "pit":
            self.state["after"] = hits[-1].get("sort")

    def _open_pit(self) -> bool:
        for flavor, uri in (
            ("opensearch", f"/{self.index}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
            ("elasticsearch", f"/{self.index}/_pit?keep_alive={KEEP_ALIVE}"),
        ):
            r = self.cluster.request("POST", uri, {}, None)
            if r.status == 200:
                body = json.loads(r.body)
                self.state = {
                    "kind": "pit",
                    "flavor": flavor,
                    "id": body.get("pit_id") or body.get("id"),
                    "after": None,
                }
                return True
        return False

    def _slices(self) -> int:
        """How many slices of the point in time the ``doc`` order reads one after the other: one per
        shard (a slice's ``max`` equal to the shard count makes slice N exactly shard N), as a Lucene
        doc id is unique only within a shard; none for an index of one shard."""
        settings = call(self.cluster, "GET", f"/{self.index}/_settings/index.number_of_shards")
        shards = int(next(iter(settings.values()))["settings"]["index"]["number_of_shards"])
        return shards if shards > 1 else 0

    def _pit_pages(self) -> Iterator[list[dict]]:
        """Pages in ``_shard_doc`` order (Elasticsearch 7.12+, OpenSearch 3.3+) or, where the engine
        has no ``_shard_doc`` (OpenSearch 2.x/3.0-3.2), in ``_doc`` order one shard at a time: either
        way ``after`` (with ``slice``) is a position another process can go on from while the point in
        time lives. A checkpoint of before the order was recorded used ``_shard_doc``."""
        paged = self.state.get("after") is not None
        while True:
            order = self.state.get("order", "shard_doc")
            body: dict = {
                "size": self.page,
                "sort": [{"_shard_doc": "asc"}] if order == "shard_doc" else ["_doc"],
                "pit": {"id": self.state["id"], "keep_alive": KEEP_ALIVE},
                "seq_no_primary_term": True,
                "version": True,
                "track_total_hits": False,
            }
            if self.state.get("slices"):
                body["slice"] = {"id": self.state["slice"], "max": self.state["slices"]}
            if self.state.get("after") is not None:
                body["search_after"] = self.state["after"]
            r = self.cluster.request(
                "POST", "/_search", {"Content-Type": "application/json"}, json.dumps(body).encode()
            )
            if r.status == 404 or (r.status >= 400 and b"search_context_missing" in r.body):
                raise _Expired()
            if r.status == 400 and not paged:
                raise _Unsupported()
            if r.status >= 300:
                raise UpstreamError(
                    self.cluster.target("/_search"), f"status {r.status}: {r.body[:300]!r}", timeout=False
                )
            data = json.loads(r.body)
            hits = data.get("hits", {}).get("hits", [])
            self.state["id"] = data.get("pit_id") or data.get("id") or self.state["id"]
            if not hits:
                if self.state.get("slice", 0) + 1 >= self.state.get("slices", 0):
                    return
                self.state.update(slice=self.state["slice"] + 1, after=None)  # the next shard
                continue
            paged = True
            yield hits

    def _scroll_pages(self) -> Iterator[list[dict]]:
        r = call(
            self.cluster,
            "POST",
            f"/{self.index}/_search?scroll={KEEP_ALIVE}",
            {"size": self.page, "sort": ["_doc"], "seq_no_primary_term": True, "version": True},
        )
        self.state = {"kind": "scroll", "id": r.get("_scroll_id"), "after": None}
        while True:
            hits = r.get("hits", {}).get("hits", [])
            if not hits:
                return
            yield hits
            r = call(self.cluster, "POST", "/_search/scroll", {"scroll": KEEP_ALIVE, "scroll_id": self.state["id"]})
            self.state["id"] = r.get("_scroll_id", self.state["id"])


class _Expired(Exception):
    """The point in time a checkpoint names is gone."""


class _Unsupported(Exception):
    """The cluster opens a point in time but cannot page through it as asked."""
