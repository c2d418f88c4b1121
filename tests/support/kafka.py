"""Kafka from the test's side: topics, reading every record, producing raw values."""

from __future__ import annotations

import time
from typing import Optional

from .basics import wait_until

KAFKA_CONSUMER_OPTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    wait_until(lambda: topic_partitions(bootstrap, topic), timeout=10, msg=f"topic {topic} metadata")


def topic_partitions(bootstrap: str, topic: str) -> set:
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        return c.partitions_for_topic(topic) or set()
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list:
    """All records currently in topic (no consumer group), oldest first per partition.

    Reads every partition from the beginning until the consumer position reaches the end offset
    taken at the start. Counting with end offsets alone is not enough on Tansu: its high watermark
    is the base offset of the last record batch + 1, so a batch of N records moves it by 1 only.
    A fetch always returns whole batches, so "position >= end offset" still means "all read".
    """
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
    )
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        end = c.end_offsets(tps)
        c.assign(tps)
        c.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout
        pending = [tp for tp in tps if end[tp] > 0]
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: positions never reached end offsets {end}")
            for recs in c.poll(timeout_ms=200).values():
                records.extend(recs)
            pending = [tp for tp in pending if c.position(tp) < end[tp]]
        return records
    finally:
        c.close()


def count_messages(bootstrap: str, topic: str) -> int:
    return len(read_topic(bootstrap, topic))


def end_offsets_sum(bootstrap: str, topic: str) -> int:
    """Sum of end offsets over the partitions of topic (0 if it does not exist)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            return 0
        return sum(c.end_offsets([TopicPartition(topic, p) for p in parts]).values())
    finally:
        c.close()


def produce_raw(bootstrap: str, topic: str, values: list, partition: Optional[int] = 0) -> None:
    """Produce raw byte values, one record each, synchronously (acked one by one, in order)."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1)
    try:
        for v in values:
            p.send(topic, value=v, partition=partition).get(timeout=10)
    finally:
        p.close()
