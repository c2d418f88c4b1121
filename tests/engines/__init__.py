"""Real engines for `make test-real`: Apache Kafka, Elasticsearch and OpenSearch, each a JVM on loopback.

The jars come from Maven Central: each engine has a pom.xml beside this file whose runtime classpath
`mvn dependency:build-classpath` resolves into the local Maven repository (~/.m2/repository, or
$ESPROXY_MAVEN_REPO) and writes as one line into $ESPROXY_ENGINES_CACHE (default ~/.cache/esproxy-engines);
later starts read that line and need neither Maven nor the network. Nothing here is needed by `make test`.

    python tests/engines up          # start all three, print versions, addresses, start times; Ctrl-C stops
    python tests/engines resolve     # only download the jars
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import requests

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("ESPROXY_ENGINES_CACHE") or Path.home() / ".cache" / "esproxy-engines")
MAVEN_REPO = os.environ.get("ESPROXY_MAVEN_REPO", "")  # empty: Maven's default, ~/.m2/repository
HEAP = os.environ.get("ESPROXY_ENGINES_HEAP", "512m")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
# Every engine JVM carries this property, so a later run can tell its leftovers from anyone else's java.
MARKER = "-Desproxy.engine="
PIDS = CACHE / "pids"


class EngineError(RuntimeError):
    pass


def tools_present() -> bool:
    return bool(shutil.which("java") and shutil.which("javac") and shutil.which("mvn"))


def _free_port() -> int:
    from support.basics import free_port  # tests/ is on sys.path wherever engines is imported

    return free_port()


def classpath(engine: str) -> str:
    """The engine's runtime classpath, resolved with Maven once per pom.xml content."""
    pom = HERE / engine / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes() + MAVEN_REPO.encode()).hexdigest()[:12]
    out = CACHE / f"{engine}-{digest}.classpath"
    if out.exists():
        cp = out.read_text().strip()
        if cp and all(Path(jar).exists() for jar in cp.split(os.pathsep)):
            return cp
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={out}"]
    if MAVEN_REPO:
        cmd.append(f"-Dmaven.repo.local={MAVEN_REPO}")
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0 or not out.exists():
        raise EngineError(f"mvn could not resolve {pom}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return out.read_text().strip()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_leftovers() -> int:
    """Kill engine JVMs an earlier run left behind (a killed pytest); only processes that carry MARKER and
    whose starting process is gone: another session running at the same time keeps its engines."""
    killed = 0
    if not PIDS.is_dir():
        return 0
    for pidfile in PIDS.glob("*.pid"):
        try:
            pid, _, owner = pidfile.read_text().partition(" ")
            pid = int(pid)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            continue
        if owner.strip().isdigit() and alive(int(owner)):
            continue
        if MARKER.encode() in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        pidfile.unlink(missing_ok=True)
    return killed


class JavaEngine:
    """One engine JVM in its own process group; its log in `home`/engine.log."""

    name = "engine"
    maven_project = ""  # the folder beside this file whose pom.xml lists the jars

    def __init__(self, home: Optional[Path] = None) -> None:
        self.home = Path(home) if home else Path(tempfile.mkdtemp(prefix=f"esproxy-{self.name}-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = self.home / "engine.log"
        self.proc: Optional[subprocess.Popen] = None
        self.version = ""
        self.start_seconds = 0.0

    def command(self) -> list:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Anything to do before the JVM starts (config files, storage format)."""

    def start(self) -> JavaEngine:
        began = time.monotonic()
        self.prepare()
        java = ["java", f"-Xms{HEAP}", f"-Xmx{HEAP}", f"{MARKER}{self.name}", "-XX:+UseSerialGC"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                java + self.command(),
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        PIDS.mkdir(parents=True, exist_ok=True)
        (PIDS / f"{self.proc.pid}.pid").write_text(f"{self.proc.pid} {os.getpid()}")
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, began: float) -> None:
        while time.monotonic() - began < START_TIMEOUT:
            if self.proc.poll() is not None:
                raise EngineError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise EngineError(f"{self.name} not ready after {START_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=STOP_TIMEOUT)
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        (PIDS / f"{self.proc.pid}.pid").unlink(missing_ok=True)

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.start_seconds:.1f} s to start)"


class KafkaBroker(JavaEngine):
    """Apache Kafka in KRaft mode: one node that is both broker and controller.

    Besides PLAINTEXT (`addr`) it listens with SSL (`ssl_addr`, a client certificate required), SASL_SSL
    (`sasl_ssl_addr`) and SASL_PLAINTEXT (`sasl_plaintext_addr`); certificates of `pki` (its CA signs the
    server's and a client's); SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for each of `users`."""

    name = "kafka"
    maven_project = "kafka"
    SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

    def __init__(self, home: Optional[Path] = None) -> None:
        super().__init__(home)
        self.port, self.controller_port = _free_port(), _free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.ssl_addr = f"127.0.0.1:{_free_port()}"
        self.sasl_ssl_addr = f"127.0.0.1:{_free_port()}"
        self.sasl_plaintext_addr = f"127.0.0.1:{_free_port()}"
        self.users = {"esproxy": "esproxy-" + uuid.uuid4().hex[:12]}
        self.pki = None
        self.cp = classpath(self.maven_project)

    def _security_props(self) -> dict:
        from support.certs import make_pki

        self.pki = make_pki(self.home / "pki", "kafka")
        key = _pkcs8(self.pki.server_key.read_text())
        jaas_plain = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
            f'user_{user}="{password}"' for user, password in self.users.items()
        )
        props = {
            # PEM in the properties (Kafka 2.7+, KIP-651); a properties file reads "\n" as a newline
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": self.pki.server_cert.read_text().replace("\n", "\\n"),
            "ssl.keystore.key": key.replace("\n", "\\n"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": self.pki.ca.read_text().replace("\n", "\\n"),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": ",".join(self.SASL_MECHANISMS),
        }
        for listener in ("sasl_ssl", "sasl_plaintext"):
            props[f"listener.name.{listener}.plain.sasl.jaas.config"] = jaas_plain + ";"
            for scram in ("scram-sha-256", "scram-sha-512"):
                login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                props[f"listener.name.{listener}.{scram}.sasl.jaas.config"] = login
        return props

    def prepare(self) -> None:
        data = self.home / "data"
        secured = f"SSL://{self.ssl_addr},SASL_SSL://{self.sasl_ssl_addr},SASL_PLAINTEXT://{self.sasl_plaintext_addr}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.addr},CONTROLLER://127.0.0.1:{self.controller_port},{secured}",
            "advertised.listeners": f"PLAINTEXT://{self.addr},{secured}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            **self._security_props(),
            "log.dirs": str(data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        (self.home / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n"
        )
        if not data.exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # SCRAM credentials live in the KRaft metadata: written at format time
            scram = [
                f"--add-scram={m}=[name={user},password={password}]"
                for user, password in self.users.items()
                for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            ]
            done = subprocess.run(
                ["java", "-Xmx256m", *self._log4j(), "-cp", self.cp, "kafka.tools.StorageTool", "format"]
                + ["-t", cluster_id, "-c", str(self.home / "server.properties"), *scram],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise EngineError(f"kafka storage format failed:\n{done.stdout}{done.stderr}")
        self.version = next(
            (Path(j).name[len("kafka_2.13-") : -len(".jar")] for j in self.cp.split(os.pathsep) if "/kafka_2.13-" in j),
            "?",
        )

    def _log4j(self) -> list:
        return [f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}"]

    def command(self) -> list:
        return [*self._log4j(), "-cp", self.cp, "kafka.Kafka", str(self.home / "server.properties")]

    def ready(self) -> bool:
        from kafka import KafkaConsumer

        # kafka-python backs off for seconds between refused connections: knock first
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        consumer = KafkaConsumer(bootstrap_servers=self.addr, request_timeout_ms=3000)
        try:
            consumer.topics()
            return True
        finally:
            consumer.close()


def _pkcs8(pem_key: str) -> str:
    """An unencrypted key as PKCS#8, the one PEM key format Kafka reads."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem_key.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class SearchNode(JavaEngine):
    """One Elasticsearch or OpenSearch node, run by codelibs' runner through RunnerMain.java."""

    runner_class = ""
    config_name = ""

    def __init__(self, home: Optional[Path] = None) -> None:
        super().__init__(home)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cp = classpath(self.maven_project)

    def prepare(self) -> None:
        config = self.home / "node_1" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / self.config_name).write_text(
            "network.host: 127.0.0.1\n"
            f"transport.port: {_free_port()}\n"
            # a test machine's disk may be fuller than the default watermarks allow: allocate anyway
            "cluster.routing.allocation.disk.threshold_enabled: false\n"
        )

    def command(self) -> list:
        # The runner gives node N the HTTP port base+N, and this is a one-node cluster.
        args = ["-basePath", str(self.home), "-numOfNode", "1", "-baseHttpPort", str(self.port - 1)]
        return ["-cp", self.cp, str(HERE / "RunnerMain.java"), self.runner_class, *args]

    def ready(self) -> bool:
        r = requests.get(self.url + "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3)
        if r.status_code != 200:
            return False
        # not `GET /`: Elasticsearch 8 from Maven Central has no handler for it (see elasticsearch8/pom.xml)
        nodes = requests.get(self.url + "/_nodes/_local", timeout=3).json()["nodes"]
        self.version = next(iter(nodes.values()))["version"]
        return True


class Elasticsearch7Node(SearchNode):
    name = "elasticsearch7"
    maven_project = "elasticsearch7"
    runner_class = "org.codelibs.elasticsearch.runner.ElasticsearchClusterRunner"
    config_name = "elasticsearch.yml"


class ElasticsearchNode(SearchNode):
    """Elasticsearch 8, started by Es8Main.java (compiled once into the cache)."""

    name = "elasticsearch"
    maven_project = "elasticsearch8"
    # With the test runner's jars on the classpath, Elasticsearch takes itself for a test and wants its context.
    LEFT_OFF = ("randomizedtesting", "/junit/", "lucene-test-framework", "mockito", "hamcrest", "byte-buddy")

    def __init__(self, home: Optional[Path] = None) -> None:
        super().__init__(home)
        self.cp = os.pathsep.join(j for j in self.cp.split(os.pathsep) if not any(x in j for x in self.LEFT_OFF))
        self.classes = self._compile()

    def _compile(self) -> Path:
        source = HERE / "elasticsearch8" / "Es8Main.java"
        digest = hashlib.sha256(source.read_bytes() + self.cp.encode()).hexdigest()[:12]
        out = CACHE / f"es8main-{digest}"
        if not (out / "org" / "elasticsearch" / "node" / "Es8Main.class").exists():
            done = subprocess.run(
                ["javac", "-nowarn", "-cp", self.cp, "-d", str(out), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise EngineError(f"javac {source} failed:\n{done.stdout}{done.stderr}")
        return out

    def prepare(self) -> None:
        pass

    def command(self) -> list:
        args = [str(self.home), str(self.port), str(_free_port())]
        return ["-cp", f"{self.classes}{os.pathsep}{self.cp}", "org.elasticsearch.node.Es8Main", *args]


class OpenSearchNode(SearchNode):
    name = "opensearch"
    maven_project = "opensearch"
    runner_class = "org.codelibs.opensearch.runner.OpenSearchRunner"
    config_name = "opensearch.yml"


ENGINES = {
    "kafka": KafkaBroker,
    "elasticsearch": ElasticsearchNode,
    "opensearch": OpenSearchNode,
    "elasticsearch7": Elasticsearch7Node,
}


def start_all(kinds: list, homes: Optional[list] = None) -> list:
    """Start engines of the given kinds at once (each JVM mostly waits on itself); raise the first failure."""
    started: dict = {}
    errors: list = []

    def one(i: int, kind: str) -> None:
        try:
            started[i] = ENGINES[kind](homes[i] if homes else None).start()
        except Exception as e:  # noqa: BLE001 - raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, k)) for i, k in enumerate(kinds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for e in started.values():
            e.stop()
        raise errors[0]
    return [started[i] for i in range(len(kinds))]
