"""The replay's steps (esproxy/replay/steps.py) on records made here, without Kafka: a replay with no primaries
writes nothing into a cluster, so what is tested is the chain itself — the offset each turn reports done, the
records a batch carries, chunk sets held and put together, and the dead letters (into a file, for real)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Callable

from esproxy.clients.elastic import Elastic
from esproxy.core.bean import DOCS_KIND, Bean
from esproxy.core.config import ElasticDestination, KafkaSource
from esproxy.core.messages import encode_value
from esproxy.replay.assembly import Assembly
from esproxy.replay.deadletters import DeadLetters
from esproxy.replay.follow import Rules
from esproxy.replay.followcreate import IndexCreator
from esproxy.replay.ratelimit import RateLimit
from esproxy.replay.record import Standin
from esproxy.replay.steps import Steps
from esproxy.replay.writes import Batch, Writes

TOPIC = "writes"


def _steps(tmp_path: Path, **settings: object) -> tuple[Steps, DeadLetters]:
    letters_file = str(tmp_path / "dead.jsonl")
    cfg = KafkaSource(brokers=["k:9092"], topics=[TOPIC], group="g", deadLetterFile=letters_file, **settings)
    letters = DeadLetters(cfg)
    rules = Rules([])
    writes = Writes([], RateLimit(0, 0), IndexCreator(None, rules), letters)
    return Steps(cfg, [], rules, writes, letters, Assembly(cfg, letters)), letters


def _letters(tmp_path: Path) -> list[dict]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(line)["deadLetter"] for line in path.read_text().splitlines()] if path.exists() else []


def _docs(n: int, size: int = 10) -> bytes:
    bulk = "".join(f'{{"index":{{"_index":"logs","_id":"{i}"}}}}\n{{"n":"{"x" * size}"}}\n' for i in range(n))
    return Bean("POST", "/_bulk", bulk.encode(), index="logs", kind=DOCS_KIND).to_json()


def _raw() -> bytes:
    return Bean("POST", "/logs/_delete_by_query", b'{"query":{"match_all":{}}}', index="logs").to_json()


def _chunks(value: bytes) -> list[bytes]:
    messages = encode_value(b"logs", value, 1000)
    assert len(messages) >= 2
    return [m.value for m in messages]


def _records(
    values: list[bytes], first: int = 10, timestamps: list[int] | None = None, partition: int = 0
) -> list[Standin]:
    stamps = timestamps or [1_000] * len(values)
    return [Standin(TOPIC, partition, first + i, b"logs", v, stamps[i]) for i, v in enumerate(values)]


def test_the_worked_example_of_the_module_ends_done_at_the_last_record(tmp_path: Path) -> None:
    steps, letters = _steps(tmp_path)
    big = _chunks(_docs(40))
    values = [_docs(2), _docs(3), big[0], _raw(), *big[1:], b"hello"]
    records = _records(values)
    assert steps.replay(records, lambda: False) == records[-1].offset
    (letter,) = _letters(tmp_path)  # the message that is not a bean, at its own offset
    assert letter["offset"] == records[-1].offset and letter["reason"].startswith("not a bean")
    assembler = steps.assembly.of(TOPIC, 0)
    assert not assembler.sets and assembler.low_water() is None  # the chunk set was put together and released
    letters.close()


def test_a_held_chunk_is_done_at_once_or_with_the_batch_before_it(tmp_path: Path) -> None:
    steps, letters = _steps(tmp_path)
    first = _chunks(_docs(40))[0]
    alone = _records([first], first=20)
    assert steps.replay(alone, lambda: False) == 20  # nothing before it: done at once
    assert steps.assembly.of(TOPIC, 0).low_water() == 20  # but the commit stops at it (its set is held)
    after_docs = _records([_docs(1), first], first=30, partition=1)
    assert steps.replay(after_docs, lambda: False) == 31  # carried by the batch of @30, done with it
    assert steps.assembly.of(TOPIC, 1).low_water() == 31
    assert _letters(tmp_path) == []
    letters.close()


def test_a_batch_full_is_flushed_before_the_bean_that_does_not_fit(tmp_path: Path) -> None:
    steps, letters = _steps(tmp_path, batchSize=4)
    flushed: list[int] = []
    flush = steps.writes.flush

    def noted(batch: Batch, stop: Callable[[], bool]) -> int:
        flushed.append(flush(batch, stop))
        return flushed[-1]

    steps.writes.flush = noted  # type: ignore[method-assign]  # the real flush, its results noted
    records = _records([_docs(3), _docs(1), _docs(2), _docs(2)])
    assert steps.replay(records, lambda: False) == 13
    assert flushed == [11, 13]  # 3 + 1 actions fit in 4; 2 more do not: flushed at 11, then 2 + 2 at the end
    letters.close()


def test_a_chunk_set_that_never_completes_is_a_dead_letter_at_its_first_chunk(tmp_path: Path) -> None:
    steps, letters = _steps(tmp_path, chunkTimeout=60)
    first = _chunks(_docs(40))[0]
    records = _records([first, _docs(1)], first=5, timestamps=[1_000, 1_000 + 61_000])
    assert steps.replay(records, lambda: False) == 6
    (letter,) = _letters(tmp_path)
    assert letter["offset"] == 5 and letter["reason"].startswith("incomplete write carried in chunks")
    assert steps.assembly.of(TOPIC, 0).low_water() is None
    letters.close()


def test_chunks_put_together_that_are_not_a_bean_are_a_dead_letter_at_the_last_chunk(tmp_path: Path) -> None:
    steps, letters = _steps(tmp_path)
    values = _chunks(b'{"not": "a bean", "pad": "' + b"x" * 3000 + b'"}')
    records = _records(values, first=0)
    assert steps.replay(records, lambda: False) == records[-1].offset
    (letter,) = _letters(tmp_path)
    assert letter["offset"] == records[-1].offset and "put together are not a bean" in letter["reason"]
    letters.close()


def test_a_turn_whose_batch_cannot_be_applied_reports_none_done_not_even_its_carried_chunk(tmp_path: Path) -> None:
    """B refuses connections until the stop: the batch of @30 is not applied, so neither is the chunk @31 it
    carries done (were it, the commit would pass @30); the partition's chunk sets are read again from @30."""
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = KafkaSource(brokers=["k:9092"], topics=[TOPIC], group="g", deadLetterFile=str(tmp_path / "dead.jsonl"))
    letters = DeadLetters(cfg)
    rules = Rules([])
    primaries = [Elastic(ElasticDestination(url=f"http://127.0.0.1:{port}/"))]
    writes = Writes(primaries, RateLimit(0, 0), IndexCreator(None, rules), letters)
    steps = Steps(cfg, primaries, rules, writes, letters, Assembly(cfg, letters))
    records = _records([_docs(1), _chunks(_docs(40))[0]], first=30)
    until = time.monotonic() + 0.3
    assert steps.replay(records, lambda: time.monotonic() > until) is None
    assert steps.assembly.of(TOPIC, 0).low_water() is None and _letters(tmp_path) == []
    letters.close()
