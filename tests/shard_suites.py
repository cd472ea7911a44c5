"""Suites for the ``--shard`` split, shared by tests/test_sharding.py and benchmarks/shards.py.

Also :func:`least_duration`, the duration-only split pytest-split calls
"least_duration", written afresh from its description (largest test first,
each to the group with the least seconds so far), as the baseline.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from pytest_restask.resources import Mode, Request, Requirement
from pytest_restask.sharding import ShardTest

#: Seed of every generated suite, so figures are stable between runs.
SEED = 20240611
#: Workers per CI job in the resource suite.
RESOURCE_WORKERS = 4


def skewed_suite(count: int = 600, seed: int = SEED) -> list[ShardTest]:
    """Return ``count`` free tests with lognormal durations (median 0.2 s, a long tail)."""
    rng = random.Random(seed)
    return [
        ShardTest(f"tests/test_m{i % 30}.py::test_{i}", round(rng.lognormvariate(-1.6, 1.4), 4), Requirement())
        for i in range(count)
    ]


def resource_suite(count: int = 600, seed: int = SEED) -> list[ShardTest]:
    """Return ``count`` tests: half free, a quarter exclusive on "db", a quarter on "port".

    The db and port tests are integration tests, longer than the free ones,
    so with :data:`RESOURCE_WORKERS` workers the suite's bound is set by
    "db" (its exclusive work), not by work / workers.
    """
    rng = random.Random(seed)
    tests = []
    for i in range(count):
        kind = ("free", "free", "db", "port")[i % 4]
        if kind == "free":
            tests.append(ShardTest(f"tests/test_unit.py::test_{i}", rng.lognormvariate(-1.0, 1.0), Requirement()))
        else:
            seconds = rng.lognormvariate(-0.3 if kind == "db" else -0.6, 0.8)
            requirement = Requirement((Request(kind, Mode.EXCLUSIVE),))
            tests.append(ShardTest(f"tests/test_{kind}.py::test_{i}", seconds, requirement))
    return tests


def least_duration(seconds: Sequence[float], groups: int) -> list[list[int]]:
    """Return the indices of each group: longest first, each to the least loaded group."""
    order = sorted(range(len(seconds)), key=lambda i: -seconds[i])  # stable: ties keep input order
    heap = [(0.0, group) for group in range(groups)]
    result: list[list[int]] = [[] for _ in range(groups)]
    for i in order:
        total, group = heapq.heappop(heap)
        result[group].append(i)
        heapq.heappush(heap, (total + seconds[i], group))
    return [sorted(indices) for indices in result]
