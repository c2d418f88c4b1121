"""The Markdown report (``bench/results/report-<ts>.md`` + ``latest.md``) and the PNG latency chart."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from .lag import LagResult, percentile
from .load import LoadResult
from .peer import PEER_HEADER, PEER_NAME, PeerRow, format_row, peer_rows
from .scenarios import Side

PCTS = (50, 75, 90, 95, 99, 99.9, 99.99)
TARGETS = {"S1": 0.95, "S2": 0.85, "S4": 0.8, "RSS": 64.0, "workers": 1.6}
# issue 16: reads at close to relay cost, workers without a tail
READ_TARGETS = {"S2 nodelay": 0.7, "CPU per GET": 1.5, "workers p99": 1.5, "S1 bare": 0.97}
# issue 24: esproxy / the Go original, each in one process, in the same run
PEER_TARGETS = {"S2 req/s": 0.5, "CPU per GET": 2.0, "CPU per write": 1.5, "S1 req/s": 1.0}
SERVERS = ("esproxy", "esproxy (master + workers)", "bare WSGIServer", "bare forwarder", PEER_NAME)


def cpu_us(side: Side) -> Optional[float]:
    """µs of CPU the server under test (the proxy, a bare server; not osmem A) spent per answer."""
    name = next((n for n in SERVERS if n in side.cpu), None)
    if name is None or not side.load.answered:
        return None
    return side.cpu[name] * 1e6 / side.load.answered


def fmt_us(us: Optional[float]) -> str:
    return "n/a" if us is None else f"{us:.0f}"


def _at_most(r: Optional[float], goal: float) -> str:
    return "n/a" if r is None else ("met" if r <= goal else "not met")


def ms(us: float) -> str:
    """A latency the way the seed's berf prints it: 37.043ms, 1.526334s."""
    if us >= 1e6:
        return f"{us / 1e6:.6g}s"
    return f"{us / 1000:.3f}ms"


def ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def fmt_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}"


def seed_block(side: Side) -> str:
    """One side's summary laid out like the seed's berf output."""
    r = side.load
    mbps = (r.bytes_read * 8 / 1e6 / r.elapsed, r.bytes_written * 8 / 1e6 / r.elapsed) if r.elapsed else (0, 0)
    lines = [
        f"wrk {r.url}  {r.connections} connections, {r.threads} threads",
        "",
        "Summary:",
        f"  Elapsed        {r.elapsed:>12.3f}s",
        f"  Count/RPS      {r.answered:>8} {r.rps:.3f}",
    ]
    for status, count in sorted(r.statuses.items()):
        lines.append(f"    {status:<12}{count:>8} {count / r.elapsed if r.elapsed else 0:.3f}")
    errors = {k: v for k, v in r.errors.items() if v}
    if errors:
        lines.append("  Errors         " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    lines += [
        f"  ReadWrite      {mbps[0]:.3f} {mbps[1]:.3f} Mbps",
        f"  Connections    {r.connections:>8}",
        "",
        "Statistics    Min        Mean       StdDev     Max",
        f"  Latency   {ms(r.latency_us['min']):<10} {ms(r.latency_us['mean']):<10} "
        f"{ms(r.latency_us['stdev']):<10} {ms(r.latency_us['max'])}",
        "",
        "Latency Percentile:",
        "  " + "".join(f"{'P' + format(p, 'g'):<11}" for p in PCTS),
        "  " + "".join(f"{ms(r.pct(p) * 1000):<11}" for p in PCTS),
        "",
        "Latency Histogram (from the recorded percentiles):",
    ]
    lines += [
        f"  {ms(center):<11}{count:>8}  {share:6.2%}  {'■' * round(40 * share / top)}"
        for center, count, share, top in histogram(r)
    ]
    cpu = ", ".join(f"{name} {seconds / r.elapsed:.2f}" for name, seconds in side.cpu.items()) if r.elapsed else ""
    lines += ["", f"CPU (cores busy on average): wrk {r.client_cpu / r.elapsed:.2f}, {cpu}" if r.elapsed else ""]
    return "\n".join(lines)


def histogram(r: LoadResult, buckets: int = 8) -> list[tuple[float, int, float, float]]:
    """(center µs, count, share, largest share) per log-spaced bucket, rebuilt from the percentile grid:
    the requests between two recorded percentiles are put in the bucket of the upper one."""
    points = r.percentiles_us
    lo, hi = max(1, r.latency_us["min"]), max(2, r.latency_us["max"])
    edges = [lo * (hi / lo) ** (i / buckets) for i in range(1, buckets + 1)]
    mass = [0.0] * buckets
    weighted = [0.0] * buckets
    for (p0, _), (p1, us) in zip(points, points[1:]):
        share = (p1 - p0) / 100
        i = next((k for k, edge in enumerate(edges) if us <= edge), buckets - 1)
        mass[i] += share
        weighted[i] += share * us
    top = max(mass) or 1.0
    return [(weighted[i] / mass[i], round(mass[i] * r.answered), mass[i], top) for i in range(buckets) if mass[i] > 0]


def _side_row(name: str, side: Side) -> str:
    r = side.load
    return (
        f"| {name} | {r.answered} | {r.rps:.0f} | {r.pct(50):.1f} | {r.pct(99):.1f} | "
        f"{r.latency_us['max'] / 1000:.0f} | {_statuses(r)} | {fmt_us(cpu_us(side))} | {r.client_cpu_pct / 100:.2f} |"
    )


def _statuses(r: LoadResult) -> str:
    text = " ".join(f"{k}×{v}" for k, v in sorted(r.statuses.items()))
    errors = sum(r.errors.values())
    return text + (f", socket errors {errors}" if errors else "")


SIDE_HEADER = (
    "| side | answered | req/s | p50 ms | p99 ms | max ms | statuses | server CPU µs/answer | wrk CPU (cores) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def summary_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, goal, verdict) for each of issue 6's targets measurable in this run."""
    rows = []
    s1, s2, s4 = res.get("S1"), res.get("S2"), res.get("S4")
    if s1:
        r = ratio(s1["proxy"].load.rps, s1["direct"].load.rps)
        rows.append(("S1 proxy/direct TPS (Kafka on)", fmt_ratio(r), f"≥ {TARGETS['S1']}", _met(r, TARGETS["S1"])))
        if "bare" in s1:
            floor = ratio(s1["bare"].load.rps, s1["direct"].load.rps)
            rows.append(
                (
                    "S1 bare forwarder/direct TPS (nothing captured)",
                    fmt_ratio(floor),
                    "reference",
                    "the most a gevent WSGIServer proxy gets on this machine",
                )
            )
        if "lag" in s1:
            rows.append(_lag_row(s1["lag"]))
        rss = s1["rss"]
        ok = rss["end"] is not None and max(rss.values()) <= TARGETS["RSS"] and rss["end"] <= rss["middle"] * 1.02
        rows.append(
            (
                "proxy RSS start / middle / end of S1 (MB)",
                f"{rss['start']:.1f} / {rss['middle']:.1f} / {rss['end']:.1f}",
                "≤ 64, no growth middle→end (±2 %)",
                "met" if ok else "not met",
            )
        )
    if s2:
        r = ratio(s2["proxy"].load.rps, s2["bare"].load.rps)
        rows.append(("S2 proxy / bare WSGIServer req/s", fmt_ratio(r), f"≥ {TARGETS['S2']}", _met(r, TARGETS["S2"])))
        r = ratio(s2["proxy"].load.rps, s2["bare_nodelay"].load.rps)
        goal = f"(≥ {TARGETS['S2']}: the real ceiling)"
        rows.append(("S2 proxy / bare WSGIServer + TCP_NODELAY", fmt_ratio(r), goal, _met(r, TARGETS["S2"])))
        if "proxy_2_workers" in s2:
            two = s2["proxy_2_workers"]
            r = ratio(two.load.rps, s2["proxy"].load.rps)
            verdict = _met(r, TARGETS["workers"])
            busy = (sum(two.cpu.values()) + two.load.client_cpu) / two.load.elapsed if two.load.elapsed else 0
            cores = os.cpu_count() or 1
            if verdict != "met" and busy >= 0.85 * cores:
                verdict += f" (not shown here: {busy:.2f} of {cores} cores busy with wrk, osmem A and the workers)"
            rows.append(("S2 2 workers / 1 worker", fmt_ratio(r), f"≥ {TARGETS['workers']}", verdict))
        else:
            rows.append(
                (
                    "S2 2 workers / 1 worker",
                    "not available",
                    "≥ 1.6",
                    f"`workers` rejected: {s2['workers_unavailable']}",
                )
            )
    if s1 and "bare" in s1:
        r = ratio(s1["proxy"].load.rps, s1["bare"].load.rps)
        goal = READ_TARGETS["S1 bare"]
        rows.append(("S1 proxy / bare forwarder TPS", fmt_ratio(r), f"≥ {goal}", _met(r, goal)))
        rows.append(
            (
                "S1 CPU µs per captured write: proxy / bare forwarder",
                f"{fmt_us(cpu_us(s1['proxy']))} / {fmt_us(cpu_us(s1['bare']))}",
                "reported",
                "",
            )
        )
    if s2:
        r = ratio(s2["proxy"].load.rps, s2["bare_nodelay"].load.rps)
        goal = READ_TARGETS["S2 nodelay"]
        rows.append(("S2 proxy / bare WSGIServer + TCP_NODELAY (issue 16)", fmt_ratio(r), f"≥ {goal}", _met(r, goal)))
        proxy_us, bare_us = cpu_us(s2["proxy"]), cpu_us(s2["bare_nodelay"])
        r = ratio(proxy_us or 0.0, bare_us or 0.0)
        goal = READ_TARGETS["CPU per GET"]
        rows.append(
            (
                "S2 CPU µs per GET: proxy / bare WSGIServer + TCP_NODELAY",
                f"{fmt_us(proxy_us)} / {fmt_us(bare_us)} = {fmt_ratio(r)}",
                f"≤ {goal}×",
                _at_most(r, goal),
            )
        )
        if "proxy_noaccesslog" in s2:
            quiet_us = cpu_us(s2["proxy_noaccesslog"])
            r = ratio(quiet_us or 0.0, bare_us or 0.0)
            rows.append(
                (
                    "S2 CPU µs per GET with accesslog: false / bare + TCP_NODELAY",
                    f"{fmt_us(quiet_us)} / {fmt_us(bare_us)} = {fmt_ratio(r)}",
                    "(reference)",
                    f"conf1.yml's access log costs {fmt_us((proxy_us or 0) - (quiet_us or 0))} µs per GET",
                )
            )
        goal = READ_TARGETS["workers p99"]
        if "paced_2_workers" in s2:
            one_side, two_side = s2["paced_1_worker"], s2["paced_2_workers"]
            one, two = one_side.load.pct(99), two_side.load.pct(99)
            r = ratio(two, one)
            measured = f"{two:.1f} / {one:.1f} ms = {fmt_ratio(r)}"
            load = (
                f"{one_side.load.rps:.0f} / {two_side.load.rps:.0f} req/s: {one_side.load.connections} connections, "
                f"each waiting {s2['paced_think_ms']} ms after an answer"
            )
            rows.append(
                (f"S2 p99 workers: 2 / workers: 1 at the same load ({load})", measured, f"≤ {goal}×", _at_most(r, goal))
            )
        if "proxy_2_workers" in s2:
            one, two = s2["proxy"].load.pct(99), s2["proxy_2_workers"].load.pct(99)
            r = ratio(two, one)
            measured = f"{two:.1f} / {one:.1f} ms = {fmt_ratio(r)}"
            two_side = s2["proxy_2_workers"]
            busy = (sum(two_side.cpu.values()) + two_side.load.client_cpu) / two_side.load.elapsed
            note = f"reported: {busy:.2f} of {os.cpu_count() or 1} cores busy (wrk, osmem A, the workers)"
            rows.append(
                ("S2 p99 workers: 2 / workers: 1 flat out (each side as fast as it answers)", measured, "", note)
            )
    rows += _peer_target_rows(res)
    if s4 and "skipped" not in s4:
        r = ratio(s4["replay_rate"], s4["bulk_rate"])
        rows.append(("S4 replay / direct _bulk docs/s", fmt_ratio(r), f"≥ {TARGETS['S4']}", _met(r, TARGETS["S4"])))
    return rows


def _peer_target_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Issue 24's targets against the Go original, where this run measured both sides."""
    s1, s2 = res.get("S1") or {}, res.get("S2") or {}
    rows = []

    def both(figure: str, e: Optional[float], p: Optional[float], goal: float, higher: bool, unit: str = "") -> None:
        r = ratio(e or 0.0, p or 0.0) if e is not None and p is not None else None
        verdict = _met(r, goal) if higher else _at_most(r, goal)
        measured = f"{fmt_us(e)} / {fmt_us(p)}{unit} = {fmt_ratio(r)}"
        rows.append(
            (f"{figure}: esproxy / Go elasticproxy (issue 24)", measured, f"{'≥' if higher else '≤'} {goal}×", verdict)
        )

    if "peer" in s2:
        both("S2 req/s", s2["proxy"].load.rps, s2["peer"].load.rps, PEER_TARGETS["S2 req/s"], True)
        both("S2 CPU µs per GET", cpu_us(s2["proxy"]), cpu_us(s2["peer"]), PEER_TARGETS["CPU per GET"], False)
    if "peer_noaccesslog" in s2 and "proxy_noaccesslog" in s2:  # the Go tool's default: no access log
        e, p = s2["proxy_noaccesslog"], s2["peer_noaccesslog"]
        both("S2 req/s, accesslog: false on both", e.load.rps, p.load.rps, PEER_TARGETS["S2 req/s"], True)
        both("S2 CPU µs per GET, accesslog: false on both", cpu_us(e), cpu_us(p), PEER_TARGETS["CPU per GET"], False)
    if "peer" in s1:
        both("S1 req/s", s1["proxy"].load.rps, s1["peer"].load.rps, PEER_TARGETS["S1 req/s"], True)
        goal = PEER_TARGETS["CPU per write"]
        both("S1 CPU µs per captured write", cpu_us(s1["proxy"]), cpu_us(s1["peer"]), goal, False)
    return rows


def _lag_row(lag: dict[str, Any]) -> tuple[str, str, str, str]:
    lags: LagResult = lag["lags"]
    measured = f"{_ms(lags.pct(50))} / {_ms(lags.pct(99))} ms ({len(lags.lags_ms)} sampled writes)"
    note = f"{lags.unseen} sampled writes never reached B" if lags.unseen else "every sampled write reached B"
    if len(lags.lags_ms) < 100:
        note += "; under 100 samples, p99 is about the max"
    return ("S1 replication lag p50 / p99, proxy's answer → on B (replay live)", measured, "reported", note)


def _ms(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _met(r: Optional[float], goal: float) -> str:
    return "n/a" if r is None else ("met" if r >= goal else "not met")


def markdown(res: dict[str, Any], meta: dict[str, str], chart: Optional[str]) -> str:
    out = [f"# esproxy bench — {meta['timestamp']}", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k != "timestamp"]
    out += [
        "",
        "## Targets (ratios from this one run)",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(res)]
    rows = peer_rows(res, cpu_us)
    if rows:
        out += [
            "",
            "## esproxy beside the Go original (elasticproxy, `--peer`)",
            "",
            "Each in one process, in this run, on the same cluster A and broker (the ratio is esproxy / Go; "
            "CPU: user + system time of the proxy process during the run / answers wrk received):",
            "",
            PEER_HEADER,
            *[format_row(r) for r in rows],
        ]
    if "S1" in res:
        out += _s1(res["S1"], res)
    if "S4" in res:
        out += _s4(res["S4"])
    if "S2" in res:
        out += _s2(res["S2"])
    if "S3" in res:
        out += _s3(res["S3"])
    if "S5" in res:
        out += _s5(res["S5"], res.get("S1"))
    if chart:
        out += ["", "## Latency chart", "", f"![latency by percentile]({chart})"]
    timings = res.get("timings", {})
    if timings:
        out += ["", "Scenario wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())]
    return "\n".join(out) + "\n"


def _s1(s1: dict[str, Any], res: dict[str, Any]) -> list[str]:
    d, p = s1["direct"].load, s1["proxy"].load
    up = s1["upstream"]
    b_docs = res.get("S4", {}).get("b_docs", "n/a (S4 not run)")
    out = [
        "",
        f"## S1 seed writes: {d.answered} single-doc POST /p1/_doc, {d.connections} connections",
        "",
        SIDE_HEADER,
        _side_row("direct to A", s1["direct"]),
        _side_row("through the proxy (Kafka on)", s1["proxy"]),
    ]
    if "peer" in s1:
        out.append(_side_row("through the Go elasticproxy (peer, Kafka on)", s1["peer"]))
    if "bare" in s1:
        out.append(_side_row("through a bare forwarder (nothing captured)", s1["bare"]))
    if "lag" in s1:
        own = "an index and topic of its own" if s1["lag"].get("shared_clusters") else "clusters of its own"
        out.append(_side_row(f"through the proxy, replay live (lag run, {own})", s1["lag"]["side"]))
    out += [
        "",
        "| ratio to direct | TPS | p50 | p99 |",
        "|---|---|---|---|",
        _ratio_row("proxy", p, d),
    ]
    docs = f"direct index {s1['direct_docs_in_a']}, proxy index {s1['proxy_docs_in_a']}"
    if "peer" in s1:
        out.append(_ratio_row("Go elasticproxy (peer)", s1["peer"].load, d))
        docs += f", peer index {s1['peer_docs_in_a']}"
    if "bare" in s1:
        out.append(_ratio_row("bare forwarder", s1["bare"].load, d))
        docs += f", bare forwarder index {s1['bare_docs_in_a']}"
        out += [
            "",
            "- the bare forwarder (bench/bare_forwarder.py): a gevent WSGIServer with TCP_NODELAY forwarding to A "
            "through geventhttpclient, with no capture, spool, Kafka or log: what the stack itself costs",
        ]
    else:
        out.append("")
    out += [
        f"- upstream connections proxy→A during the run (sampled every 0.5 s): min {up['min']}, "
        f"median {up['median']:.0f}, max {up['max']} (client connections: {p.connections})",
        f"- documents in A: {docs} (wrk stops a thread at its quota and drops its in-flight requests, "
        "which the server may still apply)",
        f"- Kafka records produced: {s1['messages']} (sum of end offsets {s1['end_offsets']}; Tansu's end offset "
        "moves by one per record batch)",
        *_s1_peer_lines(s1),
        f"- B's documents after the replay drained (S4): {b_docs}",
        f"- proxy RSS: idle after start {res.get('started', {}).get('proxy_rss_idle', 0):.1f} MB; S1 start "
        f"{s1['rss']['start']:.1f}, middle {s1['rss']['middle']:.1f}, end {s1['rss']['end']:.1f} MB",
        "",
        "### direct", "", "```", seed_block(s1["direct"]), "```",
        "", "### through the proxy", "", "```", seed_block(s1["proxy"]), "```",
    ]  # fmt: skip
    if "peer" in s1:
        out += ["", "### through the Go elasticproxy (peer)", "", "```", seed_block(s1["peer"]), "```"]
    if "bare" in s1:
        out += ["", "### through the bare forwarder", "", "```", seed_block(s1["bare"]), "```"]
    if "lag" in s1:
        out += _s1_lag(s1["lag"])
    return out


def _s1_peer_lines(s1: dict[str, Any]) -> list[str]:
    if "peer" not in s1:
        return []
    up, rss = s1["peer_upstream"], s1["peer_rss"]
    return [
        f"- the Go elasticproxy (peer): Kafka records on its topic `{s1['peer_topic']}`: {s1['peer_messages']} "
        f"(sum of end offsets {s1['peer_end_offsets']}) for {s1['peer_docs_in_a']} documents in its index; "
        f"upstream connections to A min {up['min']}, median {up['median']:.0f}, max {up['max']}; "
        f"RSS start {rss['start'] or 0:.1f}, middle {rss['middle'] or 0:.1f}, end {rss['end'] or 0:.1f} MB",
    ]


def _s1_lag(lag: dict[str, Any]) -> list[str]:
    lags: LagResult = lag["lags"]
    side = lag["side"].load
    replay = lag["replay_lag_seconds"]
    caught = lag["caught_up_seconds"]
    pcts = (50, 90, 99)
    return [
        "",
        "### replication lag during S1: the proxy side again, with the replay running",
        "",
        f"{side.answered} single-doc POSTs through a proxy in front of a fresh cluster A, its replay (conf2.yml's "
        "settings) into a fresh B running meanwhile; a probe (bench/lag.py) writes documents of its own through "
        f"the proxy next to wrk's and polls B for each with a realtime `_mget` every {lags.poll_ms:.0f} ms. "
        "Lag of a sampled write: B first shows it minus the proxy's answer to it (capture → spool → Kafka → "
        "replay → B).",
        "",
        "| lag (ms) | " + " | ".join(f"p{p}" for p in pcts) + " | max | sampled writes |",
        "|---|" + "---|" * (len(pcts) + 2),
        "| proxy's answer → on B | "
        + " | ".join(_ms(lags.pct(p)) for p in pcts)
        + f" | {_ms(lags.pct(100))} | {len(lags.lags_ms)} |",
        "| probe's write through the proxy | "
        + " | ".join(_ms(percentile(lags.write_ms, p)) for p in pcts)
        + f" | {_ms(percentile(lags.write_ms, 100))} | {lags.written} |",
        "",
        f"- sampled writes: {lags.written} acknowledged, {lags.failed} failed, {lags.unseen} not on B 60 s after "
        f"the load ended; resolution: one poll ({lags.poll_ms:.0f} ms) plus one `_mget`",
        f"- the replay's own view (`/_esproxy/stats` `replay.consumer_lag` `lag_seconds`: age of the oldest record "
        f"fetched and not yet applied, read every {lag['replay_lag_interval']:g} s): max "
        f"{max(replay, default=0.0) * 1000:.0f} ms over {len(replay)} readings, "
        f"{sum(1 for x in replay if x > 0)} with a record waiting",
        f"- documents: A {lag['docs_in_a']}, B {lag['docs_in_b']}; B "
        + (f"caught up {caught:.1f} s after the load ended" if caught is not None else "had not caught up 120 s later"),
        f"- the proxy side's req/s here ({side.rps:.0f}) is not S1's ratio: the replay and B share the machine's "
        "cores with A, the proxy and wrk during this run",
    ]


def _ratio_row(label: str, side: LoadResult, direct: LoadResult) -> str:
    return (
        f"| {label} | {fmt_ratio(ratio(side.rps, direct.rps))} | {fmt_ratio(ratio(side.pct(50), direct.pct(50)))} | "
        f"{fmt_ratio(ratio(side.pct(99), direct.pct(99)))} |"
    )


def _s4(s4: dict[str, Any]) -> list[str]:
    if "skipped" in s4:
        return ["", "## S4 replay", "", f"skipped: {s4['skipped']}"]
    r = ratio(s4["replay_rate"], s4["bulk_rate"])
    return [
        "",
        "## S4 replay: drain S1's captured writes into B vs a direct _bulk of the same documents",
        "",
        "| | documents | seconds | docs/s |",
        "|---|---|---|---|",
        f"| replay role (conf2.yml settings) | {s4['b_docs']} of {s4['expected']} | {s4['drain_seconds']:.1f} | "
        f"{s4['replay_rate']:.0f} |",
        f"| direct _bulk, 500 per request, one connection | {s4['bulk_docs']} | {s4['bulk_seconds']:.1f} | "
        f"{s4['bulk_rate']:.0f} |",
        "",
        f"- ratio replay/direct _bulk: {fmt_ratio(r)}; the drain is timed from `assigned partitions` "
        f"(joining the group took {s4['join_seconds']:.1f}s after the start) until B counts every record",
        f"- replay process: {s4['replay_cpu'] / s4['drain_seconds'] if s4['drain_seconds'] else 0:.2f} cores busy, "
        f"RSS {s4['replay_rss'] or 0:.1f} MB at the end",
    ]


def _s2(s2: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"## S2 capacity: GET of one small document ({s2['body_bytes']} bytes), timed runs",
        "",
        SIDE_HEADER,
        _side_row("direct to A (osmem)", s2["direct"]),
        _side_row("through the proxy", s2["proxy"]),
        *[_side_row("through the proxy, accesslog: false", s2[k]) for k in ("proxy_noaccesslog",) if k in s2],
        *[_side_row("through the Go elasticproxy (peer)", s2[k]) for k in ("peer",) if k in s2],
        *[_side_row("through the Go elasticproxy, accesslog: false", s2[k]) for k in ("peer_noaccesslog",) if k in s2],
        _side_row("bare gevent WSGIServer (same body)", s2["bare"]),
        _side_row("bare gevent WSGIServer + TCP_NODELAY", s2["bare_nodelay"]),
    ]
    if "proxy_2_workers" in s2:
        out.append(_side_row("proxy, workers: 2", s2["proxy_2_workers"]))
    if "paced_2_workers" in s2:
        out.append(_side_row(f"proxy, paced ({s2['paced_think_ms']} ms between requests)", s2["paced_1_worker"]))
        out.append(_side_row("proxy, workers: 2, paced (the same)", s2["paced_2_workers"]))
    out += [
        "",
        f"- proxy / bare WSGIServer: {fmt_ratio(ratio(s2['proxy'].load.rps, s2['bare'].load.rps))}; "
        "proxy / bare WSGIServer + TCP_NODELAY: "
        f"{fmt_ratio(ratio(s2['proxy'].load.rps, s2['bare_nodelay'].load.rps))}; "
        f"proxy / direct: {fmt_ratio(ratio(s2['proxy'].load.rps, s2['direct'].load.rps))}",
        "- the bare WSGIServer is gevent's as it comes: it writes headers and body separately, and without "
        "TCP_NODELAY the body waits for the client's delayed ACK (~40 ms), so its req/s is 100 connections / "
        "~45 ms whatever the CPU; the TCP_NODELAY row is the server's real CPU ceiling on this machine",
        "- CPU (cores busy on average) — "
        + "; ".join(_cpu(name, s2[name]) for name in ("direct", "proxy", "peer", "bare", "bare_nodelay") if name in s2),
        "- server CPU µs/answer: user + system CPU of the server under test (the proxy with its workers, "
        "or the bare server; not osmem A) during the run, divided by the answers wrk received",
    ]
    if "proxy_2_workers" in s2:
        out.append("- CPU (cores busy on average) — " + _cpu("proxy, workers: 2", s2["proxy_2_workers"]))
    if "paced_2_workers" in s2:
        out.append(
            f"- paced runs: each of the {s2['paced_1_worker'].load.connections} connections waits "
            f"{s2['paced_think_ms']} ms after each answer (bench/lua/load.lua's delay()), for about "
            "half what one worker answers flat out; CPU (cores busy on average) — "
            + "; ".join(
                _cpu(name, s2[key]) for name, key in (("1 worker", "paced_1_worker"), ("2 workers", "paced_2_workers"))
            )
        )
    if s2.get("worker_rows"):
        rows = ", ".join(
            f"worker {w['slot']}: {w['connections']} connections, {w['requests']} requests" for w in s2["worker_rows"]
        )
        out.append(f"- workers: 2, per worker (the master's /_esproxy/stats after the run): {rows}")
    if "workers_unavailable" in s2:
        out.append(f"- 2 workers vs 1: not available (`workers: 2` rejected: {s2['workers_unavailable']})")
    return out


def _cpu(name: str, side: Side) -> str:
    r = side.load
    parts = [f"wrk {r.client_cpu / r.elapsed:.2f}"] + [f"{k} {v / r.elapsed:.2f}" for k, v in side.cpu.items()]
    return f"{name}: " + ", ".join(parts)


def _s3(s3: dict[str, Any]) -> list[str]:
    rows = []
    rates = {}
    for side in ("direct", "proxy"):
        r = s3[side].load
        rates[side] = r.ok() * s3["bulk_size"] / r.elapsed if r.elapsed else 0
        rows.append(
            f"| {side} | {r.answered} | {rates[side]:.0f} | {r.pct(50):.0f} | {r.pct(99):.0f} | {_statuses(r)} | "
            f"{s3[side + '_docs_in_a']} |"
        )
    return [
        "",
        f"## S3 bulk: _bulk with {s3['bulk_size']} docs per request, {s3['connections']} connections",
        "",
        "| side | requests | docs/s | p50 ms | p99 ms | statuses | docs in A |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- docs/s proxy/direct: {fmt_ratio(ratio(rates['proxy'], rates['direct']))}",
        "- CPU (cores busy on average) — " + "; ".join(_cpu(name, s3[name]) for name in ("direct", "proxy")),
    ]


def _s5(s5: dict[str, Any], s1: Optional[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "## S5 durability: S1's proxy side per `durability` value (and in 2 pre-fork workers)",
        "",
        "| durability | req/s | ratio to S1 direct | p99 ms | Kafka records | docs in A |",
        "|---|---|---|---|---|---|",
    ]
    for value, res in s5.items():
        if "unavailable" in res:
            out.append(f"| {value} | not available: {res['unavailable']} | | | | |")
            continue
        r = res["proxy"].load
        base = s1["direct"].load.rps if s1 else 0
        out.append(
            f"| {value} | {r.rps:.0f} | {fmt_ratio(ratio(r.rps, base))} | {r.pct(99):.1f} | {res['messages']} | "
            f"{res['docs_in_a']} |"
        )
    return out


def _ratio_panel(ax: Any, rows: list[Any]) -> None:
    """esproxy / Go elasticproxy per figure, a bar from 1 to the ratio; green where esproxy is the better one."""
    ys = list(range(len(rows)))[::-1]
    colors = [
        "tab:gray" if r.ratio == 1 else ("tab:green" if (r.ratio > 1) == (r.better == "higher") else "tab:red")
        for r in rows
    ]
    ax.barh(ys, [r.ratio - 1 for r in rows], left=1, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [r.figure.replace(", proxy CPU", " CPU").split(" (")[0] for r in rows], fontsize=7)
    for y, r in zip(ys, rows):
        ax.text(r.ratio, y, f" {r.ratio:.2f}", va="center", fontsize=7)
    ax.set_xscale("log")
    lo = math.floor(math.log2(min(r.ratio for r in rows + [PeerRow("", 1, 1, "")]) / 1.2))
    hi = math.ceil(math.log2(max(r.ratio for r in rows + [PeerRow("", 1, 1, "")]) * 1.2))
    ax.set_xlim(2.0**lo, 2.0**hi)
    ax.set_xticks([2.0**k for k in range(lo, hi + 1)], [f"{2.0**k:g}" for k in range(lo, hi + 1)])
    ax.set_xticks([], minor=True)
    ax.set_title("esproxy / Go elasticproxy (green: esproxy ahead)", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)


CHART_LABELS = {"peer": "Go elasticproxy", "peer_noaccesslog": "Go elasticproxy, no accesslog"}


def chart(res: dict[str, Any], path: Path) -> Optional[str]:
    """Latency by percentile for S1 and S2 (and S3), with a peer a panel of the ratios esproxy / peer; one PNG;
    None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [(name, res[name]) for name in ("S1", "S2", "S3") if name in res]
    if not panels:
        return None
    ratios = [r for r in peer_rows(res, cpu_us) if r.ratio is not None]
    fig, axes = plt.subplots(
        1, len(panels) + bool(ratios), figsize=(6 * (len(panels) + bool(ratios)), 4.5), squeeze=False
    )
    ticks = [50, 90, 99, 99.9, 99.99]
    for ax, (name, scen) in zip(axes[0], panels):
        for side in (
            "direct",
            "proxy",
            "proxy_noaccesslog",
            "peer",
            "peer_noaccesslog",
            "bare",
            "bare_nodelay",
            "proxy_2_workers",
            "paced_2_workers",
        ):
            if side not in scen:
                continue
            r: LoadResult = scen[side].load
            pts = [(p, us) for p, us in r.percentiles_us if p < 100]
            xs = [-math.log10(1 - p / 100) for p, _ in pts]
            label = CHART_LABELS.get(side, side)
            ax.plot(xs, [us / 1000 for _, us in pts], label=f"{label} ({r.rps:.0f} req/s)")
        ax.set_xticks([-math.log10(1 - p / 100) for p in ticks], [f"P{p:g}" for p in ticks])
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{name}: latency by percentile")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if ratios:
        _ratio_panel(axes[0][-1], ratios)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
