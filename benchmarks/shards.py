"""Compare the ``--shard K/N`` split with pytest-split's "least_duration".

What is measured
----------------
No test runs: each split is judged by its slowest shard, against the ideal
that no split can beat.

- ``skewed``: 600 free tests with lognormal durations (a long tail), so a
  shard's time is its seconds; the ideal is total / N.
- ``resources``: 600 tests, half free, a quarter exclusive on "db", a
  quarter on "port", 4 workers per CI job; a shard's time is its lower
  bound (``pytest_restask.sharding.bound``: the largest of work / workers
  and, per resource, exclusive work + shared work / workers); the ideal is
  the whole suite's bound / N, which is set by "db".

Columns: ``restask`` and ``pytest-split`` are the slowest shard / ideal for
the suite of seed ``SEED`` (1.000 is a perfect split); the last two columns
repeat the comparison over ``--seeds`` suites of other seeds (restask's
worst, pytest-split's mean and range), as a duration-only split leaves the
"db" work to chance and one seed can be lucky.

pytest-split's own ``Algorithms.least_duration`` is used when the
``pytest_split`` package is importable, otherwise the re-implementation in
``tests/shard_suites.py`` (largest test first, each to the group with the
least seconds), and the output says which.  The last line times ``split``
on 60,000 tests into 10 shards.

Run from the repository root::

    python benchmarks/shards.py [--shards 2,3,4,6] [--seeds 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the suite builders live with the tests, which import them too
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import print_table  # noqa: E402

from pytest_restask.sharding import ShardTest, bound, split  # noqa: E402
from tests.shard_suites import (  # noqa: E402
    RESOURCE_WORKERS,
    SEED,
    least_duration,
    resource_suite,
    skewed_suite,
)

#: A duration-only split: the seconds of each test, the number of groups -> each group's indices.
Splitter = Callable[[Sequence[float], int], list[list[int]]]


class _Item:
    """The little pytest-split needs of a test item."""

    def __init__(self, nodeid: str, index: int) -> None:
        self.nodeid = nodeid
        self.index = index


def pytest_split_least_duration() -> Splitter | None:
    """Return pytest-split's own least_duration, adapted, or None if it is not installed."""
    try:
        from pytest_split.algorithms import Algorithms  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    algorithm = Algorithms.least_duration.value

    def splitter(seconds: Sequence[float], groups: int) -> list[list[int]]:
        items = [_Item(f"t{i}", i) for i in range(len(seconds))]
        durations = {item.nodeid: seconds[item.index] for item in items}
        result = algorithm(splits=groups, items=items, durations=durations)
        return [sorted(item.index for item in group.selected) for group in result]

    return splitter


def time_of(tests: Sequence[ShardTest], indices: Sequence[int], by_bound: bool) -> float:
    """Return a shard's time: its bound, or its seconds."""
    chosen = [tests[i] for i in indices]
    return bound(chosen, RESOURCE_WORKERS)[0] if by_bound else sum(t.seconds for t in chosen)


def ratios(tests: Sequence[ShardTest], shards: int, by_bound: bool, baseline: Splitter) -> tuple[float, float, float]:
    """Return the ideal, and restask's and the baseline's slowest shard / ideal."""
    ideal = (bound(tests, RESOURCE_WORKERS)[0] if by_bound else sum(t.seconds for t in tests)) / shards
    ours = max(time_of(tests, shard.tests, by_bound) for shard in split(tests, shards, RESOURCE_WORKERS))
    theirs = max(time_of(tests, group, by_bound) for group in baseline([t.seconds for t in tests], shards))
    return ideal, ours / ideal, theirs / ideal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="2,3,4,6", help="the numbers of shards N, comma-separated")
    parser.add_argument("--seeds", type=int, default=8, help="how many other seeds the last two columns cover")
    args = parser.parse_args()
    counts = [int(text) for text in args.shards.split(",")]
    baseline = pytest_split_least_duration()
    if baseline is None:
        baseline = least_duration
        print("pytest-split is not installed: its least_duration is the re-implementation in tests/shard_suites.py")
    else:
        print("pytest-split: its own Algorithms.least_duration")
    suites: list[tuple[str, Callable[[int], list[ShardTest]], bool]] = [
        ("skewed", lambda seed: skewed_suite(seed=seed), False),
        ("resources", lambda seed: resource_suite(seed=seed), True),
    ]
    seeds = range(SEED + 1, SEED + 1 + args.seeds)
    for name, build, by_bound in suites:
        tests = build(SEED)
        what = f"bound with {RESOURCE_WORKERS} workers" if by_bound else "seconds"
        print(f"\n{name}: {len(tests)} tests, a shard's time is its {what}; slowest shard / ideal")
        header = ["N", "ideal s", "restask", "pytest-split"]
        rows = [[*header, f"restask worst of {args.seeds}", "pytest-split mean (range)"]]
        for shards in counts:
            ideal, ours, theirs = ratios(tests, shards, by_bound, baseline)
            more = [ratios(build(seed), shards, by_bound, baseline)[1:] for seed in seeds]
            spread = [theirs for _, theirs in more]
            rows.append(
                [
                    str(shards),
                    f"{ideal:.1f}",
                    f"{ours:.3f}",
                    f"{theirs:.3f}",
                    f"{max(ours for ours, _ in more):.3f}" if more else "-",
                    f"{statistics.mean(spread):.3f} ({min(spread):.3f}-{max(spread):.3f})" if more else "-",
                ]
            )
        print_table(rows)
    big = resource_suite(60_000)
    start = time.perf_counter()
    split(big, 10, RESOURCE_WORKERS)
    print(f"\nsplit of {len(big):,} tests (resources suite) into 10 shards: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
