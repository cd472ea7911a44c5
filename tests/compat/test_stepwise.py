"""``--sw``/``--stepwise`` (pytest's own) with restask workers.

Stepwise resumes after the last failure in collection order, and so takes
every test before it as passed.  A parallel run starts tests out of that
order (by resources and durations) and stops at a failure with tests before
it not run, so the next run would skip tests that never ran, or a test
still failing.  restask refuses the combination with a usage error that
says why; without ``-n`` stepwise works as always.
"""

from __future__ import annotations

import pytest

from pytest_restask.plugin import STEPWISE_CONFLICT

from . import runs

SUITE = """
import os
def test_a(): pass
def test_b(): assert os.path.exists("fixed")
def test_c(): pass
"""


def test_stepwise_is_refused_with_workers_and_works_without(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    refused = pytester.runpytest_subprocess("-p", "restask", "-n", "2", "--sw", timeout=runs.TIMEOUT)
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"*{STEPWISE_CONFLICT.format(flag='--sw/--stepwise', n=2)}*"])
    assert "shouldstop cannot be unset" not in refused.stdout.str() + refused.stderr.str()
    first = runs.run(pytester, "first", "--sw", workers=None)
    assert first.outcomes == {"passed": 1, "failed": 1}, first.tail()
    (pytester.path / "fixed").touch()
    second = runs.run(pytester, "second", "--sw", workers=None)
    assert second.outcomes == {"passed": 2, "deselected": 1}, second.tail()  # resumed at test_b
