"""Talking to the outside: pooled HTTP to an Elasticsearch/OpenSearch cluster (and the lean request
path on geventhttpclient), an index's definition read from A and created in B (the copy and the
replay), the proxy's Kafka producer and which of its refusals are for good, the Kafka connection
settings (security, SASL), TLS contexts, and one ``requests`` session per endpoint for the HTTP the
commands do off the hot path. Uses core/ only.
"""
