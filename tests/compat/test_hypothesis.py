"""Hypothesis's pytest plugin (6.100 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite of
``@given`` tests, one of which Hypothesis falsifies.  Beyond equal counts and
JUnit verdicts it checks what the plugin carries from the test's process to
the terminal summary: the "Falsifying example" of the failing test, in its
failure text, and, with ``--hypothesis-show-statistics``, each test's
statistics, which the plugin attaches to the teardown report's ``__dict__``
and reads back in ``pytest_terminal_summary`` on the controller.

The project's ``pytester`` fixture leaves this plugin out of the runs it
makes (``PYTEST_ADDOPTS=-p no:hypothesispytest``): the test here puts it back.
"""

from __future__ import annotations

import pytest

from . import runs

pytestmark = runs.needs("hypothesis")

CONFTEST = """
    from hypothesis import settings

    settings.register_profile("compat", derandomize=True, deadline=None, database=None, max_examples=50)
    settings.load_profile("compat")
"""

SUITE = """
    import pytest
    from hypothesis import assume, example, given, strategies as st


    @given(st.lists(st.integers()))
    def test_reverse_twice(xs):
        assert list(reversed(list(reversed(xs)))) == xs


    @given(st.lists(st.integers()))
    def test_sorted_is_idempotent(xs):
        assert sorted(sorted(xs)) == sorted(xs)


    @given(st.integers(), st.integers())
    def test_addition_commutes(a, b):
        assert a + b == b + a


    @given(st.integers(min_value=0))
    def test_below_ten(x):
        assert x < 10


    @given(st.text())
    @example("")
    def test_encode_roundtrip(s):
        assert s.encode("utf-8").decode("utf-8") == s


    @given(st.integers())
    def test_assume_nonzero(x):
        assume(x != 0)
        assert x * x > 0


    @pytest.mark.parametrize("k", [2, 3])
    @given(st.integers())
    def test_multiple(k, x):
        assert (x * k) % k == 0


    def test_plain():
        assert True
"""

#: How Hypothesis introduces the example it shrank a failure to ("Falsifying
#: example" before 6.150 or so, "Failing test case" since), as a regex.
FALSIFYING = r".*(Falsifying example|Failing test case): "

#: The ``@given`` tests, whose statistics the summary lists.
GIVEN_TESTS = (
    "test_reverse_twice",
    "test_sorted_is_idempotent",
    "test_addition_commutes",
    "test_below_ten",
    "test_encode_roundtrip",
    "test_assume_nonzero",
    "test_multiple[2]",
    "test_multiple[3]",
)


def test_given_tests_report_the_same_on_workers(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    pytester.makepyfile(conftest=CONFTEST, test_suite=SUITE)
    comparison = runs.compare(pytester, "--hypothesis-show-statistics")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 8, "failed": 1}
    for run in comparison.runs():
        run.result.stdout.re_match_lines(
            [r".*_ test_below_ten _.*", FALSIFYING + r"test_below_ten\(", r".*x=10,", r".*AssertionError"],
            consecutive=False,
        )
        run.result.stdout.fnmatch_lines(["*= Hypothesis Statistics =*"])
        for name in GIVEN_TESTS:
            run.result.stdout.fnmatch_lines([f"test_suite.py::{name}:"])
