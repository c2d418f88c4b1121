"""`esproxy repair` brings B back to A: missing and different documents written with A's version,
extras deleted conditionally, a newer copy on B never overwritten, documents deleted or changed on B
by hand brought back past B's versions when that is safe, safe while the live stream runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
import requests
import yaml
from support.basics import free_port, wait_until
from support.configs import expected_ready_lines, proxy_config, replay_config
from support.elastic import compare_until_equal
from support.kafka import create_topic
from support.load import Writer
from support.mangled import MangledB

from esproxy.commands import repair as repair_module
from esproxy.commands.compare import cluster
from esproxy.commands.progress import Progress
from esproxy.commands.repair import IndexResult, Planned, Repair, _current_version, delete_action
from esproxy.core.bulk import DocOp

pytestmark = pytest.mark.real  # the same tests run on the real engines (make test-real)

NDJSON = {"Content-Type": "application/x-ndjson"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esproxy", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def repair(a: str, b: str, index: str, *extra: str) -> subprocess.CompletedProcess:
    return cli("repair", "--source", a, "--target", b, "--index", index, *extra)


def compare(a: str, b: str, index: str) -> subprocess.CompletedProcess:
    return cli("compare", "--source", a, "--target", b, "--index", index)


def put(base: str, index: str, doc_id: str, source: dict, **params: str) -> dict:
    r = requests.put(f"{base}/{index}/_doc/{doc_id}", params=params, json=source, timeout=10)
    assert r.status_code in (200, 201), r.text
    return r.json()


def put_versioned(base: str, index: str, doc_id: str, source: dict, version: int, **meta: str) -> int:
    """Write as the live replay does (external_gte); returns the item's status."""
    action = {"index": {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte", **meta}}
    body = json.dumps(action) + "\n" + json.dumps(source) + "\n"
    r = requests.post(f"{base}/_bulk", data=body, headers=NDJSON, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["index"]["status"]


def get(base: str, index: str, doc_id: str, **params: str) -> dict:
    return requests.get(f"{base}/{index}/_doc/{doc_id}", params=params, timeout=10).json()


def bulk_load(base: str, index: str, count: int, prefix: str = "") -> None:
    lines = []
    for i in range(count):
        lines += [json.dumps({"index": {"_index": index, "_id": f"{prefix}{i}"}}), json.dumps({"n": i})]
    r = requests.post(f"{base}/_bulk?refresh=true", data="\n".join(lines) + "\n", headers=NDJSON, timeout=60)
    assert r.status_code == 200 and not r.json()["errors"], r.text[:500]


def damaged_pair(a: str, b: str, index: str) -> None:
    """A: 1..5 (3 and 4 routed); B: 1 equal, 2 different, 4 routed but different, 9 extra (routed)."""
    for i in (1, 2, 5):
        put(a, index, str(i), {"n": i})
    put(a, index, "3", {"n": 3}, routing="r3")
    put(a, index, "4", {"n": 4}, routing="r4")
    put(b, index, "1", {"n": 1})
    assert put_versioned(b, index, "2", {"n": -2}, 0) == 201  # as an older replayed write left it
    assert put_versioned(b, index, "4", {"n": -4}, 0, routing="r4") == 201
    put(b, index, "9", {"n": 9}, routing="r9")


def test_compare_counts_an_index_the_target_lacks_even_empty(es_a, es_b, names):
    only_a, only_b = names.index("onlya"), names.index("onlyb")
    assert requests.put(f"{es_a}/{only_a}", timeout=10).status_code == 200
    assert requests.put(f"{es_b}/{only_b}", timeout=10).status_code == 200
    result = compare(es_a, es_b, f"{only_a},{only_b}")
    assert result.returncode == 1, result.stdout
    assert f"{only_a}: source 0 docs, target 0 docs: 0 missing, 0 extra, 0 different (no such index in the target)" in (
        result.stdout
    )
    assert f"{only_b}: source 0 docs, target 0 docs: ok (no such index in the source)" in result.stdout
    assert "compared 2 index(es): 1 difference(s)" in result.stdout
    assert requests.put(f"{es_b}/{only_a}", timeout=10).status_code == 200
    assert compare(es_a, es_b, f"{only_a},{only_b}").returncode == 0


def test_missing_extra_and_different_documents_are_repaired_routing_kept(es_a, es_b, names):
    index, only_b = names.index(), names.index("onlyb")
    damaged_pair(es_a, es_b, index)
    put(es_b, only_b, "x", {"gone": True})
    assert compare(es_a, es_b, f"{index},{only_b}").returncode == 1

    result = repair(es_a, es_b, f"{index},{only_b}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index}: copied 2, updated 2, deleted 1, skipped 0 (newer on target), failed 0" in result.stdout
    assert f"{only_b}: copied 0, updated 0, deleted 1," in result.stdout
    assert "the target matches the source" in result.stdout
    assert compare(es_a, es_b, f"{index},{only_b}").returncode == 0

    for doc_id, routing in (("3", "r3"), ("4", "r4")):
        doc = get(es_b, index, doc_id, routing=routing)
        assert doc["found"] and doc["_routing"] == routing and doc["_source"] == {"n": int(doc_id)}, doc
        # written as the live replay writes: B's version is max(A's sequence number, A's version)
        on_a = get(es_a, index, doc_id, routing=routing)
        assert doc["_version"] == max(on_a["_seq_no"], on_a["_version"])
    assert not get(es_b, index, "9", routing="r9")["found"]
    assert repair(es_a, es_b, f"{index},{only_b}").stdout.count("copied 0, updated 0, deleted 0") == 2


def test_dry_run_prints_the_plan_and_writes_nothing(es_a, es_b, names):
    index = names.index()
    damaged_pair(es_a, es_b, index)
    requests.post(f"{es_b}/{index}/_refresh", timeout=10)
    before = requests.get(f"{es_b}/{index}/_search", params={"size": 100}, timeout=10).json()["hits"]["hits"]

    result = repair(es_a, es_b, index, "--dry-run")
    assert result.returncode == 1, result.stdout + result.stderr
    for line in (f"would copy: {index}/3", f"would update: {index}/2", f"would delete: {index}/9"):
        assert line in result.stdout
    assert f"{index}: would copy 2, update 2, delete 1" in result.stdout
    requests.post(f"{es_b}/{index}/_refresh", timeout=10)
    after = requests.get(f"{es_b}/{index}/_search", params={"size": 100}, timeout=10).json()["hits"]["hits"]
    assert sorted(json.dumps(h, sort_keys=True) for h in after) == sorted(json.dumps(h, sort_keys=True) for h in before)
    assert compare(es_a, es_b, index).returncode == 1

    assert repair(es_a, es_b, index).returncode == 0
    assert repair(es_a, es_b, index, "--dry-run").returncode == 0  # nothing left to do


def test_a_newer_copy_on_the_target_is_not_overwritten(es_a, es_b, names):
    index = names.index()
    put(es_a, index, "1", {"n": 1})
    put(es_a, index, "2", {"n": 2})
    assert put_versioned(es_b, index, "1", {"n": 1000}, 1_000_000) == 201

    result = repair(es_a, es_b, index)
    assert result.returncode == 1, result.stdout + result.stderr  # B still differs: said so
    assert f"{index}: copied 1, updated 0, deleted 0, skipped 1 (newer on target), failed 0" in result.stdout
    assert "1 document(s) still differ" in result.stdout
    doc = get(es_b, index, "1")
    assert doc["_source"] == {"n": 1000} and doc["_version"] == 1_000_000


def written_on_a(base: str, index: str, doc_id: str, source: dict) -> int:
    """Write on A; returns the version the live replay carries to B (max of `_seq_no` and `_version`)."""
    r = put(base, index, doc_id, source)
    return max(r["_seq_no"], r["_version"])


def delete_by_hand(base: str, index: str, doc_id: str) -> None:
    r = requests.delete(f"{base}/{index}/_doc/{doc_id}", timeout=10)
    assert r.status_code == 200, r.text


def test_documents_deleted_or_changed_on_the_target_by_hand_are_brought_back_past_its_versions(es_a, es_b, names):
    """B's delete by hand leaves a tombstone one version above A's (kept 60 s by Elasticsearch, for good by
    osmem), and a write by hand a copy one above: A's version is refused. Repair writes A's document at B's
    version when A's next writes are sure to carry one at least as high, and not when they might not."""
    index = names.index()
    versions = {d: written_on_a(es_a, index, d, {"n": d}) for d in ("edited", "deleted", "kept", "last")}
    for d, v in versions.items():
        assert put_versioned(es_b, index, d, {"n": d}, v) == 201  # replicated
    put(es_b, index, "edited", {"by": "hand"})  # B's version: A's + 1
    delete_by_hand(es_b, index, "deleted")  # tombstone at A's + 1
    put(es_b, index, "last", {"by": "hand"})
    delete_by_hand(es_b, index, "last")  # tombstone at A's + 2: above A's shard's next sequence number
    assert compare(es_a, es_b, index).returncode == 1

    result = repair(es_a, es_b, index)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # "last" is left, and said so
    assert (
        f"{index}: copied 0, updated 0, deleted 0, skipped 1 (newer on target), failed 0;"
        " 1 restored past a tombstone on target, 1 written over a copy changed on target"
    ) in out, out
    assert f"{index}/deleted: restored at version {versions['deleted'] + 1}, past the target's tombstone" in out
    assert f"{index}/edited: written at version {versions['edited'] + 1}, over the target's copy" in out
    assert f"{index}/last: the target holds a tombstone of a delete at version {versions['last'] + 2}" in out, out
    assert "newer copy that differs" not in out, out
    assert "1 document(s) still differ" in out
    for d in ("deleted", "edited"):
        doc = get(es_b, index, d)
        assert doc["_source"] == {"n": d} and doc["_version"] == versions[d] + 1, doc
        # A's next write of it carries a version at least as high: B takes it, as the replay writes it
        assert put_versioned(es_b, index, d, {"n": "again"}, written_on_a(es_a, index, d, {"n": "again"})) == 200
    assert not get(es_b, index, "last")["found"]
    assert compare(es_a, es_b, index).stdout.count("missing: ") == 1


def test_the_version_b_holds_is_read_from_its_refusal():
    elastic = {
        "type": "version_conflict_engine_exception",
        "reason": "[7]: version conflict, current version [43] is higher than the one provided [42]",
    }
    assert _current_version(elastic) == 43
    assert _current_version("[_doc][7]: version conflict, current version [5] is higher or equal to the one") == 5
    assert _current_version({"type": "version_conflict_engine_exception", "reason": "seqNo [3] mismatch"}) is None


def test_an_extra_is_deleted_only_as_it_was_read(es_a, es_b, names):
    """The delete is conditional on B's copy at read time; after it, a stale replay of that copy is
    refused (the tombstone's version is past it) while a newer write from A still gets in."""
    index = names.index()
    put(es_a, index, "keep", {"n": 0})
    assert put_versioned(es_b, index, "gone", {"n": 1}, 7) == 201
    assert put_versioned(es_b, index, "raced", {"n": 2}, 7) == 201
    requests.post(f"{es_b}/{index}/_refresh", timeout=10)
    r = Repair(cluster(es_a), cluster(es_b), out=io.StringIO())
    read = r.target_docs(index)
    assert put_versioned(es_b, index, "raced", {"n": 1002}, 9) == 200  # the live stream got there since

    result = IndexResult(index)
    r.apply([delete_action(index, "gone", read["gone"]), delete_action(index, "raced", read["raced"])], result)
    assert (result.deleted, result.skipped, result.failed) == (1, 1, 0)
    assert get(es_b, index, "raced")["_source"] == {"n": 1002}
    assert not get(es_b, index, "gone")["found"]
    assert put_versioned(es_b, index, "gone", {"n": 1}, 7) == 409  # a redelivered stale write
    assert put_versioned(es_b, index, "gone", {"n": 1001}, 12) in (200, 201)  # A wrote it again, later


def test_an_extra_written_on_the_source_meanwhile_is_copied_not_deleted(es_a, es_b, names):
    index = names.index()
    put(es_a, index, "1", {"n": 1})
    assert put_versioned(es_b, index, "late", {"n": -1}, 0) == 201

    class WriteAfterSourceScan(Repair):
        def _scan(self, c, name):
            yield from super()._scan(c, name)
            if c is self.source:  # A gets the document after its scan, before the extras are settled
                put(es_a, index, "late", {"n": 1})

    out = io.StringIO()
    code = WriteAfterSourceScan(cluster(es_a), cluster(es_b), out=out).run(index, True)
    assert code == 0, out.getvalue()
    assert f"{index}: copied 1, updated 1, deleted 0," in out.getvalue()
    doc = get(es_b, index, "late")
    late = get(es_a, index, "late")
    assert doc["_source"] == {"n": 1} and doc["_version"] == max(late["_seq_no"], late["_version"])


def test_rate_limit_throttles(es_a, es_b, names):
    index, count, rate = names.index(), 80, 40
    bulk_load(es_a, index, count)
    started = time.monotonic()
    result = repair(es_a, es_b, index, "--rate", str(rate), "--batch", "10")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index}: copied {count}," in result.stdout
    assert elapsed >= count / rate * 0.8, elapsed


def test_progress_shows_examined_written_rate_and_eta():
    out = io.StringIO()
    progress = Progress(200, out, interval=0)
    progress.index = "idx"
    progress.step(read=80, examined=50, written=10)
    line = out.getvalue()
    assert line.startswith("repair: idx: 80/200 read, 50 examined, 10 written,") and "docs/s, ETA " in line, line


def test_clusters_given_as_conf_files(es_a, es_b, names, tmp_path):
    index = names.index()
    put(es_a, index, "1", {"n": 1})
    conf_a, conf_b = tmp_path / "a.yml", tmp_path / "b.yml"
    conf_a.write_text(yaml.safe_dump(proxy_config(free_port(), es_a)))  # its first primary is the cluster
    conf_b.write_text(yaml.safe_dump(replay_config("127.0.0.1:9", "t", "g", es_b)))
    result = cli("repair", "--source", str(conf_a), "--target", str(conf_b), "--index", index)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{index}: copied 1," in result.stdout
    assert get(es_b, index, "1")["_source"] == {"n": 1}


def test_exit_codes_for_usage_and_unreachable_clusters(es_a, tmp_path):
    assert cli("repair", "--source", es_a).returncode == 2  # no target
    assert cli("repair", "--source", es_a, "--target", es_a, "--batch", "0").returncode == 2
    assert cli("repair", "--source", es_a, "--target", es_a, "--rate", "x").returncode == 2
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli("repair", "--source", closed, "--target", es_a)
    assert result.returncode == 2 and "esproxy repair:" in result.stderr, result.stderr
    conf = tmp_path / "none.yml"
    conf.write_text("destination:\n  primaries: []\n")
    result = cli("repair", "--source", str(conf), "--target", es_a)
    assert result.returncode == 2 and "config error" in result.stderr, result.stderr


def test_repair_while_the_live_stream_runs_converges(esproxy, osmem_factory, kafka, names, port):
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    # Before the stream: A holds documents B never got, B holds stale copies and extras of its own.
    bulk_load(a, index, 300)  # ids 0..299: the writer below rewrites them through the proxy
    bulk_load(a, index, 200, prefix="pre-")  # only repair brings these
    for i in range(0, 300, 3):
        put_versioned(b, index, str(i), {"stale": i}, 0)
    for i in range(0, 200, 4):
        put_versioned(b, index, f"pre-{i}", {"stale": i}, 0)
    for i in range(30):
        put_versioned(b, index, f"extra-{i}", {"extra": i}, 1)

    create_topic(kafka, topic, partitions=3)
    esproxy(replay_config(kafka, topic, names.group(), b))
    esproxy(proxy_config(port, a, kafka, topic))
    writer = Writer(f"http://127.0.0.1:{port}", index, 1000, pause=0.01)
    writer.start()
    wait_until(lambda: len(writer.acked) >= 50, timeout=30, msg="writes flowing")
    result = repair(a, b, index, "--batch", "25", "--rate", "300")
    assert writer.is_alive(), "the writer finished before repair did: no concurrency tested"
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: B lagging A on some documents
    assert "deleted 30, " in result.stdout and "failed 0" in result.stdout, result.stdout
    writer.join(timeout=60)
    assert writer.failed == 0 and len(writer.acked) == 1000
    assert "no differences" in compare_until_equal(a, b, names.pattern())


def test_a_bulk_answer_the_target_mangles_fails_that_batch_with_the_reason(monkeypatch):
    """The target's 2xx `_bulk` answers cannot be read (a proxy in front of it cutting or rewriting them):
    the batch is retried, then counted failed with the reason, and the repair goes on with the next."""
    monkeypatch.setattr(repair_module, "FIRST_PAUSE", 0.01)
    target = MangledB()
    try:
        r = Repair(cluster("http://127.0.0.1:1"), cluster(target.url), out=io.StringIO())
        planned = [
            Planned("copy", "i", str(n), None, DocOp("index", "i", str(n), 7, b'{"n":1}').lines()) for n in range(3)
        ]
        result = IndexResult("i")
        r.apply(planned, result)
        assert len(target.bulks) == repair_module.RETRIES + 1
        assert (result.copied, result.failed) == (0, 3)
        (error,) = result.errors
        assert error.startswith(f"3 write(s) still failing after {repair_module.RETRIES} retries, last: "), error
        assert f"{target.url}/_bulk: _bulk answer" in error or "items for 3 actions" in error, error

        target.heal()
        again = IndexResult("i")
        r.apply(planned, again)
        assert (again.copied, again.failed) == (3, 0)
    finally:
        target.stop()


def test_documents_deleted_on_the_target_by_hand_are_restored_while_the_live_stream_runs(
    esproxy, osmem_factory, kafka, names, port
):
    """Issue 22 item 7: documents replicated to B, some deleted on B by hand and extras added there, repair
    under a live writer through the proxy: the deleted ones come back past B's tombstones at once (no
    waiting for index.gc_deletes, which osmem never applies), and A's later writes of them still reach B."""
    a, b = osmem_factory(), osmem_factory()
    topic, index = names.topic(), names.index()
    create_topic(kafka, topic, partitions=3)
    started = {
        esproxy(conf, wait=False): conf
        for conf in (replay_config(kafka, topic, names.group(), b), proxy_config(port, a, kafka, topic))
    }
    for proc, conf in started.items():  # started together: the replay's group join is the long part
        for needle, count in expected_ready_lines(conf):
            proc.wait_log(needle, count=count, timeout=30)
    proxy = f"http://127.0.0.1:{port}"
    bulk_load(proxy, index, 1500, prefix="d-")  # through the proxy: replicated to B with A's versions
    compare_until_equal(a, b, names.pattern(), timeout=30)
    deleted = [f"d-{i}" for i in range(0, 1500, 25)]  # 60
    for d in deleted:
        delete_by_hand(b, index, d)
    for i in range(30):
        put(b, index, f"extra-{i}", {"extra": i})

    writer = Writer(proxy, index, 100_000, pause=0.01)  # ids 0, 1...: other documents of the same index
    writer.start()
    wait_until(lambda: len(writer.acked) >= 50, timeout=30, msg="writes flowing")
    result = repair(a, b, index, "--batch", "50", "--rate", "1000")
    assert writer.is_alive() and not writer.failed, "the writer stopped before repair finished"
    out = result.stdout
    assert result.returncode in (0, 1), out + result.stderr  # 1: B lagging A on some of the writer's documents
    assert f"{len(deleted)} restored past a tombstone on target" in out, out
    assert "deleted 30, " in out and "failed 0" in out, out
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert not any(f"{index}/{d}: " in line for line in errors for d in deleted), out
    for d in deleted[:3]:  # restored at B's tombstone's version; A's next write of it still passes
        put(proxy, index, d, {"rewritten": d})
    writer.stop = True
    writer.join(timeout=30)
    assert not writer.is_alive() and writer.failed == 0 and writer.acked, (writer.failed, len(writer.acked))
    # well within index.gc_deletes' 60 s on Elasticsearch: B's tombstones are all still there
    assert "no differences" in compare_until_equal(a, b, names.pattern(), timeout=30)
    assert get(b, index, deleted[0])["_source"] == {"rewritten": deleted[0]}
