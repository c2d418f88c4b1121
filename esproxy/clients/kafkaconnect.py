"""How long a kafka-python client waits for its brokers when it is built: ``connectTimeout`` of a
``source.kafkas[]`` or ``destination.kafkas[]`` entry, as the argument of the kafka-python in use.

Like kafkasecurity, this module must not import kafka (the client class is handed in).
"""

from __future__ import annotations

from typing import Any, Protocol


class Connected(Protocol):
    connectTimeout: float  # seconds


def connect_kwargs(entry: Connected, client: Any) -> dict[str, int]:
    """The argument of ``client`` (KafkaProducer, KafkaConsumer...) that bounds its constructor's wait."""
    ms = int(entry.connectTimeout * 1000)
    if "bootstrap_timeout_ms" in client.DEFAULT_CONFIG:  # kafka-python 3: the first metadata
        return {"bootstrap_timeout_ms": ms}
    return {"api_version_auto_timeout_ms": ms}  # kafka-python 2: the probe of the broker's version
