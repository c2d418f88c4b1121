"""`esproxy dlq list|requeue`: read the replay's dead letters and put chosen ones back in their topic.

Dead letters are read from a topic (``--brokers`` + ``--topic``), a file (``--file``), or from
where a config's ``source.kafkas[]`` entries write them (``-c``). ``requeue`` produces each chosen
dead letter's bean, without its ``deadLetter`` field, to the topic it was read from, and leaves the
dead letters where they are. Exit codes: 0 done, 1 runtime failure (broker or file unreachable,
nothing matched for requeue), 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from .bean import Bean, BeanError
from .capture import key_of
from .deadletter import FIELD, original
from .messages import CHUNK_KIND, DEFAULT_MAX_MESSAGE_BYTES, Assembler, Chunk, Message, decode, encode, value_room

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class DlqError(Exception):
    """A runtime failure, shown as one line."""


@dataclass
class Place:
    """Where dead letters are: a topic on brokers, or a file (with the brokers to requeue to, if known)."""

    brokers: list[str] = field(default_factory=list)
    topic: str = ""
    file: str = ""

    def __str__(self) -> str:
        return f"file {self.file}" if self.file else f"topic {self.topic}"


@dataclass
class Letter:
    place: Place
    at: str  # where it is stored: "dlqtopic-partition@offset" or "file:line"
    record: Optional[dict[str, Any]]  # None: the stored dead letter itself is not JSON
    raw: bytes = b""

    @property
    def info(self) -> dict[str, Any]:
        info = (self.record or {}).get(FIELD)
        return info if isinstance(info, dict) else {}

    @property
    def origin(self) -> str:
        i = self.info
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
        description="List the replay's dead letters, or requeue them to their topic once the cause is fixed.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "print the dead letters: time, origin (topic-partition@offset), reason, body preview"),
        ("requeue", "produce the chosen dead letters back to the topic they were read from"),
    ):
        s = sub.add_parser(name, help=help_text, description=help_text)
        src = s.add_argument_group("where the dead letters are (one of)")
        src.add_argument("-c", "--conf", help="replay config: its source.kafkas[] dead-letter topics or files")
        src.add_argument("--topic", help="dead-letter topic (with --brokers), e.g. elastic.backup.dlq")
        src.add_argument("--file", help="dead-letter file (JSON lines); requeue needs --brokers too")
        s.add_argument("--brokers", help="bootstrap brokers, host:port[,host:port]")
        sel = s.add_argument_group("which dead letters (default for list: all)")
        sel.add_argument("--offset", type=int, action="append", default=[], help="original offset (repeatable)")
        sel.add_argument("--partition", type=int, help="original partition")
        sel.add_argument("--match", help="text in the reason, origin or body (case-insensitive)")
        if name == "requeue":
            sel.add_argument("--all", action="store_true", help="every dead letter")
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
    from .config import load

    cfg = load(args.conf)  # ConfigError: handled by the caller (exit 2)
    places = []
    for k in cfg.kafka_sources():
        if k.deadLetterFile:
            places.append(Place(brokers or list(k.brokers), file=k.deadLetterFile))
        else:
            places.extend(Place(brokers or list(k.brokers), topic=k.dead_letter_topic(t)) for t in k.topics)
    if not places:
        raise ValueError(f"{args.conf} has no enabled source.kafkas[] entry")
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
    return [_parse(place, f"{place.file}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]


def read_topic(place: Place, timeout: float = 30.0) -> list[Letter]:
    """Every record of the topic, from the beginning (no consumer group, nothing committed)."""
    import time

    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        c = KafkaConsumer(
            bootstrap_servers=place.brokers,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="earliest",
            client_id="esproxy-dlq",
        )
    except KafkaError as e:
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
        print(f"{info.get('time', '?'):24}  {letter.origin}  {reason}")
        print(f"{'':24}  {letter.preview(args.width)}")
    if not args.json:
        where = ", ".join(str(p) for p in places)
        print(f"{len(letters)} dead letter(s) in {where}", file=sys.stderr)
    return EXIT_OK


def _origin_order(letter: Letter) -> tuple:
    """Requeue in the order the messages had: by original topic, partition and offset."""
    i = letter.info
    return (str(i.get("topic", "")), int(i.get("partition") or 0), int(i.get("offset") or 0))


def _key(bean: dict[str, Any]) -> Optional[bytes]:
    fields = {str(k).lower(): v for k, v in bean.items()}
    index = fields.get("index") or key_of(str(fields.get("requesturi") or "/").split("?", 1)[0])
    return str(index).encode("utf-8") if index else None


def _messages(key: Optional[bytes], value: bytes) -> list[Message]:
    """The bean as it was (one message), or split as the proxy would if it is too big for one."""
    if len(value) <= value_room(key or b"", DEFAULT_MAX_MESSAGE_BYTES):
        return [Message(key or b"", value)]
    return encode(Bean.from_json(value), DEFAULT_MAX_MESSAGE_BYTES)


def _requeue(letters: list[Letter], args: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    ready, skipped = [], []
    for letter in letters:
        value = original(letter.record) if letter.record is not None else None
        topic = letter.info.get("topic")
        if value is None or not topic:
            skipped.append(letter)
        else:
            ready.append((letter, topic, value))
    for letter in skipped:
        print(f"skipped {letter.at} (from {letter.origin}): not a bean; fix it by hand", file=sys.stderr)
    if not ready:
        print("esproxy dlq: nothing to requeue", file=sys.stderr)
        return EXIT_FAIL
    producers: dict[tuple[str, ...], Any] = {}
    done: dict[str, int] = {}
    try:
        for letter, topic, value in ready:
            if not letter.place.brokers:
                raise DlqError(f"{letter.place}: no brokers to requeue to; give --brokers or -c")
            if args.dry_run:
                print(f"would requeue {letter.origin} to topic {topic}: {letter.preview(60)}")
                done[topic] = done.get(topic, 0) + 1
                continue
            brokers = tuple(letter.place.brokers)
            if brokers not in producers:
                producers[brokers] = KafkaProducer(
                    bootstrap_servers=list(brokers),
                    acks="all",
                    client_id="esproxy-dlq",
                    max_request_size=DEFAULT_MAX_MESSAGE_BYTES,
                )
            key = _key(letter.record or {})
            messages = _messages(key, value)
            chunked = len(messages) > 1  # then all with the same key, hence in one partition
            sent = [producers[brokers].send(topic, value=m.value, key=m.key if chunked else key) for m in messages]
            md = [future.get(timeout=30) for future in sent][0]
            print(f"requeued {letter.origin} as {md.topic}-{md.partition}@{md.offset}")
            done[topic] = done.get(topic, 0) + 1
    except KafkaError as e:
        raise DlqError(f"requeue failed after {sum(done.values())} message(s): {e}") from None
    finally:
        for p in producers.values():
            p.close(timeout=10)
    verb = "would requeue" if args.dry_run else "requeued"
    summary = ", ".join(f"{n} to topic {t}" for t, n in sorted(done.items()))
    tail = f"; skipped {len(skipped)} that are not beans" if skipped else ""
    print(f"esproxy dlq: {verb} {summary}{tail}; the dead letters themselves are left in place")
    return EXIT_OK


def main(argv: list[str]) -> int:
    from .config import ConfigError

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
