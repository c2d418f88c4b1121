"""The one-shot commands of the CLI: compare, repair, the initial copy and the follow rules' control
(``esproxy sync``), switchover and failover, dead letters (``esproxy dlq``). Each is a ``main`` that
cli.py dispatches to; they reach the clusters, Kafka and the roles' admin endpoints through
clients/, and use the proxy's and the replay's public faces (the names their packages export) where
they must agree with them (the capture's versions, the switchover's URLs, the follow rules, the rate
limit).
"""
