"""Helpers of the property-based (hypothesis) tests: memory bounds and bounded inputs."""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

# Inputs of the parser properties stay this small, so that a run is bounded in time and memory.
MAX_INPUT = 4096


def peak_memory(fn: Callable[[], Any], expected: tuple[type[BaseException], ...] = ()) -> int:
    """The peak of memory allocated while ``fn()`` runs, in bytes; the exceptions in ``expected`` are its
    documented errors (any other one fails the test)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except expected:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory_bound(size: int) -> int:
    """What a parser may allocate for an input of ``size`` bytes: linear in the input, with room for the
    objects it builds (a JSON value of n bytes can be ~50 n bytes of Python objects) and its fixed costs."""
    return 256 * 1024 + 100 * size
