"""`esproxy switchover` and `esproxy failover` (issue 14): one topic, a replay into each cluster, the proxy's
leader swapped under a steady write load; versions stay comparable across the switch (capture.doc_version)."""

from __future__ import annotations

import os
import signal
import time

import requests
from support.basics import free_port, wait_until
from support.certs import make_pki
from support.configs import proxy_config, replay_config
from support.elastic import compare_until_equal, es_doc
from support.kafka import create_topic
from support.load import Writer
from support.process import esproxy_cli

# Not marked `real` yet: not run on the real engines (make test-real) so far; the failover test needs a
# pausable cluster of its own (own_server), which is osmem there too.


class StatusWriter(Writer):
    """A Writer that also keeps every refusal's status and Retry-After, and when refusals came."""

    def __init__(self, base: str, index: str, count: int, pause: float = 0.0) -> None:
        super().__init__(base, index, count, pause)
        self.refusals: list[tuple[int, str, str]] = []  # status, Retry-After, error type
        self.refused_at: list[float] = []

    timeout = 30.0

    def refused(self, r: requests.Response, i: int) -> None:
        if not (r.status_code == 404 and i % 5 == 4):  # an update of a write refused just before
            kind = (r.json().get("error") or {}).get("type", "") if r.content else ""
            self.refusals.append((r.status_code, r.headers.get("Retry-After", ""), kind))
            self.refused_at.append(time.monotonic())


def _setup(
    esproxy,
    kafka,
    names,
    a: str,
    b: str,
    tmp_path,
    *,
    replay_extra: dict | None = None,
    proxy_extra: dict | None = None,
) -> dict:
    topic = names.topic()
    create_topic(kafka, topic, partitions=2)
    into_b, into_a, port = free_port(), free_port(), free_port()
    r1 = esproxy(
        {**replay_config(kafka, topic, names.group("b"), b, **(replay_extra or {})), "admin": {"port": into_b}}
    )
    r2 = esproxy({**replay_config(kafka, topic, names.group("a"), a), "admin": {"port": into_a}})
    conf = proxy_config(port, a, kafka, topic)
    conf["destination"]["primaries"][0]["replayAdmin"] = f"http://127.0.0.1:{into_a}"
    conf["destination"]["followers"] = [{"url": b, "replayAdmin": f"http://127.0.0.1:{into_b}"}]
    for key, value in (proxy_extra or {}).items():
        if key == "source":  # settings of the proxy entry
            conf["source"]["proxies"][0].update(value["proxies"][0])
        else:
            conf[key] = value
    proxy = esproxy(conf)
    return {"proxy": proxy, "r1": r1, "r2": r2, "url": f"http://127.0.0.1:{port}", "conf": str(proxy.conf_path)}


def _switchover(conf: str, cwd, *args: str, timeout: float = 90):
    r = esproxy_cli("switchover", "-c", conf, "--timeout", "60s", *args, cwd=cwd, timeout=timeout)
    print(r.stdout, r.stderr)
    return r


def _state(proxy_url: str) -> dict:
    return requests.get(f"{proxy_url}/_esproxy/switchover", timeout=10).json()


def _churn_same_docs(proxy_url: str, index: str, ids: list[int], tag: str) -> None:
    """Updates, rewrites and deletes documents written before: their versions must beat the old ones."""
    for i in ids:
        if i % 3 == 0:
            r = requests.delete(f"{proxy_url}/{index}/_doc/{i}", timeout=10)
        elif i % 3 == 1:
            r = requests.post(f"{proxy_url}/{index}/_update/{i}", json={"doc": {"tag": tag}}, timeout=10)
        else:
            r = requests.put(f"{proxy_url}/{index}/_doc/{i}", json={"n": -i, "tag": tag}, timeout=10)
        assert r.status_code in (200, 201, 404), r.text  # 404: deleted in an earlier round


def test_switchover_under_load_and_back(esproxy, es_a, es_b, kafka, names, tmp_path):
    s = _setup(esproxy, kafka, names, es_a, es_b, tmp_path)
    proxy, index, pattern = s["url"], names.index(), names.pattern()
    assert requests.put(f"{proxy}/{index}", json={"mappings": {"properties": {"n": {"type": "long"}}}}).ok
    wait_until(lambda: requests.head(f"{es_b}/{index}", timeout=5).status_code == 200, timeout=20, msg="index on B")

    # Documents A wrote many times before B followed them (as after an initial copy): their _version on A is
    # far above B's sequence numbers, so versions from B's _seq_no alone would be refused by A as older.
    hot = names.index("hot")
    assert requests.put(f"{proxy}/{hot}", timeout=10).ok
    wait_until(lambda: requests.head(f"{es_b}/{hot}", timeout=5).status_code == 200, timeout=20, msg="hot on B")
    for d in range(3):
        for n in range(30):
            requests.put(f"{es_a}/{hot}/_doc/{d}", json={"n": n}, timeout=10).raise_for_status()
        assert requests.put(f"{proxy}/{hot}/_doc/{d}", json={"n": 30}, timeout=10).ok

    dry = _switchover(s["conf"], tmp_path, "--dry-run", "--index", pattern)
    assert dry.returncode == 0 and "every check passed" in dry.stdout
    assert _state(proxy)["leader"].rstrip("/") == es_a.rstrip("/") and not _state(proxy)["paused"]

    writer = StatusWriter(proxy, index, 100000, pause=0.005)
    writer.start()
    try:
        wait_until(lambda: len(writer.acked) >= 100, timeout=30, msg="writes before the switch")
        result = _switchover(s["conf"], tmp_path, "--index", pattern)
        assert result.returncode == 0, result.stdout + result.stderr
        switched_at = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= switched_at + 100, timeout=30, msg="writes after the switch")
    finally:
        writer.stop = True
        writer.join(timeout=30)
    # Clients saw only 503s with Retry-After, all within the pause, and only from the switchover.
    assert writer.refusals, "no write came during the pause: the load did not overlap the switch"
    assert {(st, kind) for st, _, kind in writer.refusals} == {(503, "esproxy_switchover_in_progress_exception")}
    assert all(ra == "1" for _, ra, _ in writer.refusals)
    window = max(writer.refused_at) - min(writer.refused_at)
    state = _state(proxy)
    pause = state["last_switch"]["write_pause_seconds"]
    print(f"switchover: writes paused {pause:.3f}s; {len(writer.refusals)} writes refused over {window:.3f}s")
    assert state["leader"].rstrip("/") == es_b.rstrip("/")
    assert [f.rstrip("/") for f in state["followers"]] == [es_a.rstrip("/")]
    assert state["last_switch"]["kind"] == "switchover" and not state["paused"]

    # A write after the switch lands on B first (the proxy forwards it there), then reaches A through R2.
    r = requests.put(f"{proxy}/{index}/_doc/after?refresh=true", json={"n": 1}, timeout=10)
    assert r.status_code == 201, r.text
    assert es_doc(es_b, index, "after") is not None
    wait_until(lambda: es_doc(es_a, index, "after") is not None, timeout=30, msg="B's write on A")
    compare_until_equal(es_a, es_b, pattern)
    written = [i for i in writer.acked if i % 5 != 4]  # the others are updates of i - 1
    requests.post(f"{es_a}/{index}/_refresh", timeout=10)
    count = requests.get(f"{es_a}/{index}/_count", timeout=10).json()["count"]
    assert count == len(written) + 1, (count, len(written))  # every acknowledged write, and "after"

    # A restarted proxy keeps the new direction, and says so.
    s["proxy"].terminate()
    restarted = esproxy(s["proxy"].conf_path.read_text(), ready=[("proxy listening on", 1)])
    restarted.wait_log("SWITCHED OVER")
    assert _state(proxy)["leader"].rstrip("/") == es_b.rstrip("/")
    # Reads follow the switch: A, the follower now, answers searches (its lag read from R2's admin port).

    def stats() -> dict:
        return requests.get(f"{proxy}/_esproxy/stats", timeout=10).json()

    def usable() -> list:
        return [f["cluster"] for f in stats()["followers"] if f["usable"]]

    wait_until(lambda: usable() == [es_a], timeout=30, msg="A serving reads")
    before = stats()["proxy"]["reads"].get(es_a, 0)
    requests.post(f"{proxy}/{index}/_search", json={"size": 0}, timeout=10).raise_for_status()
    assert stats()["proxy"]["reads"][es_a] == before + 1

    # The same documents updated and deleted on B: their versions beat A's (doc_version); then switch back.
    ids = list(range(0, 60))
    _churn_same_docs(proxy, index, ids, "on-b")
    _churn_same_docs(proxy, hot, [0, 1, 2], "on-b")
    compare_until_equal(es_a, es_b, pattern)
    back = _switchover(s["conf"], tmp_path, "--index", pattern, "--hold", "--verify", "full")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _state(proxy)["leader"].rstrip("/") == es_a.rstrip("/")
    _churn_same_docs(proxy, index, ids, "on-a-again")
    _churn_same_docs(proxy, hot, [0, 1, 2], "on-a-again")
    compare_until_equal(es_a, es_b, pattern)
    history = _state(proxy)["history"]
    a, b = es_a.rstrip("/"), es_b.rstrip("/")
    assert [(h["from"].rstrip("/"), h["to"].rstrip("/")) for h in history[-2:]] == [(a, b), (b, a)]
    metrics = requests.get(f"{proxy}/_esproxy/metrics", timeout=10).text
    assert "esproxy_switchovers_total 2" in metrics and "esproxy_switchover_paused 0" in metrics


def test_a_failed_check_aborts_and_keeps_the_direction(esproxy, es_a, es_b, kafka, names, tmp_path):
    s = _setup(esproxy, kafka, names, es_a, es_b, tmp_path)
    proxy, index, pattern = s["url"], names.index(), names.pattern()
    for i in range(5):
        assert requests.put(f"{proxy}/{index}/_doc/{i}", json={"n": i}, timeout=10).status_code == 201
    wait_until(lambda: es_doc(es_b, index, "4") is not None, timeout=30, msg="docs on B")
    # B holds a document A does not: the verification fails after the pause; writes resume to A.
    requests.put(f"{es_b}/{index}/_doc/stray?refresh=true", json={"n": 0}, timeout=10).raise_for_status()
    result = _switchover(s["conf"], tmp_path, "--index", pattern)
    assert result.returncode == 1
    assert "ABORTED: document counts differ" in result.stdout and "in the original direction" in result.stdout
    state = _state(proxy)
    assert state["leader"].rstrip("/") == es_a.rstrip("/") and not state["paused"] and state["switches"] == 0
    assert requests.put(f"{proxy}/{index}/_doc/5?refresh=true", json={"n": 5}, timeout=10).status_code == 201
    assert es_doc(es_a, index, "5") is not None
    # A failover while A answers is refused: a switchover loses nothing.
    result = esproxy_cli("failover", "-c", s["conf"], cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "it is not down" in result.stdout, result.stdout + result.stderr
    # The replay into B stopped: the check before the pause fails, nothing is touched.
    s["r1"].terminate()
    result = _switchover(s["conf"], tmp_path, "--index", pattern)
    assert result.returncode == 1 and "check failed: the replay into the new leader" in result.stdout
    assert _state(proxy)["switches"] == 0 and not _state(proxy)["paused"]


def test_failover_with_a_stopped_promotes_b_and_lists_the_tail(esproxy, own_server, es_b, kafka, names, tmp_path):
    a = own_server("osmem")
    # The replay into B is throttled: what A took last is still on its way when A stops (the tail).
    s = _setup(esproxy, kafka, names, a.url, es_b, tmp_path, replay_extra={"maxDocsPerSecond": 10})
    proxy, index = s["url"], names.index()
    for i in range(40):
        assert requests.put(f"{proxy}/{index}/_doc/{i}", json={"n": i}, timeout=10).status_code == 201
    os.killpg(a.proc.pid, signal.SIGSTOP)
    result = esproxy_cli("failover", "-c", s["conf"], cwd=tmp_path, timeout=90)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "leads now" in result.stdout and "the unreplicated tail" in result.stdout
    tail = [line for line in result.stdout.splitlines() if "replay into" in line and "offset(s)" in line]
    assert tail, result.stdout
    state = _state(proxy)
    assert state["leader"].rstrip("/") == es_b.rstrip("/") and state["last_switch"]["kind"] == "failover"
    # Writes go to B at once; the tail captured from A keeps arriving in B.
    r = requests.put(f"{proxy}/{index}/_doc/after-failover", json={"n": 1}, timeout=10)
    assert r.status_code == 201, r.text
    wait_until(lambda: all(es_doc(es_b, index, str(i)) is not None for i in range(40)), timeout=60, msg="the tail")


def test_switchover_with_workers_pauses_and_switches_every_worker(esproxy, es_a, es_b, kafka, names, tmp_path):
    s = _setup(esproxy, kafka, names, es_a, es_b, tmp_path, proxy_extra={"workers": 2})
    proxy, index, pattern = s["url"], names.index(), names.pattern()
    writer = StatusWriter(proxy, index, 100000, pause=0.005)
    writer.start()
    try:
        wait_until(lambda: len(writer.acked) >= 50, timeout=30, msg="writes before the switch")
        result = _switchover(s["conf"], tmp_path, "--index", pattern)  # through a worker's port
        assert result.returncode == 0, result.stdout + result.stderr
        switched_at = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= switched_at + 50, timeout=30, msg="writes after the switch")
    finally:
        writer.stop = True
        writer.join(timeout=30)
    assert {(st, ra, kind) for st, ra, kind in writer.refusals} <= {
        (503, "1", "esproxy_switchover_in_progress_exception")
    }
    # Each write on a new connection, so both workers take some: every one lands on B first.
    for i in range(20):
        r = requests.put(f"{proxy}/{index}/_doc/w{i}", json={"n": i}, headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 201, r.text
        assert es_doc(es_b, index, f"w{i}") is not None, i
    compare_until_equal(es_a, es_b, pattern)
    assert _state(proxy)["leader"].rstrip("/") == es_b.rstrip("/")


def test_switchover_through_an_https_proxy_listener(esproxy, es_a, es_b, kafka, names, tmp_path):
    pki = make_pki(tmp_path / "pki")
    tls = {"source": {"proxies": [{"tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)}}]}}
    s = _setup(esproxy, kafka, names, es_a, es_b, tmp_path, proxy_extra=tls)
    proxy = s["url"].replace("http://", "https://")
    index = names.index()
    r = requests.put(f"{proxy}/{index}/_doc/1", json={"n": 1}, verify=str(pki.ca), timeout=10)
    assert r.status_code == 201, r.text
    result = _switchover(s["conf"], tmp_path, "--index", names.pattern())  # trusts the listener's certificate
    assert result.returncode == 0, result.stdout + result.stderr
    state = requests.get(f"{proxy}/_esproxy/switchover", verify=str(pki.ca), timeout=10).json()
    assert state["leader"].rstrip("/") == es_b.rstrip("/")
