"""Follower sync rules applied by the replay (issue 13, item 1): proxy -> Kafka -> replay with rules -> B.

A pattern rule renames `<base>-a` and `<base>-b` to `...-sync` in B with their documents, mappings and
chosen settings; an excluded index and an index no rule names are skipped and counted; a write whose
wildcard may match a followed index goes to the dead letters; bad rules exit 2 naming the key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
import yaml
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

SETTINGS = {
    "number_of_shards": 2,
    "number_of_replicas": 0,
    "refresh_interval": "5s",
    "max_result_window": 20000,
    "analysis": {"analyzer": {"folded": {"type": "custom", "tokenizer": "standard", "filter": ["lowercase"]}}},
}
MAPPINGS = {"properties": {"title": {"type": "text", "analyzer": "folded"}, "n": {"type": "long"}}}
PLAIN = {"properties": {"title": {"type": "text"}, "n": {"type": "long"}}}


def _compare(a: str, b: str, index: str, *how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esproxy", "compare", "--source", a, "--target", b, "--index", index, *how],
        capture_output=True,
        text=True,
        timeout=120,
    )


def has_delete_by_query(url: str, missing_index: str) -> bool:
    r = requests.post(f"{url}/{missing_index}/_delete_by_query", json={"query": {"match_all": {}}}, timeout=10)
    return r.status_code == 404  # index_not_found; a cluster without the endpoint answers 400 no handler


def _flat_settings(base: str, index: str) -> dict:
    return requests.get(f"{base}/{index}/_settings?flat_settings=true", timeout=10).json()[index]["settings"]


def test_pattern_rule_renames_and_skips(es_a, es_b, kafka, esproxy, names, tmp_path):
    if not all(has_delete_by_query(url, names.index("probe")) for url in (es_a, es_b)):
        pytest.skip("a cluster has no _delete_by_query (the Elasticsearch 8 test engine lacks the reindex module)")
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    base = names.index("f")
    a, b, tmp, other = f"{base}-a", f"{base}-b", f"{base}-tmp-1", f"{names.index('other')}"
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b, deadLetterFile="dead.jsonl")
    replay["admin"] = {"port": admin}
    replay["follow"] = {
        "rules": [
            {
                "name": "f",
                "indices": [f"{base}-*"],
                "exclude": [f"{base}-tmp-*"],
                "rename": "{{remote_index}}-sync",
                "settings": True,
                "settingsExclude": ["refresh_interval"],
                "aliases": True,
            }
        ]
    }
    proc = esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"
    s = requests.Session()

    def ok(method: str, path: str, body=None, ndjson: bytes = b"") -> None:
        if ndjson:
            r = s.request(method, proxy + path, data=ndjson, headers={"Content-Type": "application/x-ndjson"})
        else:
            r = s.request(method, proxy + path, json=body, timeout=30)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:300]}"

    ok("PUT", f"/{a}", {"settings": SETTINGS, "mappings": MAPPINGS, "aliases": {f"{base}-current": {}}})
    ok("PUT", f"/{b}", {"mappings": PLAIN})
    ok("PUT", f"/{tmp}", {"mappings": PLAIN})
    for i in range(20):
        ok("PUT", f"/{a}/_doc/{i}", {"title": f"Doc {i}", "n": i})
    ok("POST", f"/{b}/_doc", {"title": "auto id", "n": -1})
    bulk = []
    for i in range(10):
        for index in (a, b, tmp, other):
            bulk.append(json.dumps({"index": {"_index": index, "_id": f"bulk-{i}"}}))
            bulk.append(json.dumps({"title": f"Bulk {i}", "n": 100 + i}))
    ok("POST", f"/{b}/_bulk", ndjson=("\n".join(bulk) + "\n").encode())
    ok("POST", f"/{a}/_update/3", {"doc": {"title": "updated"}})
    ok("DELETE", f"/{a}/_doc/4")
    ok("PUT", f"/{a}/_mapping", {"properties": {"extra": {"type": "keyword"}}})
    ok("PUT", f"/{a}/_settings", {"index": {"max_result_window": 30000, "refresh_interval": "7s"}})
    ok("PUT", f"/{other}/_doc/x", {"title": "not followed"})
    ok("POST", f"/{a},{other}/_delete_by_query?refresh=true", {"query": {"term": {"n": 5}}})
    ok("POST", f"/{base}-*/_delete_by_query", {"query": {"term": {"n": 12345}}})  # a wildcard: dead letter
    ok("PUT", f"/{b}/_doc/last", {"title": "last", "n": 999})

    def synced() -> bool:
        last = requests.get(f"{es_b}/{b}-sync/_doc/last", timeout=10)
        return last.status_code == 200

    wait_until(synced, timeout=60, msg="the last write reached B")
    rules_file = proc.conf_path  # the replay's config, as the esproxy fixture wrote it
    deadline = time.monotonic() + 30
    result = _compare(es_a, es_b, f"{base}-*", "--rules", str(rules_file))
    while result.returncode != 0 and time.monotonic() < deadline:  # the replay may still be draining
        time.sleep(1)
        result = _compare(es_a, es_b, f"{base}-*", "--rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr + proc.log_tail()
    assert f"{a} -> {a}-sync: source 28 docs, target 28 docs: ok" in result.stdout, result.stdout
    assert f"{b} -> {b}-sync: source 12 docs, target 12 docs: ok" in result.stdout, result.stdout
    assert "compared 2 index(es): no differences" in result.stdout  # not the excluded tmp index
    by_template = _compare(es_a, es_b, f"{a},{b}", "--rename", "{{remote_index}}-sync")
    assert by_template.returncode == 0 and "compared 2 index(es): no differences" in by_template.stdout

    # mappings equal; settings: the chosen ones equal, refresh_interval and replicas not synced
    for index in (a, b):
        mapping_a = requests.get(f"{es_a}/{index}/_mapping", timeout=10).json()[index]["mappings"]
        mapping_b = requests.get(f"{es_b}/{index}-sync/_mapping", timeout=10).json()[f"{index}-sync"]["mappings"]
        assert mapping_a == mapping_b
    settings_a, settings_b = _flat_settings(es_a, a), _flat_settings(es_b, f"{a}-sync")
    for key in ("index.number_of_shards", "index.max_result_window", "index.analysis.analyzer.folded.tokenizer"):
        assert settings_b[key] == settings_a[key], key
    assert settings_a["index.max_result_window"] == "30000"
    assert settings_b.get("index.refresh_interval") != settings_a["index.refresh_interval"]
    assert settings_a["index.number_of_replicas"] == "0" and settings_b["index.number_of_replicas"] != "0"
    aliases = requests.get(f"{es_b}/{a}-sync/_alias", timeout=10).json()
    assert aliases == {f"{a}-sync": {"aliases": {f"{base}-current": {}}}}

    # nothing of the unfollowed indices in B, under either name
    for index in (tmp, other, a, b, f"{tmp}-sync", f"{other}-sync"):
        assert requests.head(f"{es_b}/{index}", timeout=10).status_code == 404, index

    stats = requests.get(f"http://127.0.0.1:{admin}/_esproxy/stats", timeout=10).json()
    skipped = stats["replay"]["skipped_by_rules"]
    assert skipped[tmp] == 11  # its creation and 10 bulk actions
    assert skipped[other] == 12  # 10 bulk actions, a document, its part of the delete-by-query
    metrics = requests.get(f"http://127.0.0.1:{admin}/_esproxy/metrics", timeout=10).text
    assert f'esproxy_replay_skipped_by_rules_total{{index="{tmp}"}} 11' in metrics

    followed = stats["replay"]["followed"]
    assert sorted(followed) == [f"{a}-sync", f"{b}-sync"]  # per follower index, never the skipped ones
    assert followed[f"{a}-sync"]["source"] == a and followed[f"{a}-sync"]["rule"] == "f"
    assert followed[f"{a}-sync"]["docs"] >= 30 and followed[f"{b}-sync"]["docs"] >= 12
    assert followed[f"{a}-sync"]["failures"] == 0 and followed[f"{a}-sync"]["lag_seconds"] >= 0
    assert f'esproxy_sync_docs_total{{index="{b}-sync",rule="f"}} ' in metrics
    status = _sync(proc.conf_path, "status")
    assert status.returncode == 0, status.stderr
    header, *rows = status.stdout.splitlines()
    assert header.split()[:4] == ["INDEX", "SOURCE", "RULE", "STATE"]
    assert [row.split()[:4] for row in rows] == [[f"{a}-sync", a, "f", "following"], [f"{b}-sync", b, "f", "following"]]

    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    reason = letter["deadLetter"]["reason"]
    assert reason.startswith("sync rules: ") and "wildcard" in reason and f"{base}-*" in reason, letter


def _replay_with_rules(rules: list) -> dict:
    conf = replay_config("127.0.0.1:9", "t", "g", "http://127.0.0.1:9")
    conf["follow"] = {"rules": rules}
    return conf


@pytest.mark.parametrize(
    "rules,path,words",
    [
        (
            [
                {"name": "a", "indices": ["logs-*"]},
                {"name": "b", "indices": ["logs-app-*"], "rename": "b-{{remote_index}}"},
            ],
            "follow.rules[1].indices",
            "both match one index",
        ),
        (
            [{"name": "a", "indices": ["x"], "rename": "shared"}, {"name": "b", "indices": ["y"], "rename": "shared"}],
            "follow.rules[1].rename",
            "onto one B index",
        ),
        ([{"name": "a", "indices": ["logs-*"], "rename": "logs"}], "follow.rules[0].rename", "one B index"),
        (
            [{"name": "a", "indices": ["x"], "rename": "{{index}}-sync"}],
            "follow.rules[0].rename",
            "unknown placeholder",
        ),
        (
            [{"name": "a", "indices": ["x"], "rename": "{{remote_index}}|x"}],
            "follow.rules[0].rename",
            "valid index name",
        ),
        ([{"name": "a", "indices": ["logs-[ab]"]}], "follow.rules[0].indices[0]", "unknown index pattern syntax"),
        ([{"name": "a", "indices": ["x"]}, {"name": "a", "indices": ["y"]}], "follow.rules[1].name", "already"),
        ([{"indices": ["x"]}], "follow.rules[0].name", "is required"),
    ],
)
def test_bad_rules_exit_2_naming_the_key(tmp_path, rules, path, words):
    conf = tmp_path / "replay.yml"
    conf.write_text(yaml.safe_dump(_replay_with_rules(rules)))
    res = subprocess.run(
        [sys.executable, "-m", "esproxy", "-c", str(conf), "--check"], capture_output=True, text=True, timeout=20
    )
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"esproxy: config error: {path}: "), line
    assert words in line, line


def _sync(conf, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esproxy", "sync", *args, "-c", str(conf)], capture_output=True, text=True, timeout=30
    )


def test_runtime_control_pause_resume_stop_survive_restart(es_a, es_b, kafka, esproxy, names):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    x, y = names.index("x"), names.index("y")
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b)
    replay["admin"] = {"port": admin}
    replay["follow"] = {"rules": [{"name": "x", "indices": [x], "rename": "{{remote_index}}-sync"}]}
    replay["health"] = {"maxReplayStall": "1s"}  # a pause is not a stall
    proc = esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"

    def put(index: str, doc_id: str) -> None:
        assert requests.put(f"{proxy}/{index}/_doc/{doc_id}", json={"n": doc_id}, timeout=10).status_code < 300

    def in_b(index: str, doc_id: str) -> bool:
        return requests.get(f"{es_b}/{index}/_doc/{doc_id}", timeout=10).status_code == 200

    def skipped(index: str) -> int:
        stats = requests.get(f"http://127.0.0.1:{admin}/_esproxy/stats", timeout=10).json()
        return stats["replay"]["skipped_by_rules"].get(index, 0)

    put(x, "1")
    wait_until(lambda: in_b(f"{x}-sync", "1"), timeout=30, msg="doc 1 followed")

    paused = _sync(proc.conf_path, "pause", "x")
    assert paused.returncode == 0 and paused.stdout.strip() == "rule x: paused", paused.stderr
    put(x, "2")
    proc.wait_log("sync rule x is paused", timeout=30)
    assert not in_b(f"{x}-sync", "2")  # it waits
    time.sleep(1.5)  # longer than maxReplayStall: what is checked is that nothing turns unhealthy meanwhile
    health = requests.get(f"http://127.0.0.1:{admin}/_esproxy/health", timeout=10)
    assert health.status_code == 200, health.text
    lag = requests.get(f"http://127.0.0.1:{admin}/_esproxy/stats", timeout=10).json()["replay"]["consumer_lag"]
    assert [row["paused_by"] for row in lag] == ["x"]
    listed = _sync(proc.conf_path, "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].split()[:3] == ["x", "paused", "config"], listed.stdout

    assert _sync(proc.conf_path, "resume", "x").returncode == 0
    wait_until(lambda: in_b(f"{x}-sync", "2"), timeout=10, msg="doc 2 applied once resumed")

    assert _sync(proc.conf_path, "stop", "x").stdout.strip() == "rule x: stopped"
    put(x, "3")
    wait_until(lambda: skipped(x) == 1, timeout=30, msg="doc 3 skipped")
    assert not in_b(f"{x}-sync", "3") and in_b(f"{x}-sync", "2")  # the B index stays as it is
    row = _sync(proc.conf_path, "status").stdout.splitlines()[1].split()
    assert row[:5] == [f"{x}-sync", x, "x", "stopped", "2"], row

    # a restart keeps the state (follow-state.json in the working directory)
    proc.terminate()
    proc = esproxy(replay)
    assert _sync(proc.conf_path, "list").stdout.splitlines()[1].split()[:2] == ["x", "stopped"]
    put(x, "4")
    wait_until(lambda: skipped(x) == 1, timeout=30, msg="doc 4 skipped after the restart")
    assert not in_b(f"{x}-sync", "4")
    refused = _sync(proc.conf_path, "resume", "x")
    assert refused.returncode == 1 and "is stopped" in refused.stderr

    # rules added and deleted at runtime
    bad = _sync(proc.conf_path, "add", "--name", "x2", "--indices", x)
    assert bad.returncode == 1 and "both match" in bad.stderr
    added = _sync(proc.conf_path, "add", "--name", "y", "--indices", y, "--rename", "{{remote_index}}-sync")
    assert added.returncode == 0, added.stderr
    put(y, "1")
    wait_until(lambda: in_b(f"{y}-sync", "1"), timeout=30, msg="the added rule follows")
    assert _sync(proc.conf_path, "delete", "y").returncode == 0
    put(y, "2")
    wait_until(lambda: skipped(y) == 1, timeout=30, msg="the deleted rule's index is skipped")
    assert [line.split()[0] for line in _sync(proc.conf_path, "list").stdout.splitlines()] == ["NAME", "x"]


def test_stream_rate_limit_counts_throttled_time(es_a, es_b, kafka, esproxy, names):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    index = names.index("rl")
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b, maxDocsPerSecond=40, batchSize=20)
    replay["admin"] = {"port": admin}
    esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    for n in range(6):
        lines = []
        for i in range(20):
            lines += [json.dumps({"index": {"_index": index, "_id": f"{n}-{i}"}}), json.dumps({"n": i})]
        r = requests.post(
            f"http://127.0.0.1:{port}/_bulk",
            data="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert r.status_code == 200 and not r.json()["errors"]

    def count() -> int:
        requests.post(f"{es_b}/{index}/_refresh", timeout=10)
        return requests.get(f"{es_b}/{index}/_count", timeout=10).json().get("count", 0)

    wait_until(lambda: count() == 120, timeout=60, msg="every document replayed")
    stats = requests.get(f"http://127.0.0.1:{admin}/_esproxy/stats", timeout=10).json()
    # 120 documents at 40/s, each send paid before it goes: ~2.8 s waited in all (3 s less the 0.2 s burst)
    assert stats["replay"]["throttled_seconds"] >= 1.0, stats["replay"]
    metrics = requests.get(f"http://127.0.0.1:{admin}/_esproxy/metrics", timeout=10).text
    assert "esproxy_replay_throttled_seconds_total " in metrics
