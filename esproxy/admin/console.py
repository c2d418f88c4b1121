"""``/_esproxy/ui``: the console, a page to look at (esproxy/admin/ui/: index.html, console.css, console.js).

The server renders the page with the current figures in it (health's verdict and reasons, the proxy's and
the replay's tables), so that it reads without JavaScript; the script then fetches
``/_esproxy/ui/refresh?after=T`` every few seconds (one request: the same tables as an HTML fragment, and the
samples taken since its last), draws the charts, and sends pause / resume / stop of a sync rule to
``/_esproxy/sync/``, the admin API ``esproxy sync`` calls. ``/_esproxy/ui/series[?after=T]``: the samples
alone, JSON. Every path needs what the other admin paths need (``admin.header``, or the proxy's
``source.proxies[].header`` on its own port); refused, the page itself answers 401 with a form that keeps
the header in the tab's sessionStorage and sends it with the script's requests.

:class:`Series`: the ring buffer the charts are drawn from, one sample every :data:`EVERY` seconds, at most
:data:`BOUND` (an hour), each :data:`FIELDS` numbers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any, Iterable, Optional, Sequence

from .snapshot import Snapshot

EVERY = 5.0  # seconds between samples
BOUND = 720  # samples kept: an hour at EVERY
# Each sample: time.time(), then counters since start (requests answered, writes captured, Kafka messages the
# replay consumed, errors: 5xx answers + messages Kafka did not take + dead letters), then two gauges (the
# replay's lag now: the oldest record not applied, max over partitions, in seconds; records behind, summed).
FIELDS = ("t", "requests", "captured", "replayed", "errors", "lag_seconds", "lag_records")

HTML_TYPE = ("Content-Type", "text/html; charset=utf-8")
JSON_TYPE = ("Content-Type", "application/json")


class Series:
    """The last :data:`BOUND` samples, oldest first; a sample is a tuple of :data:`FIELDS`."""

    def __init__(self, bound: int = BOUND, every: float = EVERY) -> None:
        self.every = every
        self.points: deque[tuple[float, ...]] = deque(maxlen=bound)
        self._json: Optional[bytes] = None  # the whole series' JSON, until the next sample

    def add(self, point: Sequence[float]) -> None:
        if len(point) != len(FIELDS):
            raise ValueError(f"a sample has {len(FIELDS)} numbers ({', '.join(FIELDS)}), not {len(point)}")
        self.points.append(tuple(point))
        self._json = None

    def rate(self, field: str) -> Optional[float]:
        """Per second between the last two samples; None before two."""
        if len(self.points) < 2:
            return None
        i = FIELDS.index(field)
        (t0, *_), (t1, *_) = self.points[-2], self.points[-1]
        a, b = self.points[-2][i], self.points[-1][i]
        return max(0.0, (b - a) / (t1 - t0)) if t1 > t0 else None

    def doc(self, after: float = 0.0) -> dict[str, Any]:
        """``{"every", "bound", "fields", "points"}``: the samples taken after ``after`` (a time.time())."""
        points = [p for p in self.points if p[0] > after] if after > 0 else list(self.points)
        return {"every": self.every, "bound": self.points.maxlen, "fields": FIELDS, "points": points}

    def as_json(self, after: float = 0.0) -> bytes:
        """:meth:`doc` as JSON (the whole series' kept until the next sample)."""
        if after <= 0 and self._json is not None:
            return self._json
        data = json.dumps(self.doc(after), separators=(",", ":")).encode()
        if after <= 0:
            self._json = data
        return data


def sample(snap: Snapshot, now: float) -> tuple[float, ...]:
    """One sample of :data:`FIELDS` from a snapshot."""
    proxy, replay = snap.proxy, snap.replay
    requests = sum(proxy.requests.values())
    errors = sum(n for key, n in proxy.requests.items() if key.rsplit(" ", 1)[-1].startswith("5"))
    errors += sum(n for reasons in proxy.kafka.failed.values() for n in reasons.values()) + replay.dead_letters
    lags = replay.consumer_lag
    lag_seconds = max((p.lag_seconds for p in lags), default=0.0)
    lag_records = sum(p.lag or 0 for p in lags)
    return (round(now, 3), requests, proxy.writes_captured, replay.messages, errors, round(lag_seconds, 3), lag_records)


# ---------------------------------------------------------------------- the page's files


@dataclass(frozen=True)
class Assets:
    page: str  # index.html with the style and the script in it
    csp: str  # Content-Security-Policy: the inline style and script by their hashes, nothing else
    weight: int  # bytes of index.html + console.css + console.js


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_ASSETS: Optional[Assets] = None


def assets() -> Assets:
    """The page's files, read once from the package (esproxy/admin/ui/)."""
    global _ASSETS
    if _ASSETS is None:
        folder = resources.files("esproxy.admin") / "ui"
        html, css, js = (
            (folder / name).read_text(encoding="utf-8") for name in ("index.html", "console.css", "console.js")
        )
        page = html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", js)
        csp = (
            f"default-src 'none'; style-src {_hash(css)}; script-src {_hash(js)}; connect-src 'self';"
            " img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        weight = sum(len(t.encode()) for t in (html, css, js))
        _ASSETS = Assets(page, csp, weight)
    return _ASSETS


def page_headers() -> list[tuple[str, str]]:
    return [
        HTML_TYPE,
        ("Content-Security-Policy", assets().csp),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


def page(panel: str, title: str, refused: bool = False) -> bytes:
    """The whole page: ``panel`` (the HTML :func:`panel` renders) in it; ``refused``: the 401 page, no figures
    and the form that asks for the admin header."""
    out = assets().page.replace("<!--PANEL-->", panel).replace("<!--TITLE-->", escape(title))
    if refused:
        out = out.replace('<form id="login" hidden', '<form id="login"')
    return out.encode()


def login_page() -> bytes:
    note = (
        '<section class="card"><h2>Admin header needed</h2><p>This port requires a header '
        "(<code>admin.header</code>, or <code>source.proxies[].header</code> on the proxy's port). "
        "Enter it below: the page keeps it in this tab only (sessionStorage) and sends it with its requests. "
        "This needs JavaScript; with <code>Authorization: Basic</code>, the browser asks for the user and "
        "password itself.</p></section>"
    )
    return page(note, "esproxy: admin header needed", refused=True)


# ---------------------------------------------------------------------- the panel (server-rendered)


@dataclass
class PanelData:
    """What the panel shows, gathered by esproxy.admin.server.Admin.console_data."""

    verdict: str  # ok / unhealthy / stopping
    reasons: list[dict[str, str]]
    roles: tuple[str, ...]
    snap: Snapshot
    series: Series
    rules: Optional[list[dict[str, Any]]]  # None: no replay (no /_esproxy/sync/)
    indices: list[dict[str, Any]]
    dead_letters: list[tuple[float, str]]  # (time.time(), reason), the latest last


def panel(d: PanelData, now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    out = [_health(d), _overview(d)]
    if "proxy" in d.roles:
        out.append(_proxy(d))
    if "replay" in d.roles:
        out.append(_replay(d, now))
    out.append(_dead_letters(d, now))
    return "\n".join(x for x in out if x)


def _health(d: PanelData) -> str:
    if d.reasons:
        items = "".join(f"<li><b>{escape(r['check'])}</b>: {escape(r['reason'])}</li>" for r in d.reasons)
        reasons = f'<ul class="reasons">{items}</ul>'
    else:
        reasons = "<p>Captured writes are on their way to the other cluster.</p>"
    return (
        f'<section class="card health {escape(d.verdict)}" id="health"><h2>Health: '
        f'<span id="verdict" class="verdict">{escape(d.verdict)}</span></h2>{reasons}</section>'
    )


def _overview(d: PanelData) -> str:
    s = d.snap
    roles = " + ".join(d.roles) or "admin"
    figures = [("roles", roles), ("version", s.version), ("pid", str(s.pid)), ("uptime", _secs(s.uptime_seconds))]
    if s.workers is not None:
        figures.append(("workers", str(len(s.workers))))
    return _figures("overview", "Process", figures)


def _proxy(d: PanelData) -> str:
    p, s = d.snap.proxy, d.snap
    failed = sum(n for reasons in p.kafka.failed.values() for n in reasons.values())
    figures = [
        ("requests/s", _rate(d.series.rate("requests"))),
        ("captured writes/s", _rate(d.series.rate("captured"))),
        ("requests", _n(sum(p.requests.values()))),
        ("writes captured", _n(p.writes_captured)),
        ("unshipped: queue", f"{_n(p.queue.depth)} / {_n(p.queue.capacity)}"),
        ("unshipped: spool", f"{_n(p.spool.records)} ({_bytes(p.spool.bytes)})"),
        ("oldest unshipped", _secs(p.oldest_unshipped_seconds)),
        ("Kafka took", _n(sum(p.kafka.produced.values()))),
        ("Kafka refused", _n(failed)),
        (
            "in flight",
            f"{_bytes(p.in_flight.bytes)}" + (f" / {_bytes(p.in_flight.limit)}" if p.in_flight.limit else ""),
        ),
    ]
    out = [_figures("proxy", "Proxy", figures)]
    failing = [(t, r, n) for t, reasons in p.kafka.failed.items() for r, n in reasons.items()]
    if failing:
        out.append(_table("kafka-failed", "Kafka refusals", ("topic", "reason", "messages"), failing))
    if s.followers or p.reads or p.read_fallbacks:
        rows = [
            (f.cluster, f.state, "yes" if f.usable else "no", _secs(f.lag_seconds), _secs(f.max_lag_seconds), f.problem)
            for f in s.followers
        ]
        out.append(
            _table(
                "followers",
                "Read routing: followers",
                ("cluster", "state", "usable", "lag", "max lag", "problem"),
                rows,
            )
        )
        reads = [(c, _n(n)) for c, n in p.reads.items()] + [
            (f"leader instead ({r})", _n(n)) for r, n in p.read_fallbacks.items()
        ]
        out.append(_table("reads", "Reads answered", ("by", "reads"), reads))
    sw = s.switchover
    if sw is not None:
        if isinstance(sw, dict):
            out.append(_figures("switchover", "Leader and switchover", [("state", "unknown yet (starting)")]))
        else:
            last = sw.last_switch or {}
            figures = [
                ("leader", sw.leader),
                ("config primary", sw.config_primary),
                ("writes", f"paused ({sw.mode}, {_secs(sw.paused_seconds)})" if sw.paused else "flowing"),
                ("writes in flight", _n(sw.writes_in_flight)),
                ("refused while paused", _n(sw.writes_refused)),
                ("switches", _n(sw.switches)),
            ]
            if last:
                figures.append(
                    ("last switch", ", ".join(f"{k}: {v}" for k, v in last.items() if not isinstance(v, (dict, list))))
                )
            out.append(_figures("switchover", "Leader and switchover", figures))
    if p.workers:
        rows = [(w.slot, w.pid, _n(w.connections), _n(w.requests)) for w in p.workers]
        out.append(_table("workers", "Workers", ("slot", "pid", "connections", "requests"), rows))
    return "\n".join(out)


def _replay(d: PanelData, now: float) -> str:
    r = d.snap.replay
    lag_now = max((x.lag_seconds for x in r.consumer_lag), default=0.0)
    figures = [
        ("messages/s", _rate(d.series.rate("replayed"))),
        ("messages", _n(r.messages)),
        ("bytes", _bytes(r.bytes)),
        ("lag now", _secs(lag_now)),
        ("records behind", _n(sum(x.lag or 0 for x in r.consumer_lag))),
        ("throttled", _secs(r.throttled_seconds)),
        ("refused by the target", _n(sum(r.skipped.values()))),
        ("skipped: no rule", _n(sum(r.skipped_by_rules.values()))),
    ]
    out = [_figures("replay", "Replay", figures)]
    if d.rules is not None:
        totals: dict[str, list[int]] = {}
        for i in d.indices:
            t = totals.setdefault(i["rule"], [0, 0, 0])
            t[0], t[1], t[2] = t[0] + i["docs"], t[1] + i["bytes"], t[2] + i["failures"]
        rows = []
        for rule in d.rules:
            docs, nbytes, failures = totals.get(rule["name"], [0, 0, 0])
            rows.append(
                (
                    rule["name"],
                    _Raw(f'<span class="state {escape(rule["state"])}">{escape(rule["state"])}</span>'),
                    ", ".join(rule["indices"]) + (f" (not {', '.join(rule['exclude'])})" if rule["exclude"] else ""),
                    rule["rename"],
                    _n(docs),
                    _bytes(nbytes),
                    _n(failures),
                    _Raw(_buttons(rule["name"], rule["state"])),
                )
            )
        head = ("rule", "state", "indices", "in B as", "documents", "bytes", "failures", "")
        out.append(_table("rules", "Sync rules", head, rows, empty="no sync rules: every write is replayed"))
        rows = []
        for i in d.indices:
            ago = now - i["last_applied"] if i["last_applied"] else None
            rows.append(
                (
                    i["index"],
                    i["source"],
                    i["rule"],
                    _Raw(f'<span class="state {escape(i["state"])}">{escape(i["state"])}</span>'),
                    _n(i["docs"]),
                    _bytes(i["bytes"]),
                    _n(i["failures"]),
                    "-" if ago is None else f"{_secs(ago)} ago",
                    _secs(i["lag_seconds"]),
                )
            )
        head = ("index", "from", "rule", "state", "documents", "bytes", "failures", "last applied", "lag then")
        out.append(_table("indices", "Follower indices", head, rows, empty="nothing applied under a rule yet"))
    rows = [
        (
            x.group,
            x.topic,
            x.partition,
            "-" if x.lag is None else _n(x.lag),
            _secs(x.lag_seconds),
            _secs(x.stalled_seconds),
            x.paused_by or "-",
        )
        for x in r.consumer_lag
    ]
    head = ("group", "topic", "partition", "records behind", "lag now", "stalled", "paused by")
    out.append(_table("partitions", "Partitions", head, rows, empty="no partition assigned"))
    if r.unassigned:
        rows = [(x.group, x.topic, x.partition, _n(x.lag), _secs(x.waiting_seconds)) for x in r.unassigned]
        out.append(
            _table(
                "unassigned",
                "Partitions no replay of the group applies",
                ("group", "topic", "partition", "records behind", "waiting"),
                rows,
            )
        )
    return "\n".join(out)


def _dead_letters(d: PanelData, now: float) -> str:
    count = d.snap.replay.dead_letters
    if not count:
        return ""
    rows = [(f"{_secs(now - t)} ago", reason) for t, reason in reversed(d.dead_letters)]
    empty = "their reasons are in the dead letters: esproxy dlq list"
    return _table("dead-letters", f"Dead letters: {_n(count)} (the latest)", ("when", "why"), rows, empty)


def _buttons(rule: str, state: str) -> str:
    actions = []
    if state not in ("paused", "stopped"):
        actions.append("pause")
    if state == "paused":
        actions.append("resume")
    if state != "stopped":
        actions.append("stop")
    name = escape(rule)
    return "".join(
        f'<button type="button" class="act {a}" data-rule="{name}" data-action="{a}">{a}</button>' for a in actions
    )


class _Raw(str):
    """A cell already in HTML."""


def _cell(v: Any) -> str:
    return str(v) if isinstance(v, _Raw) else escape(str(v))


def _table(id_: str, title: str, head: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "none") -> str:
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(head)}" class="empty">{escape(empty)}</td></tr>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        f'<section class="card" id="{id_}"><h2>{escape(title)}</h2><div class="scroll"><table>'
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _figures(id_: str, title: str, figures: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in figures)
    return f'<section class="card" id="{id_}"><h2>{escape(title)}</h2><dl class="figures">{items}</dl></section>'


def _n(n: float) -> str:
    return f"{n:,}".replace(",", "\u202f")


def _rate(r: Optional[float]) -> str:
    return "-" if r is None else f"{r:.1f}" if r < 100 else _n(round(r))


def _secs(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover
