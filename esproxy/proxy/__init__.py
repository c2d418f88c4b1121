"""The proxy role: the HTTP front of cluster A. The request handler forwards each request to A,
captures the answer of a successful write as beans and keeps them (write-ahead spool or in-memory
queue) until the producer has shipped them to Kafka; with ``workers: N`` a master and its pre-fork
workers share the listeners. Also the reads routed to followers and the switchover's leader and
write pause. Uses the follow rules of replay/ (B's index names, read-only followers), admin/ (a
worker's admin endpoints and profiles), clients/ and core/.
"""
