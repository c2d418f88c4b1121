"""The Go original (github.com/bingoohuang/elasticproxy) as a peer in the bench (issue 24).

``python -m bench --peer PATH`` runs S1 and S2 through that binary too, beside esproxy, on the same
cluster A and the same broker. This module holds what is pure: the Go tool's config rendered from the
esproxy proxy config the bench uses (conf1.yml's settings), the check of the binary, and the rows that
put the two side by side with the ratio esproxy / peer.

What the Go tool reads (its pkg/model Config at ed4d43a): ``chanSize``; ``source.proxies[]`` with
``port``, ``accesslog``, ``header``, ``labels``; ``destination.primaries[]`` with ``url``, ``timeout``,
``header``; ``destination.kafkas[]`` with ``topic``, ``brokers``, ``codec``, ``version``. Its producer
is always sarama's asynchronous one with WaitForLocal (``sync`` and ``requiredAcks`` are not read),
it listens on every interface (no ``host``), and it logs through golog into the file named by
``GOLOG_FILE`` (without it: /var/log/<cwd's name>/ as root).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

PEER_NAME = "elasticproxy"  # the peer's process in a Side's CPU map

# Per section: the keys the Go tool reads, spelled as in its own conf.yml.
_PROXY_KEYS = ("port", "accesslog", "header", "labels")
_PRIMARY_KEYS = ("url", "timeout", "header")
_KAFKA_KEYS = ("topic", "brokers", "codec", "version")


class PeerError(RuntimeError):
    """The peer binary is missing, does not run, or did not start."""


def _pick(section: dict[str, Any], keys: tuple[str, ...], where: str, dropped: list[str]) -> dict[str, Any]:
    """``section``'s values for ``keys`` (matched case-insensitively, as esproxy does); every other
    key is named in ``dropped`` as ``where.key``."""
    by_lower = {k.lower(): k for k in section}
    out = {key: section[by_lower[key.lower()]] for key in keys if key.lower() in by_lower}
    wanted = {key.lower() for key in keys}
    dropped += [f"{where}.{k}" for k in section if k.lower() not in wanted]
    return out


def peer_config(esproxy_conf: dict[str, Any], port: int) -> tuple[dict[str, Any], list[str]]:
    """The Go tool's config equivalent to the esproxy proxy config ``esproxy_conf`` (one proxy), listening
    on ``port``: (config, the esproxy keys it has no equivalent for, as key paths)."""
    conf = {k.lower(): v for k, v in esproxy_conf.items()}
    dropped: list[str] = [k for k in esproxy_conf if k.lower() not in ("chansize", "source", "destination")]
    source = {k.lower(): v for k, v in (conf.get("source") or {}).items()}
    dest = {k.lower(): v for k, v in (conf.get("destination") or {}).items()}
    proxies = source.get("proxies") or []
    if len(proxies) != 1:
        raise ValueError(f"source.proxies: the peer takes one proxy, got {len(proxies)}")
    proxy = _pick(proxies[0], _PROXY_KEYS, "source.proxies[0]", dropped)
    proxy["port"] = port
    primaries = [
        _pick(p, _PRIMARY_KEYS, f"destination.primaries[{i}]", dropped)
        for i, p in enumerate(dest.get("primaries") or [])
    ]
    if not primaries:
        raise ValueError("destination.primaries: the peer needs cluster A")
    kafkas = [
        _pick(k, _KAFKA_KEYS, f"destination.kafkas[{i}]", dropped) for i, k in enumerate(dest.get("kafkas") or [])
    ]
    dropped += [f"source.{k}" for k in source if k != "proxies"]
    dropped += [f"destination.{k}" for k in dest if k not in ("primaries", "kafkas")]
    out: dict[str, Any] = {}
    if "chansize" in conf:
        out["chanSize"] = conf["chansize"]
    out["source"] = {"proxies": [proxy]}
    out["destination"] = {"primaries": primaries, **({"kafkas": kafkas} if kafkas else {})}
    return out, dropped


def check_binary(path: Path) -> str:
    """What the binary says of itself (its ``-v`` and, with a Go toolchain at hand, ``go version -m``'s first
    line); PeerError when it is missing, not executable, or ``-v`` fails."""
    path = path.resolve()
    if not path.is_file():
        raise PeerError(f"--peer {path}: no such file (build it with `make bench-peer`, docs/performance.md)")
    try:
        r = subprocess.run([str(path), "-v"], capture_output=True, text=True, timeout=30, cwd="/")
    except OSError as e:
        raise PeerError(f"--peer {path}: cannot run it: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"--peer {path}: `-v` did not answer within 30 s") from e
    if r.returncode != 0:
        raise PeerError(f"--peer {path}: `-v` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
    version = next(
        (ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.lower().startswith("version")), ""
    )
    parts = [f"elasticproxy {version}" if version else "version not shown"]
    source = path.with_name(path.name + ".source")
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if source.is_file():  # written by ops/build-peer: what the binary was built from, and with which Go
        parts.append(source.read_text(encoding="utf-8").strip())
    elif go:
        info = subprocess.run([go, "version", "-m", str(path)], capture_output=True, text=True, timeout=30)
        if info.returncode == 0 and info.stdout:
            parts.append("built with " + info.stdout.splitlines()[0].rsplit(" ", 1)[-1])
    return ", ".join(parts)


# ---------------------------------------------------------------------- side by side


@dataclass
class PeerRow:
    """One figure for esproxy and the peer (and direct to A where it has one)."""

    figure: str
    esproxy: Optional[float]
    peer: Optional[float]
    better: str  # "higher" or "lower"
    direct: Optional[float] = None
    digits: int = 0

    @property
    def ratio(self) -> Optional[float]:
        """esproxy / peer (None when either is missing or the peer's is 0)."""
        if self.esproxy is None or not self.peer:
            return None
        return self.esproxy / self.peer


def _num(v: Optional[float], digits: int) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def format_row(row: PeerRow) -> str:
    ratio = "n/a" if row.ratio is None else f"{row.ratio:.2f}×"
    return (
        f"| {row.figure} | {_num(row.esproxy, row.digits)} | {_num(row.peer, row.digits)} | **{ratio}** | "
        f"{row.better} is better | {_num(row.direct, row.digits)} |"
    )


PEER_HEADER = "| figure | esproxy | elasticproxy (Go) | esproxy / Go | | direct to A |\n|---|---|---|---|---|---|"


def load_rows(
    scenario: str, what: str, esproxy: Any, peer: Any, direct: Any, cpu_us: Callable[[Any], Optional[float]]
) -> list[PeerRow]:
    """req/s, p50, p99 and CPU µs per request of one scenario's esproxy and peer Sides (bench.scenarios.Side)."""
    e, p, d = esproxy.load, peer.load, direct.load if direct else None
    return [
        PeerRow(f"{scenario} {what}, req/s", e.rps, p.rps, "higher", d.rps if d else None),
        PeerRow(f"{scenario} p50 ms", e.pct(50), p.pct(50), "lower", d.pct(50) if d else None, 1),
        PeerRow(f"{scenario} p99 ms", e.pct(99), p.pct(99), "lower", d.pct(99) if d else None, 1),
        PeerRow(f"{scenario} proxy CPU µs per request", cpu_us(esproxy), cpu_us(peer), "lower"),
    ]


def peer_rows(res: dict[str, Any], cpu_us: Callable[[Any], Optional[float]]) -> list[PeerRow]:
    """Every figure the bench measured for both esproxy and the peer in this run."""
    rows: list[PeerRow] = []
    s1, s2 = res.get("S1") or {}, res.get("S2") or {}
    if "peer" in s1:
        rows += load_rows("S1", "captured POST", s1["proxy"], s1["peer"], s1["direct"], cpu_us)
        records = "S1 Kafka records / documents written through it to A"
        rows.append(
            PeerRow(
                records,
                _share(s1, "proxy_docs_in_a", "messages"),
                _share(s1, "peer_docs_in_a", "peer_messages"),
                "higher",
                digits=3,
            )
        )
    if "peer" in s2:
        rows += load_rows("S2", "GET one document", s2["proxy"], s2["peer"], s2["direct"], cpu_us)
    if "peer_noaccesslog" in s2 and "proxy_noaccesslog" in s2:
        quiet = load_rows("S2", "accesslog: false", s2["proxy_noaccesslog"], s2["peer_noaccesslog"], None, cpu_us)
        rows += [quiet[0], quiet[3]]
        rows[-1].figure = "S2 accesslog: false, proxy CPU µs per request"
    peak = res.get("peak_rss") or {}
    if "peer" in peak:
        figure = f"peak RSS MB (VmHWM: the process's peak from its start to the end of {peak['after']})"
        rows.append(PeerRow(figure, peak["esproxy"], peak["peer"], "lower", digits=1))
    return rows


def _share(s1: dict[str, Any], docs_key: str, records_key: str) -> Optional[float]:
    docs = s1.get(docs_key)
    return s1[records_key] / docs if docs else None
