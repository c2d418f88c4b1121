"""`esproxy sync list|add|delete|pause|resume|stop`: the running replay's sync rules, through its admin port.

The replay applies each change at once and keeps it in its working directory (see replay/followcontrol.py).
"""

from __future__ import annotations

import argparse
import json
import sys
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
    return p


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
    rows = [("NAME", "STATE", "FROM", "INDICES", "EXCLUDE", "RENAME")] + [
        (r["name"], r["state"], r["from"], ",".join(r["indices"]), ",".join(r["exclude"]) or "-", r["rename"])
        for r in rules
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _status_table(indices: list[dict[str, Any]]) -> str:
    rows = [("INDEX", "SOURCE", "RULE", "STATE", "WRITES", "BYTES", "FAILED", "LAST APPLIED", "LAG")]
    for r in indices:
        ago = r["last_applied_seconds_ago"]
        rows.append(
            (
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
        )
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
    else:
        print(f"rule {args.name}: {doc.get('state', 'deleted')}")
    return 0
