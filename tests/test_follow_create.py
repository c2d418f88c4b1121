"""A followed index B does not have yet is created from A by the replay (issue 22, item 2).

The docs' order of events: the proxy and the replay run, then `esproxy sync copy`. A live write that
reaches a followed index before the copy does must not let B map it dynamically (the copy then
refused it: "exists in the target with another mapping"): with `follow.source` the replay creates it
from A's mappings, the rule's settings and aliases, and the copy adopts it.
"""

from __future__ import annotations

import subprocess
import sys

import gevent
import pytest
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import es_doc, index_meta, put
from support.kafka import create_topic

from esproxy.clients.elastic import Elastic
from esproxy.core.config import ElasticDestination
from esproxy.replay.follow import Rule, Rules
from esproxy.replay.followcreate import IndexCreator

# Explicit mappings a document's dynamic mapping would not give: `n` and `tag` as keyword (dynamic: long,
# text + keyword), `at` as epoch_millis dates (dynamic: long).
MAPPINGS = {"properties": {"n": {"type": "keyword"}, "tag": {"type": "keyword"}, "at": {"type": "date"}}}


def make_source_index(base: str, index: str, docs: int = 3) -> None:
    put(
        base,
        index,
        {"settings": {"number_of_shards": 2}, "mappings": MAPPINGS, "aliases": {f"{index}-all": {}}},
    )
    for i in range(docs):
        put(base, f"{index}/_doc/{i}", {"n": i, "tag": f"t{i}", "at": 1700000000000 + i}, refresh="true")


def follow_rule(base: str) -> dict:
    return {
        "name": "logs",
        "indices": [f"{base}-*"],
        "rename": "{{remote_index}}-sync",
        "settings": True,
        "aliases": True,
        "copyExisting": True,
    }


@pytest.mark.real
def test_a_live_write_before_the_copy_creates_the_index_from_a_and_the_copy_adopts_it(
    es_a, es_b, kafka, esproxy, names, tmp_path
):
    base = names.index("fc")
    early, quiet, fresh = f"{base}-early", f"{base}-quiet", f"{base}-fresh"
    make_source_index(es_a, early)  # gets a live write before the copy runs
    make_source_index(es_a, quiet)  # gets none: the copy creates it
    topic, port = names.topic(), free_port()
    create_topic(kafka, topic, partitions=2)
    conf = replay_config(kafka, topic, names.group(), es_b, deadLetterFile="dead.jsonl")
    conf["follow"] = {"source": {"url": es_a}, "rules": [follow_rule(base)]}
    replay = esproxy(conf)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"

    # The live writes: one into an index A had before, one into an index A creates from it (dynamically).
    put(proxy, f"{early}/_doc/live", {"n": 7, "tag": "live", "at": 1700000000100})
    put(proxy, f"{fresh}/_doc/1", {"word": "hello", "count": 3})
    wait_until(lambda: es_doc(es_b, f"{early}-sync", "live") is not None, timeout=60, msg="the live write in B")
    wait_until(lambda: es_doc(es_b, f"{fresh}-sync", "1") is not None, timeout=60, msg="the fresh index in B")

    created = index_meta(es_b, f"{early}-sync")  # by the replay, from A, before the copy
    assert created["mappings"] == index_meta(es_a, early)["mappings"], replay.log_tail()
    assert created["settings"]["index"]["number_of_shards"] == "2"  # the rule syncs settings
    assert created["aliases"] == {f"{early}-all": {}}  # and aliases (names kept, as the replay keeps them)
    replay.wait_log(f"created {early}-sync in", timeout=10)  # INFO lines are written in groups

    result = subprocess.run(
        [sys.executable, "-m", "esproxy", "sync", "copy", "--source", es_a, "--target", es_b, "-c",
         str(replay.conf_path), "--settle", "10"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out + replay.log_tail()
    assert "refused" not in out, out
    assert f"{early} -> {early}-sync: 4 read, " in out and f"{quiet} -> {quiet}-sync: 3 read, " in out, out
    assert "the target matches the source" in out, out
    for index in (early, quiet, fresh):  # every followed index: B's mappings are A's
        assert index_meta(es_b, f"{index}-sync")["mappings"] == index_meta(es_a, index)["mappings"], index
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text().strip()


@pytest.mark.real
def test_creation_is_idempotent_when_several_replays_meet_the_missing_index_at_once(es_a, es_b, names):
    """Two replay processes (two creators, each with two partitions' greenlets) meet one missing index:
    one creates it, the others see it created (resource_already_exists_exception) and go on."""
    index = names.index("race")
    make_source_index(es_a, index)
    rules = Rules([Rule("race", (index,), rename="{{remote_index}}-sync", settings=True, aliases=True)])

    def cluster(url: str) -> Elastic:
        return Elastic(ElasticDestination(url=url, maxConns=8), "test")

    creators = [IndexCreator(cluster(es_a), rules) for _ in range(2)]
    targets = [cluster(es_b) for _ in creators]
    lanes = [
        gevent.spawn(creator.ensure, target, index, lambda: False)
        for creator, target in zip(creators, targets)
        for _ in range(2)
    ]
    gevent.joinall(lanes, timeout=60, raise_error=True)
    assert sum(c.created for c in creators) == 1
    meta = index_meta(es_b, f"{index}-sync")
    assert meta["mappings"] == index_meta(es_a, index)["mappings"]
    assert meta["aliases"] == {f"{index}-all": {}}
    again = creators[0].created
    creators[0].ensure(targets[0], index, lambda: False)  # known now: nothing more is done
    assert creators[0].created == again and not creators[0]._locks


def test_without_follow_source_b_maps_the_index_from_the_write_and_a_warning_says_so_once(
    es_a, es_b, kafka, esproxy, names
):
    base = names.index("nosrc")
    index = f"{base}-a"
    make_source_index(es_a, index, docs=0)
    topic, port = names.topic(), free_port()
    create_topic(kafka, topic, partitions=1)
    conf = replay_config(kafka, topic, names.group(), es_b)
    conf["follow"] = {"rules": [follow_rule(base)]}
    replay = esproxy(conf)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"
    for i in range(3):
        put(proxy, f"{index}/_doc/{i}", {"n": i, "tag": "x"})
    wait_until(lambda: es_doc(es_b, f"{index}-sync", "2") is not None, timeout=60, msg="the writes in B")
    warning = f"B has no index {index}-sync (A's {index}, rule logs): this write makes B create it with dynamic"
    assert replay.count_in_log(warning) == 1, replay.log_tail()
    assert "set follow.source to cluster A" in replay.log()
    dynamic = index_meta(es_b, f"{index}-sync")["mappings"]["properties"]
    assert dynamic["n"]["type"] == "long"  # today's behaviour, as the warning says
