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
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

from esproxy.clients.elastic import Elastic, Response, UpstreamError
from esproxy.clients.httpsession import HttpSession, Unreachable
from esproxy.clients.indexcopy import Definition, SettingsChoice, create, definition, mapping_conflicts, matching
from esproxy.clients.tls import admin_base
from esproxy.core.config import ConfigError
from esproxy.core.retry import Aborted
from esproxy.replay.ratelimit import RateLimit

from .compare import call, cluster, command_failed, compare_index, digest, indices, refresh
from .repair import IndexResult, Planned, Progress, Repair, _duration, _positive, megabytes, versioned_write

TEMPLATE_VARIABLE = "{{remote_index}}"
KEEP_ALIVE = "10m"  # of the point in time or scroll between two batches: how long a killed copy can still resume
_INVALID_NAME = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class UsageError(Exception):
    """Bad flags or patterns: exit 2 with this one line."""


# ---------------------------------------------------------------------------------------- naming


def template_rename(template: str) -> Callable[[str], str]:
    """``{{remote_index}}-sync`` -> a function from A's index name to B's."""
    if TEMPLATE_VARIABLE not in template:
        raise UsageError(f"--rename {template!r}: the template must contain {TEMPLATE_VARIABLE}")
    probe = template.replace(TEMPLATE_VARIABLE, "x")
    if _INVALID_NAME.search(probe) or probe[0] in "-_+" or probe in (".", ".."):
        raise UsageError(f'--rename {template!r}: gives invalid index names (lowercase, no \\ / * ? " < > | , # :)')
    return lambda index: template.replace(TEMPLATE_VARIABLE, index)


def split_patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


# SettingsChoice, mapping_conflicts and the index creation live in clients/indexcopy.py: the replay creates a
# followed index B lacks the same way (replay/followcreate.py), so that the copy adopts it.


# ---------------------------------------------------------------------------------------- the plan


@dataclass
class IndexPlan:
    source: str
    target: str
    count: int
    mappings: dict
    settings: dict[str, Any]  # flat keys, as chosen
    aliases: dict[str, dict]  # B's alias names -> their definitions
    exists: bool = False  # the target index exists already (with a compatible mapping)
    refused: str = ""  # why this index is not copied


@dataclass
class CopyOptions:
    batch: int = 500
    rate: Optional[float] = None  # documents/s
    max_bytes_per_second: Optional[float] = None
    concurrency: int = 1  # indices copied in parallel
    settings: SettingsChoice = field(default_factory=SettingsChoice)
    aliases: bool = True
    alias_rename: Optional[Callable[[str], str]] = None  # default: the index rename, else identity
    # per index: its settings choice and whether its aliases are copied (a sync rule's), else the above
    per_index: Optional[Callable[[str], tuple[SettingsChoice, bool]]] = None
    settle: float = 30.0  # seconds the final compare waits for the live stream to catch up
    show: int = 20


def plan_indices(
    source: Elastic,
    target: Elastic,
    patterns: list[str],
    exclude: list[str],
    rename: Callable[[str], Optional[str]],
    options: CopyOptions,
) -> list[IndexPlan]:
    found = indices(source, ",".join(patterns))
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(i, p) for i in found)]
    if unmatched:
        raise UsageError(f"no index in the source matches {', '.join(unmatched)}")
    chosen = sorted(i for i in found if not matching(exclude, i) and rename(i) is not None)
    if not chosen:
        raise UsageError(f"every index matching {','.join(patterns)} is excluded")
    names: dict[str, str] = {}
    for index in chosen:
        name = rename(index) or index
        if name in names:
            raise UsageError(f"{names[name]} and {index} would both be copied into {name}")
        names[name] = index
    alias_rename = options.alias_rename or (lambda a: rename(a) or a)
    plans = []
    for index in chosen:
        meta = call(source, "GET", f"/{index}")[index]
        choice, with_aliases = options.per_index(index) if options.per_index else (options.settings, options.aliases)
        d = definition(meta, choice, with_aliases, alias_rename)
        count = call(source, "GET", f"/{index}/_count").get("count", 0)
        plan = IndexPlan(index, rename(index) or index, count, d.mappings, d.settings, d.aliases)
        existing = target.request("GET", f"/{plan.target}/_mapping", {}, None)
        if existing.status == 200:
            plan.exists = True
            theirs = next(iter(json.loads(existing.body).values()), {}).get("mappings") or {}
            conflicts = mapping_conflicts(plan.mappings, theirs)
            if conflicts:
                plan.refused = f"{plan.target} exists in the target with another mapping ({', '.join(conflicts[:3])})"
        elif existing.status != 404:
            raise UpstreamError(target.target(f"/{plan.target}/_mapping"), f"status {existing.status}", timeout=False)
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------------- checkpoint


class Checkpoint:
    """One JSON file per copy (source, target and patterns): each index's state and position."""

    def __init__(self, path: Path, identity: dict) -> None:
        self.path, self.identity = path, identity
        self.data: dict = {}
        self._lock = threading.Lock()

    def load(self) -> bool:
        """True when a checkpoint of this same copy was found (and is resumed)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return False
        except ValueError as e:
            raise UsageError(f"checkpoint {self.path} is not JSON ({e}); remove it or pass --fresh") from None
        if data.get("identity") != self.identity:
            raise UsageError(f"checkpoint {self.path} belongs to another copy; remove it or pass --fresh")
        self.data = data
        return True

    def start(self, stream_since: str) -> None:
        self.data = {"identity": self.identity, "stream_since": stream_since, "indices": {}}
        self.save()

    def index(self, name: str) -> dict:
        return self.data["indices"].setdefault(name, {})

    def update(self, name: str, **values: Any) -> None:
        with self._lock:
            self.index(name).update(values)
            self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- throttle


class Throttle:
    """The copy's limits (``ratelimit.RateLimit``, as the replay's stream uses) shared by its threads:
    one waits at a time, so together they keep the rate; ``throttled`` is the time spent waiting."""

    def __init__(self, rate: Optional[float], bytes_rate: Optional[float]) -> None:
        self.limit = RateLimit(rate or 0, bytes_rate or 0)
        self._lock = threading.Lock()

    @property
    def throttled(self) -> float:
        return self.limit.throttled

    def take(self, docs: int, size: int, stopping: Callable[[], bool]) -> None:
        with self._lock:
            try:
                self.limit.take(docs, size, stopping)
            except Aborted:
                raise Interrupted() from None

    def sends(self, planned: list[Planned], read: int, stopping: Callable[[], bool]) -> Iterator[list[Planned]]:
        """A page's writes in sends of at most the limits' burst, each paid for before it is handed out
        (all at once when unlimited). ``read``: the page's documents; those not written (no version to
        write them with) are paid for with the first send."""
        if not self.limit.limited:
            yield planned
            return
        extra = read - len(planned)
        for send in self.limit.split(planned, lambda p: len(p.lines)) if planned else [planned]:
            self.take(len(send) + extra, sum(len(p.lines) for p in send), stopping)
            extra = 0
            yield send


# ---------------------------------------------------------------------------------------- reading


class Reader:
    """A's documents of one index in pages, by point in time + search_after or by scroll; the
    position after each page can be saved and, for a point in time, resumed by another process."""

    # The orders a point in time is paged in, the first the engine takes: see _pit_pages.
    ORDERS: tuple[str, ...] = ("shard_doc", "doc")

    def __init__(self, cluster: Elastic, index: str, page: int, state: dict) -> None:
        self.cluster, self.index, self.page = cluster, index, page
        # kind ("pit" or "scroll"), flavor, id, order, slice, slices, after: resumed when present
        self.state = state
        self.restarted = False

    def pages(self) -> Iterator[list[dict]]:
        if self.state.get("kind") == "pit" and self.state.get("after") is not None:
            try:
                yield from self._pit_pages()
                return
            except _Expired:
                self.restarted = True
                self.state = {}
        elif self.state.get("kind"):  # a scroll, or a point in time before its first page: from the start
            self.restarted = bool(self.state.get("after") is not None or self.state.get("kind") == "scroll")
            self.state = {}
        if self._open_pit():
            for order in self.ORDERS:
                self.state.update(order=order, slice=0, slices=self._slices() if order == "doc" else 0)
                try:
                    yield from self._pit_pages()
                    return
                except _Unsupported:  # the point in time cannot be paged in this order: the next one
                    pass
            self.close()  # a point in time the engine pages in neither order: scroll
        yield from self._scroll_pages()

    def close(self) -> None:
        """Release the point in time or scroll (only once the index is done: a killed copy resumes it)."""
        kind, flavor, ident = self.state.get("kind"), self.state.get("flavor"), self.state.get("id")
        if not ident:
            return
        if kind == "pit":
            uri, body = (
                ("/_search/point_in_time", {"pit_id": [ident]}) if flavor == "opensearch" else ("/_pit", {"id": ident})
            )
        else:
            uri, body = "/_search/scroll", {"scroll_id": ident}
        try:
            self.cluster.request("DELETE", uri, {"Content-Type": "application/json"}, json.dumps(body).encode())
        except UpstreamError:
            pass

    def page_done(self, hits: list[dict]) -> None:
        """The page is written: the position to go on from (a crash before this re-reads the page)."""
        if self.state.get("kind") == "pit":
            self.state["after"] = hits[-1].get("sort")

    def _open_pit(self) -> bool:
        for flavor, uri in (
            ("opensearch", f"/{self.index}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
            ("elasticsearch", f"/{self.index}/_pit?keep_alive={KEEP_ALIVE}"),
        ):
            r = self.cluster.request("POST", uri, {}, None)
            if r.status == 200:
                body = json.loads(r.body)
                self.state = {
                    "kind": "pit",
                    "flavor": flavor,
                    "id": body.get("pit_id") or body.get("id"),
                    "after": None,
                }
                return True
        return False

    def _slices(self) -> int:
        """How many slices of the point in time the ``doc`` order reads one after the other: one per
        shard (a slice's ``max`` equal to the shard count makes slice N exactly shard N), as a Lucene
        doc id is unique only within a shard; none for an index of one shard."""
        settings = call(self.cluster, "GET", f"/{self.index}/_settings/index.number_of_shards")
        shards = int(next(iter(settings.values()))["settings"]["index"]["number_of_shards"])
        return shards if shards > 1 else 0

    def _pit_pages(self) -> Iterator[list[dict]]:
        """Pages in ``_shard_doc`` order (Elasticsearch 7.12+, OpenSearch 3.3+) or, where the engine
        has no ``_shard_doc`` (OpenSearch 2.x/3.0-3.2), in ``_doc`` order one shard at a time: either
        way ``after`` (with ``slice``) is a position another process can go on from while the point in
        time lives. A checkpoint of before the order was recorded used ``_shard_doc``."""
        paged = self.state.get("after") is not None
        while True:
            order = self.state.get("order", "shard_doc")
            body: dict = {
                "size": self.page,
                "sort": [{"_shard_doc": "asc"}] if order == "shard_doc" else ["_doc"],
                "pit": {"id": self.state["id"], "keep_alive": KEEP_ALIVE},
                "seq_no_primary_term": True,
                "version": True,
                "track_total_hits": False,
            }
            if self.state.get("slices"):
                body["slice"] = {"id": self.state["slice"], "max": self.state["slices"]}
            if self.state.get("after") is not None:
                body["search_after"] = self.state["after"]
            r = self.cluster.request(
                "POST", "/_search", {"Content-Type": "application/json"}, json.dumps(body).encode()
            )
            if r.status == 404 or (r.status >= 400 and b"search_context_missing" in r.body):
                raise _Expired()
            if r.status == 400 and not paged:
                raise _Unsupported()
            if r.status >= 300:
                raise UpstreamError(
                    self.cluster.target("/_search"), f"status {r.status}: {r.body[:300]!r}", timeout=False
                )
            data = json.loads(r.body)
            hits = data.get("hits", {}).get("hits", [])
            self.state["id"] = data.get("pit_id") or data.get("id") or self.state["id"]
            if not hits:
                if self.state.get("slice", 0) + 1 >= self.state.get("slices", 0):
                    return
                self.state.update(slice=self.state["slice"] + 1, after=None)  # the next shard
                continue
            paged = True
            yield hits

    def _scroll_pages(self) -> Iterator[list[dict]]:
        r = call(
            self.cluster,
            "POST",
            f"/{self.index}/_search?scroll={KEEP_ALIVE}",
            {"size": self.page, "sort": ["_doc"], "seq_no_primary_term": True, "version": True},
        )
        self.state = {"kind": "scroll", "id": r.get("_scroll_id"), "after": None}
        while True:
            hits = r.get("hits", {}).get("hits", [])
            if not hits:
                return
            yield hits
            r = call(self.cluster, "POST", "/_search/scroll", {"scroll": KEEP_ALIVE, "scroll_id": self.state["id"]})
            self.state["id"] = r.get("_scroll_id", self.state["id"])


class _Expired(Exception):
    """The point in time a checkpoint names is gone."""


class _Unsupported(Exception):
    """The cluster opens a point in time but cannot page through it as asked."""


# ---------------------------------------------------------------------------------------- copying


@dataclass
class IndexOutcome:
    plan: IndexPlan
    read: int = 0
    written: int = 0
    skipped: int = 0  # B held the same or a newer version (the live stream got there)
    failed: int = 0
    bytes: int = 0
    resumed_at: int = 0  # documents already copied by an earlier, interrupted run
    restarted: bool = False
    errors: list[str] = field(default_factory=list)
    verified: Optional[IndexResult] = None
    differences: int = 0
    halted: str = ""  # the rule was stopped or deleted while copying: why this index's copy ended


RULES_PATH = "/_esproxy/sync/rules"


class RuleWatch:
    """The replay's rules as they are now (GET /_esproxy/sync/rules on the config's admin port), asked
    at most once a second, so that a copy run with ``-c`` sees a rule paused, stopped or deleted."""

    def __init__(self, conf: str, out: TextIO) -> None:
        from esproxy.core.config import load
        from esproxy.replay.follow import Rules

        cfg = load(conf)
        self.rules = Rules.from_config(cfg.follow)
        self.out, self.url = out, ""
        self.http: Optional[HttpSession] = None
        self._states: Optional[dict[str, str]] = None  # None: never read
        self._asked = 0.0
        self._warned = False
        self._lock = threading.Lock()
        if cfg.admin.port:
            base, tls = admin_base(cfg.admin)
            self.http = HttpSession(base, cfg.admin.header, tls, timeout=5)
            self.url = f"{self.http.shown}{RULES_PATH}"
        else:
            self._warn(f"{conf}: admin.port is not set")

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"{why}: rule changes while the copy runs cannot be seen; copying on", file=self.out)

    def rule_of(self, index: str) -> Optional[str]:
        hit = self.rules.target(index)
        return hit.rule.name if hit is not None else None

    def state(self, rule: str) -> str:
        """following, paused, stopped or deleted (following while the replay cannot be asked)."""
        with self._lock:
            if self.http is not None and time.monotonic() - self._asked >= 1.0:
                self._asked = time.monotonic()
                try:
                    answer = self.http.get(RULES_PATH)
                    if answer.status >= 400:
                        raise ValueError(f"HTTP Error {answer.status}")
                    listed = json.loads(answer.body)["rules"]
                    self._states = {str(x["name"]): str(x["state"]) for x in listed}
                except Unreachable as e:
                    self._warn(f"the replay's admin port ({self.url}) did not answer: {e.reason}")
                except (ValueError, KeyError, TypeError) as e:
                    self._warn(f"the replay's admin port ({self.url}) did not answer: {e}")
            if self._states is None:
                return "following"
            return self._states.get(rule, "deleted")


class SyncCopy:
    def __init__(
        self,
        connect: Callable[[], tuple[Elastic, Elastic]],
        options: CopyOptions,
        checkpoint: Checkpoint,
        out: TextIO = sys.stdout,
        progress: Optional[Progress] = None,
    ) -> None:
        self.connect, self.options, self.checkpoint, self.out = connect, options, checkpoint, out
        self.throttle = Throttle(options.rate, options.max_bytes_per_second)
        self.progress = progress or Progress(0, sys.stderr, label="sync copy")
        # under --rate, pages of a tenth of a second: a checkpoint after each, little read again after a stop
        self.page = options.batch if not options.rate else max(1, min(options.batch, int(options.rate / 10)))
        self.stopping = False  # Ctrl-C or SIGTERM: every index stops after its current batch
        self.rules: Optional[RuleWatch] = None  # -c: the replay's rules, as they change at runtime
        self.paused = 0.0  # seconds indices waited for their paused rule
        self._paused_lock = threading.Lock()
        self._local = threading.local()

    def _clusters(self) -> tuple[Elastic, Elastic]:
        """This thread's clients (an HTTP pool belongs to the thread that made it)."""
        if not hasattr(self._local, "clusters"):
            self._local.clusters = self.connect()
        return self._local.clusters

    def copy_index(self, plan: IndexPlan) -> IndexOutcome:
        outcome = IndexOutcome(plan)
        state = self.checkpoint.index(plan.source)
        if state.get("reader") or state.get("state") == "copied":
            outcome.resumed_at = outcome.read = state.get("read", 0)
            outcome.written, outcome.bytes = state.get("written", 0), state.get("bytes", 0)
            self.progress.step(read=outcome.resumed_at)
        if state.get("state") == "copied":
            return outcome
        source, target = self._clusters()
        self.progress.index = plan.source
        if not state.get("created"):
            self._create(target, plan)
            self.checkpoint.update(plan.source, target=plan.target, created=True)
        reader = Reader(source, plan.source, self.page, dict(state.get("reader") or {}))
        writer = Repair(source, target, batch=self.page, out=self.out, progress=self.progress)
        result = IndexResult(plan.source)
        first = True
        for hits in reader.pages():
            if self.stopping:
                raise Interrupted()
            if first and reader.restarted:
                outcome.restarted, outcome.resumed_at = True, 0
                outcome.read = outcome.written = outcome.bytes = 0
            first = False
            outcome.halted = self._rule_halt(plan)
            if outcome.halted:
                self.checkpoint.update(plan.source, state="halted", error=outcome.halted)
                reader.close()
                break
            planned, unversioned = self._writes(hits, plan)
            size = sum(len(p.lines) for p in planned)
            failed_before = result.failed
            for send in self.throttle.sends(planned, len(hits), lambda: self.stopping):
                writer.apply(send, result)
            outcome.read += len(hits)
            outcome.bytes += size
            self.progress.step(read=len(hits), size=size)
            outcome.failed += len(unversioned)
            outcome.errors += unversioned
            if planned and result.failed - failed_before == len(planned):
                reason = result.errors[-1] if result.errors else "every write refused"
                outcome.errors.append(f"the target refused the copy's writes into {plan.target}: {reason}")
                self.checkpoint.update(plan.source, state="failed", error=outcome.errors[-1], failed=result.failed)
                reader.close()
                break
            reader.page_done(hits)
            self.checkpoint.update(
                plan.source,
                reader=dict(reader.state),  # a copy: the reader goes on changing its own
                read=outcome.read,
                written=outcome.written + result.copied,
                bytes=outcome.bytes,
            )
        else:
            reader.close()
            self.checkpoint.update(plan.source, state="copied")
        outcome.written += result.copied
        outcome.skipped += result.skipped
        outcome.failed += result.failed
        outcome.errors += [e for e in result.errors if e not in outcome.errors]
        return outcome

    def _rule_halt(self, plan: IndexPlan) -> str:
        """Before each batch: wait while the index's rule is paused; why its copy ends if the rule was
        stopped or deleted ("" to go on). What was copied so far stays in the target."""
        rule = self.rules.rule_of(plan.source) if self.rules is not None else None
        if rule is None or self.rules is None:
            return ""
        waited_since = None
        while (state := self.rules.state(rule)) == "paused":
            if self.stopping:
                raise Interrupted()
            waited_since = waited_since or time.monotonic()
            time.sleep(0.2)  # the rules are asked again at most once a second
        if waited_since is not None:
            with self._paused_lock:
                self.paused += time.monotonic() - waited_since
        if state in ("stopped", "deleted"):
            return (
                f"rule {rule} was {state} while copying: {plan.target} keeps what was copied;"
                " add the rule again and copy to finish"
            )
        return ""

    def _writes(self, hits: list[dict], plan: IndexPlan) -> tuple[list[Planned], list[str]]:
        planned, unversioned = [], []
        for hit in hits:
            if hit.get("_seq_no") is None:
                unversioned.append(f"{plan.source}/{hit['_id']}: the source gives no _seq_no to version the write with")
            else:
                planned.append(versioned_write(hit, "copy", plan.target))
        return planned, unversioned

    def _create(self, target: Elastic, plan: IndexPlan) -> None:
        if not plan.exists:
            r = self._put_index(target, plan)
            if r.status < 300 or b"already_exists" in r.body:  # the stream created it meanwhile
                plan.exists = r.status >= 300
                if not plan.exists:
                    return
            else:
                raise _Refused(f"the target refused to create {plan.target}: status {r.status}: {r.body[:300]!r}")
        if plan.mappings:  # adds the fields B lacks; a conflicting one is refused here
            r = target.request(
                "PUT",
                f"/{plan.target}/_mapping",
                {"Content-Type": "application/json"},
                json.dumps(plan.mappings).encode(),
            )
            if r.status >= 300:
                raise _Refused(f"the target refused {plan.source}'s mapping for {plan.target}: {r.body[:300]!r}")
        if plan.aliases:
            actions = [{"add": {"index": plan.target, "alias": a, **d}} for a, d in plan.aliases.items()]
            r = target.request(
                "POST", "/_aliases", {"Content-Type": "application/json"}, json.dumps({"actions": actions}).encode()
            )
            if r.status >= 300:
                raise _Refused(f"the target refused the aliases of {plan.target}: {r.body[:300]!r}")

    def _put_index(self, target: Elastic, plan: IndexPlan) -> Response:
        """Create B's index (indexcopy.create: a setting B does not know is left out, with a line saying so)."""

        def left_out(setting: str) -> None:
            print(f"{plan.target}: left out setting {setting}: the target does not know it", file=self.out)

        return create(target, plan.target, Definition(plan.mappings, plan.settings, plan.aliases), left_out)

    def verify(self, plan: IndexPlan) -> tuple[IndexResult, int]:
        """Repair's pass over what was copied, then a compare. Under a live load B lags A by what the
        stream has not applied yet: a difference counts only if it outlasts ``settle`` seconds."""
        source, target = self._clusters()
        refresh(source, {plan.source})
        refresh(target, {plan.target})
        fixer = Repair(source, target, batch=self.options.batch, out=self.out, progress=Progress(0, _Null()))
        result = fixer.repair_index(plan.source, True, True, plan.target)
        refresh(source, {plan.source})
        refresh(target, {plan.target})
        report = compare_index(source, target, plan.source, True, plan.target)
        differing = set(report.missing) | set(report.extra) | set(report.different)
        deadline = time.monotonic() + self.options.settle
        while differing and time.monotonic() < deadline:
            time.sleep(1.0)
            refresh(source, {plan.source})
            refresh(target, {plan.target})
            same = _same(source, target, plan, sorted(differing))
            differing = {d for d in differing if not same(d)}
        return result, len(differing)

    def run_one(self, plan: IndexPlan) -> IndexOutcome:
        try:
            outcome = self.copy_index(plan)
        except _Refused as e:
            self.checkpoint.update(plan.source, state="failed", error=str(e))
            outcome = IndexOutcome(plan, failed=1, errors=[str(e)])
        if self.checkpoint.index(plan.source).get("state") == "copied":
            outcome.verified, outcome.differences = self.verify(plan)
        return outcome

    def run(self, plans: list[IndexPlan]) -> list[IndexOutcome]:
        todo = [p for p in plans if not p.refused]
        self.progress.total = sum(p.count for p in todo)
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            outcomes = list(pool.map(self.run_one, todo))
        self.progress.close()
        refused = [IndexOutcome(p, failed=1, errors=[p.refused]) for p in plans if p.refused]
        return outcomes + refused


def _same(source: Elastic, target: Elastic, plan: IndexPlan, ids: list[str]) -> Callable[[str], bool]:
    """Whether each of ``ids`` now has the same `_source` (or is absent) on both sides; searched
    by id, so that routed documents are found without knowing their routing."""
    ours, theirs = _sources(source, plan.source, ids), _sources(target, plan.target, ids)
    return lambda doc_id: ours.get(doc_id) == theirs.get(doc_id)


def _sources(cluster: Elastic, index: str, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        body = {"size": len(chunk), "query": {"ids": {"values": chunk}}}
        for hit in call(cluster, "POST", f"/{index}/_search", body).get("hits", {}).get("hits", []):
            found[hit["_id"]] = digest(hit.get("_source"))
    return found


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the copy stopped after a batch; its checkpoint holds where."""


class _Refused(Exception):
    """The target refused to create the index, its mapping or aliases: that index is not copied."""


class _Null:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------- output


def print_plan(plans: list[IndexPlan], out: TextIO) -> None:
    for p in plans:
        if p.refused:
            print(f"{p.source} -> {p.target}: refused: {p.refused}", file=out)
            continue
        how = "exists in the target (compatible mapping): documents only" if p.exists else "create"
        print(f"{p.source} -> {p.target}: {p.count} docs, {how}", file=out)
        if not p.exists:
            print(f"  settings: {json.dumps(p.settings, sort_keys=True)}", file=out)
        print(f"  mappings: {json.dumps(p.mappings, sort_keys=True)}", file=out)
        if p.aliases:
            print(f"  aliases: {', '.join(sorted(p.aliases))}", file=out)


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
        f"copied {len(outcomes)} index(es): {docs} documents in {_duration(elapsed)}"
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
    from esproxy.core.config import load
    from esproxy.replay.follow import Rules

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
    p.add_argument("--batch", type=_positive(int), default=500, help="documents per _bulk request (default 500)")
    p.add_argument("--rate", type=_positive(float), help="at most N documents per second (default: unbounded)")
    p.add_argument("--max-bytes-per-second", type=_positive(float), help="at most N bytes of _bulk per second")
    p.add_argument("--concurrency", type=_positive(int), default=1, help="indices copied in parallel (default 1)")
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
