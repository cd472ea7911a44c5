"""pytest-timeout (2.3 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite where
pytest-timeout ends some tests: one through ``@pytest.mark.timeout(1)``, one
through the ``--timeout`` option, beside tests that finish in time (one of
them under a marker that lifts the option's limit) and ordinary failures.
Beyond equal counts and JUnit verdicts it checks that each timed-out test
fails with pytest-timeout's own message in both runs: its signal method
fails the test on the worker, before restask's backstop (5 s after the
marker's limit) would end the worker, and the stack dump it writes to the
terminal first is shown with the failure, under "Captured stdout call", as
in process.
"""

from __future__ import annotations

import pytest

from . import runs

pytestmark = runs.needs("pytest-timeout")

CONFTEST = """
    import threading
    import time

    # a second thread, as a test of a threaded program has: pytest-timeout
    # dumps the stacks of the other threads before it fails the test
    threading.Thread(target=time.sleep, args=(60,), name="background", daemon=True).start()
"""

SUITE = """
    import time

    import pytest


    @pytest.mark.timeout(1)
    def test_marker_timeout():
        time.sleep(5)


    def test_option_timeout():
        time.sleep(5)


    @pytest.mark.timeout(5)
    def test_marker_lifts_the_option():
        time.sleep(0.5)


    @pytest.mark.timeout(0)
    def test_marker_zero_means_no_limit():
        time.sleep(0.5)


    @pytest.mark.parametrize("i", range(4))
    def test_quick(i):
        assert i != 3


    def test_fails():
        assert 1 == 2
"""

#: pytest-timeout's failure message (its ``PYTEST_FAILURE_MESSAGE``) for a limit.
MESSAGE = "Failed: Timeout (>{limit}s) from pytest-timeout."


def test_timed_out_tests_fail_the_same_on_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(conftest=CONFTEST, test_suite=SUITE)
    comparison = runs.compare(pytester, "--timeout=0.3", "--timeout-method=signal")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 5, "failed": 4}
    for run in comparison.runs():
        run.result.stdout.fnmatch_lines(["FAILED test_suite.py::test_marker_timeout - Failed: Timeout*"])
        run.result.stdout.no_fnmatch_line("*timed out after*")
        for name, limit in (("test_marker_timeout", 1.0), ("test_option_timeout", 0.3)):
            section = run.failure(name)
            assert MESSAGE.format(limit=limit) in section, f"{run.name} run, {name}:\n{section}"
            # the stack dump, written to the terminal as the test ran, is captured with it
            captured = section.partition(" Captured stdout call ")[2]
            assert "Stack of background" in captured, f"{run.name} run, {name}:\n{section}"
