"""Follower sync rules: which of A's indices the replay follows, and under which name in B.

Pure logic, no I/O: the replay (replay/consumer.py, through replay/followed.py) and the initial copy
ask :meth:`Rules.target` for each index a write names; a proxy in front of B asks the inverse,
:meth:`Rules.source` (which A index, under which rule, B's index is a copy of: proxy/readonly.py).
A rule (``follow.rules[]`` in the config) has include patterns (exact names or ``*`` wildcards),
exclude patterns, and a rename template in which ``{{remote_index}}`` stands for A's index name.

Patterns follow Elasticsearch's index name rules plus ``*``; as in Elasticsearch, a wildcard pattern
that does not start with ``.`` does not match a name that does (hidden and system indices).

Overlap (one index two rules follow) is decided conservatively on the patterns alone: two rules
overlap when an include pattern of each can match one same name, unless an exclude pattern of one
of the two rules covers the other's include pattern as a whole (``logs-*`` excludes everything
``logs-app-*`` matches). A pair that would only be kept apart by a combination of excludes is
reported as overlapping: split the patterns so that each exclusion is explicit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, NamedTuple, Optional

from esproxy.core.schema import ConfigError

from .undo import guard_problem

if TYPE_CHECKING:
    from esproxy.core.config import Config, FollowRule, FollowSettings

PLACEHOLDER = "remote_index"
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_FORBIDDEN = set('\\/*?"<>|,# ')
MAX_NAME_BYTES = 255
# Settings Elasticsearch sets itself or refuses in a create or update request: never replayed.
PRIVATE_SETTINGS = (
    "index.uuid",
    "index.creation_date",
    "index.creation_date_string",
    "index.provided_name",
    "index.version.*",
    "index.resize.*",
    "index.routing.allocation.initial_recovery.*",
)
# Settings creation keeps when settings sync is off: what mappings may depend on.
CREATION_SETTINGS = ("index.analysis.*",)
REPLICAS = "index.number_of_replicas"


def render(template: str, index: str) -> str:
    """``template`` with ``{{remote_index}}`` replaced by ``index``."""
    return _PLACEHOLDER.sub(lambda _: index, template)


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a valid index name (Elasticsearch's rules), None if it is."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f'"{name}" is not allowed'
    if name != name.lower():
        return f'"{name}" has upper case letters'
    if name[0] in "-_+":
        return f'"{name}" starts with {name[0]!r}'
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        return f'"{name}" contains {" ".join(repr(c) for c in bad)}'
    if len(name.encode()) > MAX_NAME_BYTES:
        return f'"{name[:40]}..." is longer than {MAX_NAME_BYTES} bytes'
    return None


def pattern_problem(pattern: str) -> Optional[str]:
    """Why ``pattern`` is not an index pattern esproxy understands (a name, or one with ``*``)."""
    if not pattern:
        return "is empty"
    if pattern[0] == "-":
        return f'"{pattern}": exclusions go in exclude, not as -pattern'
    if pattern.startswith("<") or "{" in pattern or "[" in pattern or "?" in pattern:
        return f'"{pattern}": unknown index pattern syntax (only names and * wildcards)'
    if pattern == "_all":
        return '"_all": use "*"'
    problem = name_problem(pattern.replace("*", "x"))
    return f"unknown index pattern syntax: {problem}" if problem else None


def matches(pattern: str, name: str) -> bool:
    """Whether index ``name`` matches ``pattern`` (``*`` = any run of characters; a wildcard pattern
    matches a dot-name only if it starts with a dot itself)."""
    if "*" not in pattern:
        return pattern == name
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return _glob(pattern).fullmatch(name) is not None


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def intersect(a: str, b: str) -> bool:
    """Whether some name matches both patterns (``*`` only)."""

    @cache
    def walk(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            if walk(i + 1, j) or (j < len(b) and walk(i, j + 1)):
                return True
            return False
        if j < len(b) and b[j] == "*":
            return walk(i, j + 1) or (i < len(a) and walk(i + 1, j))
        return i < len(a) and j < len(b) and a[i] == b[j] and walk(i + 1, j + 1)

    for x, y in ((a, b), (b, a)):
        if x.startswith(".") and "*" in y and not y.startswith("."):
            return False  # a wildcard without a leading dot never matches a dot-name
    return walk(0, 0)


def covers(outer: str, inner: str) -> bool:
    """Whether every name ``inner`` matches also matches ``outer`` (sound, not complete: a False
    may be a containment it cannot see, which only makes the overlap check stricter)."""

    @cache
    def walk(i: int, j: int) -> bool:
        if i == len(outer):
            return j == len(inner)
        if outer[i] == "*":
            return walk(i + 1, j) or (j < len(inner) and walk(i, j + 1))
        return j < len(inner) and inner[j] != "*" and outer[i] == inner[j] and walk(i + 1, j + 1)

    if inner.startswith(".") and "*" in outer and not outer.startswith("."):
        return False
    return walk(0, 0)


@dataclass(frozen=True)
class Rule:
    name: str
    indices: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    rename: str = "{{" + PLACEHOLDER + "}}"
    settings: bool = False
    settings_include: tuple[str, ...] = ("*",)
    settings_exclude: tuple[str, ...] = ()
    replicas: bool = False
    aliases: bool = False
    copy_existing: bool = False
    delay: float = 0.0  # seconds: writes applied no earlier than capture + delay (replay/holdback.py)
    guard: tuple[str, ...] = ()  # kinds of destructive writes held for an operator (replay/undo.py)

    def follows(self, index: str) -> bool:
        return any(matches(p, index) for p in self.indices) and not any(matches(p, index) for p in self.exclude)

    def rename_to(self, index: str) -> str:
        return render(self.rename, index)

    def setting_synced(self, key: str) -> bool:
        """Whether the (flat, ``index.``-prefixed) setting ``key`` is replayed under this rule."""
        if any(matches(p, key) for p in PRIVATE_SETTINGS):
            return False
        if key == REPLICAS and not self.replicas:
            return False
        if not self.settings:
            return any(matches(p, key) for p in CREATION_SETTINGS)
        return any(matches(p, key) for p in self.settings_include) and not any(
            matches(p, key) for p in self.settings_exclude
        )

    def _target_pattern(self) -> list[str]:
        """Patterns every B name this rule writes matches (its include patterns through the template)."""
        return [self.rename_to(p) for p in self.indices]


class Target(NamedTuple):
    """Where a followed index goes: the rule that follows it and the index name in B."""

    rule: Rule
    index: str


class Origin(NamedTuple):
    """Where a B index comes from: A's index name and the rule that follows it into B."""

    index: str
    rule: Rule

    def pattern(self) -> str:
        """The include pattern of the rule that matches A's index."""
        return next((p for p in self.rule.indices if matches(p, self.index)), self.rule.indices[0])


FOLLOWING, PAUSED, STOPPED = "following", "paused", "stopped"


class Rules:
    """The rules of a replay, and the state of each (following, paused, stopped). Without rules (and
    not made ``active`` by a follow section or a runtime change), every write is replayed as it is."""

    def __init__(self, rules: list[Rule], active: Optional[bool] = None) -> None:
        self.rules = list(rules)
        self.states: dict[str, str] = {}  # rule name -> PAUSED or STOPPED; absent: FOLLOWING
        self._active = bool(rules) if active is None else active
        self._cache: dict[str, Optional[Target]] = {}
        self.undo = _undo(self.rules)  # a rule delays or guards writes (replay/holdback.py)

    @property
    def active(self) -> bool:
        return self._active

    def replace(self, rules: list[Rule], states: dict[str, str]) -> None:
        """Take another set of rules and states (runtime control): the replay sees them at its next write."""
        self.rules = list(rules)
        self.states = dict(states)
        self._active = True
        self._cache = {}
        self.undo = _undo(self.rules)

    def state(self, name: str) -> str:
        return self.states.get(name, FOLLOWING)

    def paused(self, target: Optional[Target]) -> bool:
        return target is not None and self.states.get(target.rule.name) == PAUSED

    def target(self, index: str) -> Optional[Target]:
        """The rule following ``index`` and its name in B; None if no rule follows it (or the rule that
        would is stopped). Not active: every index is followed under its own name."""
        if not self._active:
            return Target(_IDENTITY, index)
        if index in self._cache:
            return self._cache[index]
        found = None
        for rule in self.rules:
            if rule.follows(index):
                found = None if self.states.get(rule.name) == STOPPED else Target(rule, rule.rename_to(index))
                break
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[index] = found
        return found

    def source(self, b_index: str) -> Optional[Origin]:
        """A's index that the rules write into B as ``b_index``, with its rule; None if B's index is
        no rule's target (written by B's own clients). The inverse of :meth:`target`, on the rules
        alone: a paused or stopped rule's indices still count (they are the replay's). Not active:
        every B index is A's index of the same name."""
        if not self._active:
            return Origin(b_index, _IDENTITY)
        for rule in self.rules:
            for a_index in _unrender(rule, b_index):
                if name_problem(a_index) is None and self._first_following(a_index) is rule:
                    return Origin(a_index, rule)
        return None

    def _first_following(self, index: str) -> Optional[Rule]:
        return next((rule for rule in self.rules if rule.follows(index)), None)

    def may_be_target(self, pattern: str) -> bool:
        """Whether some B index ``pattern`` (with ``*``) matches could be a rule's target (excludes
        are not considered: a True may be a pattern that only matches excluded names)."""
        if not self._active:
            return True
        return any(intersect(target, pattern) for rule in self.rules for target in rule._target_pattern())

    def may_follow(self, pattern: str) -> bool:
        """Whether some index ``pattern`` (with ``*``) matches could be followed."""
        return bool(self.may_follow_rules(pattern))

    def may_follow_rules(self, pattern: str) -> list[Rule]:
        """The rules that could follow some index ``pattern`` (with ``*``) matches."""
        return [
            rule
            for rule in self.rules or [_IDENTITY]
            if any(intersect(p, pattern) and not any(covers(e, pattern) for e in rule.exclude) for p in rule.indices)
        ]

    @classmethod
    def from_config(cls, settings: FollowSettings, path: str = "follow") -> Rules:
        """The rules of the config's ``follow`` section; raises ConfigError naming the key."""
        rules = [_rule(r, f"{path}.rules[{i}]") for i, r in enumerate(settings.rules)]
        names: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.name in names:
                raise ConfigError(
                    f"{path}.rules[{i}].name", f'"{rule.name}" is already the name of rules[{names[rule.name]}]'
                )
            names[rule.name] = i
        for i, a in enumerate(rules):
            for j in range(i):
                _check_apart(rules[j], a, f"{path}.rules[{j}]", f"{path}.rules[{i}]")
        return cls(rules)


_IDENTITY = Rule("(all)", ("*",), settings=True, replicas=True, aliases=True)


def _undo(rules: list[Rule]) -> bool:
    return any(rule.delay > 0 or rule.guard for rule in rules)


def check_config(cfg: Config) -> list[str]:
    """The config's ``follow.rules`` make valid rules (esproxy.configfile runs this on every config it loads);
    raises ConfigError naming the key, warns nothing."""
    if cfg.follow.rules:
        Rules.from_config(cfg.follow)
    return []


def _unrender(rule: Rule, b_index: str) -> list[str]:
    """The names ``rule``'s template turns into ``b_index`` (none or one: a template is injective)."""
    parts = _PLACEHOLDER.split(rule.rename)[::2]  # the literal text around each placeholder
    if len(parts) == 1:  # a constant name: its rule follows one exact index
        return [rule.indices[0]] if b_index == rule.rename and len(rule.indices) == 1 else []
    fixed = sum(len(part) for part in parts)
    count = len(parts) - 1
    size, rest = divmod(len(b_index) - fixed, count)
    if size < 0 or rest or not b_index.startswith(parts[0]):
        return []
    candidate = b_index[len(parts[0]) : len(parts[0]) + size]
    return [candidate] if rule.rename_to(candidate) == b_index else []


def _rule(cfg: FollowRule, path: str) -> Rule:
    if not cfg.name.strip():
        raise ConfigError(f"{path}.name", "is empty")
    if not cfg.indices:
        raise ConfigError(f"{path}.indices", "names no index: give names or patterns")
    for key, patterns in (("indices", cfg.indices), ("exclude", cfg.exclude)):
        for k, pattern in enumerate(patterns):
            problem = pattern_problem(pattern)
            if problem:
                raise ConfigError(f"{path}.{key}[{k}]", problem)
    rename = cfg.rename or "{{" + PLACEHOLDER + "}}"
    for found in _PLACEHOLDER.findall(rename):
        if found != PLACEHOLDER:
            raise ConfigError(f"{path}.rename", f'unknown placeholder "{{{{{found}}}}}" (only {{{{{PLACEHOLDER}}}}})')
    rest = _PLACEHOLDER.sub("", rename)
    if "{" in rest or "}" in rest:
        raise ConfigError(f"{path}.rename", f'"{rename}": a brace outside a {{{{{PLACEHOLDER}}}}} placeholder')
    constant = not _PLACEHOLDER.search(rename)
    if constant and (len(cfg.indices) > 1 or "*" in cfg.indices[0]):
        raise ConfigError(
            f"{path}.rename",
            f'"{rename}" has no {{{{{PLACEHOLDER}}}}}: every index the rule follows would go to one B index',
        )
    for sample in ("x", ".x") if not constant else ("x",):
        problem = name_problem(_PLACEHOLDER.sub(sample, rename))
        if problem and not (sample == ".x" and not any(p.startswith(".") for p in cfg.indices)):
            raise ConfigError(f"{path}.rename", f'"{rename}" does not make a valid index name: {problem}')
    for key, patterns in (("settingsInclude", cfg.settingsInclude), ("settingsExclude", cfg.settingsExclude)):
        for k, pattern in enumerate(patterns):
            if not pattern or any(c in pattern for c in "?[]{}<>, "):
                raise ConfigError(f"{path}.{key}[{k}]", f'"{pattern}" is not a setting key pattern (names and *)')
    for k, kind in enumerate(cfg.guard):
        problem = guard_problem(kind)
        if problem:
            raise ConfigError(f"{path}.guard[{k}]", problem)
    return Rule(
        name=cfg.name.strip(),
        indices=tuple(cfg.indices),
        exclude=tuple(cfg.exclude),
        rename=rename,
        settings=cfg.settings,
        settings_include=tuple(_setting_key(p) for p in cfg.settingsInclude) or ("*",),
        settings_exclude=tuple(_setting_key(p) for p in cfg.settingsExclude),
        replicas=cfg.replicas,
        aliases=cfg.aliases,
        copy_existing=cfg.copyExisting,
        delay=float(cfg.delay),
        guard=tuple(dict.fromkeys(cfg.guard)),
    )


def _setting_key(key: str) -> str:
    """Settings keys are matched in their full form: ``number_of_shards`` is ``index.number_of_shards``."""
    return key if key.startswith("index.") or key == "*" else "index." + key


def _check_apart(a: Rule, b: Rule, path_a: str, path_b: str) -> None:
    """Raise ConfigError if an index could be followed by both rules, or two indices land on one B name."""
    for pa in a.indices:
        for pb in b.indices:
            if not intersect(pa, pb):
                continue
            if any(covers(e, pb) for e in a.exclude) or any(covers(e, pa) for e in b.exclude):
                continue
            raise ConfigError(
                f"{path_b}.indices",
                f'"{pb}" and {path_a} "{pa}" can both match one index: exclude one from the other'
                " (an exclude pattern that covers the other's pattern)",
            )
    for ta in a._target_pattern():
        for tb in b._target_pattern():
            if intersect(ta, tb):
                raise ConfigError(
                    f"{path_b}.rename",
                    f'"{b.rename}" and {path_a} "{a.rename}" can rename two indices onto one B index ("{tb}", "{ta}")',
                )
