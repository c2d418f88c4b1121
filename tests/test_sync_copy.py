"""`esproxy sync copy` copies A's existing indices into B (renamed, with mappings, chosen settings
and aliases, every document with A's version) while the live stream runs, resumes after a kill,
throttles, and says why an index could not be copied."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import bulk_load, compare_until_equal, es_doc, index_meta, put
from support.kafka import create_topic
from support.load import Churn

from esproxy.clients.indexcopy import SettingsChoice, mapping_conflicts
from esproxy.commands.synccopy import main
from esproxy.commands.synccopy_copier import SyncCopy
from esproxy.commands.synccopy_reader import Reader

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

# The initial copy under load: 20,000 documents in the suite; `make test-copy-100k` runs 100,000.
LOAD_DOCS = int(os.environ.get("SYNC_COPY_DOCS", "20000"))


def sync_copy(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esproxy", "sync", "copy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def make_source_index(base: str, index: str, docs: int = 3) -> None:
    put(
        base,
        index,
        {
            "settings": {"number_of_shards": 2, "number_of_replicas": 0, "refresh_interval": "7s"},
            "mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}},
            "aliases": {f"{index}-all": {}},
        },
    )
    for i in range(docs):
        put(base, f"{index}/_doc/{i}", {"n": i, "tag": f"t{i}"}, routing=f"r{i}", refresh="true")


def test_pattern_and_rename_copy_documents_mappings_chosen_settings_and_aliases(es_a, es_b, names, tmp_path):
    base = names.index("logs")
    first, second, skipped = f"{base}-1", f"{base}-2", f"{base}-skip"
    for index in (first, second, skipped):
        make_source_index(es_a, index)
    put(es_a, f"{second}/_doc/3", {"n": 3, "tag": "t3"}, refresh="true")

    result = sync_copy(
        "--source", es_a, "--target", es_b, "--index", f"{base}-*", "--exclude", "*-skip",
        "--rename", "{{remote_index}}-sync", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{first} -> {first}-sync: 3 read, 3 written," in result.stdout
    assert f"{second} -> {second}-sync: 4 read, 4 written," in result.stdout
    assert "the target matches the source" in result.stdout
    assert requests.get(f"{es_b}/{skipped}-sync", timeout=10).status_code == 404
    assert requests.get(f"{es_b}/{skipped}", timeout=10).status_code == 404

    for index in (first, second):
        ours, theirs = index_meta(es_a, index), index_meta(es_b, f"{index}-sync")
        assert theirs["mappings"] == ours["mappings"]
        assert theirs["settings"]["index"]["refresh_interval"] == "7s"
        assert theirs["settings"]["index"]["number_of_shards"] == "2"
        assert theirs["settings"]["index"]["number_of_replicas"] != "0"  # B's own default: not asked for
        assert theirs["settings"]["index"]["uuid"] != ours["settings"]["index"]["uuid"]
        assert theirs["aliases"] == {f"{index}-all-sync": {}}
        for i in range(3):
            a = requests.get(f"{es_a}/{index}/_doc/{i}", params={"routing": f"r{i}"}, timeout=10).json()
            b = requests.get(f"{es_b}/{index}-sync/_doc/{i}", params={"routing": f"r{i}"}, timeout=10).json()
            assert b["found"] and b["_source"] == a["_source"] and b["_routing"] == f"r{i}", b
            assert b["_version"] == max(a["_seq_no"], a["_version"])  # as the live replay writes: A's version
    assert not list(tmp_path.glob("esproxy-sync-copy-*.json"))  # a finished copy leaves no checkpoint


def test_dry_run_prints_the_plan_and_writes_nothing(es_a, es_b, names, tmp_path):
    index = names.index()
    make_source_index(es_a, index)
    result = sync_copy(
        "--source", es_a, "--target", es_b, "--index", index, "--rename", "{{remote_index}}-sync", "--dry-run",
        "--replicas", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index} -> {index}-sync: 3 docs, create" in result.stdout
    settings = json.loads(result.stdout.split("  settings: ", 1)[1].splitlines()[0])
    assert settings["index.refresh_interval"] == "7s" and settings["index.number_of_replicas"] == "0"
    assert not any(k in settings for k in ("index.uuid", "index.creation_date", "index.provided_name"))
    assert '"tag": {"type": "keyword"}' in result.stdout and f"aliases: {index}-all-sync" in result.stdout
    assert "nothing written" in result.stdout
    assert requests.get(f"{es_b}/{index}-sync", timeout=10).status_code == 404
    assert not list(tmp_path.glob("esproxy-sync-copy-*"))


def test_bad_input_exit_codes(es_a, es_b, names, tmp_path):
    index = names.index()
    make_source_index(es_a, index)
    unknown = sync_copy("--source", es_a, "--target", es_b, "--index", f"{index},nosuch-*", cwd=tmp_path)
    assert unknown.returncode == 2 and "no index in the source matches nosuch-*" in unknown.stderr, unknown.stderr
    template = sync_copy("--source", es_a, "--target", es_b, "--index", index, "--rename", "sync", cwd=tmp_path)
    assert template.returncode == 2 and "{{remote_index}}" in template.stderr, template.stderr
    upper = sync_copy(
        "--source", es_a, "--target", es_b, "--index", index, "--rename", "{{remote_index}}-X", cwd=tmp_path
    )
    assert upper.returncode == 2 and "invalid index names" in upper.stderr, upper.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    down = sync_copy("--source", closed, "--target", es_b, "--index", index, cwd=tmp_path)
    assert down.returncode == 2 and "esproxy sync copy:" in down.stderr, down.stderr
    assert sync_copy("--source", es_a, "--target", es_b, cwd=tmp_path).returncode == 2  # no --index
    assert sync_copy("--source", es_a, "--target", es_b, "--index", index, "--rate", "0", cwd=tmp_path).returncode == 2
    no_command = subprocess.run([sys.executable, "-m", "esproxy", "sync"], capture_output=True, text=True, check=False)
    assert no_command.returncode == 2 and "copy" in no_command.stderr
    assert requests.get(f"{es_b}/{index}", timeout=10).status_code == 404


def test_a_target_with_another_mapping_is_refused_by_name_and_the_others_go_on(es_a, es_b, names, tmp_path):
    base = names.index()
    good, clash = f"{base}-good", f"{base}-clash"
    make_source_index(es_a, good)
    make_source_index(es_a, clash)
    put(es_b, f"{clash}-sync", {"mappings": {"properties": {"n": {"type": "keyword"}}}})

    result = sync_copy(
        "--source", es_a, "--target", es_b, "--index", f"{base}-*", "--rename", "{{remote_index}}-sync", cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"{clash} -> {clash}-sync: refused: {clash}-sync exists in the target with another mapping (properties.n)"
        in (result.stdout)
    )
    assert f"{good} -> {good}-sync: 3 read, 3 written," in result.stdout
    assert "1 index(es) not equal" in result.stdout
    assert requests.get(f"{es_b}/{clash}-sync/_count", timeout=10).json()["count"] == 0


def test_the_target_refusing_writes_is_named_and_loses_nothing(es_a, es_b, names, tmp_path):
    base = names.index()
    good, blocked = f"{base}-good", f"{base}-blocked"
    make_source_index(es_a, good)
    make_source_index(es_a, blocked)
    put(es_b, blocked, {"mappings": {"properties": {"n": {"type": "long"}}}})
    put(es_b, f"{blocked}/_doc/kept", {"n": 99}, refresh="true")  # already there: must stay
    put(es_b, f"{blocked}/_settings", {"index.blocks.write": True})

    result = sync_copy("--source", es_a, "--target", es_b, "--index", f"{base}-*", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the target refused the copy's writes into {blocked}" in result.stdout
    assert "cluster_block_exception" in result.stdout
    assert f"{good} -> {good}: 3 read, 3 written," in result.stdout and ": equal" in result.stdout
    put(es_b, f"{blocked}/_settings", {"index.blocks.write": False})
    assert es_doc(es_b, blocked, "kept")["_source"] == {"n": 99}


# Runs the copy with its point in time paged only in `_doc` order, shard by shard, as on an engine
# without `_shard_doc` (OpenSearch before 3.3): the stand-in and Elasticsearch have `_shard_doc`.
DOC_ORDER_ONLY = (
    "import sys; from esproxy.commands import synccopy, synccopy_reader; synccopy_reader.Reader.ORDERS = ('doc',);"
    " sys.exit(synccopy.main(sys.argv[1:]))"
)


# The forced `_doc` order on the real engines would only repeat what OpenSearch 2 as A does in its own order.
@pytest.mark.parametrize("order", ["engine's", pytest.param("doc", marks=pytest.mark.stand_in_only)])
def test_resume_after_a_kill_continues_from_the_checkpoint(es_a, es_b, names, tmp_path, order):
    """Killed (SIGKILL) mid-index, the copy goes on from its checkpoint with either engine as A,
    A's documents changed during the break: every document of the start is read once, none twice."""
    index, count = names.index(), 3000
    put(es_a, index, {"settings": {"number_of_shards": 3, "number_of_replicas": 0}})
    bulk_load(es_a, index, count)
    args = ["--source", es_a, "--target", es_b, "--index", index, "--batch", "100", "--rate", "1000", "--settle", "5"]
    command = ["-c", DOC_ORDER_ONLY] if order == "doc" else ["-m", "esproxy", "sync", "copy"]
    proc = subprocess.Popen([sys.executable, *command, *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip

    def checkpoint() -> dict:
        found = list(tmp_path.glob("esproxy-sync-copy-*.json"))
        return json.loads(found[0].read_text())["indices"].get(index, {}) if found else {}

    try:
        wait_until(lambda: checkpoint().get("read", 0) >= 1000, timeout=60, msg="a third copied")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    at_kill = checkpoint()  # what the checkpoint holds at the kill
    done_before = at_kill["read"]
    assert done_before < count, "the copy finished before the kill: nothing resumed"
    assert at_kill["reader"]["kind"] == "pit", at_kill
    if order == "doc":
        assert at_kill["reader"]["order"] == "doc" and at_kill["reader"]["slices"] == 3, at_kill

    # during the break: A changes (the live stream would bring these; here the verification pass does)
    put(es_a, f"{index}/_doc/5", {"n": -5, "s": "changed"}, refresh="true")
    put(es_a, f"{index}/_doc/{count - 5}", {"n": -1, "s": "changed"}, refresh="true")
    requests.delete(f"{es_a}/{index}/_doc/{count - 7}", params={"refresh": "true"}, timeout=10)
    put(es_a, f"{index}/_doc/new", {"n": count, "s": "added"}, refresh="true")

    result = subprocess.run([sys.executable, *command, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming the copy recorded in" in result.stderr
    # the point in time of the first run: every document of the start read once, none twice
    assert f"{index} -> {index}: {count} read," in result.stdout, result.stdout
    assert f"resumed at {done_before}," in result.stdout and "read again from the start" not in result.stdout
    assert f"copied 1 index(es): {count - done_before} documents in" in result.stdout  # not started over
    assert "the target matches the source" in result.stdout
    assert es_doc(es_b, index, "5")["_source"] == {"n": -5, "s": "changed"}
    assert es_doc(es_b, index, f"{count - 7}") is None and es_doc(es_b, index, "new") is not None


def test_rate_limit_holds_and_throttled_time_is_counted(es_a, es_b, names, tmp_path):
    index, count, rate = names.index(), 600, 200
    bulk_load(es_a, index, count)
    started = time.monotonic()
    result = sync_copy("--source", es_a, "--target", es_b, "--index", index, "--rate", str(rate), cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index} -> {index}: {count} read, {count} written," in result.stdout
    assert elapsed >= 0.9 * count / rate, elapsed
    throttled = float(result.stdout.split("throttled ", 1)[1].split("s;", 1)[0])
    assert throttled > 0.5 * count / rate, result.stdout


def test_bytes_per_second_limit_holds(es_a, es_b, names, tmp_path):
    index, count, limit = names.index(), 500, 20000
    bulk_load(es_a, index, count)
    # each `_bulk` action carries at least the index name, the id, the version and the source
    least = sum(len(index) + len(json.dumps({"n": i, "s": f"doc {i}"})) + 60 for i in range(count))
    started = time.monotonic()
    result = sync_copy(
        "--source", es_a, "--target", es_b, "--index", index, "--batch", "50", "--max-bytes-per-second", str(limit),
        cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed >= 0.9 * least / limit, (elapsed, least)
    assert float(result.stdout.split("throttled ", 1)[1].split("s;", 1)[0]) > 0, result.stdout


def test_initial_copy_under_a_concurrent_write_load_ends_equal(esproxy, osmem_factory, kafka, names, port, tmp_path):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    bulk_load(a, index, LOAD_DOCS)  # before the stream: only the copy brings these
    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    esproxy(proxy_config(port, a, kafka, topic))
    churn = Churn(f"http://127.0.0.1:{port}", index, LOAD_DOCS, pause=0.01)
    churn.start()
    try:
        wait_until(lambda: churn.acked["delete"] >= 10, timeout=30, msg="writes flowing through the proxy")
        before = sum(churn.acked.values())
        result = sync_copy("--source", a, "--target", b, "--index", index, "--batch", "1000", cwd=tmp_path)
        during = sum(churn.acked.values()) - before
    finally:
        churn.stop = True
        churn.join(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert during > 100, f"only {during} writes while the copy ran: no concurrency tested"
    assert churn.failed == 0, (churn.acked, churn.errors)
    print(result.stdout)  # the figures of the run, shown with -s
    assert f"{index} -> {index}: " in result.stdout and "the target matches the source" in result.stdout
    assert "no differences" in compare_until_equal(a, b, names.pattern())


def test_settings_choice_drops_what_a_computed_and_replicas_unless_asked():
    settings = {
        "index": {
            "uuid": "u",
            "creation_date": "1",
            "provided_name": "x",
            "version": {"created": "1"},
            "routing": {"allocation": {"include": {"_tier_preference": "data_hot"}}},
            "number_of_shards": "3",
            "number_of_replicas": "2",
            "refresh_interval": "1s",
            "analysis": {"analyzer": {"a": {"type": "standard"}}},
        }
    }
    assert SettingsChoice().choose(settings) == {
        "index.analysis.analyzer.a.type": "standard",
        "index.number_of_shards": "3",
        "index.refresh_interval": "1s",
    }
    chosen = SettingsChoice(["index.number_of_*", "index.refresh_interval"], ["index.refresh_*"], True)
    assert chosen.choose(settings) == {"index.number_of_shards": "3", "index.number_of_replicas": "2"}


def test_mapping_conflicts_are_fields_both_define_differently():
    a = {"properties": {"n": {"type": "long"}, "o": {"properties": {"k": {"type": "keyword"}}}}}
    assert mapping_conflicts(a, {"properties": {"n": {"type": "long"}, "extra": {"type": "text"}}}) == []
    assert mapping_conflicts(a, {"properties": {"o": {"properties": {"k": {"type": "text"}}}}}) == [
        "properties.o.properties.k"
    ]
    assert mapping_conflicts(a, {"dynamic": "strict", "properties": {}}) == []
    assert mapping_conflicts({"dynamic": "true"}, {"dynamic": "strict"}) == ["dynamic"]


def test_without_a_point_in_time_it_scrolls(es_a, es_b, names, tmp_path, monkeypatch, capsys):
    """Elasticsearch 6.8 has no point in time: the same copy by scroll."""
    index = names.index()
    bulk_load(es_a, index, 1200)
    monkeypatch.setattr(Reader, "_open_pit", lambda self: False)
    monkeypatch.chdir(tmp_path)
    code = main(["--source", es_a, "--target", es_b, "--index", index, "--batch", "500"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{index} -> {index}: 1200 read, 1200 written," in out and "the target matches the source" in out


def test_a_document_deleted_on_the_source_after_the_copy_read_it_is_removed_by_the_verification(
    es_a, es_b, names, tmp_path, monkeypatch, capsys
):
    """The copy's stale write lands after the delete (its tombstone expired, or the delete went
    elsewhere): the verification re-reads A and deletes it on B."""
    index = names.index()
    bulk_load(es_a, index, 50)
    writes = SyncCopy._writes

    def read_then_deleted_on_a(self, hits, plan):
        planned = writes(self, hits, plan)
        requests.delete(f"{es_a}/{index}/_doc/7", params={"refresh": "true"}, timeout=10)
        return planned

    monkeypatch.setattr(SyncCopy, "_writes", read_then_deleted_on_a)
    monkeypatch.chdir(tmp_path)
    code = main(["--source", es_a, "--target", es_b, "--index", index])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{index} -> {index}: 50 read, 50 written," in out and "verify: 0 rewritten, 1 deleted: equal" in out
    assert es_doc(es_b, index, "7") is None


def test_the_replays_rules_with_copy_existing_choose_indices_names_settings_and_aliases(es_a, es_b, names, tmp_path):
    base = names.index("rules")
    copied, not_copying = f"{base}-logs", f"{base}-other"
    make_source_index(es_a, copied)
    make_source_index(es_a, not_copying)
    conf = replay_config("127.0.0.1:9", "t", "g", es_b)
    conf["follow"] = {
        "rules": [
            {"name": "logs", "indices": [f"{base}-logs*"], "rename": "{{remote_index}}-sync", "aliases": True,
             "settings": True, "settingsExclude": ["refresh_interval"], "copyExisting": True},
            {"name": "other", "indices": [not_copying], "rename": "{{remote_index}}-sync"},
        ]
    }  # fmt: skip
    (tmp_path / "replay.yml").write_text(yaml.safe_dump(conf))

    result = sync_copy("--source", es_a, "--target", es_b, "-c", "replay.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{copied} -> {copied}-sync: 3 read, 3 written," in result.stdout
    assert not_copying not in result.stdout
    theirs = index_meta(es_b, f"{copied}-sync")
    assert theirs["aliases"] == {f"{copied}-all": {}}  # a rule keeps alias names, as the replay does
    assert theirs["settings"]["index"]["number_of_shards"] == "2"
    assert theirs["settings"]["index"].get("refresh_interval") != "7s"  # excluded by the rule
    assert requests.get(f"{es_b}/{not_copying}-sync", timeout=10).status_code == 404


def start_rule_copy(esproxy, es_a, es_b, kafka, names, tmp_path, index: str) -> tuple[int, subprocess.Popen]:
    """A replay (admin port, rule "logs" with copyExisting) and `sync copy -c` slowed to 300 docs/s."""
    topic = names.topic()
    create_topic(kafka, topic, partitions=1)
    admin = free_port()
    conf = replay_config(kafka, topic, names.group(), es_b)
    conf["admin"] = {"port": admin}
    conf["follow"] = {"rules": [{"name": "logs", "indices": [index], "rename": "{{remote_index}}-sync",
                                 "copyExisting": True}]}  # fmt: skip
    (tmp_path / "replay.yml").write_text(yaml.safe_dump(conf))
    esproxy(conf)
    wait_until(
        lambda: requests.get(f"http://127.0.0.1:{admin}/_esproxy/sync/rules", timeout=5).ok,
        timeout=30,
        msg="the replay's admin port",
    )
    args = ["--source", es_a, "--target", es_b, "-c", "replay.yml", "--rate", "300", "--settle", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "esproxy", "sync", "copy", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return admin, proc


def copied_so_far(tmp_path: Path, index: str) -> int:
    found = list(tmp_path.glob("esproxy-sync-copy-*.json"))
    return json.loads(found[0].read_text())["indices"].get(index, {}).get("read", 0) if found else 0


def test_a_rule_stopped_while_its_copy_runs_ends_that_copy_by_name_and_keeps_what_was_copied(
    esproxy, es_a, es_b, kafka, names, tmp_path
):
    index, count = names.index("stopped"), 3000
    bulk_load(es_a, index, count)
    admin, proc = start_rule_copy(esproxy, es_a, es_b, kafka, names, tmp_path, index)
    try:
        wait_until(lambda: copied_so_far(tmp_path, index) >= 300, timeout=60, msg="the copy under way")
        r = requests.post(f"http://127.0.0.1:{admin}/_esproxy/sync/rules/logs/_stop", timeout=10)
        assert r.status_code == 200, r.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    reason = f"rule logs was stopped while copying: {index}-sync keeps what was copied; add the rule again"
    assert reason in out, out + err
    read = int(out.split(f"{index} -> {index}-sync: ", 1)[1].split(" read", 1)[0])
    assert 300 <= read < count, out
    requests.post(f"{es_b}/{index}-sync/_refresh", timeout=10)
    kept = requests.get(f"{es_b}/{index}-sync/_count", timeout=10).json()["count"]
    assert kept == read, (kept, out)  # every batch read before the stop was written and stays


def test_a_rule_paused_while_its_copy_runs_makes_it_wait_until_resumed(esproxy, es_a, es_b, kafka, names, tmp_path):
    index, count = names.index("paused"), 1500
    bulk_load(es_a, index, count)
    admin, proc = start_rule_copy(esproxy, es_a, es_b, kafka, names, tmp_path, index)
    rules = f"http://127.0.0.1:{admin}/_esproxy/sync/rules/logs"
    try:
        wait_until(lambda: copied_so_far(tmp_path, index) >= 300, timeout=60, msg="the copy under way")
        assert requests.post(f"{rules}/_pause", timeout=10).status_code == 200
        time.sleep(1.5)  # the copy asks at most once a second: by now it waits
        held = copied_so_far(tmp_path, index)
        time.sleep(1.5)  # no progress is only seen by watching for a while
        assert copied_so_far(tmp_path, index) == held < count
        assert requests.post(f"{rules}/_resume", timeout=10).status_code == 200
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert f"{index} -> {index}-sync: {count} read, {count} written," in out, out
    paused = float(out.split(" paused ", 1)[1].split("s,", 1)[0])
    assert paused >= 1.5, out
