"""esproxy: keep a second Elasticsearch cluster in sync with a first one, through a proxy and Kafka."""

__version__ = "0.1.0"
