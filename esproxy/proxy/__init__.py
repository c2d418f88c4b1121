"""The proxy role: the HTTP front of cluster A. The request handler forwards each request to A,
captures the answer of a successful write as beans and keeps them (write-ahead spool or in-memory
queue) until the producer has shipped them to Kafka; with ``workers: N`` a master and its pre-fork
workers share the listeners. Also the reads routed to followers and the switchover's leader and
write pause. Uses the follow rules of replay/ (B's index names, read-only followers), admin/ (a
worker's admin endpoints and profiles), clients/ and core/.

Its public face, all that the commands may import of it (the import-linter contracts in pyproject.toml),
is the names below: what a command must compute as the proxy does. esproxy.roles and esproxy.cli, which
assemble and start the roles, use its modules.
"""

from .capture import doc_version  # the external version a replayed write carries (esproxy repair)
from .leadership import same_url  # two spellings of one cluster URL (esproxy switchover)

__all__ = ["doc_version", "same_url"]
