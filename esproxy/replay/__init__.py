"""The replay role: a Kafka consumer group that replays the captured writes into cluster B, one lane
per partition, through the follower sync rules (which of A's indices are followed, under which
names, at which rate; changed at runtime through the admin port), with its dead letters. Uses
clients/ and core/; never the proxy's modules.
"""
