"""A followed index B does not have yet is created from A before the replay's first write into it.

Without this, the first live write into an index B lacks makes B create it with dynamic mappings
(``tag`` as ``text`` + ``keyword`` where A maps a ``keyword``...), and ``esproxy sync copy``, run after
the replay as the docs say, then refuses it ("exists in the target with another mapping"). With
``follow.source`` (cluster A) set, the replay asks A for the index (``GET /<index>``) and creates B's
as the copy does (clients/indexcopy.py: A's mappings, the settings and aliases the rule syncs), and the copy
adopts it. Without ``follow.source``, B maps it from the write as before; with sync rules, a warning
says so once per index.

What B has is remembered (per cluster, until a replayed index deletion), so the hot path makes no
request: one ``HEAD /<index>`` per index the first time the replay writes into it. Creation is
race-safe: greenlets of this process wait for each other (one lock per index), and a
``resource_already_exists_exception`` (another replay, the copy) means B has it: the write goes on.

A that cannot be asked is waited for at most :data:`SOURCE_PATIENCE` seconds (a stalled replay would
stall a failover, whose A is down); then B maps the index from the write, and an ERROR names it. B
that cannot be asked is waited for as every write into B is (until it answers or the replay stops).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional
from urllib.parse import quote

from gevent.lock import Semaphore

from esproxy.clients.elastic import Elastic, Response, UpstreamError, is_retriable
from esproxy.clients.indexcopy import SettingsChoice, already_exists, create, definition, read
from esproxy.core.retry import Backoff

from .follow import Rule, Rules

log = logging.getLogger("esproxy.replay")

SOURCE_PATIENCE = 30.0  # seconds the replay waits for A to answer before B maps the index from the write


class IndexCreator:
    def __init__(self, source: Optional[Elastic], rules: Rules, patience: float = SOURCE_PATIENCE) -> None:
        self.source = source
        self.rules = rules
        self.patience = patience
        self._known: dict[Elastic, set[str]] = {}  # per B cluster: the indices it has (or that need nothing)
        self._locks: dict[tuple[int, str], Semaphore] = {}
        self.created = 0  # indices created from A (for tests and logs)

    @property
    def wanted(self) -> bool:
        """Whether writes are looked at: A is known, or there are rules (to warn that B maps dynamically)."""
        return self.source is not None or self.rules.active

    def ensure(self, dest: Elastic, a_index: str, stop: Callable[[], bool]) -> None:
        """Before a write puts documents into A's ``a_index``: make sure B has its followed index.
        Raises Aborted when the replay stops while waiting for B."""
        target = self.rules.target(a_index)
        if target is None:
            return
        known = self._known.get(dest)
        if known is None:
            known = self._known[dest] = set()
        if target.index in known:
            return
        key = (id(dest), target.index)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = Semaphore()
        with lock:
            if target.index not in known:
                self._ensure(dest, a_index, target.index, target.rule, stop)
                known.add(target.index)
        self._locks.pop(key, None)

    def forget(self) -> None:
        """An index deletion was replayed: ask B again before the next write of each index."""
        for known in self._known.values():
            known.clear()

    def _ensure(self, dest: Elastic, a_index: str, b_index: str, rule: Rule, stop: Callable[[], bool]) -> None:
        uri = "/" + quote(b_index, safe="")
        r = _ask_b(dest, "HEAD", uri, stop)
        if r.status != 404:
            return  # B has it (200), or a status the write will meet too
        if self.source is None:
            log.warning(
                "B has no index %s (A's %s, rule %s): this write makes B create it with dynamic mappings,"
                " which may differ from A's (then `esproxy sync copy` refuses it); set follow.source to cluster A"
                " so that the replay creates it from A's mappings, settings and aliases",
                b_index,
                a_index,
                rule.name,
            )
            return
        meta = self._read_a(a_index, b_index, stop)
        if meta is None:
            return
        d = definition(meta, SettingsChoice(synced=rule.setting_synced), rule.aliases)

        def left_out(setting: str) -> None:
            log.info(
                "creating %s in %s: left out setting %s: the cluster does not know it", b_index, dest.url_text, setting
            )

        waits = Backoff(stopping=stop)
        while True:
            try:
                r = create(dest, b_index, d, left_out)
            except UpstreamError as e:
                problem = str(e)
            else:
                if r.status < 300:
                    self.created += 1
                    log.info(
                        "created %s in %s from A's %s before its first write: A's mappings, %d setting(s)%s",
                        b_index,
                        dest.url_text,
                        a_index,
                        len(d.settings),
                        f", aliases {', '.join(sorted(d.aliases))}" if d.aliases else "",
                    )
                    return
                if already_exists(r):  # another replay or the copy created it meanwhile
                    log.info("%s exists in %s (created meanwhile by another writer): going on", b_index, dest.url_text)
                    return
                if not is_retriable(r.status):
                    log.error(
                        "%s refused to create %s from A's %s (%d: %s): B creates it from the write with dynamic"
                        " mappings; compare its mappings with A's before `esproxy sync copy`",
                        dest.url_text,
                        b_index,
                        a_index,
                        r.status,
                        r.body[:500].decode("utf-8", "replace"),
                    )
                    return
                problem = f"status {r.status}: {r.body[:300].decode('utf-8', 'replace')}"
            delay = waits.next()
            log.warning("creating %s in %s failed (%s); retrying in %.1fs", b_index, dest.url_text, problem, delay)
            waits.sleep(delay, f"creating {b_index}: stopping")

    def _read_a(self, a_index: str, b_index: str, stop: Callable[[], bool]) -> Optional[dict]:
        """A's definition of ``a_index``; None (logged) when A has no such index or cannot be asked in time."""
        assert self.source is not None
        deadline = time.monotonic() + self.patience
        waits = Backoff(base=0.5, cap=5.0, stopping=stop)
        while True:
            try:
                meta = read(self.source, a_index)
            except (UpstreamError, ValueError) as e:
                problem = str(e)
            else:
                if meta is None:
                    log.info(
                        "A has no index %s (deleted since, or an alias): B creates %s from the write", a_index, b_index
                    )
                return meta
            delay = waits.next()
            if time.monotonic() + delay > deadline:
                log.error(
                    "cannot read index %s from A (%s) for %.0fs: B creates %s from the write with dynamic mappings;"
                    " compare its mappings with A's before `esproxy sync copy`",
                    a_index,
                    problem,
                    self.patience,
                    b_index,
                )
                return None
            log.warning("reading index %s from A failed (%s); retrying in %.1fs", a_index, problem, delay)
            waits.sleep(delay, f"reading {a_index} from A: stopping")


def _ask_b(dest: Elastic, method: str, uri: str, stop: Callable[[], bool]) -> Response:
    """B's answer, waiting (as the writes do) while it cannot be asked or answers 429/5xx/401/403."""
    waits = Backoff(stopping=stop)
    while True:
        try:
            r = dest.request(method, uri, {}, None)
        except UpstreamError as e:
            problem = str(e)
        else:
            if not is_retriable(r.status):
                return r
            problem = f"status {r.status}"
        delay = waits.next()
        log.warning("%s %s failed (%s); retrying in %.1fs", method, dest.target(uri), problem, delay)
        waits.sleep(delay, f"{method} {uri}: stopping")
