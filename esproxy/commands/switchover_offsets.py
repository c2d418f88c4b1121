"""Kafka for `esproxy switchover`: the topic's end offsets and the replays' committed offsets, and the rule
that says a replay has applied everything (committed >= end)."""

from __future__ import annotations

from typing import Any, Optional

from esproxy.clients import kafkasecurity
from esproxy.core.config import KafkaDestination


def behind(end: dict[tuple[str, int], int], committed: dict[tuple[str, int], Optional[int]]) -> dict[str, int]:
    """Partitions (``topic-partition``) whose committed offset is below the end offset, and by how much.

    A replay commits an offset only once everything before it is applied. On brokers whose high watermark
    counts record batches (Tansu) the end offset is the last batch's base offset + 1, which the offset
    committed after its last record still reaches: "committed >= end" means "all applied" on both.
    """
    out = {}
    for (topic, partition), offset in sorted(end.items()):
        done = committed.get((topic, partition))
        if offset > (done or 0):
            out[f"{topic}-{partition}"] = offset - (done or 0)
    return out


class Offsets:
    """The topic's end offsets and consumer groups' committed offsets, read without joining any group
    (one client per group, kept for the command's run)."""

    def __init__(self, kafka: KafkaDestination) -> None:
        self.kafka = kafka  # the proxy's topic entry: its brokers and security settings
        self._clients: dict[Optional[str], Any] = {}

    def _client(self, group: Optional[str]) -> Any:
        from kafka import KafkaConsumer

        if group not in self._clients:
            self._clients[group] = KafkaConsumer(
                bootstrap_servers=list(self.kafka.brokers),
                group_id=group,
                enable_auto_commit=False,
                request_timeout_ms=15000,
                **kafkasecurity.client_kwargs(self.kafka),
            )
        return self._clients[group]

    def end(self, topics: list[str]) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition

        c = self._client(None)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): n for tp, n in c.end_offsets(tps).items()} if tps else {}

    def committed(self, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], Optional[int]]:
        from kafka import TopicPartition

        c = self._client(group)
        return {(t, p): c.committed(TopicPartition(t, p), timeout_ms=10000) for t, p in partitions}

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
