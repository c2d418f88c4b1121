"""The replay role: a Kafka consumer group that replays the captured writes into cluster B, one lane
per partition, through the follower sync rules (which of A's indices are followed, under which
names, at which rate; changed at runtime through the admin port), with its dead letters. Uses
clients/ and core/; never the proxy's modules.

Its public face, all that the proxy and the commands may import of it (the import-linter contracts in
pyproject.toml), is the names below: the follow rules, which the proxy (B's index names, read-only
followers) and the commands (compare, the initial copy) apply as the replay does, and the rate limit
the initial copy shares with it. esproxy.roles, esproxy.cli and esproxy.configfile, which assemble the
roles and check their config, use its modules.
"""

from .follow import Rules, intersect, matches, name_problem, render
from .ratelimit import RateLimit

__all__ = ["RateLimit", "Rules", "intersect", "matches", "name_problem", "render"]
