"""`esproxy compare`: does cluster B hold exactly the documents cluster A holds?

Index by index: document counts, then every `_id` and a hash of its `_source`, read by scrolling
both sides. Prints a summary and the first differences (missing in the target, extra in the
target, different `_source`); an index of the source the target lacks is a difference too, even
empty. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Iterator, Optional, TextIO

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.configfile import load
from esproxy.core.config import ConfigError, ElasticDestination
from esproxy.core.schema import Duration, Url
from esproxy.replay import Rules, render

SKIPPED = ("meta.elasticproxy",)  # each cluster's own id lives there: it differs by design


@dataclass
class IndexReport:
    index: str
    source_count: int = 0
    target_count: int = 0
    missing: list[str] = field(default_factory=list)  # in the source, not in the target
    extra: list[str] = field(default_factory=list)  # in the target, not in the source
    different: list[str] = field(default_factory=list)
    absent_from: str = ""  # "target" or "source" when the index itself exists on one side only

    @property
    def differences(self) -> int:
        """An index the target lacks is a difference even when empty (the replica is missing it); one only
        the target has counts by its documents (B may hold indices of its own)."""
        return len(self.missing) + len(self.extra) + len(self.different) + (self.absent_from == "target")


def command_failed(command: str, e: Exception) -> int:
    """A command's one line for a bad config or a cluster it cannot use; exit status 2."""
    kind = "config error: " if isinstance(e, ConfigError) else ""
    print(f"esproxy {command}: {kind}{e}", file=sys.stderr)
    return 2


def cluster(spec: str, name: str = "compare") -> Elastic:
    """A URL, or a config file whose first enabled primary is the cluster (credentials included)."""
    if spec.endswith((".yml", ".yaml")):
        cfg = load(spec)
        if not cfg.primaries():
            raise ConfigError("destination.primaries", f"{spec} has no enabled primary")
        return Elastic(cfg.primaries()[0], name)
    return Elastic(ElasticDestination(url=Url(spec), timeout=Duration(120), maxConns=4), name)


def call(cluster: Elastic, method: str, uri: str, body: Optional[dict] = None) -> dict:
    """One JSON request; any status of 300 or more raises UpstreamError."""
    data = json.dumps(body).encode() if body is not None else None
    r = cluster.request(method, uri, {"Content-Type": "application/json"}, data)
    if r.status >= 300:
        raise UpstreamError(cluster.target(uri), f"status {r.status}: {r.body[:300]!r}", timeout=False)
    return json.loads(r.body) if r.body else {}


def indices(cluster: Elastic, pattern: str) -> set[str]:
    rows = json.loads(cluster.request("GET", "/_cat/indices?format=json&h=index", {}, None).body or b"[]")
    names = {row["index"] for row in rows}
    wanted = [p for p in pattern.split(",") if p]
    return {
        n
        for n in names
        if n not in SKIPPED and any(fnmatch.fnmatchcase(n, p) for p in wanted) and (pattern != "*" or n[0] != ".")
    }


def digest(source: object) -> str:
    """sha1 of the canonical JSON of a `_source`: equal documents hash equal whatever their key order."""
    canonical = json.dumps(source, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()


def hits(cluster: Elastic, index: str, page: int = 1000, keep_alive: str = "2m", **search: object) -> Iterator[dict]:
    """Every hit of ``index``, by scroll in `_doc` order; ``search`` adds to the search body."""
    r = call(cluster, "POST", f"/{index}/_search?scroll={keep_alive}", {"size": page, "sort": ["_doc"], **search})
    scroll_id = r.get("_scroll_id")
    try:
        while True:
            page_hits = r.get("hits", {}).get("hits", [])
            if not page_hits:
                return
            yield from page_hits
            r = call(cluster, "POST", "/_search/scroll", {"scroll": keep_alive, "scroll_id": scroll_id})
            scroll_id = r.get("_scroll_id", scroll_id)
    finally:
        if scroll_id:
            try:
                cluster.request(
                    "DELETE",
                    "/_search/scroll",
                    {"Content-Type": "application/json"},
                    json.dumps({"scroll_id": scroll_id}).encode(),
                )
            except UpstreamError:
                pass


def documents(cluster: Elastic, index: str, page: int = 1000) -> Iterator[tuple[str, str]]:
    """(id, sha1 of the canonical `_source`) of every document, by scroll."""
    for hit in hits(cluster, index, page):
        yield hit["_id"], digest(hit.get("_source"))


def refresh(cluster: Elastic, names: set[str]) -> None:
    for name in names:
        cluster.request("POST", f"/{name}/_refresh", {}, None)


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """--source, --target and --index, shared by compare and repair."""
    p.add_argument("--source", required=True, help="cluster A: URL, or a conf file (its first primary)")
    p.add_argument("--target", required=True, help="cluster B: URL, or a conf file (its first primary)")
    p.add_argument("--index", default="*", help="index pattern(s), comma-separated (default: all but hidden)")
    p.add_argument("--no-refresh", action="store_true", help="do not refresh the indices before reading")


def compare_index(
    source: Elastic, target: Elastic, index: str, present_in_target: bool, target_index: Optional[str] = None
) -> IndexReport:
    """``index`` of the source against ``target_index`` (default: the same name) of the target."""
    report = IndexReport(index)
    report.source_count = call(source, "GET", f"/{index}/_count").get("count", 0)
    theirs = dict(documents(target, target_index or index)) if present_in_target else {}
    report.target_count = len(theirs)
    if not present_in_target:
        report.absent_from = "target"
    for doc_id, digest in documents(source, index):
        other = theirs.pop(doc_id, None)
        if other is None:
            report.missing.append(doc_id)
        elif other != digest:
            report.different.append(doc_id)
    report.extra = sorted(theirs)
    return report


class _Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.done, self.out = total, 0, out
        self.enabled = out.isatty()

    def step(self, name: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(1, self.total)
            self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {name[:40]:<40}")
            self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")


def run(
    source: Elastic,
    target: Elastic,
    pattern: str,
    show: int,
    refresh_first: bool,
    out: TextIO,
    rename: str = "",
    rules: Optional[Rules] = None,
) -> int:
    """Follower sync (see replay/follow.py): ``rename``, a template with ``{{remote_index}}``, gives each
    source index's name in the target, whose indices are then those the pattern renamed matches;
    ``rules`` (a replay config's ``follow`` section) compare only the indices they follow, each with
    its name in the target."""
    if rules is not None and rules.active:
        followed = {i: rules.target(i) for i in indices(source, pattern)}
        name_in_target = {i: t.index for i, t in followed.items() if t is not None}
        theirs = indices(target, ",".join(name_in_target.values()))
    elif rename:
        name_in_target = {i: render(rename, i) for i in indices(source, pattern)}
        theirs = indices(target, ",".join(render(rename, p) for p in pattern.split(",")))
    else:
        name_in_target = {i: i for i in indices(source, pattern)}
        theirs = indices(target, pattern)
    ours = set(name_in_target)
    if refresh_first:
        refresh(source, ours)
        refresh(target, theirs)
    source_of = {t: i for i, t in name_in_target.items()}
    reports = []
    everything = ours | {source_of.get(t, t) for t in theirs}
    progress = _Progress(len(everything), sys.stderr)
    for index in sorted(everything):
        if index in ours:
            in_target = name_in_target[index]
            report = compare_index(source, target, index, in_target in theirs, in_target)
            if in_target != index:
                report.index = f"{index} -> {in_target}"
            reports.append(report)
        else:  # only in the target
            report = IndexReport(index, absent_from="source")
            report.extra = [doc_id for doc_id, _ in documents(target, index)]
            report.target_count = len(report.extra)
            reports.append(report)
        progress.step(index)
    progress.close()
    total = sum(r.differences for r in reports)
    for r in reports:
        state = (
            "ok"
            if not r.differences
            else (f"{len(r.missing)} missing, {len(r.extra)} extra, {len(r.different)} different")
        )
        if r.absent_from:
            state = f"{state} (no such index in the {r.absent_from})"
        print(f"{r.index}: source {r.source_count} docs, target {r.target_count} docs: {state}", file=out)
    shown = 0
    for r in reports:
        for label, ids in (("missing", r.missing), ("extra", r.extra), ("different", r.different)):
            for doc_id in ids:
                if shown >= show:
                    break
                print(f"  {label}: {r.index}/{doc_id}", file=out)
                shown += 1
    verdict = "no differences" if total == 0 else f"{total} difference(s)"
    print(f"compared {len(reports)} index(es): {verdict}", file=out)
    return 0 if total == 0 else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="esproxy compare", description=__doc__.splitlines()[0])
    add_cluster_arguments(p)
    p.add_argument("--show", type=int, default=20, help="how many differences to list (default 20)")
    p.add_argument(
        "--rename",
        default="",
        metavar="TEMPLATE",
        help="the target's name of each source index, e.g. '{{remote_index}}-sync' (a follower sync rule's rename)",
    )
    p.add_argument(
        "--rules",
        metavar="CONF",
        help="a replay config: compare only the indices its follow.rules[] follow, each with its name in the target",
    )
    args = p.parse_args(argv)
    try:
        rules = Rules.from_config(load(args.rules).follow) if args.rules else None
        source, target = cluster(args.source), cluster(args.target)
        return run(source, target, args.index, args.show, not args.no_refresh, sys.stdout, args.rename, rules)
    except (ConfigError, UpstreamError) as e:
        return command_failed("compare", e)
