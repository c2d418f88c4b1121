"""Which requests are writes: the only ones captured and replayed.

GET and HEAD never write. Other methods write unless the path names a read-only API (searches,
counts, multi-gets, analysis...), which Elasticsearch accepts as POST because they carry a body.
The Go original replayed those too; esproxy does not. This is also the seam for read/write
splitting: a request :func:`is_write` rejects can be routed to a follower.
"""

from __future__ import annotations

# API path segments of read-only requests. A segment anywhere in the path counts, so
# `/_search/scroll`, `/idx/_search/template`, `/_eql/search/<id>`, `/_sql/close` are all reads.
READ_ONLY_APIS = frozenset(
    {
        "_search",
        "_msearch",
        "_count",
        "_mget",
        "_sql",
        "_analyze",
        "_validate",
        "_explain",
        "_field_caps",
        "_termvectors",
        "_mtermvectors",
        "_pit",
        "_async_search",
        "_eql",
        "_knn_search",
        "_render",
        "_rank_eval",
    }
)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_write(method: str, path: str) -> bool:
    """True when a 2xx answer to this request means the cluster's data may have changed."""
    if method in READ_METHODS:
        return False
    return not any(segment in READ_ONLY_APIS for segment in path.split("?", 1)[0].split("/"))
