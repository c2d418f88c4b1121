"""The signals esproxy answers, declared once: registered from this table and documented from it.

Each process (a single process, a pre-fork master, a worker) passes the handler for each action;
``make docs`` writes :func:`reference_markdown` into docs/operations.md.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable, Mapping

import gevent


@dataclass(frozen=True)
class Signal:
    signum: signal.Signals
    action: str  # the key of its handler in install()'s mapping
    effect: str
    worker: str  # what it does when sent to one pre-fork worker


SIGNALS: tuple[Signal, ...] = (
    Signal(
        signal.SIGTERM,
        "stop",
        "Graceful stop: stop accepting, finish requests in flight, ship captured writes to Kafka (the spool's"
        " while Kafka takes them, the rest stays in the spool for the next start; `durability: none`'s queue"
        " for up to `stopTimeout` (25 s), then lost), commit replayed offsets, exit 0; a second TERM or"
        " INT exits at once with code 1. A pre-fork master first sends TERM to its workers and waits for"
        " them. supervisord sends it.",
        "finishes its requests in flight and exits (send it to the master instead)",
    ),
    Signal(signal.SIGINT, "stop", "As TERM (Ctrl-C in a terminal).", "as TERM"),
    Signal(
        signal.SIGUSR1,
        "profile",
        "Profiling in the working directory: `jj.cpu` (a duration) starts a CPU profile written to"
        " `cpu.profile`, `jj.mem` writes `mem.profile`; a pre-fork master profiles its workers too and merges"
        " their profiles into its own.",
        "profiles that worker alone, into `cpu.profile.<pid>`",
    ),
)


def install(handlers: Mapping[str, Callable[[int], None]]) -> None:
    """Register each signal of the table with the handler for its action (run in a greenlet by gevent)."""
    for s in SIGNALS:
        gevent.signal_handler(s.signum, handlers[s.action], s.signum)


def reference_markdown() -> str:
    rows = ["| signal | effect | sent to one worker |", "|---|---|---|"]
    rows += [f"| `{s.signum.name}` | {s.effect} | {s.worker} |" for s in SIGNALS]
    return "\n".join(rows)
