"""A Kafka topic that captured writes are produced to (``destination.kafkas[]``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Optional

from kafka import KafkaProducer
from kafka.errors import KafkaError

from .. import labels
from ..bean import Bean
from ..config import KafkaDestination
from ..messages import Message, abort_messages, encode, partition_key  # noqa: F401 - partition_key: re-exported
from ..stats import STATS
from .elastic import Aborted, backoff

log = logging.getLogger("esproxy.kafka")


class KafkaDest:
    SHIP_TIMEOUT = 130.0  # above kafka-python's delivery timeout (120 s): a future always settles

    def __init__(self, cfg: KafkaDestination, all_acks: bool = False) -> None:
        self.cfg = cfg
        self.all_acks = all_acks  # durability: kafka needs every in-sync replica
        self.topic = cfg.topic
        self.matches = labels.parse(cfg.labelEval)
        self._producer: Optional[KafkaProducer] = None

    def __repr__(self) -> str:
        return f"KafkaDest({self.topic} on {','.join(self.cfg.brokers)})"

    def producer_config(self) -> dict[str, Any]:
        acks = "all" if self.all_acks else self.cfg.acks
        conf: dict[str, Any] = {
            "bootstrap_servers": self.cfg.brokers,
            "acks": acks,
            "compression_type": None if self.cfg.codec == "none" else self.cfg.codec,
            "linger_ms": 2,
            "client_id": "esproxy",
            "max_block_ms": 10000,  # a broker outage surfaces in 10 s; the spool keeps what waits
            # messages.encode keeps every record batch within it (a bigger bean is split)
            "max_request_size": self.cfg.maxMessageBytes,
        }
        if "metrics_enabled" in KafkaProducer.DEFAULT_CONFIG:
            conf["metrics_enabled"] = False  # kafka-python's own, per message; esproxy counts its own
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
            conf["enable_idempotence"] = acks == "all"
        if acks != "all":
            # Without idempotence, a retried batch can overtake the next one: keep one in flight.
            conf["max_in_flight_requests_per_connection"] = 1
        return conf

    def connect(self, stopping: Callable[[], bool]) -> None:
        """Create the producer, waiting (with backoff) while no broker answers."""
        attempt = 0
        while self._producer is None:
            try:
                self._producer = KafkaProducer(**self.producer_config())
            except KafkaError as e:
                delay = backoff(attempt, base=0.5, cap=10)
                attempt += 1
                log.warning("kafka %s unreachable (%s); retrying in %.1fs", ",".join(self.cfg.brokers), e, delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if stopping():
                        raise Aborted("stopping before Kafka was reachable") from None
                    time.sleep(0.2)
        acks = self.producer_config()["acks"]
        log.info("kafka producer for topic %s connected to %s (acks=%s)", self.topic, ",".join(self.cfg.brokers), acks)

    def messages(self, bean: Bean) -> list[Message]:
        """The messages that carry ``bean`` (one, unless it is bigger than maxMessageBytes)."""
        return encode(bean, self.cfg.maxMessageBytes)

    def write(self, bean: Bean) -> None:
        assert self._producer is not None, "connect() first"
        for message in self.messages(bean):
            value = message.value
            self._log_write(value)
            try:
                future = self._producer.send(self.topic, value=value, key=message.key)
            except KafkaError as e:  # buffer full for max_block_ms, or the topic's metadata never came
                self._log_failure(value, e)
                return
            if self.cfg.synchronous:
                try:
                    self._log_result(future.get(timeout=60))
                except KafkaError as e:
                    self._log_failure(value, e)
                    return
            else:
                future.add_callback(self._log_result)
                future.add_errback(lambda e, value=value: self._log_failure(value, e))

    def ship(self, beans: list[Bean]) -> int:
        """Produce beans in order and wait for the broker; return how many, from the first, it took
        (a bean carried in several messages counts once all of them were acknowledged).

        Nothing is dropped here: what is not acknowledged stays in the spool and is shipped again
        (a bean replayed twice changes nothing on B; the chunks of a bean shipped again complete
        the same set).
        """
        assert self._producer is not None, "connect() first"
        sent: list[list[Any]] = []  # per bean, the futures of its messages
        for bean in beans:
            futures = []
            try:
                for message in self.messages(bean):
                    self._log_write(message.value)
                    futures.append(self._producer.send(self.topic, value=message.value, key=message.key))
            except KafkaError as e:
                STATS.produce_failed(self.topic, type(e).__name__)
                log.warning("kafka.produce to %s not accepted (%s); kept in the spool", self.topic, e)
                break
            sent.append(futures)
        done = 0
        for futures in sent:
            try:
                for future in futures:
                    self._log_result(future.get(timeout=self.SHIP_TIMEOUT))
            except KafkaError as e:
                STATS.produce_failed(self.topic, type(e).__name__)
                log.warning("kafka.produce to %s failed (%s); kept in the spool", self.topic, e)
                break
            done += 1
        return done

    def abort(self, bean: Bean, reason: str) -> int:
        """Tell the replay to drop what it holds of ``bean``'s chunks (for a bean that is given up on
        after some of its messages may have been produced); returns how many abort markers were
        acknowledged. Raises KafkaError if the broker does not take them."""
        assert self._producer is not None, "connect() first"
        markers = abort_messages(bean, self.cfg.maxMessageBytes, reason)
        futures = [self._producer.send(self.topic, value=m.value, key=m.key) for m in markers]
        for future in futures:
            self._log_result(future.get(timeout=self.SHIP_TIMEOUT))
        return len(futures)

    def _log_write(self, value: bytes) -> None:
        # DEBUG (the original logs it at INFO): two lines per message cost the proxy more CPU than
        # the message itself.
        level = logging.WARNING if len(value) >= self.cfg.warnSize else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "kafka write size: %d, message: %s,to kafka", len(value), value.decode("utf-8"))

    def _log_result(self, md: Any) -> None:
        STATS.produced(self.topic)
        if log.isEnabledFor(logging.DEBUG):
            result = {"Partition": md.partition, "Offset": md.offset, "Topic": md.topic}
            log.debug("kafka.produce result %s", json.dumps(result, separators=(",", ":")))

    def _log_failure(self, value: bytes, e: BaseException) -> None:
        STATS.produce_failed(self.topic, type(e).__name__)
        # With `durability: none`, a message the broker never took is only in this line.
        log.error("kafka.produce failed for topic %s: %s; message lost: %s", self.topic, e, value.decode())

    def close(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout)
            self._producer.close(timeout=timeout)
            self._producer = None
