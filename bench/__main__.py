"""``python -m bench`` (``make bench``): start the servers, run the scenarios, write the report.

    python -m bench [--n N] [--only S1,S4] [--s2-seconds 10] [--s3-requests 40] [--lag-n 20000]
                    [--engines stand-in|real [--real-pair es-os|os-es]] [--peer PATH]

``--peer PATH``: S1 and S2 also run through the Go elasticproxy binary at PATH, beside esproxy
(bench/peer.py; how to build it: docs/performance.md). Without it the bench runs without the peer.

Everything runs on 127.0.0.1 on free ports; every process started is stopped at the end, on failure
and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from . import report
from .load import ensure_wrk
from .peer import PeerError, check_binary
from .scenarios import Bench, Options
from .servers import REPO, Stack

RESULTS = REPO / "bench" / "results"


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="esproxy side-by-side benchmark (issue 6)")
    p.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N") or 20000), help="S1 writes per side")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--s2-seconds", type=float, default=10.0)
    p.add_argument("--s3-requests", type=int, default=60, help="_bulk requests per side")
    p.add_argument("--lag-n", type=int, default=20000, help="writes of S1's lag run (at most N; 0: none)")
    p.add_argument("--lag-rate", type=float, default=25.0, help="lag probe writes per second in it")
    p.add_argument("--only", default="S1,S2,S3,S4,S5", help="comma-separated scenarios")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--engines",
        choices=["stand-in", "real"],
        default="stand-in",
        help="stand-in: osmem and Tansu; real: Elasticsearch, OpenSearch and Kafka JVMs (docs/real-engines.md)",
    )
    p.add_argument("--real-pair", choices=["es-os", "os-es"], default="es-os", help="with --engines real: A-B")
    p.add_argument(
        "--peer",
        type=Path,
        metavar="PATH",
        help="the Go elasticproxy binary: S1 and S2 also run through it, beside esproxy (make bench-peer builds it)",
    )
    return p.parse_args(argv)


def _meta(opts: Options, stamp: str, command: str) -> dict[str, str]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    lag_n = min(opts.n, opts.lag_n)
    lag_run = f"S1's lag run N={lag_n} with {opts.lag_rate:g} probe writes/s" if lag_n > 0 else "no S1 lag run"
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {
        "timestamp": stamp,
        "command": f"`{command}`",
        "machine": f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}",
        "software": f"esproxy {rev.stdout.strip()}, Python {platform.python_version()}, gevent {version('gevent')}, "
        f"urllib3 {version('urllib3')}, osmem-server {version('osmem-server')}, wrk (Debian)",
        "sizes": f"S1 N={opts.n} per side at {opts.connections} connections; S2 {opts.s2_seconds:g}s per side; "
        f"S3 {opts.s3_requests} × _bulk of {opts.bulk_size}; " + lag_run,
        "setup": "osmem A and B, Tansu, the proxy (conf1.yml's settings) and the replay (conf2.yml's) on free "
        "loopback ports, all on this machine (load generator included); the replay runs during S4, and in "
        "S1's lag run on a second pair of clusters and a topic of their own",
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = _args(argv)
    opts = Options(
        n=args.n,
        connections=args.connections,
        threads=args.threads,
        s2_seconds=args.s2_seconds,
        s3_requests=args.s3_requests,
        lag_n=args.lag_n,
        lag_rate=args.lag_rate,
        scenarios=tuple(s.strip().upper() for s in args.only.split(",") if s.strip()),
        peer=args.peer.resolve() if args.peer else None,
    )
    peer_about = ""
    if opts.peer:
        try:
            peer_about = check_binary(opts.peer)
        except PeerError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2
        if not {"S1", "S2"} & set(opts.scenarios):
            print(f"bench: --peer runs in S1 and S2 only, and --only {args.only} has neither", file=sys.stderr)
            return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out
    workdir = out / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_wrk()
    command = os.environ.get("BENCH_COMMAND") or "python -m bench " + " ".join(argv)
    # Ctrl-C and SIGTERM both unwind to the `finally` below (SIGINT explicitly: a shell that starts
    # the bench in the background leaves it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack(workdir, real_pair=args.real_pair if args.engines == "real" else "")
    bench = Bench(opts, stack, workdir)
    t0 = time.monotonic()
    try:
        bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except PeerError as e:
        print(f"bench: {e}\n(logs in {workdir})", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"bench: failed: {e}\n(logs in {workdir})", file=sys.stderr)
        raise
    finally:
        real_engines = stack.engines_line()
        stack.close()
        (workdir / "people.txt").unlink(missing_ok=True)
    meta = _meta(opts, stamp, command)
    if stack.real:
        meta["engines"] = real_engines
        meta["setup"] = (
            meta["setup"]
            .replace("osmem A and B, Tansu", "the real engines below")
            .replace("on a second pair of clusters", "on the same clusters (an index")
            .replace("and a topic of their own", "and a topic of its own)")
        )
    if opts.peer:
        dropped = bench.results.get("peer", {}).get("not_carried_over", [])
        meta["peer"] = (
            f"the Go elasticproxy {opts.peer} ({peer_about}) in S1 and S2: the same A and broker, conf1.yml's "
            "settings in its config, a port and a topic of its own; not carried over (no equivalent): "
            + (", ".join(f"`{k}`" for k in dropped) or "nothing")
        )
    meta["duration"] = f"{time.monotonic() - t0:.0f}s for the whole run; servers' logs and configs in {workdir.name}/"
    png = report.chart(bench.results, out / f"latency-{stamp}.png")
    if png is None:
        meta["chart"] = "not drawn: matplotlib is missing (pip install -e '.[bench]')"
    text = report.markdown(bench.results, meta, png)
    path = out / f"report-{stamp}.md"
    path.write_text(text, encoding="utf-8")
    shutil.copyfile(path, out / "latest.md")
    print(text)
    print(f"bench: report {path} (and {out / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
