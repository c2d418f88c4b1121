"""A Kafka topic that captured writes are produced to (``destination.kafkas[]``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, NamedTuple, Optional

import gevent
from gevent.lock import Semaphore
from kafka import KafkaProducer
from kafka.errors import KafkaError

from esproxy.core import labels
from esproxy.core.bean import Bean
from esproxy.core.config import KafkaDestination
from esproxy.core.messages import Message, abort_messages, encode, iter_encode
from esproxy.core.retry import interruptible, retry
from esproxy.core.stats import STATS

from . import kafkasecurity
from .kafkaconnect import connect_kwargs
from .refusals import maybe_a_neighbour, refused_for_good

log = logging.getLogger("esproxy.kafka")


# ship() waits for the broker after handing the producer this many bytes: a bean of 90 MB is then not in
# memory three times at once (in the spool, as messages, in the producer's buffers).
SHIP_WINDOW = 16 << 20


def _settled(future: Any, timeout: float) -> None:
    """Wait for a produce future; its outcome is read (in order) by the caller later."""
    try:
        future.get(timeout=timeout)
    except KafkaError:
        pass


class Shipped(NamedTuple):
    """What KafkaDest.ship did with a list of beans."""

    taken: int  # how many, from the first, the broker acknowledged
    refused: Optional[BaseException] = None  # set: beans[taken] is refused for good, for this reason


class KafkaDest:
    SHIP_TIMEOUT = 130.0  # above kafka-python's delivery timeout (120 s): a future always settles

    def __init__(self, cfg: KafkaDestination, all_acks: bool = False) -> None:
        self.cfg = cfg
        self.all_acks = all_acks  # durability: kafka needs every in-sync replica
        self.topic = cfg.topic
        self.matches = labels.parse(cfg.labelEval)
        self._producer: Optional[KafkaProducer] = None
        # durability: none — where write() sends a bean the broker refuses for good (a dead letter)
        self.on_refused: Optional[Callable[[Bean, BaseException], None]] = None
        self._stopping: Callable[[], bool] = lambda: False
        self._confirming = Semaphore()  # one record sent alone at a time
        self.last_taken = 0.0  # time.monotonic() the broker last acknowledged a message (a stop watches it)

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
            **connect_kwargs(self.cfg, KafkaProducer),
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
        self._stopping = stopping
        if self._producer is None:
            self._producer = self._create(stopping)
        acks = self.producer_config()["acks"]
        log.info("kafka producer for topic %s connected to %s (acks=%s)", self.topic, ",".join(self.cfg.brokers), acks)

    def _create(self, stopping: Callable[[], bool]) -> KafkaProducer:
        def unreachable(e: BaseException, attempts: int, delay: float) -> None:
            log.warning("kafka %s unreachable (%s); retrying in %.1fs", ",".join(self.cfg.brokers), e, delay)

        aborted = "stopping before Kafka was reachable"
        return retry(
            # the security arguments (the SASL password) only here: producer_config() may be shown
            lambda: interruptible(
                lambda: KafkaProducer(**self.producer_config(), **kafkasecurity.client_kwargs(self.cfg)),
                stopping,
                aborted,
            ),
            (KafkaError, kafkasecurity.TlsFileError),
            unreachable,
            base=0.5,
            cap=10,
            stopping=stopping,
            aborted=aborted,
        )

    def messages(self, bean: Bean) -> list[Message]:
        """The messages that carry ``bean`` (one, unless it is bigger than maxMessageBytes)."""
        return encode(bean, self.cfg.maxMessageBytes)

    def write(self, bean: Bean) -> None:
        """durability: none — produce without waiting; a failure is logged (and the write lost),
        except a refusal for good, which goes to ``on_refused`` (the proxy's dead letters)."""
        assert self._producer is not None, "connect() first"
        messages = self.messages(bean)
        for i, message in enumerate(messages):
            self._log_write(message.value)
            try:
                future = self._producer.send(self.topic, value=message.value, key=message.key)
            except KafkaError as e:  # buffer full for max_block_ms, the topic's metadata never came, too large
                self._failed(bean, e, sent=i > 0)
                return
            if self.cfg.synchronous:
                try:
                    self._log_result(future.get(timeout=60))
                except KafkaError as e:
                    self._failed(bean, e)
                    return
            else:
                future.add_callback(self._log_result)
                future.add_errback(lambda e: self._failed(bean, e))

    def _failed(self, bean: Bean, e: BaseException, sent: bool = True) -> None:
        if self.on_refused is None or not (refused_for_good(e) or maybe_a_neighbour(e)):
            self._log_failure(bean.to_json(), e)
        elif not sent and refused_for_good(e):  # send() refused it before sending: about it alone
            self._dead_letter(bean, e)
        else:  # in a batch (and maybe in kafka-python's I/O thread): send it alone, apart
            gevent.spawn(self._refused_in_flight, bean, e)

    def _refused_in_flight(self, bean: Bean, e: BaseException) -> None:
        shipped = self._send_alone(bean, 0, e)
        if shipped.refused is not None:
            self._dead_letter(bean, shipped.refused)
        elif not shipped.taken:
            self._log_failure(bean.to_json(), e)

    def _dead_letter(self, bean: Bean, e: BaseException) -> None:
        assert self.on_refused is not None
        STATS.produce_failed(self.topic, reason=type(e).__name__)
        try:
            self.on_refused(bean, e)
        except OSError as write_error:
            log.error(
                "kafka.produce to %s: dead letter not written (%s); message lost: %s",
                self.topic,
                write_error,
                bean.to_json().decode(),
            )

    def ship(self, beans: list[Bean]) -> Shipped:
        """Produce beans in order and wait for the broker.

        Returns how many, from the first, it took (``taken``) and, when it refused the next one for
        good (see refusals.py), why (``refused``). Nothing is dropped here: the caller keeps what is
        not taken (the spool ships it again; a bean replayed twice changes nothing on B) and decides
        what becomes of a refused bean (a dead letter).
        """
        assert self._producer is not None, "connect() first"
        sent: list[list[Any]] = []  # per bean, the futures of its messages
        refused: Optional[KafkaError] = None
        window = 0  # bytes handed to the producer since the last wait
        for bean in beans:
            futures: list[Any] = []
            try:
                for message in iter_encode(bean, self.cfg.maxMessageBytes):
                    self._log_write(message.value)
                    futures.append(self._producer.send(self.topic, value=message.value, key=message.key))
                    window += len(message.value)
                    if window >= SHIP_WINDOW:  # a large bean: its messages are not all buffered at once
                        _settled(futures[-1], self.SHIP_TIMEOUT)
                        window = 0
            except KafkaError as e:  # raised before that message was sent (over max_request_size...)
                STATS.produce_failed(self.topic, reason=type(e).__name__)
                if refused_for_good(e):
                    refused = e  # about this record alone: no need to confirm
                else:
                    log.warning("kafka.produce to %s not accepted (%s); kept in the spool", self.topic, e)
                break
            sent.append(futures)
        taken = 0
        for futures in sent:
            try:
                for future in futures:
                    self._log_result(future.get(timeout=self.SHIP_TIMEOUT))
            except KafkaError as e:
                STATS.produce_failed(self.topic, reason=type(e).__name__)
                if refused_for_good(e) or maybe_a_neighbour(e):
                    return self._send_alone(beans[taken], taken, e)
                log.warning("kafka.produce to %s failed (%s); kept in the spool", self.topic, e)
                return Shipped(taken)
            taken += 1
        if refused is not None:
            self._abandon(beans[taken], refused)
        return Shipped(taken, refused)

    def _send_alone(self, bean: Bean, taken: int, error: BaseException) -> Shipped:
        """The broker refused ``bean`` (at position ``taken``) in a batch, for good or as the neighbour
        of a refused record: send it again alone, so that neither a neighbour (a broker that names no
        record fails the whole batch) nor a corruption in transit is taken for the record's own
        fault, and a neighbour is not batched with the refused record again."""
        with self._confirming:
            try:
                self._renew_if_broken()
                assert self._producer is not None
                self._producer.flush(timeout=self.SHIP_TIMEOUT)  # nothing else in its batch
                for message in self.messages(bean):
                    future = self._producer.send(self.topic, value=message.value, key=message.key)
                    self._log_result(future.get(timeout=self.SHIP_TIMEOUT))
            except KafkaError as e:
                self._renew_if_broken()
                if refused_for_good(e):
                    self._abandon(bean, e)
                    return Shipped(taken, e)
                log.warning("kafka.produce to %s failed (%s, then alone: %s)", self.topic, error, e)
                return Shipped(taken)
        log.warning("kafka.produce to %s: a record failed in a batch (%s) was taken alone", self.topic, error)
        return Shipped(taken + 1)

    def _abandon(self, bean: Bean, e: BaseException) -> None:
        """``bean`` is refused for good: if it was carried in chunks, some may be in the topic already;
        tell the replay to drop them (else it drops them itself after its chunkTimeout)."""
        try:
            self.abort(bean, f"{type(e).__name__}: {e}")
        except KafkaError as abort_error:
            log.warning("kafka.produce to %s: chunk abort markers not produced (%s)", self.topic, abort_error)

    def _renew_if_broken(self) -> None:
        """kafka-python (3.0.12) puts an idempotent producer (acks=all) in a fatal state after any
        batch error that is not retriable, a refused record included: from then on every send fails
        with that error. The only way on is a new producer."""
        manager = getattr(self._producer, "_transaction_manager", None)
        if manager is None or not manager.has_fatal_error():
            return
        log.warning("kafka producer for topic %s broken by a refused record; replacing it", self.topic)
        fresh = self._create(self._stopping)  # other greenlets keep the old one meanwhile (their sends fail)
        old, self._producer = self._producer, fresh
        try:
            old.close(timeout=0)  # what it still holds failed with the fatal error: its callers ship it again
        except KafkaError as e:
            log.warning("kafka producer close: %s", e)

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
        self.last_taken = time.monotonic()
        STATS.produced(self.topic)
        if log.isEnabledFor(logging.DEBUG):
            result = {"Partition": md.partition, "Offset": md.offset, "Topic": md.topic}
            log.debug("kafka.produce result %s", json.dumps(result, separators=(",", ":")))

    def _log_failure(self, value: bytes, e: BaseException) -> None:
        STATS.produce_failed(self.topic, reason=type(e).__name__)
        # With `durability: none`, a message the broker never took is only in this line.
        log.error("kafka.produce failed for topic %s: %s; message lost: %s", self.topic, e, value.decode())

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for what the producer still holds to be acknowledged (0: not at
        all), then close it. What is not acknowledged by then fails: its caller keeps it (the spool ships it
        again at the next start) or reports it (durability: none logs it with `message lost:`)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(timeout=timeout)
            producer.close(timeout=timeout)
            return
        except KafkaError as e:  # flush() raises KafkaTimeoutError when the broker did not take everything
            log.warning("kafka producer for topic %s: not everything was acknowledged (%s); closing", self.topic, e)
        # kafka-python's close() flushes first and raises the same; its sender, closed forcibly, fails
        # what it holds (their callbacks run) and stops.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(1.0)
        try:
            producer.close(timeout=0)
        except KafkaError as e:
            log.warning("kafka producer for topic %s: close: %s", self.topic, e)
