"""The scenarios of issue 6, run in one go against one set of servers so the ratios are side by side.

Order: S1 (writes: direct, through the proxy, through the Go original when ``--peer`` names its
binary, then through a bare forwarder for reference; no replay running; then the lag run: the proxy
again with the replay live, on a pair of clusters of its own, measuring replication lag per sampled
write, see lag.py), S4 (the replay drains what S1
captured into B; then a direct ``_bulk`` of the same documents into B), S2 (GET capacity), S3
(``_bulk`` through the proxy and direct), S5 (S1's proxy side per ``durability`` value).

With a peer (bench/peer.py), S1 and S2 also run through the Go elasticproxy: on the same cluster A and
broker, with conf1.yml's settings translated to its config, a port of its own and a topic of its own
(S4 drains the esproxy topic and counts what S1 captured into it).
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from . import data, probes
from .lag import LagProbe, ReplayLagSampler
from .load import LoadResult, run_wrk
from .peer import PEER_NAME, PeerError, peer_config
from .procstat import Sampler, cpu_seconds, peak_rss_mb, rss_mb
from .servers import REPO, Proc, Stack, check_config, free_port

DURABILITY_VALUES = ("none", "spool", "kafka")


@dataclass
class Options:
    n: int = 20000  # S1 writes per side
    connections: int = 100
    threads: int = 2  # wrk threads
    s2_seconds: float = 10.0
    s3_requests: int = 60  # _bulk requests per side
    bulk_size: int = 500
    scenarios: tuple[str, ...] = ("S1", "S2", "S3", "S4", "S5")
    lag_n: int = 20000  # writes of S1's lag run (capped at n; 0: no lag run)
    lag_rate: float = 25.0  # lag probe writes per second during it
    peer: Optional[Path] = None  # the Go elasticproxy binary: S1 and S2 run through it too


@dataclass
class Side:
    """One side of a comparison: the load result plus the CPU the servers used meanwhile."""

    load: LoadResult
    cpu: dict[str, float] = field(default_factory=dict)  # process name -> CPU seconds during the run


@dataclass
class Bench:
    opts: Options
    stack: Stack
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    # ------------------------------------------------------------------ servers and configs

    def start_servers(self) -> None:
        self.a = self.stack.cluster("A", "osmem-a")
        self.b = self.stack.cluster("B", "osmem-b")
        self.kafka = self.stack.broker()
        self.bootstrap = f"127.0.0.1:{self.kafka.port}"
        self.topic = f"bench.s1.{self.run_id}"
        self.people = data.write_people(self.workdir / "people.txt", self.opts.n + self.opts.connections)
        self.proxy = self.start_proxy("proxy", self.topic)
        self.peer: Optional[Proc] = None
        self.peer_topic = f"bench.s1.peer.{self.run_id}"
        if self.opts.peer and {"S1", "S2"} & set(self.opts.scenarios):
            self.peer = self.start_peer("peer", self.peer_topic)

    def proxy_config(self, port: int, topic: str, upstream: Optional[Proc] = None, **extra: Any) -> dict:
        """conf1.yml as shipped, pointed at our servers (its chanSize, accesslog, Kafka settings):
        ``upstream`` as cluster A (default: the bench's A)."""
        conf = yaml.safe_load((REPO / "conf1.yml").read_text(encoding="utf-8"))
        proxy = {**conf["source"]["proxies"][0], "port": port, "host": "127.0.0.1"}
        for key in ("durability", "accesslog"):  # per-proxy settings
            if key in extra:
                proxy[key] = extra.pop(key)
        conf["source"]["proxies"] = [proxy]
        conf["destination"]["primaries"] = [
            {**conf["destination"]["primaries"][0], "url": (upstream or self.a).url + "/"}
        ]
        conf["destination"]["kafkas"] = [
            {**conf["destination"]["kafkas"][0], "topic": topic, "brokers": [self.bootstrap]}
        ]
        conf.update(extra)
        return conf

    def replay_config(self, topic: str, group: str, target: Optional[Proc] = None) -> dict:
        conf = yaml.safe_load((REPO / "conf2.yml").read_text(encoding="utf-8"))
        conf["source"]["kafkas"] = [
            {**conf["source"]["kafkas"][0], "brokers": [self.bootstrap], "topics": [topic], "group": group}
        ]
        conf["destination"]["primaries"] = [
            {**conf["destination"]["primaries"][0], "url": (target or self.b).url + "/"}
        ]
        conf["admin"] = {**conf.get("admin", {}), "port": free_port()}  # not conf2.yml's fixed 2901
        return conf

    def start_proxy(self, name: str, topic: str, upstream: Optional[Proc] = None, **extra: Any) -> Proc:
        port = free_port()
        conf = self.proxy_config(port, topic, upstream, **extra)
        p = self.stack.esproxy(name, conf, "proxy listening on", port=port)
        # Ready for the bench once the cluster id is known and the producer is connected.
        p.wait_for(lambda: "has id" in p.log() and "kafka producer for topic" in p.log(), "cluster id + producer")
        return p

    def start_peer(self, name: str, topic: str, **extra: Any) -> Proc:
        """The Go original with the config of ``start_proxy(name, topic, **extra)``, on a port of its own."""
        assert self.opts.peer is not None
        port = free_port()
        conf, dropped = peer_config(self.proxy_config(port, topic, **extra), port)
        self.results.setdefault("peer", {})["not_carried_over"] = dropped
        try:
            return self.stack.peer(name, self.opts.peer, conf, port)
        except RuntimeError as e:
            raise PeerError(f"the peer {self.opts.peer} did not start: {e}") from e

    def measured(self, label: str, procs: dict[str, Proc], **kw: Any) -> Side:
        before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        load = run_wrk(label, kw.pop("base"), kw.pop("path"), self.workdir, **kw)
        return Side(load, {name: cpu_seconds(p.pid) - before[name] for name, p in procs.items()})

    def write_run(self, label: str, base: str, index: str, procs: dict[str, Proc], quota: int = 0) -> Side:
        """``quota`` (default N) single-document POSTs (the seed's run), counted."""
        quota = quota or self.opts.n
        return self.measured(
            label,
            procs,
            base=base,
            path=f"/{index}/_doc",
            method="POST",
            lines=self.people,
            connections=self.opts.connections,
            threads=self.opts.threads,
            quota=quota,
            duration=60 + quota / 50,
        )

    # ------------------------------------------------------------------ S1

    def s1(self) -> None:
        direct_index, proxy_index = f"p1-direct-{self.run_id}", f"p1-proxy-{self.run_id}"
        direct = self.write_run("s1-direct", self.a.url, direct_index, {"osmem A": self.a})
        sampler = Sampler(self.proxy.pid, self.a.port)
        sampler.start()
        proxied = self.write_run("s1-proxy", self.proxy.url, proxy_index, {"esproxy": self.proxy, "osmem A": self.a})
        sampler.stop()
        in_a = probes.es_count(self.a.url, proxy_index)
        messages, end_offsets = self._messages(self.topic, in_a)
        upstream = sampler.upstream_during()
        peer = self.s1_peer() if self.peer else {}
        forwarder = self.stack.bare_forwarder("bare-forwarder", self.a.url)
        bare_index = f"p1-bare-{self.run_id}"
        bare = self.write_run("s1-bare", forwarder.url, bare_index, {"bare forwarder": forwarder, "osmem A": self.a})
        self.stack.stop(forwarder)
        self.results["S1"] = {
            "direct": direct,
            "proxy": proxied,
            "bare": bare,
            "bare_docs_in_a": probes.es_count(self.a.url, bare_index),
            "direct_docs_in_a": probes.es_count(self.a.url, direct_index),
            "proxy_docs_in_a": in_a,
            "messages": messages,
            "end_offsets": end_offsets,
            "upstream": {"min": min(upstream), "median": statistics.median(upstream), "max": max(upstream)},
            "rss": {
                "start": sampler.samples[0].rss_mb,
                "middle": sampler.middle().rss_mb,
                "end": sampler.samples[-1].rss_mb,
            },
            "proxy_index": proxy_index,
            **peer,
        }
        if min(self.opts.n, self.opts.lag_n) > 0:
            self.results["S1"]["lag"] = self.s1_lag()

    def s1_peer(self) -> dict[str, Any]:
        """S1's proxy side through the Go original: the same writes, counted in A and on its topic."""
        assert self.peer is not None
        index = f"p1-peer-{self.run_id}"
        sampler = Sampler(self.peer.pid, self.a.port)
        sampler.start()
        side = self.write_run("s1-peer", self.peer.url, index, {PEER_NAME: self.peer, "osmem A": self.a})
        sampler.stop()
        in_a = probes.es_count(self.a.url, index)
        messages, end_offsets = self._messages(self.peer_topic, in_a)
        upstream = sampler.upstream_during()
        return {
            "peer": side,
            "peer_docs_in_a": in_a,
            "peer_messages": messages,
            "peer_end_offsets": end_offsets,
            "peer_topic": self.peer_topic,
            "peer_upstream": {"min": min(upstream), "median": statistics.median(upstream), "max": max(upstream)},
            "peer_rss": {
                "start": sampler.samples[0].rss_mb,
                "middle": sampler.middle().rss_mb,
                "end": sampler.samples[-1].rss_mb,
            },
        }

    def s1_lag(self) -> dict[str, Any]:
        """The proxy side again with the replay running, for replication lag per sampled write.

        On clusters and a topic of its own, so that S1's sides above, S4's drain and the later
        scenarios see the same servers and documents as without it."""
        n = min(self.opts.n, self.opts.lag_n)
        a, b = self.stack.cluster("A", "osmem-a-lag"), self.stack.cluster("B", "osmem-b-lag")
        topic, index = f"bench.s1lag.{self.run_id}", f"p1-lag-{self.run_id}"
        proxy = self.start_proxy("proxy-lag", topic, upstream=a)
        # One write first: it creates the topic the replay subscribes to, and the index on B.
        status, answer = probes.http("POST", f"{proxy.url}/{index}/_doc", self.people.read_bytes().split(b"\n")[0])
        if status >= 300:
            raise RuntimeError(f"first write of the lag run: {status} {answer[:300]!r}")
        self._messages(topic, 1)
        conf = self.replay_config(topic, f"bench.lag.{self.run_id}", target=b)
        replay = self.stack.esproxy("replay-lag", conf, "has id")
        replay.wait_for(lambda: "assigned partitions" in replay.log(), "assigned partitions", timeout=60)
        if not probes.wait_for(lambda: probes.es_count(b.url, index) >= 1, timeout=60)[0]:
            raise RuntimeError(
                f"the lag run's replay did not apply its first write within 60 s (see {replay.log_path})"
            )
        probe = LagProbe(proxy.url, b.url, index, data.person_lines(1000, seed=13), rate=self.opts.lag_rate)
        replay_view = ReplayLagSampler(f"http://127.0.0.1:{conf['admin']['port']}")
        replay_view.start()
        probe.start()
        procs = {"esproxy": proxy, "osmem A": a, "replay": replay, "osmem B": b}
        side = self.write_run("s1-lag", proxy.url, index, procs, quota=n)
        ended = time.monotonic()
        lags = probe.finish(timeout=60)
        replay_seconds = replay_view.stop()
        in_a = probes.es_count(a.url, index)
        reached, _ = probes.wait_for(lambda: probes.es_count(b.url, index) >= in_a, timeout=120)
        caught_up = time.monotonic() - ended if reached else None
        in_b = probes.es_count(b.url, index)
        for p in (replay, proxy, a, b):
            self.stack.stop(p)
        return {
            "side": side,
            "lags": lags,
            "replay_lag_seconds": replay_seconds,
            "replay_lag_interval": replay_view.interval,
            "docs_in_a": in_a,
            "docs_in_b": in_b,
            "caught_up_seconds": caught_up,
            "shared_clusters": bool(self.stack.real_pair),  # real engines: A and B of the whole run
        }

    def _messages(self, topic: str, expected: int) -> tuple[int, int]:
        """Records in ``topic`` once the producer has shipped ``expected`` of them (or 30 s passed)."""
        last = (0, 0)

        def enough() -> bool:
            nonlocal last
            last = probes.topic_stats(self.bootstrap, topic)
            return last[0] >= expected

        probes.wait_for(enough, timeout=30, interval=0.5)
        return last

    # ------------------------------------------------------------------ S4

    def s4(self) -> None:
        s1 = self.results.get("S1")
        if not s1:
            self.results["S4"] = {"skipped": "needs S1 (the captured writes it drains)"}
            return
        expected, index = s1["messages"], s1["proxy_index"]
        replay = self.stack.esproxy("replay", self.replay_config(self.topic, f"bench.{self.run_id}"), "has id")
        cpu0 = cpu_seconds(replay.pid)
        joined = replay.wait_for(lambda: "assigned partitions" in replay.log(), "assigned partitions", timeout=60)
        t0 = time.monotonic()
        count, waited = probes.wait_for(
            lambda: (c := probes.es_count(self.b.url, index)) >= expected and c, timeout=60 + expected / 20
        )
        drain = time.monotonic() - t0
        replay_cpu, replay_rss = cpu_seconds(replay.pid) - cpu0, rss_mb(replay.pid)
        self.stack.stop(replay)
        final = probes.es_count(self.b.url, index)
        docs = self.people.read_text(encoding="utf-8").splitlines()[:expected]
        bulk_index = f"p1-bulk-{self.run_id}"
        bulk_seconds = _bulk_load(self.b.port, bulk_index, docs, self.opts.bulk_size)
        self.results["S4"] = {
            "expected": expected,
            "drained": count >= expected if count else False,
            "b_docs": final,
            "join_seconds": joined,
            "drain_seconds": drain,
            "replay_rate": final / drain if drain else 0.0,
            "replay_cpu": replay_cpu,
            "replay_rss": replay_rss,
            "bulk_docs": probes.es_count(self.b.url, bulk_index),
            "bulk_seconds": bulk_seconds,
            "bulk_rate": len(docs) / bulk_seconds if bulk_seconds else 0.0,
        }

    # ------------------------------------------------------------------ S2

    def s2(self) -> None:
        doc = '{"name":"张三","sex":"男","addr":"北京市东城区人民路1号","idcard":"110101199003070011"}'
        index = f"s2-{self.run_id}"
        probes.http("PUT", f"{self.a.url}/{index}/_doc/1?refresh=true", doc.encode())
        status, body = probes.http("GET", f"{self.a.url}/{index}/_doc/1")
        body_file = self.workdir / "s2-body.json"
        body_file.write_bytes(body)
        path = f"/{index}/_doc/1"
        kw = {"path": path, "connections": self.opts.connections, "threads": self.opts.threads}
        kw["duration"] = self.opts.s2_seconds
        out: dict[str, Any] = {"status": status, "body_bytes": len(body)}
        out["direct"] = self.measured("s2-direct", {"osmem A": self.a}, base=self.a.url, **kw)
        out["proxy"] = self.measured("s2-proxy", {"esproxy": self.proxy, "osmem A": self.a}, base=self.proxy.url, **kw)
        if self.peer:
            procs = {PEER_NAME: self.peer, "osmem A": self.a}
            out["peer"] = self.measured("s2-peer", procs, base=self.peer.url, **kw)
        # conf1.yml logs every request (accesslog: true); the same proxy without it, for what the relay costs
        quiet = self.start_proxy("proxy-noaccesslog", self.topic, accesslog=False)
        procs = {"esproxy": quiet, "osmem A": self.a}
        out["proxy_noaccesslog"] = self.measured("s2-proxy-noaccesslog", procs, base=quiet.url, **kw)
        self.stack.stop(quiet)
        if self.peer:
            quiet = self.start_peer("peer-noaccesslog", self.peer_topic, accesslog=False)
            out["peer_noaccesslog"] = self.measured(
                "s2-peer-noaccesslog", {PEER_NAME: quiet, "osmem A": self.a}, base=quiet.url, **kw
            )
            self.stack.stop(quiet)
        for side, nodelay in (("bare", False), ("bare_nodelay", True)):
            bare = self.stack.bare(f"{side}-wsgi", body_file, nodelay=nodelay)
            out[side] = self.measured(f"s2-{side}", {"bare WSGIServer": bare}, base=bare.url, **kw)
            self.stack.stop(bare)
        accepted, answer = check_config(
            self.workdir, "workers-check", self.proxy_config(free_port(), self.topic, workers=2)
        )
        if accepted:
            two = self.start_proxy("proxy-2workers", self.topic, workers=2)
            procs = {"esproxy (master + workers)": two, "osmem A": self.a}
            out["proxy_2_workers"] = self.measured("s2-proxy-2w", procs, base=two.url, **kw)
            # The same paced load on both: what a client sees of the workers when the cores are not
            # all taken (above, wrk, osmem A and the workers want more than this machine's 2 cores).
            think = paced_think_ms(self.opts.connections, out["proxy"].load.rps)
            one = {"esproxy": self.proxy, "osmem A": self.a}
            out["paced_1_worker"] = self.measured("s2-paced-1w", one, base=self.proxy.url, think_ms=think, **kw)
            out["paced_2_workers"] = self.measured("s2-paced-2w", procs, base=two.url, think_ms=think, **kw)
            out["paced_think_ms"] = think
            out["worker_rows"] = _worker_rows(two.url)
            self.stack.stop(two)
        else:
            out["workers_unavailable"] = answer
        self.results["S2"] = out

    # ------------------------------------------------------------------ S3

    def s3(self) -> None:
        docs = data.person_lines(self.opts.bulk_size, seed=3)
        body = self.workdir / "s3-bulk.ndjson"
        body.write_text(data.bulk_body(None, docs), encoding="utf-8")
        conns = min(4, self.opts.connections)
        kw = {"method": "POST", "body": body, "content_type": "application/x-ndjson", "connections": conns}
        kw.update(
            threads=min(self.opts.threads, conns), quota=self.opts.s3_requests, duration=60 + self.opts.s3_requests
        )
        out: dict[str, Any] = {"bulk_size": self.opts.bulk_size, "connections": conns}
        for side, base, procs in (
            ("direct", self.a.url, {"osmem A": self.a}),
            ("proxy", self.proxy.url, {"esproxy": self.proxy, "osmem A": self.a}),
        ):
            index = f"s3-{side}-{self.run_id}"
            out[side] = self.measured(f"s3-{side}", procs, base=base, path=f"/{index}/_bulk", **kw)
            out[f"{side}_docs_in_a"] = probes.es_count(self.a.url, index)
        self.results["S3"] = out

    # ------------------------------------------------------------------ S5

    def s5(self) -> None:
        """S1's proxy side per durability value, and with the default one in 2 pre-fork workers."""
        out: dict[str, Any] = {}
        variants = [(value, {"durability": value}) for value in DURABILITY_VALUES]
        variants.append(("spool, workers: 2", {"durability": "spool", "workers": 2}))
        for value, extra in variants:
            slug = value.replace(", workers: ", "-w")
            topic = f"bench.s5.{slug}.{self.run_id}"
            accepted, answer = check_config(self.workdir, f"s5-{slug}", self.proxy_config(free_port(), topic, **extra))
            if not accepted:
                out[value] = {"unavailable": answer}
                continue
            proxy = self.start_proxy(f"proxy-{slug}", topic, **extra)
            index = f"p1-{slug}-{self.run_id}"
            side = self.write_run(f"s5-{slug}", proxy.url, index, {"esproxy": proxy, "osmem A": self.a})
            in_a = probes.es_count(self.a.url, index)
            self.stack.stop(proxy)
            out[value] = {"proxy": side, "docs_in_a": in_a, "messages": self._messages(topic, in_a)[0]}
        self.results["S5"] = out

    def _peak_rss(self, after: str) -> None:
        """Peak RSS (VmHWM) of the proxy and of the peer, their whole life so far."""
        peaks: dict[str, Any] = {"after": after, "esproxy": peak_rss_mb(self.proxy.pid)}
        if self.peer:
            peaks["peer"] = peak_rss_mb(self.peer.pid)
        self.results["peak_rss"] = peaks

    def run(self) -> None:
        self.start_servers()
        self.results["started"] = {"proxy_rss_idle": rss_mb(self.proxy.pid)}
        for name in ("S1", "S4", "S2", "S3", "S5"):
            if name in self.opts.scenarios:
                t0 = time.monotonic()
                print(f"bench: {name} ...", flush=True)
                getattr(self, name.lower())()
                self.results.setdefault("timings", {})[name] = time.monotonic() - t0
                if name in ("S1", "S2"):
                    self._peak_rss(name)
                print(f"bench: {name} done in {time.monotonic() - t0:.0f}s", flush=True)


# The paced runs' load: this share of what one worker answered flat out.
PACED_SHARE = 0.5


def paced_think_ms(connections: int, ceiling_rps: float) -> int:
    """The wait after each answer that has ``connections`` ask about PACED_SHARE of ``ceiling_rps``
    (a little less: each answer's own latency adds to the wait)."""
    if ceiling_rps <= 0:
        return 100
    return max(1, round(1000 * connections / (PACED_SHARE * ceiling_rps)))


def _worker_rows(base: str) -> list[dict[str, Any]]:
    """Per worker connections and requests, once every worker has reported (each does every second)."""
    time.sleep(1.5)
    status, body = probes.http("GET", f"{base}/_esproxy/stats")
    if status != 200:
        return []
    return json.loads(body).get("proxy", {}).get("workers", [])


def _bulk_load(port: int, index: str, docs: list[str], size: int) -> float:
    """Load ``docs`` into ``index`` with sequential ``_bulk`` requests on one connection; seconds taken."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.monotonic()
    try:
        for i in range(0, len(docs), size):
            body = data.bulk_body(None, docs[i : i + size]).encode("utf-8")
            conn.request("POST", f"/{index}/_bulk", body, {"Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 200 or json.loads(answer).get("errors"):
                raise RuntimeError(f"direct _bulk into B failed: {r.status} {answer[:300]!r}")
    finally:
        conn.close()
    return time.monotonic() - t0
