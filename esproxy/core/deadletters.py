"""Dead letters, the format both roles write and ``esproxy dlq`` (commands/dlq.py) reads: messages the
replay can never apply and captured writes Kafka refuses for good, kept with the reason so they can
be requeued. The writers: the replay's in replay/deadletters.py, the proxy's in
clients/refusals.py.

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

The proxy has dead letters too (``ProxyDeadLetters``): a captured write the broker refuses for
good (too large for it, invalid...) is moved out of the shipping line into ``<spool.dir>/deadletters.jsonl``
(a local file, whatever the durability: a broker that refuses a record for its size would refuse it
in a dead-letter topic too), with ``"deadLetter": {"reason", "error", "topic", "size", "time",
"source": "proxy"}``, fsynced before the spool is acknowledged past it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from gevent.lock import Semaphore

from .bean import Bean, BeanError
from .config import Config
from .secretrefs import mask

FIELD = "deadLetter"
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
    info: dict[str, Any] = {
        "reason": mask(reason),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "time": _now(),
    }
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
    info = {"reason": mask(reason), "error": type(error).__name__, "topic": topic, "size": len(value)}
    out[FIELD] = {**info, "time": _now(), "source": "proxy"}
    return out
