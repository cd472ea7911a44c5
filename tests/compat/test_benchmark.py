"""pytest-benchmark (4 and later) on restask workers.

pytest-benchmark disables itself in a parallel run (timings beside other
tests' load mean nothing) and says so with a warning from the worker as it
ends.  That warning must appear once, in the warnings summary, and never in
the middle of the progress line; the tests themselves run as serially.
"""

from __future__ import annotations

import pytest

from . import runs

pytestmark = runs.needs("pytest-benchmark")

#: pytest-benchmark warns only on the worker named gw0: the plain tests give
#: both workers work, so that gw0 is not ended unused before it ever starts.
SUITE = """
import time, pytest

def test_benchmarked(benchmark):
    assert benchmark(sum, range(100)) == 4950

@pytest.mark.parametrize("i", range(8))
def test_plain(i):
    time.sleep(0.25)
"""

WARNING = "Benchmarks are automatically disabled because xdist plugin is active*"


def test_the_disabled_warning_is_shown_once_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    serial = runs.run(pytester, runs.SERIAL, workers=None)
    parallel = runs.run(pytester, runs.PARALLEL, workers=runs.WORKERS)
    assert serial.outcomes["passed"] == parallel.outcomes["passed"] == 9, parallel.tail()
    assert serial.testcases == parallel.testcases
    output = parallel.output().splitlines()
    shown = [i for i, line in enumerate(output) if "Benchmarks are automatically disabled" in line]
    assert len(shown) == 1, parallel.tail()
    summary = next(i for i, line in enumerate(output) if "warnings summary" in line)
    assert shown[0] > summary, parallel.tail()
    assert parallel.outcomes["warnings"] == 1, parallel.tail()
    assert not any("[100%]" in line and "Benchmark" in line for line in output)
