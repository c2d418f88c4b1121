"""`esproxy switchover` (planned) and `esproxy failover` (the leader is down): make a follower the proxy's leader.

Both talk to the running proxy (its `/_esproxy/switchover` endpoints, esproxy/proxy/leadership.py), to the
replays writing into each cluster (`destination.primaries[0].replayAdmin`, `followers[].replayAdmin`)
and to Kafka (the topic's end offsets, the replays' committed offsets). One topic, two replays that
always run: R1 applies the topic into the follower, R2 (its own group) into the leader; a bean carries
the id of the cluster that applied it and a replay skips beans that carry its target's id, so before
the switch R2 skips everything and after it R1 does. Nothing has to be started or stopped.

switchover: checks (read-only; all that ``--dry-run`` does), then
  1. pause writes at the proxy (503 + Retry-After, or held up to ``--hold-for``), wait for the writes in flight;
  2. wait until the proxy has shipped everything to Kafka and the replay into the new leader has
     committed the topic's end offsets (committed = applied);
  3. verify the clusters (``--verify counts``: per index document counts; ``full``: esproxy compare);
  4. make the follower the leader (kept in the proxy's state file);  5. resume writes.
A failed step aborts: writes resume to the original leader.

failover: the new leader once the old one has not answered for 3 s, then what was captured but is not in
it yet (the proxy's spool, the replay's lag), which the running replay goes on applying.

Exit codes: 0 done (dry-run: every check passed); 1 a check failed or a step timed out: nothing
switched, writes resumed in the original direction; 2 bad usage or config; 3 the proxy did not
confirm the resume: writes may still be paused (``curl -XPOST <proxy>/_esproxy/switchover/resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from kafka.errors import KafkaError

from esproxy.clients.elastic import Elastic, UpstreamError
from esproxy.clients.httpsession import HttpSession, Unreachable
from esproxy.clients.tls import admin_base, client_context
from esproxy.configfile import load
from esproxy.core.config import AdminListener, Config, ConfigError, ElasticDestination
from esproxy.core.logs import redact_url
from esproxy.core.schema import Duration, parse_duration
from esproxy.proxy import same_url

from .compare import call, indices
from .compare import run as compare_run
from .switchover_offsets import Offsets, behind

EXIT_OK, EXIT_ABORTED, EXIT_USAGE, EXIT_PAUSED = 0, 1, 2, 3
POLL = 0.2  # seconds between two looks at a condition
PAUSE_EXPIRES_AFTER = 30.0  # past --timeout: the proxy resumes writes by itself if this command died
OLD_LEADER_PROBE = 3.0  # seconds failover gives the old leader to show it is up after all


class Failed(Exception):
    """A check or a step failed: the switchover is aborted."""


class Endpoint:
    """An admin base URL, the headers it wants and, for HTTPS, what to trust (None: the system's CAs);
    asked through esproxy.clients.httpsession. ``url``: the base URL as messages show it (password masked)."""

    def __init__(
        self, url: str, headers: Optional[dict[str, str]] = None, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.http = HttpSession(url, headers, tls)
        self.url = self.http.shown

    def get(self, path: str, timeout: float = 10) -> dict[str, Any]:
        return self._call("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        return self._call("POST", path, body, timeout)

    def _call(self, method: str, path: str, body: Optional[dict[str, Any]], timeout: float) -> dict[str, Any]:
        try:
            answer = self.http.request(method, path, body, timeout)
            if answer.status < 400:
                return answer.json()
        except Unreachable as e:
            raise Failed(str(e)) from None
        except ValueError as e:
            raise Failed(f"{answer.url}: {e}") from None
        try:
            reason = (json.loads(answer.body).get("error") or {}).get("reason")
        except (ValueError, AttributeError):
            reason = None
        raise Failed(f"{answer.url}: HTTP {answer.status}: {reason or answer.body[:300]!r}")


@dataclass
class Plan:
    proxy: Endpoint
    old: ElasticDestination  # the leader now
    new: ElasticDestination  # the leader to be
    into_new: Optional[Endpoint]  # admin of the replay writing into the new leader (None: replayAdmin not set)
    into_old: Optional[Endpoint]  # ... into the old leader (it follows once switched)
    brokers: list[str]
    topics: list[str]

    def describe(self, kind: str, args: argparse.Namespace) -> list[str]:
        old, new = redact_url(self.old.url), redact_url(self.new.url)
        if kind == "failover":
            probe = f"{OLD_LEADER_PROBE:g}s at most; one that answers stops here"
            if getattr(args, "force", False):
                probe = "skipped: --force"
            return [
                f"check that {old} does not answer ({probe})",
                f"promote {new} (the proxy's writes go there; {old} is taken as down)",
                "report what was captured but is not in it yet: the proxy's spool, the replay's lag",
            ]
        pause = f"held up to {args.hold_for:g}s, then 503" if args.hold else "503 with Retry-After"
        verify = {"counts": "per index document counts", "full": "esproxy compare (every document)"}[args.verify]
        unset = "its replay: replayAdmin not set"
        return [
            f"pause writes at the proxy {redact_url(self.proxy.url)} ({pause}); wait for writes in flight",
            f"wait until the spool is shipped to {','.join(self.topics)} and the replay into {new}"
            f" ({_url(self.into_new, 'replayAdmin not set')}) has applied everything",
            f"verify {old} against {new} on indices {args.index!r}: {verify}",
            f"make {new} the leader ({old} follows it through {_url(self.into_old, unset)})",
            "resume writes",
        ]


def proxy_endpoint(cfg: Config) -> Endpoint:
    """The proxy's admin: ``admin.port`` when set, else its first listener (with its client headers); over
    HTTPS when the listener has a certificate, trusting exactly it (as `esproxy sync` does)."""
    if cfg.admin.port:
        listener = cfg.admin
    else:
        p = cfg.proxies()[0]
        listener = AdminListener(port=p.port, host=p.host, header=dict(p.header), tls=p.tls)
    base, tls = admin_base(listener)
    return Endpoint(base, dict(listener.header), tls)


def config_problems(cfg: Config) -> list[str]:
    """What makes this config unusable for a switchover; empty when it is fine."""
    problems = []
    if not cfg.proxies():
        problems.append("no enabled source.proxies[]: this is not the proxy's config")
    if len(cfg.primaries()) != 1:
        problems.append(f"{len(cfg.primaries())} enabled destination.primaries[]: a switchover needs exactly one")
    if not cfg.followers():
        problems.append("no enabled destination.followers[]: no cluster to switch to")
    if not cfg.kafka_destinations():
        problems.append("no destination.kafkas[]: the clusters are not kept in sync through Kafka")
    renamed = [r.name for r in cfg.follow.rules if r.rename != "{{remote_index}}"]
    if renamed:
        problems.append(
            f"follow.rules {', '.join(renamed)} rename A's indices in B: a switchover needs the same names on"
            " both sides (the new leader's clients would write B's names)"
        )
    return problems


def make_plan(cfg: Config, leader_url: str, to: str = "") -> Plan:
    """The switch from the proxy's current leader (``leader_url``, as the proxy says) to ``to`` (default:
    the other cluster when there are two; required when there are more)."""
    clusters = cfg.primaries()[:1] + cfg.followers()
    old = next((c for c in clusters if same_url(redact_url(c.url), leader_url)), None)
    if old is None:
        raise Failed(f"the proxy's leader {leader_url} is not in this config")
    others = [c for c in clusters if c is not old]
    if to:
        new = next((c for c in others if same_url(c.url, to) or same_url(redact_url(c.url), to)), None)
        if new is None:
            raise Failed(f"--to {to}: not one of the configured clusters other than the leader")
    elif len(others) == 1:
        new = others[0]
    else:
        raise Failed(f"{len(others)} clusters could lead: say which with --to URL")
    kafkas = cfg.kafka_destinations()
    return Plan(
        proxy_endpoint(cfg),
        old,
        new,
        replay_endpoint(new),
        replay_endpoint(old),
        list(kafkas[0].brokers),
        sorted({k.topic for k in kafkas}),
    )


def replay_endpoint(cluster: ElasticDestination) -> Optional[Endpoint]:
    """The admin of the replay writing into ``cluster`` (``replayAdmin``, ``replayAdminHeader``); None when unset.
    An https URL is checked as ``replayAdminTls`` says, else as the cluster's ``tls`` says, else against the
    system's CAs; ConfigError for files that cannot be used."""
    url = cluster.replayAdmin.rstrip("/")
    if not url:
        return None
    tls = None
    if urlsplit(url).scheme == "https" and cluster.replayAdminTls:
        tls = client_context(cluster.replayAdminTls, f"replayAdminTls of {redact_url(cluster.url)}")
    elif urlsplit(url).scheme == "https" and cluster.tls:  # as the proxy's lag watch: the cluster's own
        tls = client_context(cluster.tls, f"tls of {redact_url(cluster.url)}")
    return Endpoint(url, dict(cluster.replayAdminHeader), tls)


def _url(endpoint: Optional[Endpoint], unset: str) -> str:
    return endpoint.url if endpoint is not None else unset


def lag_rows(admin: Endpoint, topics: list[str]) -> list[dict[str, Any]]:
    """The consumer_lag rows (esproxy.replay.consumer.KafkaReplay.lag) of the replay at ``admin`` for ``topics``."""
    return [r for r in admin.get("/_esproxy/stats")["replay"]["consumer_lag"] if r["topic"] in topics]


def delayed_follower(admin: Endpoint) -> Optional[str]:
    """Why the cluster the replay at ``admin`` writes into is not the leader's equal: its sync rules delay writes
    (``follow.rules[].delay``) or its lanes hold writes a guard stopped; None when neither (or it cannot say)."""
    replay = admin.get("/_esproxy/stats").get("replay", {})
    delayed = [r for r in replay.get("undo_rules") or [] if r.get("delay_seconds")]
    held = [r for r in replay.get("rule_lanes") or [] if r.get("held")]
    why = [f"sync rule {r['name']} delays its writes by {r['delay_seconds']:g}s" for r in delayed]
    why += [f"sync rule {r['rule']} holds {r['held']['what']} ({r['held']['where']})" for r in held]
    return "; ".join(why) or None


def replay_groups(admin: Endpoint, topics: list[str]) -> list[str]:
    """The consumer groups of the replay at ``admin`` that read ``topics``."""
    return sorted({r["group"] for r in lag_rows(admin, topics)})


# ---------------------------------------------------------------------- the command


class Run:
    def __init__(self, cfg: Config, args: argparse.Namespace, kind: str, out: Any = sys.stdout) -> None:
        self.cfg, self.args, self.kind, self.out = cfg, args, kind, out
        self.started = time.time()
        self.deadline = time.monotonic() + args.timeout
        self.offsets = Offsets(cfg.kafka_destinations()[0])

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        print(f"{stamp} esproxy {self.kind}: {text}", file=self.out, flush=True)

    def wait(self, what: str, condition: Callable[[], Optional[str]]) -> None:
        """Until ``condition`` returns None (else it says what is still missing), or the deadline."""
        last = ""
        while True:
            try:
                missing = condition()
            except (Failed, UpstreamError, KafkaError, OSError) as e:
                missing = f"{type(e).__name__}: {e}"
            if missing is None:
                return
            if missing != last:
                self.say(f"  waiting for {what}: {missing}")
                last = missing
            if time.monotonic() > self.deadline:
                raise Failed(f"timed out ({self.args.timeout:g}s, --timeout) waiting for {what}: {missing}")
            time.sleep(POLL)

    # ------------------------------------------------------------------ checks (read-only)

    def status(self, plan_proxy: Endpoint) -> dict[str, Any]:
        return plan_proxy.get("/_esproxy/switchover")

    def checks(self, plan: Plan) -> list[str]:
        """Read-only checks before anything changes; the problems found."""
        problems = []
        new = Elastic(plan.new, "switchover")
        try:
            new.ensure_cluster_id()
            self.say(f"check: {redact_url(plan.new.url)} answers (cluster id {new.cluster_id})")
        except UpstreamError as e:
            problems.append(f"the new leader does not answer: {e}")
        finally:
            new.close()
        for role, admin in (("into the new leader", plan.into_new), ("into the old leader", plan.into_old)):
            if admin is None:
                problems.append(f"replayAdmin of the cluster the replay {role} writes to is not set")
                continue
            try:
                groups = replay_groups(admin, plan.topics)
            except (Failed, KeyError) as e:
                problems.append(f"the replay {role} ({admin.url}) cannot be asked: {e}")
                continue
            if not groups:
                problems.append(f"the replay {role} ({admin.url}) is assigned no partition of {','.join(plan.topics)}")
            else:
                self.say(f"check: replay {role} runs: {admin.url}, group(s) {', '.join(groups)}")
        if plan.into_new is not None:
            problem = self.delayed(plan.into_new)
            if problem:
                problems.append(problem)
        return problems

    def delayed(self, admin: Endpoint) -> Optional[str]:
        """The refusal of a delayed follower (or one holding writes), None when it is not one or --force is given."""
        try:
            why = delayed_follower(admin)
        except Failed:
            return None  # said by the checks that ask the same endpoint
        if why is None:
            return None
        if getattr(self.args, "force", False):
            self.say(f"check: the new leader is a delayed follower ({why}): --force, going on")
            return None
        return (
            f"the new leader is a delayed follower ({why}): it lacks what A applied within the delay;"
            " --force to promote it anyway (the writes still waiting are applied to it as they come due)"
        )

    def applied(self, plan: Plan, end: dict[tuple[str, int], int]) -> Optional[str]:
        """None once the replay into the new leader committed the end offsets and holds nothing unapplied."""
        assert plan.into_new is not None  # checked before the pause
        groups = replay_groups(plan.into_new, plan.topics)
        if not groups:
            return f"the replay at {plan.into_new.url} is assigned no partition (rebalancing?)"
        for group in groups:
            late = behind(end, self.offsets.committed(group, list(end)))
            if late:
                return f"group {group} has not applied {late} offset(s)"
        # Where the end offset counts record batches (Tansu), it is reached once the last batch's first
        # record is applied: the rest of that batch was fetched with it and shows as waiting until applied.
        waiting = [f"{r['topic']}-{r['partition']}@{r['oldest_offset']}" for r in lag_rows(plan.into_new, plan.topics)]
        waiting = [w for w in waiting if not w.endswith("@None")]
        return f"records fetched, not yet applied: {', '.join(waiting)}" if waiting else None

    def verify(self, plan: Plan) -> None:
        old, new = Elastic(plan.old, "switchover"), Elastic(plan.new, "switchover")
        try:
            if self.args.verify == "full":
                code = compare_run(old, new, self.args.index, 20, True, self.out)
                if code != 0:
                    raise Failed("esproxy compare found differences (listed above)")
                return
            ours, theirs = indices(old, self.args.index), indices(new, self.args.index)
            if ours != theirs:
                raise Failed(
                    f"indices differ: only in the leader {sorted(ours - theirs)}, only in the follower "
                    f"{sorted(theirs - ours)}"
                )
            wrong = []
            for index in sorted(ours):
                counts = []
                for cluster in (old, new):
                    call(cluster, "POST", f"/{index}/_refresh")
                    counts.append(call(cluster, "GET", f"/{index}/_count").get("count", 0))
                if counts[0] != counts[1]:
                    wrong.append(f"{index}: {counts[0]} vs {counts[1]}")
            if wrong:
                raise Failed(f"document counts differ: {'; '.join(wrong)}")
            self.say(f"  {len(ours)} index(es), the same document counts on both")
        except UpstreamError as e:
            raise Failed(f"cannot verify: {e}") from None
        finally:
            old.close()
            new.close()

    # ------------------------------------------------------------------ switchover

    def _start(self) -> Optional[tuple[Endpoint, dict[str, Any], Plan]]:
        """The proxy's admin, its state and the plan from its leader; None (said why) when they cannot be had."""
        proxy = proxy_endpoint(self.cfg)
        try:
            state = self.status(proxy)
            return proxy, state, make_plan(self.cfg, state["leader"], self.args.to)
        except Failed as e:
            self.say(f"cannot start: {e}")
            return None

    def switchover(self) -> int:
        started = self._start()
        if started is None:
            return EXIT_ABORTED
        proxy, state, plan = started
        if state.get("paused"):
            self.say("writes are paused already (another switchover running, or one that died?); nothing done")
            return EXIT_ABORTED
        self.say(f"plan: {redact_url(plan.old.url)} -> {redact_url(plan.new.url)}")
        for i, step in enumerate(plan.describe("switchover", self.args), 1):
            self.say(f"  {i}. {step}")
        problems = self.checks(plan)
        lag = self._lag_text(plan)
        self.say(f"check: the new leader's replay is behind by {lag}")
        if problems:
            for p in problems:
                self.say(f"check failed: {p}")
            self.say("aborted before any change; the proxy still writes to " + redact_url(plan.old.url))
            return EXIT_ABORTED
        if self.args.dry_run:
            self.say("dry run: every check passed; nothing changed")
            return EXIT_OK
        paused_at = 0.0
        try:
            mode = "hold" if self.args.hold else "reject"
            self.say(f"[1/5] pausing writes ({mode})")
            proxy.post(
                "/_esproxy/switchover/pause",
                {
                    "mode": mode,
                    "hold": self.args.hold_for,
                    "retryAfter": self.args.retry_after,
                    "expires": self.args.timeout + PAUSE_EXPIRES_AFTER,
                },
            )
            paused_at = time.monotonic()
            self.wait("writes in flight to finish", lambda: _nonzero(self.status(proxy), "writes_in_flight"))
            self.say("[2/5] waiting for the spool to be shipped and the follower's replay to apply it")
            self.wait(
                "the proxy to ship what it captured",
                lambda: _nonzero(self.status(proxy), "unshipped") or _nonzero(self.status(proxy), "open_intents"),
            )
            end = self.offsets.end(plan.topics)
            self.say(f"  topic end offsets: {_offsets(end)}")
            self.wait(f"the replay into {redact_url(plan.new.url)} to apply them", lambda: self.applied(plan, end))
            self.say(f"[3/5] verifying ({self.args.verify})")
            self.verify(plan)
            self.say(f"[4/5] making {redact_url(plan.new.url)} the leader")
            proxy.post(
                "/_esproxy/switchover/leader",
                {"url": plan.new.url, "expect": plan.old.url, "kind": "switchover", "started": self.started},
            )
        except (Failed, OSError) as e:
            self.say(f"ABORTED: {e}")
            return self._resume(proxy, plan.old, paused_at, EXIT_ABORTED)
        except BaseException:  # ^C, or a bug: the writes must not stay paused
            self._resume(proxy, plan.old, paused_at, EXIT_ABORTED)
            raise
        self.say("[5/5] resuming writes")
        code = self._resume(proxy, plan.new, paused_at, EXIT_OK)
        if code == EXIT_OK:
            self.say(
                f"done in {time.time() - self.started:.1f}s: {redact_url(plan.new.url)} leads,"
                f" {redact_url(plan.old.url)} follows"
            )
        return code

    def _resume(self, proxy: Endpoint, leader: ElasticDestination, paused_at: float, code: int) -> int:
        if not paused_at and code != EXIT_OK:
            self.say(f"nothing was changed: the proxy writes to {redact_url(leader.url)}")
            return code
        try:
            state = proxy.post("/_esproxy/switchover/resume", {})
        except Failed as e:
            self.say(
                f"the proxy did not confirm the resume ({e}): writes may still be paused;"
                f" POST {proxy.url}/_esproxy/switchover/resume"
            )
            return EXIT_PAUSED
        paused = time.monotonic() - paused_at
        verdict = "" if code == EXIT_OK else " in the original direction"
        self.say(f"writes resumed{verdict} to {state['leader']} after a pause of {paused:.3f}s")
        return code

    def _lag_text(self, plan: Plan) -> str:
        try:
            end = self.offsets.end(plan.topics)
            groups = replay_groups(plan.into_new, plan.topics) if plan.into_new else []
            if not groups:
                return "(unknown: no replay group seen)"
            late = {g: behind(end, self.offsets.committed(g, list(end))) for g in groups}
            return ", ".join(f"{g}: {sum(v.values())} offset(s) {v or ''}".strip() for g, v in late.items())
        except Exception as e:  # noqa: BLE001 - informative only
            return f"(unknown: {e})"

    # ------------------------------------------------------------------ failover

    def failover(self) -> int:
        started = self._start()
        if started is None:
            return EXIT_ABORTED
        proxy, state, plan = started
        for i, step in enumerate(plan.describe("failover", self.args), 1):
            self.say(f"  {i}. {step}")
        if not self.args.force and _answers(plan.old):
            self.say(
                f"{redact_url(plan.old.url)} answers: it is not down. Use `esproxy switchover` (it loses nothing),"
                " or --force to promote anyway"
            )
            return EXIT_ABORTED
        refused = self.delayed(plan.into_new) if plan.into_new is not None else None
        if refused:
            self.say(f"refused: {refused}")
            return EXIT_ABORTED
        try:
            state = proxy.post(
                "/_esproxy/switchover/leader",
                {"url": plan.new.url, "kind": "failover", "started": self.started},
            )
            if state.get("paused"):
                state = proxy.post("/_esproxy/switchover/resume", {})
        except Failed as e:
            self.say(f"FAILED: {e}; the proxy still writes to {redact_url(plan.old.url)}")
            return EXIT_ABORTED
        self.say(f"{state['leader']} leads now; writes go there")
        self.say("the unreplicated tail (captured from the old leader, not yet in the new one):")
        self.say(
            f"  proxy: {state.get('unshipped', '?')} write(s) not yet shipped to Kafka (kept in its spool,"
            " shipped as Kafka takes them)"
        )
        if state.get("open_intents"):
            self.say(
                f"  proxy: {state['open_intents']} write(s) of unknown outcome (sent to"
                f" {redact_url(plan.old.url)}, no answer): settled from it once it answers again, then replayed"
            )
        self.say(f"  replay into {redact_url(plan.new.url)}: {self._lag_text(plan)} (it goes on applying them)")
        self.say("operator: check that the replay into the new leader goes on (its stats: replay.consumer_lag);")
        self.say(
            f"  once {redact_url(plan.old.url)} is back: its replay applies the new leader's writes to it;"
            " `esproxy compare` / `esproxy repair --source NEW --target OLD` for whatever it missed;"
            " then `esproxy switchover` to switch back"
        )
        return EXIT_OK


def _answers(cluster: ElasticDestination) -> bool:
    probe = Elastic(dataclasses.replace(cluster, timeout=Duration(OLD_LEADER_PROBE), maxConns=1), "switchover")
    try:
        return probe.request("GET", "/", {}, None).status < 500
    except UpstreamError:
        return False
    finally:
        probe.close()


def _nonzero(state: dict[str, Any], key: str) -> Optional[str]:
    n = state.get(key, 0)
    return f"{key}: {n}" if n else None


def _offsets(end: dict[tuple[str, int], int]) -> str:
    return ", ".join(f"{t}-{p}: {n}" for (t, p), n in sorted(end.items())) or "(no partition)"


def _parser(kind: str) -> argparse.ArgumentParser:
    doc = "planned: pause writes, wait, verify, swap, resume" if kind == "switchover" else "promote a follower now"
    p = argparse.ArgumentParser(prog=f"esproxy {kind}", description=f"esproxy {kind}: {doc}.")
    p.add_argument("-c", "--conf", required=True, help="the proxy's config (conf1.yml)")
    p.add_argument("--to", default="", help="the cluster to lead (a follower's url); needed with several followers")
    p.add_argument("--timeout", default="60s", help="most time for the whole switchover (default 60s)")
    if kind == "switchover":
        p.add_argument("--dry-run", action="store_true", help="print the plan, run the read-only checks")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--reject", action="store_true", help="paused writes get 503 + Retry-After (default)")
        mode.add_argument("--hold", action="store_true", help="paused writes wait, up to --hold-for, then 503")
        p.add_argument("--hold-for", default="10s", help="with --hold: how long a write waits (default 10s)")
        p.add_argument("--retry-after", type=int, default=1, help="Retry-After of a refused write, seconds")
        p.add_argument("--verify", choices=("counts", "full"), default="counts", help="how to compare the clusters")
        p.add_argument("--index", default="*", help="indices verified (default: all but hidden)")
        p.add_argument(
            "--force", action="store_true", help="switch even to a delayed follower (follow.rules[].delay, a hold)"
        )
    else:
        p.add_argument(
            "--force",
            action="store_true",
            help="promote even though the leader answers, or the follower is delayed (follow.rules[].delay, a hold)",
        )
    return p


def main(kind: str, argv: list[str]) -> int:
    args = _parser(kind).parse_args(argv)
    try:
        args.timeout = parse_duration(args.timeout)
        if kind == "switchover":
            args.hold_for = parse_duration(args.hold_for)
    except ValueError as e:
        print(f"esproxy {kind}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load(args.conf)
    except ConfigError as e:
        print(f"esproxy {kind}: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    problems = config_problems(cfg)
    if problems:
        for p in problems:
            print(f"esproxy {kind}: {args.conf}: {p}", file=sys.stderr)
        return EXIT_USAGE
    run = Run(cfg, args, kind)
    try:
        return run.switchover() if kind == "switchover" else run.failover()
    except ConfigError as e:  # the admin listener's certificate unusable (esproxy.clients.tls.admin_base)
        print(f"esproxy {kind}: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        run.offsets.close()
