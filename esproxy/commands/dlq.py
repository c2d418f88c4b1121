"""`esproxy dlq list|requeue`: read dead letters and put chosen ones back in their topic.

Dead letters are read from a topic (``--brokers`` + ``--topic``), a file (``--file``), or from
where a config writes them (``-c``): its ``source.kafkas[]`` entries' topics or files (the
replay's), and, for a proxy with ``destination.kafkas[]``, ``<spool.dir>/deadletters.jsonl`` (writes
the broker refused for good, see esproxy.clients.refusals.ProxyDeadLetters). ``requeue`` produces each
chosen dead letter's bean, without its ``deadLetter`` field, to its topic through
esproxy.clients.producer.KafkaDest (the proxy's own producer: with the config's settings for that topic
when given ``-c``). Dead letters read from a file are then marked as requeued in ``<file>.requeued``
(one JSON line each, fsynced; ``requeue`` skips them unless ``--again``); those in a topic are left
as they are. Exit codes: 0 done, 1 runtime failure (broker or file unreachable, refused again,
nothing matched for requeue), 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from esproxy.core.bean import BeanError
from esproxy.core.deadletters import FIELD, original, proxy_file
from esproxy.core.messages import CHUNK_KIND, Assembler, Chunk, decode

if TYPE_CHECKING:
    from esproxy.clients.kafkasecurity import Secured
    from esproxy.clients.producer import KafkaDest
    from esproxy.core.config import KafkaDestination

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
CONNECT_TIMEOUT = 30.0


class DlqError(Exception):
    """A runtime failure, shown as one line."""


@dataclass
class Place:
    """Where dead letters are: a topic on brokers, or a file (with the brokers to requeue to, if known)."""

    brokers: list[str] = field(default_factory=list)
    topic: str = ""
    file: str = ""
    # -c: the config's destination.kafkas[] by topic, so a requeue produces as the proxy does
    destinations: dict[str, KafkaDestination] = field(default_factory=dict)
    # -c: the config entry whose securityProtocol, tls and sasl reach these brokers; None: PLAINTEXT
    security: Optional[Secured] = None

    def __str__(self) -> str:
        return f"file {self.file}" if self.file else f"topic {self.topic}"


@dataclass
class Letter:
    place: Place
    at: str  # where it is stored: "dlqtopic-partition@offset" or "file:line"
    record: Optional[dict[str, Any]]  # None: the stored dead letter itself is not JSON
    raw: bytes = b""
    requeued: str = ""  # when it was requeued (a file's dead letters only), else ""

    @property
    def digest(self) -> str:
        """What marks it in ``<file>.requeued``: the hash of its line."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def info(self) -> dict[str, Any]:
        info = (self.record or {}).get(FIELD)
        return info if isinstance(info, dict) else {}

    @property
    def origin(self) -> str:
        i = self.info
        if i.get("source") == "proxy":  # refused by the broker: it never had a partition or offset
            return f"proxy->{i.get('topic', '?')}"
        return f"{i.get('topic', '?')}-{i.get('partition', '?')}@{i.get('offset', '?')}"

    def preview(self, width: int) -> str:
        r = self.record or {}
        if "body" in r or "value" in r:
            text = r.get("body", r.get("value"))
            if not isinstance(text, str):
                text = json.dumps(text, ensure_ascii=False)
            if (r.get("bodyEncoding") or r.get("valueEncoding")) == "base64":
                text = repr(base64.b64decode(text)[:width])
            head = f"{r.get('method', '')} {r.get('requestUri', '')} ".lstrip() if "method" in r else ""
        else:
            head, text = "", self.raw.decode("utf-8", "replace")
        line = (head + " ".join(text.split()))[:width]
        return line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esproxy dlq",
        description="List dead letters (the replay's, or the proxy's), or requeue them to their topic once the"
        " cause is fixed.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "print the dead letters: time, origin (topic-partition@offset), reason, body preview"),
        ("requeue", "produce the chosen dead letters back to the topic they were read from"),
    ):
        s = sub.add_parser(name, help=help_text, description=help_text)
        src = s.add_argument_group("where the dead letters are (one of)")
        src.add_argument(
            "-c",
            "--conf",
            help="config: its source.kafkas[] dead-letter topics or files, its proxy's <spool.dir>/deadletters.jsonl",
        )
        src.add_argument("--topic", help="dead-letter topic (with --brokers), e.g. elastic.backup.dlq")
        src.add_argument("--file", help="dead-letter file (JSON lines); requeue needs --brokers too")
        s.add_argument("--brokers", help="bootstrap brokers, host:port[,host:port]")
        sel = s.add_argument_group("which dead letters (default for list: all)")
        sel.add_argument("--offset", type=int, action="append", default=[], help="original offset (repeatable)")
        sel.add_argument("--partition", type=int, help="original partition")
        sel.add_argument("--match", help="text in the reason, origin or body (case-insensitive)")
        if name == "requeue":
            sel.add_argument("--all", action="store_true", help="every dead letter")
            sel.add_argument("--again", action="store_true", help="include those already requeued from a file")
            s.add_argument("--dry-run", action="store_true", help="say what would be requeued, produce nothing")
        else:
            s.add_argument("--width", type=int, default=60, help="characters of body preview (default 60)")
            s.add_argument("--json", action="store_true", help="print the dead letters as JSON lines")
    return p


def _places(args: argparse.Namespace) -> list[Place]:
    brokers = [b.strip() for b in (args.brokers or "").split(",") if b.strip()]
    given = [x for x in (args.conf, args.topic, args.file) if x]
    if len(given) != 1:
        raise ValueError("give one of -c/--conf, --topic (with --brokers) or --file")
    if args.topic:
        if not brokers:
            raise ValueError("--topic needs --brokers")
        return [Place(brokers, topic=args.topic)]
    if args.file:
        return [Place(brokers, file=args.file)]
    from esproxy.configfile import load

    cfg = load(args.conf)  # ConfigError: handled by the caller (exit 2)
    places = []
    dests = cfg.kafka_destinations()
    if cfg.proxies() and dests:
        config_brokers = list(dict.fromkeys(b for d in dests for b in d.brokers))
        by_topic = {d.topic: d for d in reversed(dests)}  # the first entry of a topic wins
        if brokers:  # --brokers replaces the config's, as for the replay's dead letters
            by_topic = {t: dataclasses.replace(d, brokers=brokers) for t, d in by_topic.items()}
        proxy_place = Place(brokers or config_brokers, file=str(proxy_file(cfg)), destinations=by_topic)
        proxy_place.security = dests[0]
        places.append(proxy_place)
    for k in cfg.kafka_sources():
        if k.deadLetterFile:
            places.append(Place(brokers or list(k.brokers), file=k.deadLetterFile, security=k))
        else:
            places.extend(Place(brokers or list(k.brokers), topic=k.dead_letter_topic(t), security=k) for t in k.topics)
    if not places:
        raise ValueError(f"{args.conf} has neither a source.kafkas[] entry nor a proxy with destination.kafkas[]")
    return places


def _parse(place: Place, at: str, raw: bytes) -> Letter:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        value = None
    return Letter(place, at, value if isinstance(value, dict) else None, raw)


def read_file(place: Place) -> list[Letter]:
    try:
        with open(place.file, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise DlqError(f"cannot read {place.file}: {e.strerror or e}") from None
    letters = [_parse(place, f"{place.file}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    marks = _requeued_marks(place.file)
    for letter in letters:
        letter.requeued = marks.get(letter.digest, "")
    return letters


def _marks_path(path: str) -> str:
    return path + ".requeued"


def _requeued_marks(path: str) -> dict[str, str]:
    """digest -> time, of the dead letters of file ``path`` that were requeued."""
    marks: dict[str, str] = {}
    try:
        with open(_marks_path(path), "rb") as f:
            for line in f:
                try:
                    mark = json.loads(line)
                    marks[str(mark["sha256"])] = str(mark.get("time", "?"))
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a crash: that letter simply shows as not requeued
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DlqError(f"cannot read {_marks_path(path)}: {e.strerror or e}") from None
    return marks


def _mark_requeued(letter: Letter, topic: str) -> None:
    """Note durably that a file's dead letter was requeued (before the next one is produced)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mark = {"sha256": letter.digest, "at": letter.at, "topic": topic, "time": now}
    try:
        with open(_marks_path(letter.place.file), "ab") as f:
            f.write(json.dumps(mark).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise DlqError(f"{letter.at} was requeued but could not be marked so: {e.strerror or e}") from None


def read_topic(place: Place, timeout: float = 30.0) -> list[Letter]:
    """Every record of the topic, from the beginning (no consumer group, nothing committed)."""
    import time

    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from esproxy.clients import kafkasecurity

    try:
        c = KafkaConsumer(
            bootstrap_servers=place.brokers,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="earliest",
            client_id="esproxy-dlq",
            **(kafkasecurity.client_kwargs(place.security) if place.security is not None else {}),
        )
    except (KafkaError, kafkasecurity.TlsFileError) as e:
        raise DlqError(f"kafka {','.join(place.brokers)} unreachable: {e}") from None
    try:
        parts = c.partitions_for_topic(place.topic)
        if not parts:
            return []
        tps = [TopicPartition(place.topic, p) for p in sorted(parts)]
        end = c.end_offsets(tps)
        c.assign(tps)
        c.seek_to_beginning(*tps)
        letters: list[Letter] = []
        assemblers: dict[int, Assembler] = {}  # per partition: dead letters too big for one message
        deadline = time.monotonic() + timeout
        # Stop at the end offsets taken first; compare positions, not counts (a broker's high
        # watermark may move by one for a batch of several records, as Tansu's does).
        pending = [tp for tp in tps if end[tp] > 0]
        while pending:
            if time.monotonic() > deadline:
                raise DlqError(f"reading {place.topic}: did not reach the end offsets {end} in {timeout:.0f}s")
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    letter = _parse(place, f"{r.topic}-{r.partition}@{r.offset}", r.value or b"")
                    if _is_chunk(letter):
                        letter = _assemble(place, assemblers.setdefault(r.partition, Assembler()), r, letter)
                    if letter is not None:
                        letters.append(letter)
            pending = [tp for tp in pending if c.position(tp) < end[tp]]
        for partition, assembler in sorted(assemblers.items()):
            for held in assembler.sets.values():  # its other chunks are not in the topic (yet)
                at = f"{place.topic}-{partition}@{held.first_offset}"
                letters.append(Letter(place, at, None, f"part of a dead letter in chunks: {held.describe()}".encode()))
        return letters
    except KafkaError as e:
        raise DlqError(f"reading {place.topic}: {e}") from None
    finally:
        c.close()


def _is_chunk(letter: Letter) -> bool:
    return letter.record is not None and letter.record.get("kind") == CHUNK_KIND and "method" not in letter.record


def _assemble(place: Place, assembler: Assembler, record: Any, letter: Letter) -> Optional[Letter]:
    """The dead letter a chunk completes (None until its last chunk), as if read at that chunk."""
    try:
        chunk = decode(letter.raw)
    except BeanError:
        return letter  # listed as it is
    if not isinstance(chunk, Chunk):
        return letter
    complete = assembler.add(chunk, record.offset, record.timestamp)
    if complete is None:
        return None
    assembler.release(complete.id)
    return _parse(place, letter.at, complete.bean_json())


def _selected(letters: list[Letter], args: argparse.Namespace) -> list[Letter]:
    out = []
    for letter in letters:
        info = letter.info
        if args.offset and info.get("offset") not in args.offset:
            continue
        if args.partition is not None and info.get("partition") != args.partition:
            continue
        if args.match:
            hay = " ".join([str(info.get("reason", "")), letter.origin, letter.raw.decode("utf-8", "replace")])
            if args.match.lower() not in hay.lower():
                continue
        out.append(letter)
    return out


def _list(letters: list[Letter], args: argparse.Namespace, places: list[Place]) -> int:
    for letter in letters:
        if args.json:
            print(letter.raw.decode("utf-8", "replace"))
            continue
        info = letter.info
        if letter.record is None:
            print(f"{'?':24}  {letter.at}: not a dead letter (not JSON)")
            continue
        reason = " ".join(str(info.get("reason", "?")).split())[:100]
        done = f"  [requeued {letter.requeued}]" if letter.requeued else ""
        print(f"{info.get('time', '?'):24}  {letter.origin}  {reason}{done}")
        print(f"{'':24}  {letter.preview(args.width)}")
    if not args.json:
        where = ", ".join(str(p) for p in places)
        print(f"{len(letters)} dead letter(s) in {where}", file=sys.stderr)
    return EXIT_OK


def _origin_order(letter: Letter) -> tuple:
    """Requeue in the order the messages had: by original topic, partition and offset."""
    i = letter.info
    return (str(i.get("topic", "")), int(i.get("partition") or 0), int(i.get("offset") or 0))


def _producer(place: Place, topic: str, cache: dict[tuple, KafkaDest]) -> KafkaDest:
    """The proxy's producer for ``topic`` (the config's settings for it, if any), connected."""
    from esproxy.clients.producer import KafkaDest
    from esproxy.core.config import KafkaDestination
    from esproxy.core.retry import Aborted
    from esproxy.core.schema import build

    if not place.brokers:
        raise DlqError(f"{place}: no brokers to requeue to; give --brokers or -c")
    dest_cfg = place.destinations.get(topic)
    if dest_cfg is None:
        dest_cfg = build(KafkaDestination, {"topic": topic, "brokers": place.brokers})
        if place.security is not None:  # a replay's dead letter goes back over the replay's connection settings
            security = place.security
            dest_cfg = dataclasses.replace(
                dest_cfg, securityProtocol=security.securityProtocol, tls=security.tls, sasl=security.sasl
            )
    key = (tuple(dest_cfg.brokers), topic)
    if key not in cache:
        dest = KafkaDest(dest_cfg, all_acks=True)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            dest.connect(lambda: time.monotonic() > deadline)
        except Aborted:
            raise DlqError(f"kafka {','.join(dest_cfg.brokers)} unreachable for {CONNECT_TIMEOUT:.0f}s") from None
        cache[key] = dest
    return cache[key]


def _requeue(letters: list[Letter], args: argparse.Namespace) -> int:
    from esproxy.core.bean import Bean, BeanError

    ready, skipped, already = [], [], []
    for letter in letters:
        value = original(letter.record) if letter.record is not None else None
        topic = letter.info.get("topic")
        try:
            bean = Bean.from_json(value) if value is not None else None
        except BeanError:
            bean = None
        if bean is None or not topic:
            skipped.append(letter)
        elif letter.requeued and not args.again:
            already.append(letter)
        else:
            ready.append((letter, str(topic), bean))
    for letter in skipped:
        print(f"skipped {letter.at} (from {letter.origin}): not a bean; fix it by hand", file=sys.stderr)
    if already:
        print(
            f"skipped {len(already)} already requeued (see {_marks_path(already[0].place.file)}); --again to"
            " requeue them once more",
            file=sys.stderr,
        )
    if not ready:
        print("esproxy dlq: nothing to requeue", file=sys.stderr)
        return EXIT_FAIL
    producers: dict[tuple, KafkaDest] = {}
    done: dict[str, int] = {}
    try:
        for letter, topic, bean in ready:
            if args.dry_run:
                if not letter.place.brokers:
                    raise DlqError(f"{letter.place}: no brokers to requeue to; give --brokers or -c")
                print(f"would requeue {letter.origin} to topic {topic}: {letter.preview(60)}")
            else:
                shipped = _producer(letter.place, topic, producers).ship([bean])
                if shipped.refused is not None:
                    raise DlqError(f"{letter.at} ({letter.origin}) refused again by topic {topic}: {shipped.refused}")
                if not shipped.taken:
                    raise DlqError(f"{letter.at} ({letter.origin}) not taken by topic {topic} (see the lines above)")
                if letter.place.file:
                    _mark_requeued(letter, topic)
                print(f"requeued {letter.at} ({letter.origin}) to topic {topic}")
            done[topic] = done.get(topic, 0) + 1
    except DlqError as e:
        raise DlqError(f"requeue stopped after {sum(done.values())} message(s): {e}") from None
    finally:
        for p in producers.values():
            p.close(timeout=10)
    verb = "would requeue" if args.dry_run else "requeued"
    summary = ", ".join(f"{n} to topic {t}" for t, n in sorted(done.items()))
    tail = f"; skipped {len(skipped)} that are not beans" if skipped else ""
    files = {letter.place.file for letter, _, _ in ready}
    if args.dry_run:
        after = ""
    elif "" in files:
        after = "; the dead letters themselves are left in place" + (
            ", those of files marked in <file>.requeued" if len(files) > 1 else ""
        )
    else:
        after = "; marked as requeued in " + ", ".join(sorted(_marks_path(f) for f in files))
    print(f"esproxy dlq: {verb} {summary}{tail}{after}")
    return EXIT_OK


def main(argv: list[str]) -> int:
    from esproxy.core.config import ConfigError

    p = _parser()
    args = p.parse_args(argv)
    if args.action == "requeue" and not (args.all or args.offset or args.match):
        p.exit(EXIT_USAGE, "esproxy dlq requeue: say which: --all, --offset N or --match TEXT\n")
    try:
        places = _places(args)
    except ValueError as e:
        p.exit(EXIT_USAGE, f"esproxy dlq: {e}\n")
    except ConfigError as e:
        print(f"esproxy: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        letters = [letter for place in places for letter in (read_file(place) if place.file else read_topic(place))]
        chosen = _selected(letters, args)
        if args.action == "list":
            return _list(sorted(chosen, key=lambda x: str(x.info.get("time", ""))), args, places)
        return _requeue(sorted(chosen, key=_origin_order), args)
    except DlqError as e:
        print(f"esproxy dlq: {e}", file=sys.stderr)
        return EXIT_FAIL
