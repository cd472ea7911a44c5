"""pytest-repeat (0.9.3 and later) on restask workers.

Compares ``pytest -p restask -n 2 --count=3`` with the serial run of the same
suite: plain tests, a parametrized one, one with its own
``@pytest.mark.repeat(2)`` and one that fails on its second repetition only.
Beyond equal counts and JUnit verdicts it checks the repetitions themselves:
pytest-repeat parametrizes each test at collection, so every repetition is a
test of its own (``test_x[1-3]``, ``test_x[2-3]``, ...) that the workers
collect and run like any other; both runs list the same node ids, each once.
"""

from __future__ import annotations

import re

import pytest

from . import runs

pytestmark = runs.needs("pytest-repeat")

SUITE = """
    import pytest


    def test_plain():
        pass


    @pytest.mark.parametrize("letter", ["a", "b"])
    def test_parametrized(letter):
        assert letter in "ab"


    @pytest.mark.repeat(2)
    def test_own_count():
        pass


    def test_fails_second_time(request):
        assert not request.node.name.endswith("[2-3]")
"""

#: Every repetition the suite has at ``--count=3``.
EXPECTED = sorted(
    [f"test_plain[{i}-3]" for i in (1, 2, 3)]
    + [f"test_parametrized[{letter}-{i}-3]" for letter in "ab" for i in (1, 2, 3)]
    + [f"test_own_count[{i}-2]" for i in (1, 2)]
    + [f"test_fails_second_time[{i}-3]" for i in (1, 2, 3)]
)

#: A line of ``-rA``'s short test summary: verdict and node id.
SHORT = re.compile(r"^(PASSED|FAILED) test_suite\.py::(\S+)")


def test_repetitions_run_the_same_on_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    comparison = runs.compare(pytester, "--count=3")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 13, "failed": 1}
    for run in comparison.runs():
        assert sorted(name for _, name, _ in run.testcases) == EXPECTED
        verdicts = [match.groups() for match in map(SHORT.match, run.result.stdout.lines) if match]
        assert sorted(name for _, name in verdicts) == EXPECTED
        assert [name for verdict, name in verdicts if verdict == "FAILED"] == ["test_fails_second_time[2-3]"]
