"""Helpers of the property-based (hypothesis) tests: memory bounds and bounded inputs."""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

CI_EXAMPLES = 150  # examples per property in `make test` (the "ci" profile of tests/conftest.py)
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


def costly(share: int) -> Callable[[Any], Any]:
    """For a property whose examples cost more (big inputs, tracemalloc, a round trip to a server): the
    profile's examples in `make test` ("ci"), ``1/share`` of them in a long campaign ("long"). Module-scoped
    fixtures are fine: hypothesis's check against function-scoped ones is off for these."""
    from hypothesis import HealthCheck, settings

    def apply(test: Any) -> Any:
        current = settings()
        examples = max(min(current.max_examples, CI_EXAMPLES), current.max_examples // share)
        checks = [*current.suppress_health_check, HealthCheck.function_scoped_fixture]
        return settings(current, max_examples=examples, suppress_health_check=checks)(test)

    return apply
