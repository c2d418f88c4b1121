"""`esproxy sync copy`'s copying: each index created in B and its documents written with A's versions
(:class:`SyncCopy`), paced (:class:`Throttle`), recorded after every batch (:class:`Checkpoint`), halted or
paused with its sync rule (:class:`RuleWatch`), then verified (see esproxy/commands/synccopy.py)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

from esproxy.clients.elastic import Elastic, Response
from esproxy.clients.httpsession import HttpSession, Unreachable
from esproxy.clients.indexcopy import Definition, create
from esproxy.clients.tls import admin_base
from esproxy.core.retry import Aborted
from esproxy.replay import RateLimit

from .compare import call, compare_index, digest, refresh
from .progress import Progress
from .repair import IndexResult, Planned, Repair, versioned_write
from .synccopy_plan import CopyOptions, IndexPlan, UsageError
from .synccopy_reader import Reader

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
        from esproxy.configfile import load
        from esproxy.replay import Rules

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
