"""`esproxy sync list|status|add|delete|pause|resume|stop|approve|reject|skip|waiting`: the running replay's sync rules,
through its admin port.

The replay applies each change at once and keeps it in its working directory (see replay/followcontrol.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, Optional

from esproxy.clients.httpsession import HttpSession
from esproxy.clients.tls import admin_base
from esproxy.configfile import load
from esproxy.core.config import ConfigError

COMMANDS = {
    "list": "the rules and their state",
    "status": "per follower index: rule, state, writes and bytes applied, failures, last applied, lag",
    "add": "add a rule (--name, --indices...)",
    "delete": "delete a rule: its indices are no longer followed",
    "pause": "its writes wait, in order, until resume",
    "resume": "a paused rule follows again",
    "stop": "the B indices stay as they are and no longer follow",
    "approve": "apply the oldest write the rule's guard holds, then go on",
    "reject": "do not apply the oldest write the rule's guard holds (a dead letter with --reason), then go on",
    "skip": "the rule's writes captured before --until TIME become dead letters (not applied)",
    "waiting": "the rule's writes waiting in its lane (delayed or held): where, what, captured, due",
    "copy": "copy the indices that already exist in A into B (esproxy sync copy --help; commands/synccopy.py)",
}


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"esproxy sync {command}", description=COMMANDS[command])
    p.add_argument("-c", "--conf", required=True, help="the replay's config (its admin.port is asked)")
    if command == "add":
        p.add_argument("--name", required=True)
        p.add_argument("--indices", required=True, help="names and * wildcards, comma-separated")
        p.add_argument("--exclude", default="", help="names and * wildcards, comma-separated")
        p.add_argument("--rename", default="", help="B's name, e.g. '{{remote_index}}-sync'")
        p.add_argument("--json", default="", help="more keys of the rule as JSON (settings, aliases...)")
    elif command not in ("list", "status"):
        p.add_argument("name", help="the rule's name")
    if command == "reject":
        p.add_argument("--reason", default="", help="why (kept in the dead letter)")
    if command == "skip":
        p.add_argument(
            "--until",
            required=True,
            help="capture time: ISO 8601 (2026-11-25T12:05:30Z, +08:00...; no zone: UTC) or seconds since the epoch",
        )
    return p


def parse_time(text: str) -> float:
    """``--until``: ISO 8601 (a time without a zone is UTC) or seconds since the epoch; ValueError otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request(conf: str, method: str, path: str, body: Optional[dict] = None) -> tuple[int, Any]:
    cfg = load(conf)
    if not cfg.admin.port:
        raise ConfigError("admin.port", "is 0: the replay has no admin port to ask")
    base, tls = admin_base(cfg.admin)
    with HttpSession(base, cfg.admin.header, tls) as http:
        answer = http.request(method, f"/_esproxy/sync/{path}", body)
    try:
        return answer.status, answer.json()
    except ValueError:
        if answer.status < 400:
            raise  # an answer that is not the replay's: "cannot ask the replay"
        return answer.status, {"error": {"reason": f"HTTP {answer.status}"}}


def _table(rules: list[dict[str, Any]]) -> str:
    undo = any("delay_seconds" in r for r in rules)
    head = ("NAME", "STATE", "FROM", "INDICES", "EXCLUDE", "RENAME") + (("DELAY", "GUARD", "WAITING") if undo else ())
    rows = [head]
    for r in rules:
        row = (r["name"], r["state"], r["from"], ",".join(r["indices"]), ",".join(r["exclude"]) or "-", r["rename"])
        if undo:
            row += (
                _duration(r.get("delay_seconds", 0)),
                ",".join(r.get("guard", [])) or "-",
                str(r.get("waiting", 0)),
            )
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    for r in rules:
        for held in r.get("held") or []:
            origin = held.get("from") or {}
            lines.append(
                f"{r['name']} holds {held['what']} ({held['kind']}) at {held['where']}: captured"
                f" {_iso(held['captured'])}, held since {_iso(held['since'])},"
                f" from client {origin.get('client') or '?'} through {origin.get('proxy') or '?'}"
            )
        if r.get("skip_until"):
            lines.append(f"{r['name']} skips its writes captured before {_iso(r['skip_until'])}")
    return "\n".join(lines)


def _waiting_table(doc: dict[str, Any]) -> str:
    rows = [("WHERE", "CAPTURED", "DUE IN", "WRITE", "FROM")]
    for w in doc["writes"]:
        origin = w.get("from") or {}
        due = "held" if w.get("guard") else f"{w['due_in_seconds']:.1f}s"
        rows.append((w["where"], _iso_ms(w["captured"]), due, w["what"], origin.get("client") or "?"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if doc["total"] > len(doc["writes"]):
        lines.append(f"... {doc['total'] - len(doc['writes'])} more")
    return "\n".join(lines)


def _iso_ms(epoch: float) -> str:
    when = datetime.fromtimestamp(epoch, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _duration(seconds: float) -> str:
    if not seconds:
        return "-"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _status_table(indices: list[dict[str, Any]]) -> str:
    undo = any(r.get("delay_seconds") for r in indices)
    head = ("INDEX", "SOURCE", "RULE", "STATE", "WRITES", "BYTES", "FAILED", "LAST APPLIED", "LAG")
    rows = [head + (("DELAY", "LAG BEYOND DELAY") if undo else ())]
    for r in indices:
        ago = r["last_applied_seconds_ago"]
        row = (
            r["index"],
            r["source"],
            r["rule"],
            r["state"],
            str(r["docs"]),
            str(r["bytes"]),
            str(r["failures"]),
            "-" if ago is None else f"{ago:.1f}s ago",
            f"{r['lag_seconds']:.3f}s",
        )
        if undo:
            row += (_duration(r.get("delay_seconds") or 0), f"{r.get('lag_beyond_delay_seconds', 0):.3f}s")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command not in COMMANDS:
        lines = "".join(f"\n  {name:<8} {text}" for name, text in COMMANDS.items())
        print(f"usage: esproxy sync <command> -c replay.yml ...; commands:{lines}", file=sys.stderr)
        return 0 if command in ("-h", "--help") else 2
    args = _parser(command).parse_args(argv[1:])
    try:
        if command in ("list", "status"):
            status, doc = _request(args.conf, "GET", "rules" if command == "list" else "status")
        elif command == "add":
            rule: dict[str, Any] = json.loads(args.json) if args.json else {}
            rule.update(name=args.name, indices=[p for p in args.indices.split(",") if p])
            if args.exclude:
                rule["exclude"] = [p for p in args.exclude.split(",") if p]
            if args.rename:
                rule["rename"] = args.rename
            status, doc = _request(args.conf, "POST", "rules", rule)
        elif command == "delete":
            status, doc = _request(args.conf, "DELETE", f"rules/{args.name}")
        elif command == "reject":
            status, doc = _request(args.conf, "POST", f"rules/{args.name}/_reject", {"reason": args.reason})
        elif command == "skip":
            try:
                until = parse_time(args.until)
            except ValueError:
                print(
                    f"esproxy sync skip: --until {args.until!r} is not a time (ISO 8601 or epoch seconds)",
                    file=sys.stderr,
                )
                return 2
            status, doc = _request(args.conf, "POST", f"rules/{args.name}/_skip", {"until": until})
        elif command == "waiting":
            status, doc = _request(args.conf, "GET", f"rules/{args.name}/_waiting")
        elif command == "approve":
            status, doc = _request(args.conf, "POST", f"rules/{args.name}/_approve", {})
        else:
            status, doc = _request(args.conf, "POST", f"rules/{args.name}/_{command}")
    except ConfigError as e:
        print(f"esproxy sync: config error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"esproxy sync: cannot ask the replay: {e}", file=sys.stderr)
        return 2
    if status >= 300:
        reason = (doc.get("error") or {}).get("reason") if isinstance(doc, dict) else None
        print(f"esproxy sync {command}: {reason or status}", file=sys.stderr)
        return 1
    if command == "list":
        print(_table(doc["rules"]))
    elif command == "status":
        print(_status_table(doc["indices"]))
    elif command == "add":
        print(f"rule {args.name} added")
    elif command in ("approve", "reject"):
        verb = "approved: applying" if command == "approve" else "rejected: a dead letter,"
        print(f"rule {args.name}: {verb} {doc['write']} ({doc['where']}); the rule goes on")
    elif command == "waiting":
        print(_waiting_table(doc))
    elif command == "skip":
        print(f"rule {args.name}: writes captured before {_iso_ms(doc['skip_until'])} are skipped (dead letters)")
    else:
        print(f"rule {args.name}: {doc.get('state', 'deleted')}")
    return 0
