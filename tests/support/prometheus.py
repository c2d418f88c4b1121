"""A strict parser of the Prometheus text exposition format, for the metrics tests."""

from __future__ import annotations

import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf'^({_NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\}})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict:
    """Parse the Prometheus text exposition format strictly enough to catch mistakes.

    Returns {(name, frozenset(labels.items())): value}; fails on a line that is not a HELP, TYPE or
    sample line, on a sample whose family has no TYPE, or on a value that is not a float.
    """
    types: dict = {}
    samples: dict = {}
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"second TYPE line for {name}"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} without a TYPE line"
        key = (name, frozenset(_LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """The value of one sample (0.0 when absent: counters that never moved have no labelled sample)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
