"""`esproxy sync copy`: copy the indices that already exist in A into B while the live stream runs.

Each index is created in B under its B name with A's mappings, chosen settings and (renamed)
aliases, then every document is written with A's version exactly as the live replay writes it
(``version=max(A's _seq_no, _version), version_type=external_gte``, routing kept; see repair.versioned_write).
The stream replays every write made since the copy started with the same versions, so whichever
of the two reaches B last, B keeps the newest copy. The one case versions cannot settle is a
document the copy read before A deleted it: the stream's delete may reach B first, and its
tombstone lasts only ``index.gc_deletes``. A verification pass (repair's: A's documents against
B's, every extra re-read on A right before a conditional delete) and a final compare close it.

Documents are read with a point in time + ``search_after``, sorted on ``_shard_doc``
(Elasticsearch 7.12+, OpenSearch 3.3+) or, where the engine lacks it (OpenSearch 2.x), on ``_doc``
one shard (slice) at a time; else by scroll (Elasticsearch 6.8-7.9, OpenSearch 1.x). A checkpoint file
records each index's state and position after every batch B accepted: a copy killed or
interrupted resumes there (a scroll, or a point in time that has expired by then, cannot be
resumed: that index alone is read again from its start, which the versions make harmless).

With ``-c replay.yml`` the replay's sync rules (``follow.rules[]`` with ``copyExisting: true``)
choose the indices, their B names, settings and aliases (:func:`from_rules`).

This module is the command (its flags, the run, the summary); the rest is in ``synccopy_plan`` (which
indices, under which names, with which mappings, settings and aliases), ``synccopy_reader`` (A's documents
in pages, by point in time or scroll) and ``synccopy_copier`` (creating, writing, throttling, the
checkpoint, the rules' state, the verification).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, TextIO

from esproxy.clients.elastic import UpstreamError
from esproxy.clients.indexcopy import SettingsChoice
from esproxy.core.config import ConfigError

from .compare import cluster, command_failed
from .progress import Progress, duration, megabytes, positive
from .synccopy_copier import Checkpoint, IndexOutcome, Interrupted, RuleWatch, SyncCopy
from .synccopy_plan import (
    TEMPLATE_VARIABLE,
    CopyOptions,
    UsageError,
    plan_indices,
    print_plan,
    split_patterns,
    template_rename,
)

# ---------------------------------------------------------------------------------------- output


def summary(outcomes: list[IndexOutcome], copy: SyncCopy, elapsed: float, out: TextIO) -> int:
    for o in outcomes:
        p = o.plan
        if o.halted:
            print(f"{p.source} -> {p.target}: {o.read} read, {o.written} written: {o.halted}", file=out)
            continue
        if p.refused or (o.failed and o.verified is None):
            print(f"{p.source} -> {p.target}: refused: {'; '.join(o.errors[:1])}", file=out)
            continue
        resumed = f", resumed at {o.resumed_at}" if o.resumed_at else ""
        restarted = ", read again from the start (its cursor had expired)" if o.restarted else ""
        v = o.verified
        fixed = f", verify: {v.planned - v.deleted} rewritten, {v.deleted} deleted" if v else ""
        state = "equal" if o.differences == 0 else f"{o.differences} difference(s)"
        print(
            f"{p.source} -> {p.target}: {o.read} read, {o.written} written, {o.skipped} skipped (newer on target),"
            f" {o.failed} failed, {megabytes(o.bytes)}{resumed}{restarted}{fixed}: {state}",
            file=out,
        )
    errors = [e for o in outcomes for e in o.errors if e != o.plan.refused]
    for e in errors[: copy.options.show]:
        print(f"  error: {e}", file=out)
    if len(errors) > copy.options.show:
        print(f"  ... and {len(errors) - copy.options.show} more", file=out)
    bad = sum(1 for o in outcomes if o.failed or o.differences or o.plan.refused or o.halted)
    docs = sum(o.read - o.resumed_at for o in outcomes)
    verdict = "the target matches the source" if not bad else f"{bad} index(es) not equal"
    print(
        f"copied {len(outcomes)} index(es): {docs} documents in {duration(elapsed)}"
        f" ({docs / max(elapsed, 1e-6):.0f} docs/s),{f' paused {copy.paused:.1f}s,' if copy.paused else ''}"
        f" throttled {copy.throttle.throttled:.1f}s;"
        f" the live stream covers writes since {copy.checkpoint.data.get('stream_since')}: {verdict}",
        file=out,
    )
    return 0 if not bad else 1


# ---------------------------------------------------------------------------------------- command


def from_rules(
    conf: str,
) -> tuple[list[str], Callable[[str], Optional[str]], Callable[[str], tuple[SettingsChoice, bool]]]:
    """The replay config's rules that copy existing indices: their include patterns, A's name -> B's
    (None: no such rule follows it), and each index's settings choice and aliases."""
    from esproxy.configfile import load
    from esproxy.replay import Rules

    rules = Rules.from_config(load(conf).follow)
    copying = [r for r in rules.rules if r.copy_existing]
    if not copying:
        raise UsageError(f"{conf}: no rule of follow.rules[] has copyExisting: true")

    def rename(index: str) -> Optional[str]:
        hit = rules.target(index)
        return hit.index if hit is not None and hit.rule.copy_existing else None

    def per_index(index: str) -> tuple[SettingsChoice, bool]:
        hit = rules.target(index)
        assert hit is not None
        return SettingsChoice(synced=hit.rule.setting_synced), hit.rule.aliases

    return [p for r in copying for p in r.indices], rename, per_index


def checkpoint_path(directory: str, identity: dict) -> Path:
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Path(directory) / f"esproxy-sync-copy-{key}.json"


def _options(args: argparse.Namespace) -> CopyOptions:
    include = split_patterns(args.settings_include)
    return CopyOptions(
        batch=args.batch,
        rate=args.rate,
        max_bytes_per_second=args.max_bytes_per_second,
        concurrency=args.concurrency,
        settings=SettingsChoice(include, split_patterns(args.settings_exclude), args.replicas),
        aliases=not args.no_aliases,
        settle=args.settle,
        show=args.show,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esproxy sync copy", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="cluster A: URL, or a conf file (its first primary)")
    p.add_argument("--target", required=True, help="cluster B: URL, or a conf file (its first primary)")
    p.add_argument(
        "-c",
        "--conf",
        help="the replay's config: its follow.rules[] with copyExisting: true choose the indices,"
        " names, settings and aliases (instead of --index/--rename/--settings-*/--no-aliases)",
    )
    p.add_argument("--index", help="index name(s) or pattern(s) of A, comma-separated (default with -c: the rules')")
    p.add_argument("--exclude", default="", help="index pattern(s) not to copy, comma-separated")
    p.add_argument(
        "--rename", default=TEMPLATE_VARIABLE, help="B's name: a template with {{remote_index}} (default: same)"
    )
    p.add_argument("--batch", type=positive(int), default=500, help="documents per _bulk request (default 500)")
    p.add_argument("--rate", type=positive(float), help="at most N documents per second (default: unbounded)")
    p.add_argument("--max-bytes-per-second", type=positive(float), help="at most N bytes of _bulk per second")
    p.add_argument("--concurrency", type=positive(int), default=1, help="indices copied in parallel (default 1)")
    p.add_argument("--settings-include", default="index.*", help="settings copied, flat key patterns (default index.*)")
    p.add_argument("--settings-exclude", default="", help="settings not copied, flat key patterns")
    p.add_argument("--replicas", action="store_true", help="copy index.number_of_replicas too")
    p.add_argument("--no-aliases", action="store_true", help="do not copy aliases")
    p.add_argument("--checkpoint-dir", default=".", help="where the checkpoint file lives (default: here)")
    p.add_argument("--fresh", action="store_true", help="ignore an earlier interrupted copy's checkpoint")
    p.add_argument("--settle", type=float, default=30.0, help="seconds the final compare waits for the stream")
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan (indices, names, counts, settings); write nothing"
    )
    p.add_argument("--show", type=int, default=20, help="how many errors to list (default 20)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        options = _options(args)
        if args.conf:
            rule_patterns, rename, options.per_index = from_rules(args.conf)
            patterns = split_patterns(args.index) if args.index else rule_patterns
            options.alias_rename = lambda alias: alias  # a rule renames indices, not aliases
            args.rename = f"rules of {args.conf}"  # the checkpoint's identity
        elif args.index:
            patterns, rename = split_patterns(args.index), template_rename(args.rename)
        else:
            raise UsageError("--index or -c replay.yml is required")
        source, target = cluster(args.source, "sync-copy"), cluster(args.target, "sync-copy")
        plans = plan_indices(source, target, patterns, split_patterns(args.exclude), rename, options)
        if args.dry_run:
            print_plan(plans, sys.stdout)
            print(f"dry run: {len(plans)} index(es), {sum(p.count for p in plans)} documents; nothing written")
            return 1 if any(p.refused for p in plans) else 0
        identity = {"source": args.source, "target": args.target, "index": ",".join(patterns), "rename": args.rename}
        checkpoint = Checkpoint(checkpoint_path(args.checkpoint_dir, identity), identity)
        if args.fresh or not checkpoint.load():
            checkpoint.start(datetime.now(timezone.utc).isoformat(timespec="seconds"))
        else:
            print(f"resuming the copy recorded in {checkpoint.path}", file=sys.stderr)
        copy = SyncCopy(
            lambda: (cluster(args.source, "sync-copy"), cluster(args.target, "sync-copy")),
            options,
            checkpoint,
            sys.stdout,
            Progress(0, sys.stderr, label="sync copy"),
        )
        if args.conf:
            copy.rules = RuleWatch(args.conf, sys.stdout)
        started = time.monotonic()

        def stop(signum: int, frame: object) -> None:
            if copy.stopping:  # a second Ctrl-C: now
                raise KeyboardInterrupt
            copy.stopping = True
            print("\nstopping after the current batch (again to stop at once)", file=sys.stderr)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            outcomes = copy.run(plans)
        except (Interrupted, KeyboardInterrupt):
            print(f"\ninterrupted: run the same command again to resume ({checkpoint.path})", file=sys.stderr)
            return 1
        code = summary(outcomes, copy, time.monotonic() - started, sys.stdout)
        checkpoint.remove()  # the run finished: a failed index is copied again next time, harmlessly
        return code
    except UsageError as e:
        print(f"esproxy sync copy: {e}", file=sys.stderr)
        return 2
    except (ConfigError, UpstreamError) as e:
        return command_failed("sync copy", e)
