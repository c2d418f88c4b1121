"""Talking to the outside: pooled HTTP to an Elasticsearch/OpenSearch cluster (and the lean request
path on geventhttpclient), the proxy's Kafka producer and which of its refusals are for good, the
Kafka connection settings (security, SASL) and TLS contexts. Uses core/ only.
"""
