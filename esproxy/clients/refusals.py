"""Which produce errors refuse one record for good, and which only say "not now"; where the proxy
keeps the records refused for good (:class:`ProxyDeadLetters`).

A record refused for good is dead-lettered by the shipper (esproxy.proxy.fanout) so the writes behind it
go on; every other failure is retried in order, as a broker outage is. Transient includes every
error kafka-python marks retriable (broker down, NotLeaderForPartition, timeouts, KafkaTimeoutError
from a full buffer or missing metadata...) and, by default, anything unknown: retrying a record that
can never pass blocks the line (loudly), dead-lettering one that could pass puts a write out of order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kafka import errors

from esproxy.core.bean import Bean
from esproxy.core.deadletters import FIELD, LetterFile, proxy_record
from esproxy.core.stats import STATS

log = logging.getLogger("esproxy.deadletter")

# Errors about the record itself: sending the same bytes again gets the same answer.
_FOR_GOOD: tuple[type[BaseException], ...] = (
    errors.MessageSizeTooLargeError,  # MESSAGE_TOO_LARGE (broker's RecordTooLarge), or over max_request_size in send()
    errors.RecordListTooLargeError,  # RECORD_LIST_TOO_LARGE: a batch kafka-python cannot split further (one record)
    errors.InvalidRecordError,  # INVALID_RECORD: the broker's validation (schema, compaction without key...)
    errors.CorruptRecordError,  # CORRUPT_MESSAGE: confirmed by sending the record alone (see KafkaDest.ship)
    errors.UnsupportedForMessageFormatError,  # a record feature the topic's message format cannot hold
)


def refused_for_good(error: BaseException) -> bool:
    """Whether the broker (or the producer's own limit) will never take this record as it is."""
    return isinstance(error, _FOR_GOOD) and not getattr(error, "retriable", False)


def maybe_a_neighbour(error: BaseException) -> bool:
    """Whether the record may only have shared a batch with one refused for good: kafka-python fails
    the others of a batch in which the broker named the refused records with a bare KafkaError
    ("...part of a batch which had one more more invalid records"). Retried as it is, it would be
    batched with the refused one again, and again: it has to be sent alone."""
    return type(error) is errors.KafkaError


def reason(error: BaseException) -> str:
    """One line for logs and dead letters: the error's class name and its message, if any."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    return text if name in text else f"{name}: {text}" if text else name


class ProxyDeadLetters:
    """The proxy's dead letters: captured writes Kafka refused for good, in a local file."""

    def __init__(self, path: str | Path) -> None:
        self.file = LetterFile(path)

    @property
    def path(self) -> Path:
        return self.file.path

    def write(self, bean: Bean, topic: str, error: BaseException) -> None:
        """Return once the dead letter is on disk; raise OSError if it cannot be (the caller retries)."""
        why = reason(error)
        letter = proxy_record(bean, topic, error, why)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file.append(json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        STATS.dead_letters += 1
        STATS.dead_letter_reason(f"proxy -> {topic}: {why}")
        log.error(
            "kafka refused a captured write for good: topic=%s index=%s size=%d reason=%s; dead letter in %s",
            topic,
            bean.index or "-",
            letter[FIELD]["size"],
            why[:1000],
            self.path,
        )

    def close(self) -> None:
        self.file.close()
