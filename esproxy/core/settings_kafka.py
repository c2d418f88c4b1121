"""The Kafka settings of esproxy's config: a replay's consumer group (``source.kafkas[]``) and a topic the proxy
produces to (``destination.kafkas[]``).

Declared here, composed into :class:`esproxy.core.config.Config` (the one place that says what a config is).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import labels
from .messages import DEFAULT_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES
from .schema import Duration, setting
from .settings_tls import KafkaSasl, KafkaTls

_VERSION_NOTE = "accepted and ignored: the Kafka protocol version is negotiated with the broker."


_SECURITY_PROTOCOL_DOC = (
    "How to reach the brokers: `PLAINTEXT`, `SSL` (TLS, see `tls`), `SASL_PLAINTEXT` or `SASL_SSL` (see `sasl`);"
    " Kafka's own `security.protocol` (ours)."
)
_TLS_DOC = "TLS to the brokers, with `securityProtocol` `SSL` or `SASL_SSL` (ours)."
_SASL_DOC = "SASL authentication, with `securityProtocol` `SASL_PLAINTEXT` or `SASL_SSL` (ours)."
_SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
_CONNECT_TIMEOUT_DOC = (
    "How long a Kafka client waits for its first answer from the brokers (connection, TLS, SASL, metadata)"
    " before esproxy logs them `unreachable`, with the reason, and tries again after a backoff (ours)."
)


@dataclass
class KafkaSource:
    brokers: list[str] = setting([], "Bootstrap brokers, `host:port`.", required=True)
    topics: list[str] = setting([], "Topics to consume.", required=True)
    group: str = setting(doc="Consumer group id; offsets are committed only after a replay succeeded.", required=True)
    newest: bool = setting(False, "A group with no committed offset starts at the end (true) or the beginning.")
    assignor: str = setting("range", "Partition assignment strategy.", choices=("range", "roundrobin", "rr", "sticky"))
    labels: dict[str, str] = setting({}, "Labels given to every consumed write (replace the bean's labels).")
    concurrency: int = setting(8, "Partitions replayed in parallel, each in offset order (ours).", minimum=1)
    batchSize: int = setting(
        1000, "Most document actions sent to the cluster in one `_bulk` request (ours).", minimum=1
    )
    batchBytes: int = setting(5 * 1024 * 1024, "Most bytes in one `_bulk` request (ours).", minimum=1)
    linger: Duration = setting(
        Duration(0), "Wait this long for more messages when a poll returned fewer than `batchSize` (ours)."
    )
    sessionTimeout: Duration = setting(
        Duration(10), "Consumer group session timeout; heartbeats every third of it, at most 3s (ours).", minimum=1
    )
    warnSize: int = setting(3 * 1024 * 1024, "Messages at least this big are logged as a warning.")
    maxDocsPerSecond: int = setting(
        0,
        "Most writes (document actions, other writes count one) the replay sends B per second, all partitions"
        " together; the time it waits is counted (`replay.throttled_seconds`); 0 = unbounded (ours).",
        minimum=0,
        zero="unbounded",
    )
    maxBytesPerSecond: int = setting(
        0, "Most bytes the replay sends B per second; 0 = unbounded (ours).", minimum=0, zero="unbounded"
    )
    chunkTimeout: Duration = setting(
        Duration(600),
        "A write carried in chunks (see `destination.kafkas[].maxMessageBytes`) whose chunks stop coming is"
        " given up once a message of its partition is this much newer (Kafka timestamps) than its first"
        " chunk, or a million messages after it: what was read of it goes to the dead letters. Until then"
        " the partition's committed offset stays at its first chunk (ours).",
        above=0,
    )
    deadLetterTopic: str = setting(
        "{topic}.dlq",
        "Topic (on the same brokers) that messages which can never apply go to: not a bean, or refused by the "
        "cluster with a 4xx (a mapping conflict...); `{topic}` is the topic they were read from. The offset is "
        "committed only once the broker acknowledged the dead letter. See `esproxy dlq` (ours).",
    )
    deadLetterFile: str = setting(
        "",
        "Write dead letters to this file instead (JSON lines, appended and fsynced before the commit; "
        "relative to the working directory); empty = the topic (ours).",
    )
    version: str = setting("", "Kafka version.", compat=_VERSION_NOTE)
    disabled: bool = setting(False, "Skip this entry.")
    noaccesslog: bool = setting(
        False, "Accepted for Go configs; the replay's access log is `destination.primaries[].accesslog`."
    )
    securityProtocol: str = setting("plaintext", _SECURITY_PROTOCOL_DOC, choices=_SECURITY_PROTOCOLS)
    tls: KafkaTls = setting(KafkaTls(), _TLS_DOC)
    sasl: KafkaSasl = setting(KafkaSasl(), _SASL_DOC)
    connectTimeout: Duration = setting(Duration(30), _CONNECT_TIMEOUT_DOC, minimum=1)

    def dead_letter_topic(self, topic: str) -> str:
        return self.deadLetterTopic.replace("{topic}", topic)


@dataclass
class KafkaDestination:
    topic: str = setting(doc="Topic the captured writes are produced to.", required=True)
    brokers: list[str] = setting([], "Bootstrap brokers, `host:port`.", required=True)
    codec: str = setting("none", "Compression.", choices=("none", "gzip", "snappy", "lz4", "zstd"))
    sync: bool = setting(False, "Wait for the broker's acknowledgement of each message before the next.")
    # The Go original spelled it `async` (its inverse); accepted for configs written for it.
    async_: str = setting(
        "",
        "Go original's inverse of `sync`: `async: false` is the same as `sync: true`.",
        choices=("true", "false"),
        key="async",
    )
    requiredAcks: str = setting(
        "WaitForLocal",
        "Broker acknowledgement: NoResponse (0), WaitForLocal (1, leader only), WaitForAll (all in-sync replicas).",
        choices=("noresponse", "waitforlocal", "waitforall", "0", "1", "-1", "all"),
    )
    labelEval: str = setting("", "Label expression; empty matches all.", check=labels.parse)
    warnSize: int = setting(3 * 1024 * 1024, "Messages at least this big are logged as a warning.")
    maxMessageBytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES,
        "Largest Kafka message produced, key and record overhead included (the producer's max_request_size)."
        " A captured write that does not fit is carried in several messages with the same key, which the"
        " replay puts together again. Must not exceed what the broker and the topic accept (message.max.bytes,"
        " max.message.bytes: 1048588 on a stock broker) (ours).",
        minimum=MIN_MAX_MESSAGE_BYTES,
    )
    version: str = setting("", "Kafka version.", compat=_VERSION_NOTE)
    disabled: bool = setting(False, "Skip this entry.")
    securityProtocol: str = setting("plaintext", _SECURITY_PROTOCOL_DOC, choices=_SECURITY_PROTOCOLS)
    tls: KafkaTls = setting(KafkaTls(), _TLS_DOC)
    sasl: KafkaSasl = setting(KafkaSasl(), _SASL_DOC)
    connectTimeout: Duration = setting(Duration(30), _CONNECT_TIMEOUT_DOC, minimum=1)

    @property
    def synchronous(self) -> bool:
        return self.sync or self.async_ == "false"

    @property
    def acks(self) -> int | str:
        return {"noresponse": 0, "0": 0, "waitforall": "all", "-1": "all", "all": "all"}.get(self.requiredAcks, 1)
