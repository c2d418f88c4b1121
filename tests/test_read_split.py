"""Read/write splitting: with destination.followers, reads are answered by B and writes land on A;
a follower that is down, slow or behind gets no reads; scroll, the leader header, read-your-writes.

Which cluster answered is seen in the answer itself: each test writes a marker document straight
into B (and another into A), bypassing the proxy, so that a search answered by B holds B's marker.
"""

from __future__ import annotations

from typing import Optional

import pytest
import requests
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.elastic import es_doc
from support.kafka import create_topic

JSON = {"Content-Type": "application/json"}


def put(base: str, index: str, doc_id: str, doc: dict, headers: Optional[dict] = None) -> None:
    r = requests.put(
        f"{base}/{index}/_doc/{doc_id}?refresh=true", json=doc, headers={**JSON, **(headers or {})}, timeout=10
    )
    assert r.status_code in (200, 201), r.text


def hit_ids(base: str, index: str, headers: Optional[dict] = None) -> set:
    r = requests.get(f"{base}/{index}/_search?size=100", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return {h["_id"] for h in r.json()["hits"]["hits"]}


def stats(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/_esproxy/stats", timeout=10).json()


def follower_state(port: int, url: str) -> str:
    return next(f["state"] for f in stats(port)["followers"] if f["cluster"] == url)


def with_followers(conf: dict, followers: list[dict], **proxy: object) -> dict:
    conf["destination"]["followers"] = followers
    conf["source"]["proxies"][0].update(proxy)
    return conf


def markers(es_a: str, es_b: str, index: str) -> None:
    """A document only A has and one only B has, in an index both hold."""
    put(es_a, index, "only-a", {"marker": "a"})
    put(es_b, index, "only-b", {"marker": "b"})


@pytest.fixture
def split(esproxy, es_a, es_b, kafka, names, port):
    """A replay A->B with an admin port (which wants a header), and a proxy in front of A with B as its follower."""

    def start(replay: Optional[dict] = None, max_lag: str = "30s", follow: Optional[dict] = None, **proxy: object):
        """``follow``: the replay's follow section, given to the proxy too."""
        topic, group, admin = names.topic(), names.group(), free_port()
        create_topic(kafka, topic)
        replay_conf = replay_config(kafka, topic, group, es_b, **(replay or {}))
        token = {"X-Admin-Token": "replay-admin-token"}  # the proxy must send it to read the lag
        replay_conf["admin"] = {"port": admin, "header": token}
        proxy_conf = proxy_config(port, es_a, kafka, topic)
        if follow is not None:
            replay_conf["follow"] = proxy_conf["follow"] = follow
        replayer = esproxy(replay_conf)
        follower = {
            "url": es_b,
            "replayAdmin": f"http://127.0.0.1:{admin}",
            "replayAdminHeader": token,
            "maxLag": max_lag,
            "timeout": "5s",
        }
        esproxy(with_followers(proxy_conf, [follower], **proxy))
        wait_until(lambda: follower_state(port, es_b) == "ok", timeout=20, msg="the follower to be usable")
        return f"http://127.0.0.1:{port}", replayer

    return start


@pytest.mark.real
def test_searches_answered_by_the_follower_writes_by_the_leader(split, es_a, es_b, names, port):
    base, _ = split()
    index = names.index()
    put(base, index, "1", {"n": 1})
    wait_until(lambda: es_doc(es_b, index, "1") is not None, timeout=20, msg="the write replayed into B")
    markers(es_a, es_b, index)

    assert hit_ids(base, index) == {"1", "only-b"}  # B's answer
    r = requests.get(f"{base}/{index}/_doc/only-b", timeout=10)
    assert r.status_code == 200 and r.json()["found"], r.text
    r = requests.post(f"{base}/{index}/_count", json={"query": {"match_all": {}}}, timeout=10)
    assert r.json()["count"] == 2, r.text

    put(base, index, "2", {"n": 2})  # a write: on A at once
    assert es_doc(es_a, index, "2") is not None

    leader = {"X-Esproxy-Read": "leader"}
    assert hit_ids(base, index, headers=leader) == {"1", "2", "only-a"}  # A's answer

    s = stats(port)
    assert s["proxy"]["reads"][es_b] >= 3
    assert s["proxy"]["reads"][es_a] == 1
    assert s["proxy"]["read_fallbacks"] == {"forced": 1}
    metrics = requests.get(f"{base}/_esproxy/metrics", timeout=10).text
    assert f'esproxy_reads_total{{cluster="{es_b}"}}' in metrics
    assert f'esproxy_follower_usable{{cluster="{es_b}",state="ok"}} 1' in metrics


@pytest.mark.real
def test_renamed_indices_read_from_the_follower_under_the_leaders_names(split, es_a, es_b, names, port):
    index, unfollowed = names.index("f"), names.index("other")
    rule = {"name": "f", "indices": [index], "rename": "{{remote_index}}-sync"}
    base, _ = split(follow={"rules": [rule]})
    put(base, index, "1", {"n": 1})
    put(base, unfollowed, "1", {"n": 1})
    wait_until(lambda: es_doc(es_b, f"{index}-sync", "1") is not None, timeout=20, msg="the write replayed into B")
    put(es_a, index, "only-a", {"marker": "a"})
    put(es_b, f"{index}-sync", "only-b", {"marker": "b"})

    r = requests.get(f"{base}/{index}/_search?size=100", timeout=10)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]["hits"]
    assert {h["_id"] for h in hits} == {"1", "only-b"}  # B's answer...
    assert {h["_index"] for h in hits} == {index}  # ...in A's names
    assert "-sync" not in r.text
    r = requests.get(f"{base}/{index}/_doc/only-b", timeout=10)
    assert r.status_code == 200 and r.json()["_index"] == index, r.text
    assert hit_ids(base, unfollowed) == {"1"}  # no rule follows it: the leader answers
    assert stats(port)["proxy"]["read_fallbacks"]["renamed"] == 1


@pytest.mark.real
def test_scroll_continuations_stay_on_the_cluster_that_opened_them(split, es_a, es_b, names, port):
    base, _ = split()
    index = names.index()
    for i in range(5):
        put(base, index, str(i), {"n": i})
    wait_until(lambda: es_doc(es_b, index, "4") is not None, timeout=20, msg="the writes replayed into B")
    markers(es_a, es_b, index)

    r = requests.post(f"{base}/{index}/_search?scroll=1m&size=2", json={"sort": ["_doc"]}, timeout=10)
    assert r.status_code == 200, r.text
    seen = [h["_id"] for h in r.json()["hits"]["hits"]]
    scroll_id = r.json()["_scroll_id"]
    while True:
        r = requests.post(f"{base}/_search/scroll", json={"scroll": "1m", "scroll_id": scroll_id}, timeout=10)
        assert r.status_code == 200, r.text  # a context another cluster opened would be missing: 404
        hits = r.json()["hits"]["hits"]
        if not hits:
            break
        seen += [h["_id"] for h in hits]
        scroll_id = r.json()["_scroll_id"]
    assert sorted(seen) == ["0", "1", "2", "3", "4", "only-a"]  # every page from A, each document once
    r = requests.delete(f"{base}/_search/scroll", json={"scroll_id": [scroll_id]}, timeout=10)
    assert r.status_code == 200, r.text
    assert stats(port)["proxy"]["read_fallbacks"]["scroll"] >= 3


@pytest.mark.real
def test_read_your_writes(split, es_a, es_b, names, port):
    base, _ = split(readYourWrites="3s")
    index = names.index()
    writer, reader = {"Authorization": "Basic d3JpdGVyOng="}, {"Authorization": "Basic cmVhZGVyOng="}
    put(base, index, "1", {"n": 1}, headers=writer)
    wait_until(lambda: es_doc(es_b, index, "1") is not None, timeout=20, msg="the write replayed into B")
    markers(es_a, es_b, index)

    put(base, index, "2", {"n": 2}, headers=writer)
    assert "only-a" in hit_ids(base, index, headers=writer)  # the writer reads A within its window
    assert "only-b" in hit_ids(base, index, headers=reader)  # another client reads B
    wait_until(lambda: "only-b" in hit_ids(base, index, headers=writer), timeout=10, msg="the window to close")
    assert stats(port)["proxy"]["read_fallbacks"]["read_your_writes"] >= 1


@pytest.mark.real
def test_a_follower_behind_gets_no_reads(split, es_a, es_b, names, port):
    # The replay applies one write a second (maxLag 2s). It sends a batch at once and pays for it after:
    # ten writes in a row go through, the next waits about ten seconds.
    base, replayer = split(replay={"maxDocsPerSecond": 1}, max_lag="2s")
    index = names.index()
    put(base, index, "0", {"n": 0})
    wait_until(lambda: es_doc(es_b, index, "0") is not None, timeout=20, msg="the first write replayed into B")
    markers(es_a, es_b, index)
    assert "only-b" in hit_ids(base, index)

    for i in range(1, 11):
        put(base, index, str(i), {"n": i})
    wait_until(lambda: es_doc(es_b, index, "10") is not None, timeout=20, msg="the ten writes replayed into B")
    put(base, index, "11", {"n": 11})
    wait_until(lambda: follower_state(port, es_b) == "lag", timeout=15, msg="the follower to lag")
    ids = hit_ids(base, index)
    assert "only-a" in ids and "only-b" not in ids  # the leader answered
    assert stats(port)["proxy"]["read_fallbacks"]["lag"] >= 1

    wait_until(lambda: follower_state(port, es_b) == "ok", timeout=30, msg="the follower to catch up")
    assert "only-b" in hit_ids(base, index)

    replayer.terminate()  # no replay: the lag is unknown
    wait_until(lambda: follower_state(port, es_b) == "lag_unknown", timeout=10, msg="the lag to be unknown")
    assert "only-a" in hit_ids(base, index)


def test_a_stopped_or_slow_follower_gets_no_reads(esproxy, own_server, es_a, names, port):
    b = own_server("osmem")
    follower = {"url": b.url, "maxLag": 0, "timeout": "1s"}  # lag ignored: no replay needed
    esproxy(with_followers(proxy_config(port, es_a), [follower]))
    base = f"http://127.0.0.1:{port}"
    index = names.index()
    put(es_a, index, "only-a", {"marker": "a"})
    put(b.url, index, "only-b", {"marker": "b"})
    wait_until(lambda: follower_state(port, b.url) == "ok", timeout=10, msg="the follower to be usable")
    assert hit_ids(base, index) == {"only-b"}

    b.pause()  # slow: its reads time out, the leader answers them
    try:
        assert hit_ids(base, index) == {"only-a"}
        assert follower_state(port, b.url) == "timeout"
        assert hit_ids(base, index) == {"only-a"}
    finally:
        b.resume()
    wait_until(lambda: follower_state(port, b.url) == "ok", timeout=15, msg="the follower to be usable again")
    assert hit_ids(base, index) == {"only-b"}

    b.stop()  # down: connections refused
    assert hit_ids(base, index) == {"only-a"}
    assert follower_state(port, b.url) == "down"
    reads = stats(port)["proxy"]["reads"]
    for _ in range(3):
        assert hit_ids(base, index) == {"only-a"}
    s = stats(port)
    assert s["proxy"]["reads"].get(b.url) == reads.get(b.url)  # no more reads went to it
    assert s["proxy"]["read_fallbacks"]["timeout"] >= 1 and s["proxy"]["read_fallbacks"]["down"] >= 4
    assert requests.get(f"{base}/_esproxy/health", timeout=10).status_code == 200  # reads still work


def test_routed_reads_answer_the_same_bytes_without_the_environ(split, es_a, es_b, names, port):
    """A plain GET/HEAD (ProxyApp.pass_read, no environ) is routed as the same request on the WSGI path
    (sent with ``Content-Length: 0``): the follower's answer, the leader's when asked for it, the same
    bytes, counted alike."""
    from test_pass_read import both_paths

    split(accesslog=True)
    index = names.index()
    markers(es_a, es_b, index)
    cases = [
        ("GET", f"/{index}/_doc/only-b", ""),  # B's document: found on the follower only
        ("HEAD", f"/{index}/_doc/only-b", ""),
        ("GET", f"/{index}/_doc/only-a", ""),  # not on B: B's 404
        ("GET", f"/{index}/_doc/only-a", "X-Esproxy-Read: leader\r\n"),  # A's answer
        ("GET", f"/{index}/_doc/only-b", "X-Esproxy-Read: Leader \r\n"),
    ]
    for method, path, extra in cases:
        passed, wsgi = both_paths(port, method, path, extra)
        assert passed == wsgi, (method, path, extra)
    assert b'"found":true' in both_paths(port, "GET", f"/{index}/_doc/only-b")[0]
    assert b'"found":true' in both_paths(port, "GET", f"/{index}/_doc/only-a", "X-Esproxy-Read: leader\r\n")[0]
    s = stats(port)
    # both_paths sends each request twice: 4 to B and 3 forced to A, each twice
    assert (s["proxy"]["reads"], s["proxy"]["read_fallbacks"]) == ({es_b: 8, es_a: 6}, {"forced": 6})


@pytest.mark.real
def test_a_delayed_rules_indices_are_read_from_the_leader(esproxy, es_a, es_b, kafka, names, port):
    # issue 26: B holds a delayed rule's indices as they were a delay ago, the other rules' as they are now.
    # The proxy has no sync rules of its own: it learns the delay from its follower's replay (its stats).
    late, now = names.index("late"), names.index("now")
    topic, group, admin = names.topic(), names.group(), free_port()
    create_topic(kafka, topic)
    replay_conf = replay_config(kafka, topic, group, es_b)
    replay_conf["admin"] = {"port": admin}
    replay_conf["follow"] = {
        "rules": [{"name": "late", "indices": [late], "delay": "1h"}, {"name": "now", "indices": [now]}]
    }
    esproxy(replay_conf)
    follower = {"url": es_b, "replayAdmin": f"http://127.0.0.1:{admin}", "maxLag": "30s", "timeout": "5s"}
    esproxy(with_followers(proxy_config(port, es_a, kafka, topic), [follower]))
    wait_until(lambda: follower_state(port, es_b) == "ok", timeout=20, msg="the follower to be usable")
    base = f"http://127.0.0.1:{port}"
    for index in (late, now):
        put(es_a, index, "only-a", {"marker": "a"})
        put(es_b, index, "only-b", {"marker": "b"})
    assert "only-b" in hit_ids(base, now)  # the follower answers the rule without delay
    ids = hit_ids(base, late)
    assert "only-a" in ids and "only-b" not in ids  # the leader answers the delayed rule's index
    assert "only-a" in hit_ids(base, f"{late[:-2]}*")  # a pattern that may match it too
    assert stats(port)["proxy"]["read_fallbacks"]["delayed"] >= 2
