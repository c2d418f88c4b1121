"""What a config is: every esproxy setting, declared once (YAML key, type, default, meaning, bounds).

The schema is the Go original's (``chanSize``, ``source.proxies[]``, ``source.kafkas[]``,
``destination.primaries[]``, ``destination.rests[]``, ``destination.kafkas[]``); keys match
case-insensitively, as they did there. Settings esproxy adds are marked as ours in their doc.

:class:`Config` composes the sections; the Kafka entries and the TLS blocks are declared in
esproxy.core.settings_kafka and esproxy.core.settings_tls, and exported from here. A setting's own
bounds (``minimum``, ``check``... see esproxy.core.schema.setting) are checked as it is read;
:func:`_check` holds only the rules across settings.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable

import yaml

from . import labels, secretrefs
from .schema import (
    ByteSize,
    ConfigError,
    Duration,
    Url,
    build,
    format_size,
    reference,
    setting,
    tcp_port,
    tcp_port_or_zero,
    walk_compat,
)
from .settings_kafka import KafkaDestination, KafkaSource
from .settings_tls import ClientTls, KafkaSasl, KafkaTls, ServerTls, check_client_tls, check_server_tls, fingerprint_hex

__all__ = [
    "AdminListener",
    "ClientTls",
    "Config",
    "ConfigError",
    "Destination",
    "ElasticDestination",
    "FollowRule",
    "FollowSettings",
    "FollowSource",
    "HealthSettings",
    "KafkaDestination",
    "KafkaSasl",
    "KafkaSource",
    "KafkaTls",
    "ProxySource",
    "ServerTls",
    "Source",
    "SpoolSettings",
    "fingerprint_hex",
    "load",
    "parse",
    "reference_markdown",
]


@dataclass
class ProxySource:
    port: int = setting(doc="TCP port the proxy listens on.", required=True, check=tcp_port, shown="1–65535")
    host: str = setting("0.0.0.0", "Address the proxy binds (ours).")
    disabled: bool = setting(False, "Skip this entry.")
    accesslog: bool = setting(False, "Log one `access log: {...}` JSON line per request.")
    noaccesslog: bool = setting(False, "Go original's spelling: true turns the access log off.")
    header: dict[str, str] = setting(
        {}, "Headers every client request must carry (e.g. `Authorization: Basic ...`); else 401."
    )
    labels: dict[str, str] = setting({}, "Labels copied into each captured write; matched by `labelEval`.")
    durability: str = setting(
        "spool",
        "How a captured write is kept until Kafka has it, before the client's answer: `spool` (appended to"
        " the fsynced write-ahead spool), `kafka` (produced with acks=all), `none` (in-memory queue, the Go"
        " original's behaviour; lost if the process dies) (ours).",
        choices=("none", "spool", "kafka"),
    )
    passHeaders: list[str] = setting(
        [], "Extra request headers forwarded to the primary, besides the standard ones (ours)."
    )
    assignIds: bool = setting(
        True,
        "With `durability: spool`, writes that would let the primary choose the document id (`POST"
        " /idx/_doc`, `_bulk` index/create actions without `_id`) get an Elasticsearch-style id from the"
        " proxy first, so that such a write in flight at a crash can be settled from A; false keeps A's"
        " own ids (see docs/operations.md for what each costs) (ours).",
    )
    followerReadOnly: bool = setting(
        False,
        "This proxy stands in front of a follower (B): writes to its followed indices (the targets of"
        " `follow.rules`; no rules: every index) are refused with 403 (see docs/operations.md, Read-only"
        " followers and index names) (ours).",
    )
    tls: ServerTls = setting(ServerTls(), "HTTPS on this listener (see docs/operations.md, Security) (ours).")
    readYourWrites: Duration = setting(
        Duration(0),
        "With `destination.followers`: after a client's successful write to an index, its reads of that index go"
        " to the leader for this long (a client: its Authorization header, else its IP address); 0 = off (ours).",
        minimum=0,
        zero="off",
    )
    maxContentLength: ByteSize = setting(
        ByteSize(100 << 20),
        "Largest request body (Elasticsearch's `http.max_content_length`): a bigger one is answered 413 and"
        " the connection closed, before it is read when its Content-Length says so (ours).",
        minimum=1,
    )
    maxInitialLineLength: ByteSize = setting(
        ByteSize(4 << 10),
        "Longest request line, method and URL (Elasticsearch's `http.max_initial_line_length`); longer: 414 (ours).",
        minimum=1,
    )
    maxHeaderSize: ByteSize = setting(
        ByteSize(16 << 10),
        "Most bytes of request headers, all lines together (Elasticsearch's `http.max_header_size`); more: 431 (ours).",
        minimum=1,
    )
    maxHeaderCount: int = setting(100, "Most request header lines; more: 431 (ours).", minimum=1)
    readTimeout: Duration = setting(
        Duration(60),
        "A request's line and headers must arrive within this from its first byte, and its body must keep"
        " coming (each 64kb of it, or its rest, within this); else 408 and the connection is closed. A new"
        " connection must start its first request within this too, else it is closed without an answer;"
        " 0 = no limit (ours).",
        minimum=0,
        zero="no limit",
    )
    idleTimeout: Duration = setting(
        Duration(300),
        "A kept-alive connection with no request for this long is closed (Elasticsearch keeps them open);"
        " 0 = never (ours).",
        minimum=0,
        zero="no limit",
    )
    maxConnections: int = setting(
        1000,
        "Most client connections served at once (per worker with `workers`); one more is answered 503 and"
        " closed; 0 = unbounded (ours).",
        minimum=0,
        zero="no limit",
    )


@dataclass
class ElasticDestination:
    url: Url = setting(doc="Base URL of the cluster, e.g. `http://127.0.0.1:9200/`.", required=True)
    timeout: Duration = setting(
        Duration(60),
        "Time to wait for the cluster's answer (connect: at most 5s); checked every tenth of it (at most every"
        " second), so it fires up to a tenth late.",
    )
    header: dict[str, str] = setting({}, "Headers added to every request to the cluster (credentials).")
    labelEval: str = setting(
        "", "Label expression (`SRC==PROXY || SRC==KAFKA`); empty matches all.", check=labels.parse
    )
    accesslog: bool = setting(False, "Log one `access log: {...}` JSON line per request to this cluster.")
    noaccesslog: bool = setting(False, "Go original's spelling: true turns the access log off.")
    maxConns: int = setting(256, "Upper bound of kept-alive connections to the cluster (ours).", minimum=1)
    tls: ClientTls = setting(
        ClientTls(), "TLS to an https:// cluster; the system's CAs when unset (docs/operations.md, Security) (ours)."
    )
    replayAdmin: str = setting(
        "",
        "Proxy role with `destination.followers`: base URL of the admin listener of the replay that writes INTO"
        " this cluster (`http://127.0.0.1:2901`). Its lag decides whether reads may go to this cluster while it"
        " follows, and `esproxy switchover` waits on it (ours).",
    )
    replayAdminHeader: dict[str, str] = setting(
        {},
        "Headers sent with every request to `replayAdmin`: what that replay's `admin.header` requires (ours).",
    )
    replayAdminTls: ClientTls = setting(
        ClientTls(),
        "TLS to an https:// `replayAdmin`, as `tls` (e.g. `ca`: the CA that signed that replay's `admin.tls.cert`);"
        " when unset, this cluster's `tls` (ours).",
    )
    maxLag: Duration = setting(
        Duration(5),
        "Proxy role: while this cluster follows, reads go to the leader instead when its replay lags more than"
        " this, or when the lag cannot be read from `replayAdmin`; 0 = ignore the lag (ours).",
        minimum=0,
        zero="ignore the lag",
    )
    disabled: bool = setting(False, "Skip this entry.")


@dataclass
class SpoolSettings:
    dir: str = setting(
        "spool",
        "Directory of the write-ahead spool, relative to the working directory; also holds the proxy's dead"
        " letters, `deadletters.jsonl` (writes Kafka refused for good), whatever the `durability`.",
    )
    maxBytes: int = setting(
        256 * 1024 * 1024, "Most bytes of captured writes waiting for Kafka; then `whenFull` applies.", minimum=1
    )
    whenFull: str = setting(
        "block",
        "`block`: writes wait for room (backpressure); `reject`: writes are refused with 503 before they"
        " reach the primary. Reads are never affected.",
        choices=("block", "reject"),
    )
    fsync: bool = setting(
        True,
        "fsync each group of appends (false trusts the page cache: faster, survives"
        " a process crash but not a power cut).",
    )
    commitDelay: Duration = setting(
        Duration(0.002),
        "While other captured writes are in flight, how long a group commit waits for them to join before its"
        " fsync (PostgreSQL's commit_delay): fewer fsyncs under load, for at most twice this much more latency"
        " per write (its intent and its outcome are two commits); a lone writer never waits; 0 = never (ours).",
    )


@dataclass
class Source:
    proxies: list[ProxySource] = setting([], "Proxy role: one HTTP listener per entry, in front of the primary.")
    kafkas: list[KafkaSource] = setting([], "Replay role: one consumer group per entry.")


@dataclass
class Destination:
    primaries: list[ElasticDestination] = setting(
        [], "Elasticsearch clusters: the proxy forwards to them, the replay writes into them."
    )
    followers: list[ElasticDestination] = setting(
        [],
        "Proxy role: clusters kept in sync from the primary (by a replay) that serve reads; off when empty"
        " (see docs/operations.md, Read/write splitting) (ours).",
    )
    rests: list[ElasticDestination] = setting([], "HTTP backups: every captured write is also sent there.")
    kafkas: list[KafkaDestination] = setting([], "Topics the proxy produces captured writes to.")


@dataclass
class AdminListener:
    port: int = setting(
        0,
        "Port of a separate listener for `/_esproxy/health`, `/_esproxy/stats`, `/_esproxy/metrics` and the console"
        " `/_esproxy/ui`; 0 = none. The proxy serves them on its own port(s) anyway; the replay role needs this to be"
        " scraped (ours).",
        check=tcp_port_or_zero,
        shown="0 or 1–65535",
    )
    host: str = setting("127.0.0.1", "Address the admin listener binds (ours).")
    header: dict[str, str] = setting({}, "Headers every request to the admin listener must carry; else 401 (ours).")
    tls: ServerTls = setting(ServerTls(), "HTTPS on the admin listener, as `source.proxies[].tls` (ours).")


@dataclass
class HealthSettings:
    maxShipDelay: Duration = setting(
        Duration(30),
        "`/_esproxy/health` answers 503 while a captured write has waited longer than this to be taken by Kafka"
        " (the oldest write in the spool or the `durability: none` queue); 0 = never (ours).",
        minimum=0,
        zero="never",
    )
    maxProduceFailing: Duration = setting(
        Duration(30),
        "503 while a topic's produce requests have failed, with no message taken since, for longer than this;"
        " 0 = never (ours).",
        minimum=0,
        zero="never",
    )
    maxReplayStall: Duration = setting(
        Duration(60),
        "503 while a replayed partition has records waiting and has applied none of them for longer than this"
        " (the target cluster down or refusing, a dead letter that cannot be written...); 0 = never (ours).",
        minimum=0,
        zero="never",
    )
    maxReplayLag: Duration = setting(
        Duration(600),
        "503 while the oldest record a partition has fetched and not yet applied is older than this (its Kafka"
        " timestamp: the replay is that far behind); 0 = never (ours).",
        minimum=0,
        zero="never",
    )
    maxUnassigned: Duration = setting(
        Duration(60),
        "503 while partitions of the replay's topics have writes waiting (its group's committed offset below the"
        " end offset), this replay does not hold them, and no replay of its group has committed on them for longer"
        " than this (a group that no longer hands out its partitions, every other member gone...); read every 5s,"
        " for the partitions this replay does not hold only; 0 = never (ours).",
        minimum=0,
        zero="never",
    )
    deadLetterWindow: Duration = setting(
        Duration(300),
        "503 while a dead letter was written within this long (by the replay, or by the proxy for a write the"
        " broker refuses for good); health is 200 again once the last one is older; 0 = dead letters never"
        " make health 503 (ours).",
        minimum=0,
        zero="never",
    )


@dataclass
class FollowRule:
    name: str = setting(doc="Name of the rule, unique: logs and commands refer to it.", required=True)
    indices: list[str] = setting(
        [], "A's indices the rule follows: exact names and `*` wildcards (`logs-*`).", required=True
    )
    exclude: list[str] = setting([], "Names and `*` wildcards among `indices` not followed.")
    rename: str = setting(
        "{{remote_index}}",
        "The index name in B; `{{remote_index}}` stands for A's name (`{{remote_index}}-sync`). A rule"
        " with a wildcard needs the placeholder (two indices never go to one B index).",
    )
    settings: bool = setting(
        False,
        "Replay index settings (at creation and `_settings` updates), filtered by `settingsInclude` /"
        " `settingsExclude`. Off: creation keeps only the analysis settings mappings may need, and"
        " `_settings` updates are skipped.",
    )
    settingsInclude: list[str] = setting(
        ["*"], "Setting keys replayed when `settings` is on (`*` wildcards; `index.` may be left out)."
    )
    settingsExclude: list[str] = setting([], "Setting keys never replayed (`*` wildcards).")
    replicas: bool = setting(False, "Also replay `index.number_of_replicas` (B's own replica count otherwise).")
    aliases: bool = setting(False, "Replay alias changes of followed indices (the alias points to B's name).")
    copyExisting: bool = setting(
        False, "Copy the indices that already exist in A (the initial copy, `esproxy sync copy`)."
    )
    delay: Duration = setting(
        Duration(0),
        "Delayed follower: a write to the rule's indices is applied to B no earlier than its capture on A plus"
        " this (`30m`), in order, in the rule's own lane (other rules are not held back); reads of these"
        " indices never go to B, and switchover/failover refuse B without `--force`. Offsets are committed no"
        " further than the oldest write waiting, so a restart keeps the delay; 0 = off (ours).",
        minimum=0,
        zero="off",
    )
    guard: list[str] = setting(
        [],
        "Destructive writes held for an operator instead of applied (`esproxy sync approve RULE` or `reject RULE`): the"
        " rule's lane stops at one, other rules go on. Kinds: `index_delete` (`DELETE /idx`, also through a"
        " list or wildcard that may name a followed index, `_aliases` `remove_index`), `delete_by_query`,"
        " `update_by_query`, `close` (see docs/operations.md, Undo window) (ours).",
    )


@dataclass
class FollowSource:
    url: Url = setting(
        "",
        "Base URL of cluster A (the proxy's primary). Set: when a write reaches an index B does not have"
        " yet, the replay first creates it as `esproxy sync copy` would (A's mappings, the rule's settings"
        " and aliases), so that B never maps a followed index dynamically. Empty: B creates it from the"
        " write with dynamic mappings (with rules, a warning once per index) (ours).",
    )
    header: dict[str, str] = setting(
        {}, "Headers added to every request to A (credentials that may read its indices) (ours)."
    )
    timeout: Duration = setting(Duration(30), "Time to wait for A's answer (connect: at most 5s) (ours).")
    tls: ClientTls = setting(ClientTls(), "TLS to an https:// A, as `destination.primaries[].tls` (ours).")

    def destination(self) -> ElasticDestination:
        """The cluster entry the replay reaches A with (a few connections: it only reads index definitions)."""
        return ElasticDestination(
            url=self.url, timeout=self.timeout, header=dict(self.header), tls=self.tls, maxConns=4
        )


@dataclass
class FollowSettings:
    rules: list[FollowRule] = setting(
        [],
        "Sync rules: which indices the replay writes into B, under which name. None (or no `follow`"
        " section): every write is replayed as it is. See docs/operations.md, Follower sync.",
    )
    source: FollowSource = setting(
        FollowSource(),
        "Replay role: cluster A, read (`GET /<index>`) to create a followed index B lacks before its first"
        " write (see docs/operations.md, Follower sync, Indices B does not have yet) (ours).",
    )


@dataclass
class Config:
    chanSize: int = setting(
        0,
        "Capacity of the queue between request handlers and the Kafka producer; 0 = direct hand-off.",
        minimum=0,
        zero="direct hand-off",
    )
    logLevel: str = setting(
        "info",
        "Lowest level logged (ours). `debug` adds the two lines per Kafka message (`kafka write size`,"
        " `kafka.produce result`) that the original logs at info.",
        choices=("debug", "info", "warn", "warning", "error"),
    )
    workers: int = setting(
        1,
        "Proxy worker processes sharing the proxy port(s) (pre-fork). With more than 1, this process is their "
        "master: it keeps the spool, the Kafka producer, the replay role and the admin port, and every captured "
        "write is recorded through it before the client gets its answer, so order and durability are those of one "
        "process. Use up to the number of cores left to spare (ours).",
        minimum=1,
    )
    maxInFlightBytes: ByteSize = setting(
        ByteSize(512 << 20),
        "Budget of request bytes in flight, across connections and `workers` (Elasticsearch's in-flight"
        " requests circuit breaker): a request with a body reserves twice its size (what it costs the proxy in"
        " memory at its peak) until it is answered; one that would pass the budget is answered 429 with"
        " Retry-After (`circuit_breaking_exception`), not forwarded. At least twice the largest"
        " `maxContentLength`; 0 = no budget (ours).",
        minimum=0,
        zero="no budget",
    )
    stopTimeout: Duration = setting(
        Duration(25),
        "How long a graceful stop (TERM, INT) may take in all: requests in flight, shipping `durability: none`'s"
        " queue to Kafka (what it did not take is then lost), the replay's last commit. Keep it under what the"
        " supervisor waits before it kills: supervisord's `stopwaitsecs` (30 in ops/), Kubernetes'"
        " `terminationGracePeriodSeconds` (30 by default). At least 5s: a pre-fork master gives its workers all"
        " but 3s of it (ours).",
        minimum=5,
    )
    admin: AdminListener = setting(AdminListener(), "Stats and metrics listener (ours).")
    source: Source = setting(Source(), "Where requests come from.")
    spool: SpoolSettings = setting(SpoolSettings(), "The proxy's write-ahead spool (`durability: spool`) (ours).")
    destination: Destination = setting(Destination(), "Where they go.")
    health: HealthSettings = setting(
        HealthSettings(), "When `/_esproxy/health` answers 503 (see docs/operations.md, Health) (ours)."
    )
    follow: FollowSettings = setting(
        FollowSettings(), "Follower sync: the replay's index rules (see docs/operations.md, Follower sync) (ours)."
    )

    warnings: ClassVar[tuple[str, ...]] = ()  # set by parse(), not a setting

    def proxies(self) -> list[ProxySource]:
        return [p for p in self.source.proxies if not p.disabled]

    def kafka_sources(self) -> list[KafkaSource]:
        return [k for k in self.source.kafkas if not k.disabled]

    def primaries(self) -> list[ElasticDestination]:
        return [p for p in self.destination.primaries if not p.disabled]

    def followers(self) -> list[ElasticDestination]:
        return [f for f in self.destination.followers if not f.disabled]

    def rests(self) -> list[ElasticDestination]:
        return [r for r in self.destination.rests if not r.disabled]

    def kafka_destinations(self) -> list[KafkaDestination]:
        return [k for k in self.destination.kafkas if not k.disabled]

    def captures(self) -> bool:
        """Whether captured writes go anywhere (Kafka topics or HTTP backups): the proxy has a fanout."""
        return bool(self.kafka_destinations() or self.rests())

    def spools(self) -> bool:
        """Whether the fanout has a write-ahead spool: some proxy uses `durability: spool`."""
        return self.captures() and any(p.durability == "spool" for p in self.proxies())


_CODEC_MODULES = {"snappy": ("snappy", "python-snappy"), "lz4": ("lz4", "lz4"), "zstd": ("zstandard", "zstandard")}


def _check(cfg: Config) -> list[str]:
    """Checks across settings; returns warnings, raises ConfigError for what cannot run."""
    warnings: list[str] = []
    groups = ("primaries", "followers", "rests")
    for kind, entries in ((g, getattr(cfg.destination, g)) for g in groups):
        for i, e in enumerate(entries):
            if not e.disabled:
                where = f"destination.{kind}[{i}]"
                warnings.extend(check_client_tls(e.tls, e.url, f"{where}.tls"))
                warnings.extend(
                    check_client_tls(e.replayAdminTls, e.replayAdmin, f"{where}.replayAdminTls", "replayAdmin")
                )
    for i, p in enumerate(cfg.source.proxies):
        if not p.disabled:
            check_server_tls(p.tls, f"source.proxies[{i}].tls")
    if cfg.admin.port:
        check_server_tls(cfg.admin.tls, "admin.tls")
    for i, k in enumerate(cfg.destination.kafkas):
        module = _CODEC_MODULES.get(k.codec)
        if module and not k.disabled and importlib.util.find_spec(module[0]) is None:
            raise ConfigError(
                f"destination.kafkas[{i}].codec",
                f'"{k.codec}" needs the {module[1]} package (pip install "esproxy[codecs]")',
            )
    if cfg.maxInFlightBytes and cfg.proxies():
        largest = max(p.maxContentLength for p in cfg.proxies())
        if cfg.maxInFlightBytes < 2 * largest:
            raise ConfigError(
                "maxInFlightBytes",
                f"{format_size(cfg.maxInFlightBytes)} is less than twice the largest maxContentLength"
                f" ({format_size(largest)}): a request of that size could never be taken",
            )
    if cfg.workers > 1 and not cfg.proxies():
        warnings.append("workers: applies to the proxy role only; this config has no proxy, so it is ignored")

    ports: dict[int, str] = {}
    for i, p in enumerate(cfg.source.proxies):
        path = f"source.proxies[{i}]"
        if p.disabled:
            continue
        if p.port in ports:
            raise ConfigError(f"{path}.port", f"{p.port} is already used by {ports[p.port]}")
        ports[p.port] = path
        if not _matching(cfg.primaries(), p.labels):
            raise ConfigError(path, "no destination.primaries[] entry to forward to (all disabled or none match)")
        if not cfg.kafka_destinations() and not cfg.rests():
            warnings.append(f"{path}: no destination.kafkas[] or rests[]: writes are forwarded but not captured")
        if p.followerReadOnly and not cfg.follow.rules:
            warnings.append(f"{path}.followerReadOnly: no follow.rules: every write naming an index is refused")
    for i, k in enumerate(cfg.source.kafkas):
        path = f"source.kafkas[{i}]"
        if k.disabled:
            continue
        if not k.deadLetterFile:
            for topic in k.topics:
                dlq = k.dead_letter_topic(topic)
                if not dlq or dlq in k.topics:
                    raise ConfigError(
                        f"{path}.deadLetterTopic", f'"{dlq}" for topic {topic} must be another topic than those read'
                    )
        if not _matching(cfg.primaries(), k.labels):
            raise ConfigError(path, "no destination.primaries[] entry to replay into (all disabled or none match)")
    if cfg.admin.port:
        if cfg.admin.port in ports:
            raise ConfigError("admin.port", f"{cfg.admin.port} is already used by {ports[cfg.admin.port]}")
    if cfg.follow.source.url:
        warnings.extend(check_client_tls(cfg.follow.source.tls, cfg.follow.source.url, "follow.source.tls"))
        if not cfg.kafka_sources():
            warnings.append("follow.source: applies to the replay role only; this config has no source.kafkas[]")
    elif cfg.follow.source.tls:
        warnings.append("follow.source.tls: follow.source.url is not set, so TLS settings are not used")
    if cfg.follow.rules:
        if not cfg.kafka_sources() and not cfg.followers() and not any(p.followerReadOnly for p in cfg.proxies()):
            warnings.append(
                "follow: applies to the replay role and to proxies with followerReadOnly or followers;"
                " this config has none"
            )
    warnings += _read_split_warnings(cfg)
    if not cfg.proxies() and not cfg.kafka_sources():
        raise ConfigError("source", "nothing to run: enable an entry of source.proxies[] or source.kafkas[]")
    walk_compat(cfg, "", lambda path, note: warnings.append(f"{path}: {note}"))
    return warnings


def _read_split_warnings(cfg: Config) -> list[str]:
    """What keeps read/write splitting (destination.followers) from doing what the config seems to ask."""
    warnings = []
    for i, f in enumerate(cfg.destination.followers):
        path = f"destination.followers[{i}]"
        if f.disabled:
            continue
        if f.maxLag > 0 and not f.replayAdmin:
            warnings.append(
                f"{path}: no replayAdmin, so its lag is unknown and every read goes to the leader;"
                " set replayAdmin, or maxLag: 0 to send reads whatever the lag"
            )
    if cfg.followers() and not cfg.proxies():
        warnings.append("destination.followers: applies to the proxy role only; this config has no proxy")
    for i, p in enumerate(cfg.proxies()):
        if p.readYourWrites > 0 and not cfg.followers():
            warnings.append(f"source.proxies[{i}].readYourWrites: no destination.followers, so it does nothing")
        elif p.readYourWrites > 0 and cfg.workers > 1:
            warnings.append(
                f"source.proxies[{i}].readYourWrites: with workers: {cfg.workers} each worker remembers the writes"
                " it served only; a client's read on another connection may reach a follower"
            )
    return warnings


def _matching(entries: list[ElasticDestination], source_labels: dict[str, str]) -> list[ElasticDestination]:
    return [e for e in entries if labels.parse(e.labelEval)(source_labels)]


# A check of a section whose meaning lives above the core (the follow rules, a Kafka entry's TLS and SASL),
# run on the built Config after the checks across settings: returns warnings, raises ConfigError naming
# the key path. The settings declaration knows none of them; esproxy/configfile.py hands them over.
SectionCheck = Callable[[Config], list[str]]


def parse(text: str, checks: Iterable[SectionCheck] = ()) -> Config:
    """Build and check a Config from YAML text, then run ``checks`` on it (esproxy.configfile.CHECKS)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError("", f"{where}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise ConfigError("", "YAML nested deeper than the parser goes") from None
    if data is None:
        raise ConfigError("", "the file is empty")
    data, unresolved, outside = secretrefs.resolve_tree(data)
    if unresolved:
        raise ConfigError("", "\n".join(f"{path}: {reason}" for path, reason in unresolved))
    secretrefs.too_short.clear()
    try:
        cfg = build(Config, data)
        warnings = _check(cfg)
        for check in checks:
            warnings += check(cfg)
        warnings += [
            f"{path}: its value from ${{...}} or file: is shorter than {secretrefs.MIN_MASKED} characters:"
            " too short to be masked in logs"
            for path in secretrefs.too_short
        ]
        cfg.warnings = tuple(secretrefs.mask(w, outside) for w in warnings)
    except ConfigError as e:  # its message may quote a value from ${ENV} or file:
        raise ConfigError(e.path, secretrefs.mask(e.reason, outside)) from None
    return cfg


def load(path: str | Path, checks: Iterable[SectionCheck] = ()) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    return parse(text, checks)


def reference_markdown() -> str:
    header = ["| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(header + reference(Config))
