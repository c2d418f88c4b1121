"""Label expressions (`labelEval`) of the Go original: ``SRC==PROXY || SRC==KAFKA``.

Grammar: comparisons ``key==value`` / ``key!=value`` joined by ``&&`` (binds tighter) and ``||``.
An empty expression matches everything. Values compare as strings.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Optional

Matcher = Callable[[Optional[Mapping[str, object]]], bool]

_COMPARISON = re.compile(r"^\s*([^\s=!&|]+)\s*(==|!=)\s*([^\s&|]*)\s*$")


def parse(expr: str) -> Matcher:
    """Compile ``expr``; raises ValueError naming the part that does not parse."""
    if not expr.strip():
        return lambda labels: True
    alternatives = []
    for alternative in expr.split("||"):
        terms = []
        for term in alternative.split("&&"):
            m = _COMPARISON.match(term)
            if not m:
                raise ValueError(f"cannot parse {term.strip()!r} (expected key==value or key!=value)")
            terms.append((m.group(1), m.group(2) == "==", m.group(3).strip("'\"")))
        alternatives.append(terms)

    def match(labels: Optional[Mapping[str, object]]) -> bool:
        labels = labels or {}
        return any(
            all((str(labels.get(key, "")) == value) == equal for key, equal, value in terms) for terms in alternatives
        )

    return match
