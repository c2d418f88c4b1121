"""The replay's dead letters (format: esproxy/core/deadletters.py): a message it can never apply goes to a
topic or a file, and counts as done only once it is durable there. ``DeadLetters.dead_letter`` is the one
way the replay gives up a message: it logs why, counts the failure and writes the letter."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

from gevent.lock import Semaphore
from kafka import KafkaProducer
from kafka.errors import KafkaError

from esproxy.clients import kafkasecurity
from esproxy.clients.kafkaconnect import connect_kwargs
from esproxy.core.config import KafkaSource
from esproxy.core.deadletters import LetterFile, make_record
from esproxy.core.messages import DEFAULT_MAX_MESSAGE_BYTES, encode_value
from esproxy.core.retry import retry
from esproxy.core.stats import STATS

from .record import Record

log = logging.getLogger("esproxy.deadletter")
replay_log = logging.getLogger("esproxy.replay")  # why the replay gives a message up (dead_letter)

SEND_TIMEOUT = 30.0


class DeadLetters:
    """Where one ``source.kafkas[]`` entry writes its dead letters: a topic per consumed topic, or a file."""

    def __init__(self, cfg: KafkaSource) -> None:
        self.cfg = cfg
        self.path = cfg.deadLetterFile
        self._producer: Optional[KafkaProducer] = None
        self._file = LetterFile(self.path) if self.path else None
        self._lock = Semaphore()  # partitions replay in parallel greenlets: one producer, whole lines

    def where(self, topic: str) -> str:
        return f"file {self.path}" if self.path else f"topic {self.cfg.dead_letter_topic(topic)}"

    def dead_letter(
        self,
        record: Record,
        reason: str,
        stop: Callable[[], bool],
        *,
        index: str,
        size: int,
        says: str = "",
        level: int = logging.ERROR,
        target: str = "",
        status: int = 0,
        body: Optional[bytes] = None,
        error: Any = None,
        decided: bool = False,
    ) -> None:
        """Give up ``record`` for good: log why, count a failed replay of ``index`` (``size`` bytes), write its
        dead letter (``write``: returns once it is durable; Aborted if ``stop()`` turns true first).

        ``says`` is the log line (at ``level``), by default ``replay <where>: <reason>; to the dead letters``.
        ``target``, ``status``, ``body`` and ``error`` go into the letter: the cluster that refused it, its
        HTTP status, the one `_bulk` action refused, and its Elasticsearch error.

        Example: at writes-0@7 a document bean for ``logs`` (1234 bytes) whose actions the sync rules cannot
        read: ``dead_letter(record, "sync rules: ...", stop, index="logs", size=1234)`` logs
        ``replay writes-0@7: sync rules: ...; to the dead letters`` (ERROR), adds one to the failures of
        ``logs`` (STATS.replayed ok=False), and writes the letter of writes-0@7 with that reason.

        ``decided``: an operator's decision (``esproxy sync reject|skip``, replay/holdback.py), not a failure:
        counted in ``STATS.sync_decided``, not as a failed replay nor in health's ``dead_letters``."""
        replay_log.log(
            level,
            "%s",
            says or f"replay {record.topic}-{record.partition}@{record.offset}: {reason}; to the dead letters",
        )
        if decided:
            STATS.sync_decided += 1
        else:
            STATS.replayed(index, size, ok=False)
        self.write(record, reason, stop, target=target, status=status, body=body, error=error, counted=not decided)

    def write(
        self,
        record: Record,
        reason: str,
        stopping: Callable[[], bool],
        *,
        target: str = "",
        status: int = 0,
        body: Optional[bytes] = None,
        error: Any = None,
        counted: bool = True,
    ) -> None:
        """Write the dead letter of Kafka ``record``; return once it is durable. Retries until then;
        raises Aborted if ``stopping()`` turns true first (the message is then not done). ``counted``: in
        ``STATS.dead_letters`` (health's ``dead_letters`` check); not for an operator's decision."""
        letter = make_record(
            record.value or b"",
            reason,
            record.topic,
            record.partition,
            record.offset,
            target=target,
            status=status,
            body=body,
            error=error,
        )
        data = json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

        def not_written(e: BaseException, attempts: int, delay: float) -> None:
            log.error(
                "dead letter of %s-%d@%d not written to %s (%s); retrying in %.1fs",
                record.topic,
                record.partition,
                record.offset,
                self.where(record.topic),
                e or type(e).__name__,
                delay,
            )

        retry(
            lambda: self._deliver(record, data),
            (KafkaError, OSError),
            not_written,
            base=0.5,
            cap=10,
            stopping=stopping,
            aborted="dead letter not written: stopping",
        )
        if counted:
            STATS.dead_letters += 1
        STATS.dead_letter_reason(f"{record.topic}-{record.partition}@{record.offset}: {reason}")
        log.warning(
            "dead letter %s-%d@%d -> %s: %s",
            record.topic,
            record.partition,
            record.offset,
            self.where(record.topic),
            reason[:1000],
        )

    def _deliver(self, record: Record, data: bytes) -> None:
        if self._file is not None:
            self._file.append(data)
        else:
            self._produce(self.cfg.dead_letter_topic(record.topic), record.key, data)

    def _produce(self, topic: str, key: Optional[bytes], data: bytes) -> None:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.cfg.brokers,
                    acks="all",
                    client_id="esproxy-deadletter",
                    linger_ms=0,
                    max_request_size=DEFAULT_MAX_MESSAGE_BYTES,
                    **connect_kwargs(self.cfg, KafkaProducer),
                    **kafkasecurity.client_kwargs(self.cfg),
                )
        # A dead letter bigger than a stock broker takes is carried in chunks (`esproxy dlq` reads them).
        messages = encode_value(key or b"", data, DEFAULT_MAX_MESSAGE_BYTES)
        # Chunks share a key (b"" for a record without one), hence a partition; a whole letter keeps the record's.
        chunked = len(messages) > 1
        futures = [self._producer.send(topic, value=m.value, key=m.key if chunked else key) for m in messages]
        for future in futures:
            future.get(timeout=SEND_TIMEOUT)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError as e:
                log.warning("dead-letter producer close: %s", e)
            self._producer = None
        if self._file is not None:
            self._file.close()
