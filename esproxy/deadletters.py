"""Dead letters: messages the replay can never apply, kept with the reason so they can be requeued.

A message is a dead letter when it is not a bean (not JSON, wrong shape) or when the target cluster
refuses it for good (a 4xx: a mapping conflict, a bad request...): for a whole write replayed as
sent, or for single document actions of a batch. The replay writes the dead letter, waits for it to
be durable (the broker's acknowledgement, or an fsync), and only then counts the message as done, so
its offset is committed after the dead letter exists.

A dead letter is one JSON object: the bean's own fields, as they were in Kafka (for one document
action the cluster refused, a bean holding just that action, so it can be requeued alone), plus

    "deadLetter": {"reason", "topic", "partition", "offset", "time", "target", "status", "error"}

A message that was not a bean keeps its bytes in ``value`` (``"valueEncoding": "base64"`` when they
are not UTF-8). ``esproxy dlq`` lists them and requeues them to their topic without ``deadLetter``.

The proxy has dead letters too (:class:`ProxyDeadLetters`): a captured write the broker refuses for
good (too large for it, invalid...) is moved out of the shipping line into ``<spool.dir>/deadletters.jsonl``
(a local file, whatever the durability: a broker that refuses a record for its size would refuse it
in a dead-letter topic too), with ``"deadLetter": {"reason", "error", "topic", "size", "time",
"source": "proxy"}``, fsynced before the spool is acknowledged past it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from gevent.lock import Semaphore
from kafka import KafkaProducer
from kafka.errors import KafkaError

from .bean import Bean, BeanError
from .config import Config, KafkaSource
from .dest.refusals import reason as refusal_reason
from .messages import DEFAULT_MAX_MESSAGE_BYTES, encode_value
from .retry import retry
from .stats import STATS

log = logging.getLogger("esproxy.deadletter")

FIELD = "deadLetter"
SEND_TIMEOUT = 30.0
PROXY_FILE = "deadletters.jsonl"  # in spool.dir


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _text(data: bytes, key: str, out: dict[str, Any]) -> None:
    try:
        out[key] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[key] = base64.b64encode(data).decode("ascii")
        out[key + "Encoding"] = "base64"


def make_record(
    value: bytes,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    target: str = "",
    status: int = 0,
    body: Optional[bytes] = None,
    error: Any = None,
) -> dict[str, Any]:
    """The dead letter of message ``value`` read at topic-partition@offset; ``body`` replaces the
    bean's body (one document action of a batched bean)."""
    info: dict[str, Any] = {"reason": reason, "topic": topic, "partition": partition, "offset": offset, "time": _now()}
    if target:
        info["target"] = target
    if status:
        info["status"] = status
    if error:
        info["error"] = error
    out: dict[str, Any]
    try:
        Bean.from_json(value)
        out = {k: v for k, v in json.loads(value).items() if k != FIELD}
    except BeanError:
        out = {}
        _text(value, "value", out)
    else:
        if body is not None:
            out = {k: v for k, v in out.items() if k.lower() not in ("body", "bodyencoding")}
            _text(body, "body", out)
    out[FIELD] = info
    return out


def original(record: dict[str, Any]) -> Optional[bytes]:
    """The message to requeue: the bean without ``deadLetter``; None for a message that was not a bean."""
    if "value" in record and not any(k.lower() == "method" for k in record):
        return None
    bean = {k: v for k, v in record.items() if k != FIELD}
    return json.dumps(bean, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class LetterFile:
    """A file of JSON lines, appended and fsynced one line at a time (whole lines: one writer per process)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: Any = None
        self._lock = Semaphore()

    def append(self, data: bytes) -> None:
        """Return once the line is on disk; raise OSError if it cannot be."""
        with self._lock:
            try:
                if self._file is None:
                    self._open()
                self._file.write(data + b"\n")
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                self.close()  # reopened next time, after whatever part of the line was written
                raise

    def _open(self) -> None:
        created = not self.path.exists()
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the process's life
        if created:  # the file's name must survive a crash too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif self._file.tell() > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a crash or a full disk: keep it apart
                    self._file.write(b"\n")

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def proxy_file(cfg: Config) -> Path:
    """Where the proxy of ``cfg`` writes the records Kafka refused for good (relative to the working directory)."""
    return Path(cfg.spool.dir) / PROXY_FILE


def proxy_record(bean: Bean, topic: str, error: BaseException, reason: str) -> dict[str, Any]:
    """The dead letter of a captured write that Kafka refused for good."""
    value = bean.to_json()
    out = json.loads(value)
    info = {"reason": reason, "error": type(error).__name__, "topic": topic, "size": len(value)}
    out[FIELD] = {**info, "time": _now(), "source": "proxy"}
    return out


class ProxyDeadLetters:
    """The proxy's dead letters: captured writes Kafka refused for good, in a local file."""

    def __init__(self, path: str | Path) -> None:
        self.file = LetterFile(path)

    @property
    def path(self) -> Path:
        return self.file.path

    def write(self, bean: Bean, topic: str, error: BaseException) -> None:
        """Return once the dead letter is on disk; raise OSError if it cannot be (the caller retries)."""
        reason = refusal_reason(error)
        letter = proxy_record(bean, topic, error, reason)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file.append(json.dumps(letter, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        STATS.dead_letters += 1
        log.error(
            "kafka refused a captured write for good: topic=%s index=%s size=%d reason=%s; dead letter in %s",
            topic,
            bean.index or "-",
            letter[FIELD]["size"],
            reason[:1000],
            self.path,
        )

    def close(self) -> None:
        self.file.close()


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

    def write(
        self,
        record: Any,
        reason: str,
        stopping: Callable[[], bool],
        *,
        target: str = "",
        status: int = 0,
        body: Optional[bytes] = None,
        error: Any = None,
    ) -> None:
        """Write the dead letter of Kafka ``record``; return once it is durable. Retries until then;
        raises Aborted if ``stopping()`` turns true first (the message is then not done)."""
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
        STATS.dead_letters += 1
        log.warning(
            "dead letter %s-%d@%d -> %s: %s",
            record.topic,
            record.partition,
            record.offset,
            self.where(record.topic),
            reason[:1000],
        )

    def _deliver(self, record: Any, data: bytes) -> None:
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
