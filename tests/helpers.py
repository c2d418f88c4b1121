"""Plain helpers shared by the test modules (fixtures live in conftest.py).

Everything here talks to real servers: the demo osmem (OpenSearch-compatible) and Tansu (Kafka) binaries
started through ops/demo-server, and esproxy itself started as a subprocess.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO_SERVER = REPO / "ops" / "demo-server"

# kafka-python consumer settings that join a Tansu group quickly (see the spec).
KAFKA_CONSUMER_OPTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

_counter = itertools.count(1)


# --------------------------------------------------------------------------- small utilities


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str = "t") -> str:
    """A lowercase name unique in this test session (valid as index, topic and group name)."""
    clean = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")[:40] or "t"
    return f"{clean}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, msg: str = "") -> Any:
    """Poll fn() until it returns a truthy value; return that value. Fails the test on timeout.

    Exceptions raised by fn count as "not yet"; the last one is shown on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_val: Any = None
    while True:
        try:
            last_val = fn()
            if last_val:
                return last_val
        except Exception as exc:  # noqa: BLE001 - polled callables may fail transiently
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last_val!r}"
            pytest.fail(f"timed out after {timeout}s waiting for {msg or fn}; {detail}")
        time.sleep(interval)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of proc (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- demo servers


class DemoServer:
    """One ops/demo-server process (osmem or tansu) on 127.0.0.1:<free port>."""

    def __init__(self, kind: str, log_dir: Path):
        assert kind in ("osmem", "tansu")
        self.kind = kind
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / f"{kind}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO_SERVER), kind, self.addr],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.kind == "osmem":
                try:
                    if requests.get(self.url + "/", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            elif tcp_open("127.0.0.1", self.port):
                try:
                    from kafka import KafkaConsumer

                    c = KafkaConsumer(bootstrap_servers=self.addr, request_timeout_ms=3000)
                    try:
                        c.topics()
                        return
                    finally:
                        c.close()
                except Exception:  # noqa: BLE001 - broker not ready yet
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} on {self.addr} not ready after {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


# --------------------------------------------------------------------------- Kafka helpers


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


# --------------------------------------------------------------------------- config builders


def proxy_config(
    port: int,
    primary: str,
    kafka: Optional[str] = None,
    topic: Optional[str] = None,
    *,
    chan_size: Optional[int] = None,
    codec: Optional[str] = None,
    header: Optional[dict] = None,
    labels: Optional[dict] = None,
    timeout: Optional[str] = None,
    sync: Optional[bool] = None,
) -> dict:
    proxy: dict = {"port": port, "host": "127.0.0.1"}
    if header is not None:
        proxy["header"] = header
    if labels is not None:
        proxy["labels"] = labels
    prim: dict = {"url": primary}
    if timeout is not None:
        prim["timeout"] = timeout
    conf: dict = {"source": {"proxies": [proxy]}, "destination": {"primaries": [prim]}}
    if chan_size is not None:
        conf["chanSize"] = chan_size
    if kafka is not None:
        kd: dict = {"topic": topic, "brokers": [kafka]}
        if codec is not None:
            kd["codec"] = codec
        if sync is not None:
            kd["sync"] = sync
        conf["destination"]["kafkas"] = [kd]
    return conf


def replay_config(kafka: str, topic: str, group: str, target: str, **extra: Any) -> dict:
    src = {"brokers": [kafka], "topics": [topic], "group": group, "sessionTimeout": "6s"}
    src.update(extra)
    return {"source": {"kafkas": [src]}, "destination": {"primaries": [{"url": target}]}}


def merge_configs(*confs: dict) -> dict:
    """Merge role configs into one file (lists under the same key are concatenated)."""
    out: dict = {}
    for conf in confs:
        for key, val in conf.items():
            if isinstance(val, dict):
                section = out.setdefault(key, {})
                for k2, v2 in val.items():
                    section.setdefault(k2, [])
                    section[k2] = section[k2] + list(v2)
            else:
                out[key] = val
    return out


# --------------------------------------------------------------------------- esproxy process


class Esproxy:
    """A running `python -m esproxy -c conf.yml`, stdout+stderr captured into a log file."""

    def __init__(self, config: Any, workdir: Path, name: str = "esproxy", env: Optional[dict] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / f"{name}.yml"
        self.log_path = self.workdir / f"{name}.log"
        if isinstance(config, str):
            self.conf_path.write_text(config)
        else:
            self.conf_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esproxy", "-c", str(self.conf_path)],
            cwd=str(self.workdir),
            env={**os.environ, **env} if env else None,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def count_in_log(self, needle: str) -> int:
        return self.log().count(needle)

    def wait_log(self, needle: str, count: int = 1, timeout: float = READY_TIMEOUT) -> None:
        """Wait until needle occurs count times in the log; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count_in_log(needle) >= count:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"esproxy exited with {self.proc.returncode} before logging {needle!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"esproxy did not log {needle!r} x{count} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, wait up to timeout, then SIGKILL the group. Returns the exit code after SIGTERM,
        or None if it had to be killed."""
        if self.proc.poll() is not None:
            self._close()
            return self.proc.returncode
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc: Optional[int] = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        kill_group(self.proc, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._close()
        return rc

    def _close(self) -> None:
        if not self._logf.closed:
            self._logf.close()


def expected_ready_lines(config: Any) -> list:
    """The readiness log lines (needle, count) that the spec promises for this config."""
    if not isinstance(config, dict):
        return []
    src = config.get("source") or {}
    proxies = [p for p in src.get("proxies") or [] if not p.get("disabled")]
    kafkas = [k for k in src.get("kafkas") or [] if not k.get("disabled")]
    out = []
    if proxies:
        out.append(("proxy listening on", len(proxies)))
    if kafkas:
        out.append(("assigned partitions", len(kafkas)))
    return out


# --------------------------------------------------------------------------- Elasticsearch helpers


def es_doc(base: str, index: str, doc_id: str) -> Optional[dict]:
    """GET a document; its response JSON if found, else None."""
    from urllib.parse import quote

    r = requests.get(f"{base}/{index}/_doc/{quote(doc_id, safe='')}", timeout=5)
    if r.status_code == 200 and r.json().get("found"):
        return r.json()
    return None


def es_cluster_id(base: str) -> Optional[str]:
    r = requests.get(f"{base}/meta.elasticproxy/_doc/clusterid", timeout=5)
    if r.status_code != 200:
        return None
    return (r.json().get("_source") or {}).get("id")


def is_es_error(body: Any, status: int) -> bool:
    """True if body is an Elasticsearch-style error: {"error":{"type":..,"reason":..},"status":N}."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("type"), str)
        and isinstance(body["error"].get("reason"), str)
        and body.get("status") == status
    )


def make_bean(method: str, uri: str, body: str = "", content_type: str = "application/json", **extra: Any) -> bytes:
    """A bean as the Go original writes it (raw JSON bytes)."""
    bean = {
        "labels": None,
        "host": "127.0.0.1:2900",
        "remoteAddr": "127.0.0.1:1234",
        "method": method,
        "requestUri": uri,
        "header": {"Content-Type": [content_type]},
        "body": body,
        "clusterIds": ["some-other-cluster"],
    }
    bean.update(extra)
    return json.dumps(bean, ensure_ascii=False).encode("utf-8")


class RecordingServer:
    """A tiny HTTP server standing in for a cluster: records every request (method, path, headers,
    body) and answers like Elasticsearch would for the cluster-id bookkeeping; other requests get
    201 (PUT/POST) or 200 with a small JSON body."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    outer.requests.append((self.command, self.path, dict(self.headers.items()), body))
                if self.path.startswith("/meta.elasticproxy/") and self.command in ("GET", "HEAD"):
                    status = 200
                    doc = {"_index": "meta.elasticproxy", "_id": "clusterid", "found": True}
                    doc["_source"] = {"id": "recordercluster"}
                elif self.command in ("PUT", "POST"):
                    status, doc = 201, {"result": "created", "_id": "x", "_index": "x"}
                else:
                    status, doc = 200, {"recorded": True}
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args):
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def matching(self, method: str, path_prefix: str) -> list:
        return [r for r in list(self.requests) if r[0] == method and r[1].startswith(path_prefix)]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def writes_of(bean: dict) -> list[tuple]:
    """What a bean does, whatever its form.

    A document bean (`"kind": "docs"`, a `_bulk` of versioned actions) gives one
    ("index"|"delete", index, id, source-or-None) per action; a write replayed as sent gives
    (method, requestUri).
    """
    if bean.get("kind") != "docs":
        return [(bean["method"], bean["requestUri"])]
    lines = [json.loads(line) for line in bean["body"].splitlines() if line.strip()]
    out, i = [], 0
    while i < len(lines):
        verb, meta = next(iter(lines[i].items()))
        assert meta.get("version_type") == "external_gte" and isinstance(meta.get("version"), int), meta
        if verb == "delete":
            out.append(("delete", meta["_index"], meta["_id"], None))
            i += 1
        else:
            out.append((verb, meta["_index"], meta["_id"], lines[i + 1]))
            i += 2
    return out


def doc_writes(beans: list) -> list[tuple]:
    return [w for b in beans for w in writes_of(b)]


# --------------------------------------------------------------------------- convergence under load


def compare_until_equal(a: str, b: str, index: str = "*", timeout: float = 90) -> str:
    """`esproxy compare` until B holds what A holds in the indices `index` names (a pattern; tests that share
    clusters, as on the real engines, pass their own `names.pattern()`)."""

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "esproxy", "compare", "--source", a, "--target", b, "--index", index],
            capture_output=True,
            text=True,
            timeout=120,
        )

    deadline = time.monotonic() + timeout
    result = run()
    while result.returncode != 0 and time.monotonic() < deadline:
        time.sleep(2)
        result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Writer(threading.Thread):
    """Writes (and sometimes updates) documents with known ids; remembers which were acknowledged."""

    def __init__(self, base: str, index: str, count: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.base, self.index, self.count, self.pause = base, index, count, pause
        self.acked: list[int] = []
        self.failed = 0
        self.stop = False

    def run(self) -> None:
        s = requests.Session()
        for i in range(self.count):
            if self.stop:
                return
            try:
                if i % 5 == 4:
                    r = s.post(f"{self.base}/{self.index}/_update/{i - 1}", json={"doc": {"u": i}}, timeout=10)
                else:
                    r = s.put(f"{self.base}/{self.index}/_doc/{i}", json={"n": i}, timeout=10)
                if 200 <= r.status_code < 300:
                    self.acked.append(i)
                else:
                    self.failed += 1
            except requests.RequestException:
                self.failed += 1
                s = requests.Session()
                time.sleep(0.05)
            if self.pause:
                time.sleep(self.pause)
