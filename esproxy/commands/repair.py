"""`esproxy repair`: bring cluster B back to what cluster A holds, safely while the live stream runs.

Index by index, as `esproxy compare` sees them: B's ids, hashes and sequence numbers are read
first (held in memory), then A is scrolled with its documents' `_seq_no`. A document missing in B
or different there is written with A's version, exactly as the live replay writes it
(``version=max(A's _seq_no, _version), version_type=external_gte``, routing kept; capture.doc_version).
A 409 means B holds a higher version of it: a copy, or a tombstone B keeps of a delete. Both sides
are read again: when B's version is one A gave (the live replay got there), the document is
skipped, or written again as A holds it now. When B's version is above all A gave it, B was changed
by hand (a delete or a write with internal versions); A's document is then written at B's version,
passing it, if no later write of A can carry a lower one (see Repair._settle); otherwise it is
left and reported. A document only B
holds is re-read on A right before it goes (if A has it by now, it is written instead) and deleted with ``if_seq_no`` /
``if_primary_term`` of the copy B had when it was read: a live write that got there since wins.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional, TextIO

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.core.bulk import DocOp, Item, UnparsableAnswer, parse_response
from esproxy.core.config import ConfigError
from esproxy.proxy import doc_version

from .compare import add_cluster_arguments, call, cluster, command_failed, digest, hits, indices, refresh
from .progress import Pace, Progress, positive

RETRIES = 5  # of a `_bulk` (or its items) answered 429/5xx or not answered, with a doubling pause
FIRST_PAUSE = 0.5
FLUSH_AFTER = 1.0  # seconds a write waits for its batch to fill, so a slow --rate still writes steadily


class TargetDoc(NamedTuple):
    """What B holds for one id: enough to tell it differs and to delete exactly this copy."""

    digest: str
    seq_no: int
    primary_term: int
    routing: Optional[str]
    type: Optional[str]


@dataclass
class Planned:
    kind: str  # "copy" (missing in B), "update" (different in B) or "delete" (only in B)
    index: str
    id: str
    routing: Optional[str]
    lines: bytes  # its `_bulk` action


class Conflict(NamedTuple):
    """A write of A's version that B refused (409): settled once the copies are read again."""

    id: str
    routing: Optional[str]
    kind: str  # the refused write's: "copy" or "update"
    version: Optional[int]  # B's version, as its refusal gave it (a tombstone's can be read nowhere else)


# "restore": missing in B, written past B's tombstone of a delete made there by hand;
# "overwrite": written over a copy B holds at a version A never gave it (written there by hand)
_COUNTERS = {
    "copy": "copied",
    "update": "updated",
    "delete": "deleted",
    "restore": "restored",
    "overwrite": "overwritten",
}
_CURRENT_VERSION = re.compile(r"current version \[(\d+)\]")


@dataclass
class IndexResult:
    index: str
    copied: int = 0
    updated: int = 0
    deleted: int = 0
    restored: int = 0  # missing in B: written past B's tombstone of a delete made there by hand
    overwritten: int = 0  # written over a copy B holds at a version A never gave it
    skipped: int = 0  # B had a newer copy (409): left as it is
    failed: int = 0
    unresolved: int = 0  # still different after the run (failed, or skipped and B still differs)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was written past B's own versions
    skipped_docs: list[tuple[str, Optional[str]]] = field(default_factory=list)  # (id, routing) to verify
    conflicts: list[Conflict] = field(default_factory=list)  # refused writes of A's version, to settle

    @property
    def planned(self) -> int:
        return self.copied + self.updated + self.deleted + self.restored + self.overwritten

    def add(self, kind: str) -> None:
        counter = _COUNTERS[kind]
        setattr(self, counter, getattr(self, counter) + 1)


def _doc_type(hit: dict) -> Optional[str]:
    """An Elasticsearch 6 custom mapping type, as the live replay keeps it (``_doc`` needs none)."""
    t = hit.get("_type")
    return t if t not in (None, "_doc") else None


def versioned_write(hit: dict, kind: str, index: Optional[str] = None, version: Optional[int] = None) -> Planned:
    """A's document (a search or get hit with its `_seq_no` and `_version`) as the live replay writes it
    (versioned as capture.doc_version says, unless ``version`` is given), into ``index`` (default: the hit's own)."""
    source = json.dumps(hit.get("_source"), ensure_ascii=False, separators=(",", ":")).encode()
    op = DocOp(
        "index",
        index or hit["_index"],
        hit["_id"],
        version if version is not None else doc_version(int(hit["_seq_no"]), hit.get("_version")),
        source,
        hit.get("_routing"),
        None,
        _doc_type(hit),
    )
    return Planned(kind, op.index, op.id, op.routing, op.lines())


def delete_action(index: str, doc_id: str, theirs: TargetDoc) -> Planned:
    # Conditional on the copy B had when read. Not an external-version delete: that would leave a
    # tombstone at B's version, which a redelivered stale write of the same version passes
    # (external_gte) and resurrects; if_seq_no's delete bumps the version past it instead.
    meta: dict[str, Any] = {"_index": index, "_id": doc_id}
    if theirs.type:
        meta["_type"] = theirs.type
    if theirs.routing is not None:
        meta["routing"] = theirs.routing
    meta["if_seq_no"] = theirs.seq_no
    meta["if_primary_term"] = theirs.primary_term
    line = json.dumps({"delete": meta}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    return Planned("delete", index, doc_id, theirs.routing, line)


class Repair:
    def __init__(
        self,
        source: Elastic,
        target: Elastic,
        batch: int = 500,
        rate: Optional[float] = None,
        dry_run: bool = False,
        show: int = 20,
        out: TextIO = sys.stdout,
        progress: Optional[Progress] = None,
    ) -> None:
        self.source, self.target = source, target
        self.batch = max(1, batch)
        self.pace = Pace(rate)
        self.dry_run = dry_run
        self.show, self.shown = show, 0
        self.out = out
        self.progress = progress or Progress(0, sys.stderr)
        # a scroll page must not outlive its keep-alive while --rate paces through it
        self.page = self.batch
        self.keep_alive = f"{max(120, math.ceil(3 * self.page / rate)) if rate else 120}s"

    # ------------------------------------------------------------------ reading

    def _scan(self, cluster: Elastic, index: str) -> Iterator[dict]:
        for hit in hits(cluster, index, self.page, self.keep_alive, seq_no_primary_term=True, version=True):
            self.pace.take()
            self.progress.step(read=1)
            yield hit

    def target_docs(self, index: str) -> dict[str, TargetDoc]:
        docs = {}
        for hit in self._scan(self.target, index):
            docs[hit["_id"]] = TargetDoc(
                digest(hit.get("_source")),
                int(hit.get("_seq_no", -1)),
                int(hit.get("_primary_term", 0)),
                hit.get("_routing"),
                _doc_type(hit),
            )
        return docs

    def _mget(self, cluster: Elastic, index: str, wanted: list[tuple[str, Optional[str]]]) -> dict[str, Optional[dict]]:
        """id -> the document as the cluster holds it now (realtime), None when absent (index absent too)."""
        docs = [{"_id": d, **({"routing": r} if r is not None else {})} for d, r in wanted]
        r = cluster.request(
            "POST", f"/{index}/_mget", {"Content-Type": "application/json"}, json.dumps({"docs": docs}).encode()
        )
        if r.status == 404 and b"index_not_found" in r.body:
            return {d: None for d, _ in wanted}
        if r.status != 200:
            raise UpstreamError(
                cluster.target(f"/{index}/_mget"), f"status {r.status}: {r.body[:300]!r}", timeout=False
            )
        found: dict[str, Optional[dict]] = {}
        for doc in json.loads(r.body).get("docs", []):
            error = doc.get("error")
            if error and "index_not_found" not in json.dumps(error):
                raise UpstreamError(cluster.target(f"/{index}/_mget"), f"{doc.get('_id')}: {error}", timeout=False)
            found[str(doc.get("_id"))] = doc if doc.get("found") else None
        return found

    # ------------------------------------------------------------------ one index

    def repair_index(
        self, index: str, in_source: bool, in_target: bool, target_index: Optional[str] = None
    ) -> IndexResult:
        """``index`` of the source against ``target_index`` (default: the same name) of the target."""
        target_index = target_index or index
        result = IndexResult(index)
        self.progress.index = index
        theirs = self.target_docs(target_index) if in_target else {}
        pending: list[Planned] = []
        since = time.monotonic()

        def plan(p: Planned) -> None:
            nonlocal since
            if not pending:
                since = time.monotonic()
            pending.append(p)
            if len(pending) >= self.batch or time.monotonic() - since >= FLUSH_AFTER:
                self.apply(pending, result, settle_later=True)
                pending.clear()

        def unversioned(doc_id: str) -> None:
            result.failed += 1
            result.errors.append(f"{index}/{doc_id}: the source gives no _seq_no to version the write with")

        if in_source:
            for hit in self._scan(self.source, index):
                self.progress.step(examined=1)
                other = theirs.pop(hit["_id"], None)
                if hit.get("_seq_no") is None:
                    if other is None or other.digest != digest(hit.get("_source")):
                        unversioned(hit["_id"])
                elif other is None:
                    plan(versioned_write(hit, "copy", target_index))
                elif other.digest != digest(hit.get("_source")):
                    plan(versioned_write(hit, "update", target_index))
        if pending:
            self.apply(pending, result, settle_later=True)
            pending.clear()
        extras = list(theirs.items())
        del theirs
        for start in range(0, len(extras), self.batch):
            chunk = extras[start : start + self.batch]
            for _ in chunk:  # paced before the re-read, so that the deletes follow it at once
                self.pace.take()
            now_on_source = self._mget(self.source, index, [(d, t.routing) for d, t in chunk])
            for doc_id, t in chunk:
                self.progress.step(examined=1)
                doc = now_on_source.get(doc_id)
                if doc is None:
                    pending.append(delete_action(target_index, doc_id, t))
                elif doc.get("_seq_no") is None:
                    unversioned(doc_id)
                elif t.digest != digest(doc.get("_source")):
                    pending.append(versioned_write(doc, "update", target_index))  # written on A since B was read
            if pending:
                self.apply(pending, result, settle_later=True)
                pending.clear()
        if result.conflicts:
            self._settle(index, target_index, result)
        if result.skipped_docs and not self.dry_run:
            self._verify(index, target_index, result)
        result.unresolved += result.failed
        return result

    def apply(self, planned: list[Planned], result: IndexResult, settle_later: bool = False) -> None:
        """Write ``planned`` to B, counting each in ``result``. A write of A's version B refuses (409) is
        skipped and verified at the end; with ``settle_later``, a copy or update refused so is kept in
        ``result.conflicts`` for _settle instead."""
        if self.dry_run:
            for p in planned:
                result.add(p.kind)
                if self.shown < self.show:
                    print(f"  would {p.kind}: {p.index}/{p.id}", file=self.out)
                    self.shown += 1
            return
        todo = list(planned)
        pause = FIRST_PAUSE
        for attempt in range(RETRIES + 1):
            retry: list[Planned] = []
            try:
                items = self._bulk(todo)
            except UpstreamError as e:
                items, reason = None, str(e)
            except UnparsableAnswer as e:  # a mangled or truncated answer: which writes B applied is unknown
                items, reason = None, f"{self.target.target('/_bulk')}: {e}"
            if items is not None and len(items) != len(todo):
                items, reason = None, f"{len(todo)} actions but {len(items)} items in the _bulk response"
            if items is None:
                retry = todo
            else:
                for p, item in zip(todo, items):
                    if item.ok:
                        result.add(p.kind)
                        self.progress.step(written=1)
                    elif item.status == 409 and settle_later and p.kind in ("copy", "update"):
                        result.conflicts.append(Conflict(p.id, p.routing, p.kind, _current_version(item.error)))
                    elif item.status == 409:
                        result.skipped += 1
                        result.skipped_docs.append((p.id, p.routing))
                    elif item.status == 429 or item.status >= 500:
                        retry.append(p)
                        reason = f"{p.index}/{p.id}: status {item.status}: {item.error}"
                    else:
                        result.failed += 1
                        result.errors.append(f"{p.index}/{p.id}: status {item.status}: {item.error}")
            if not retry:
                return
            if attempt < RETRIES:
                time.sleep(pause)
                pause *= 2
            todo = retry
        result.failed += len(todo)
        result.errors.append(f"{len(todo)} write(s) still failing after {RETRIES} retries, last: {reason}")

    def _bulk(self, planned: list[Planned]) -> list[Item]:
        body = b"".join(p.lines for p in planned)
        r = self.target.request("POST", "/_bulk", {"Content-Type": "application/x-ndjson"}, body)
        if r.status == 429 or r.status >= 500:
            raise UpstreamError(self.target.target("/_bulk"), f"status {r.status}: {r.body[:300]!r}", timeout=False)
        if r.status >= 300:
            return [_whole_failure(r.status, r.body)] * len(planned)
        return parse_response(r.body)

    def _settle(self, index: str, target_index: str, result: IndexResult) -> None:
        """Writes of A's version that B refused (409): B holds that document, or a tombstone of it, at a
        higher version. Both sides are read again, A's shard statistics first:

        - A no longer holds it, or B's version is one A gave (B's version is at most A's now, so the
          live replay wrote it): written again as A holds it now, at A's version, or skipped;
        - B's version is above every version A gave the document: B was changed by hand (a delete leaves
          a tombstone one version above the copy it removed, and Elasticsearch keeps it
          ``index.gc_deletes``, 60 s by default; a write with internal versions adds one too). A's
          document is written at B's version (``external_gte`` passes an equal one) when no write A
          takes from now on can carry a lower version: A's next version of the document is above its
          current one, and above its shard's highest sequence number (a write's version is at least
          its sequence number), so B's version must be at most the larger of A's version + 1 and the
          lowest of A's shards' max_seq_no + 1. Above that, writing it would make B refuse A's next
          writes of the document as older (and the replay takes such a 409 for "B has it"): it is
          left and reported.
        """
        conflicts, result.conflicts = result.conflicts, []
        for start in range(0, len(conflicts), self.batch):
            chunk = conflicts[start : start + self.batch]
            wanted = [(c.id, c.routing) for c in chunk]
            floor = self._next_version_floor(index)  # read before A: a write that A's read misses is above it
            ours, theirs = self._mget(self.source, index, wanted), self._mget(self.target, target_index, wanted)
            planned = []
            for c in chunk:
                p = self._settle_one(index, target_index, c, ours.get(c.id), theirs.get(c.id), floor, result)
                if p is not None:
                    planned.append(p)
            if planned:
                self.apply(planned, result)  # refused again (a live write got there meanwhile): skipped, verified
                # verified too: a write A took after the read above, replayed to B before this one at the same
                # version (possible only at exactly the floor), was overwritten by it
                result.skipped_docs += [(p.id, p.routing) for p in planned if p.kind in ("restore", "overwrite")]

    def _settle_one(
        self,
        index: str,
        target_index: str,
        c: Conflict,
        a: Optional[dict],
        b: Optional[dict],
        floor: Optional[int],
        result: IndexResult,
    ) -> Optional[Planned]:
        if a is None or a.get("_seq_no") is None:  # deleted on A since: the replay brings the delete
            result.skipped += 1
            result.skipped_docs.append((c.id, c.routing))
            return None
        ours = doc_version(int(a["_seq_no"]), a.get("_version"))
        theirs = int(b["_version"]) if b is not None and b.get("_version") is not None else c.version
        if b is None and theirs is None:
            result.skipped += 1
            result.unresolved += 1
            result.errors.append(
                f"{index}/{c.id}: the target holds no copy, yet refused the source's version {ours} without saying"
                " which version it holds"
            )
            return None
        if b is not None and digest(b.get("_source")) == digest(a.get("_source")):
            result.skipped += 1  # B holds what A holds
            return None
        if theirs is None or theirs <= ours:  # B's version is one A gave: the replay's write
            return versioned_write(a, c.kind, target_index)  # as A holds it now
        bound = max(ours + 1, floor if floor is not None else 0)
        what = "tombstone of a delete" if b is None else "copy"
        if theirs > bound:
            result.skipped += 1
            result.unresolved += 1
            result.errors.append(
                f"{index}/{c.id}: the target holds a {what} at version {theirs}, above any the source gave it"
                f" ({ours}) and above {bound}, the lowest the source's next write of it may carry: not written"
                " (the target would refuse the source's next writes of it as older); "
                + (
                    "run repair again once the target forgot the tombstone (index.gc_deletes, 60 s by default)"
                    if b is None
                    else "delete it on the target, then run repair again once it forgot the tombstone"
                    " (index.gc_deletes, 60 s by default)"
                )
            )
            return None
        if b is None:
            result.notes.append(f"{index}/{c.id}: restored at version {theirs}, past the target's tombstone")
            return versioned_write(a, "restore", target_index, version=theirs)
        result.notes.append(f"{index}/{c.id}: written at version {theirs}, over the target's copy of that version")
        return versioned_write(a, "overwrite", target_index, version=theirs)

    def _next_version_floor(self, index: str) -> Optional[int]:
        """The lowest version a write A takes from now on in ``index`` can be replayed with: each primary shard's
        next sequence number is above its ``max_seq_no``, and a replayed version is at least the write's
        sequence number (capture.doc_version). None when A's shard statistics cannot be read (a user without
        the monitor privilege, a shard without a started primary)."""
        try:
            r = self.source.request("GET", f"/{index}/_stats/docs?level=shards", {}, None)
            if r.status != 200:
                return None
            shards = json.loads(r.body)["indices"][index]["shards"]
            highest = []
            for copies in shards.values():
                primary = [int(s["seq_no"]["max_seq_no"]) for s in copies if (s.get("routing") or {}).get("primary")]
                if not primary:
                    return None
                highest.append(primary[0])
        except (UpstreamError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return min(highest) + 1 if highest else None

    def _verify(self, index: str, target_index: str, result: IndexResult) -> None:
        """A skipped document is fine when B's newer copy is what A holds now (the live stream got there)."""
        docs = result.skipped_docs
        for start in range(0, len(docs), self.batch):
            chunk = docs[start : start + self.batch]
            ours, theirs = self._mget(self.source, index, chunk), self._mget(self.target, target_index, chunk)
            for doc_id, _ in chunk:
                a, b = ours.get(doc_id), theirs.get(doc_id)
                if a is not None and b is None:
                    problem = "the target holds no copy of it"
                elif a is None and b is not None:
                    problem = "the source no longer holds it, the target still does"
                elif a and b and digest(a.get("_source")) != digest(b.get("_source")):
                    problem = "the target holds a newer copy that differs from the source"
                else:
                    continue
                result.unresolved += 1
                result.errors.append(f"{index}/{doc_id}: {problem}")

    # ------------------------------------------------------------------ all of it

    def run(self, pattern: str, refresh_first: bool) -> int:
        ours, theirs = indices(self.source, pattern), indices(self.target, pattern)
        if refresh_first:
            refresh(self.source, ours)
            refresh(self.target, theirs)
        self.progress.total = sum(call(self.source, "GET", f"/{i}/_count").get("count", 0) for i in ours) + sum(
            call(self.target, "GET", f"/{i}/_count").get("count", 0) for i in theirs
        )
        results = [self.repair_index(i, i in ours, i in theirs) for i in sorted(ours | theirs)]
        self.progress.close()
        return self.summary(results)

    def summary(self, results: list[IndexResult]) -> int:
        for r in results:
            if self.dry_run:
                state = f"would copy {r.copied}, update {r.updated}, delete {r.deleted}"
            else:
                state = (
                    f"copied {r.copied}, updated {r.updated}, deleted {r.deleted},"
                    f" skipped {r.skipped} (newer on target), failed {r.failed}"
                )
                if r.restored or r.overwritten:
                    state += f"; {_past_target(r.restored, r.overwritten)}"
            print(f"{r.index}: {state}", file=self.out)
        notes = [n for r in results for n in r.notes]
        for n in notes[: self.show]:
            print(f"  {n}", file=self.out)
        if len(notes) > self.show:
            print(f"  ... and {len(notes) - self.show} more", file=self.out)
        errors = [e for r in results for e in r.errors]
        for e in errors[: self.show]:
            print(f"  error: {e}", file=self.out)
        if len(errors) > self.show:
            print(f"  ... and {len(errors) - self.show} more", file=self.out)
        planned = sum(r.planned for r in results)
        if self.dry_run:
            print(
                f"dry run over {len(results)} index(es): would change {planned} document(s); nothing written",
                file=self.out,
            )
            return 0 if planned == 0 and not errors else 1
        unresolved = sum(r.unresolved for r in results)
        skipped = sum(r.skipped for r in results)
        verdict = "the target matches the source" if unresolved == 0 else f"{unresolved} document(s) still differ"
        restored, overwritten = sum(r.restored for r in results), sum(r.overwritten for r in results)
        past = f" ({_past_target(restored, overwritten)})" if restored or overwritten else ""
        print(
            f"repaired {len(results)} index(es): {planned} written{past}, {skipped} skipped, "
            f"{sum(r.failed for r in results)} failed: {verdict}",
            file=self.out,
        )
        return 0 if unresolved == 0 else 1


def _past_target(restored: int, overwritten: int) -> str:
    """How many writes passed versions B gave itself (changed there by hand)."""
    said = []
    if restored:
        said.append(f"{restored} restored past a tombstone on target")
    if overwritten:
        said.append(f"{overwritten} written over a copy changed on target")
    return ", ".join(said)


def _current_version(error: Any) -> Optional[int]:
    """B's version of a document, from its refusal of a versioned write ("version conflict, current version [7]
    is higher than the one provided [5]", Elasticsearch 6-8 and OpenSearch alike); None if it gives none."""
    found = _CURRENT_VERSION.search(error if isinstance(error, str) else json.dumps(error))
    return int(found.group(1)) if found else None


def _whole_failure(status: int, body: bytes) -> Item:
    return Item("bulk", status, error=body[:300].decode(errors="replace"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="esproxy repair", description=__doc__.splitlines()[0])
    add_cluster_arguments(p)
    p.add_argument("--batch", type=positive(int), default=500, help="documents per _bulk request (default 500)")
    p.add_argument(
        "--rate", type=positive(float), default=None, help="at most N documents read per second (default: unbounded)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be written or deleted; write nothing")
    p.add_argument("--show", type=int, default=20, help="how many planned actions or errors to list (default 20)")
    args = p.parse_args(argv)
    try:
        source, target = cluster(args.source, "repair"), cluster(args.target, "repair")
        repair = Repair(
            source, target, args.batch, args.rate, args.dry_run, args.show, sys.stdout, Progress(0, sys.stderr)
        )
        return repair.run(args.index, not args.no_refresh)
    except (ConfigError, UpstreamError) as e:
        return command_failed("repair", e)
