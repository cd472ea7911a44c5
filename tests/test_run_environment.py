"""What a parallel run shares with a serial one beyond reports: temporary
folders, warnings of any class, option spellings, ``--sw``."""

from __future__ import annotations

import getpass
import os
import sys

import pytest

from pytest_restask.plugin import DIST_IGNORED, STEPWISE_CONFLICT

from .runs import RUN, TIMEOUT, run

TMP_SUITE = """
import time, pytest

@pytest.mark.parametrize("i", range(8))
def test_tmp(tmp_path, i):
    (tmp_path / "mine").write_text(str(i))
    time.sleep(0.3)  # long enough for every worker to have started
    assert (tmp_path / "mine").read_text() == str(i)
    assert i % 2 == 0
"""


def test_basetemp_gives_each_worker_a_folder_of_its_own(pytester: pytest.Pytester) -> None:
    """Regression: every worker took --basetemp itself, and the second one
    wiped the first one's tmp_path mid-test."""
    pytester.makepyfile(TMP_SUITE)
    base = pytester.path / "base"
    result = run(pytester, "-n", "4", f"--basetemp={base}")
    result.assert_outcomes(passed=4, failed=4)  # only the i % 2 asserts fail
    result.stdout.no_fnmatch_line("*FileNotFoundError*")
    folders = sorted(path.name for path in base.iterdir())
    assert folders
    assert all(name.startswith("popen-gw") for name in folders)
    kept = sorted(path.name for path in base.glob("popen-gw*/test_tmp_*0"))
    assert len(kept) == 8  # every test's folder, on whichever worker ran it


def _temproot_runs(pytester: pytest.Pytester, times: int) -> list[pytest.RunResult]:
    """Run ``times`` times with pytest's own numbered temporary folders
    (pytester passes --basetemp to the runs it makes; this does not)."""
    results = []
    for _ in range(times):
        command = [sys.executable, "-m", "pytest", *RUN, "-n", "4", "-p", "no:cacheprovider"]
        results.append(pytester.run(*command, timeout=TIMEOUT))
    return results


@pytest.mark.multirun  # many whole runs: a CI step of its own
def test_failed_tests_tmp_path_is_kept_as_serially(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """One numbered pytest-N folder a run, a sub-folder a worker: the
    retention policy keeps failed tests' folders, and the retention count
    ("keep the N newest") counts runs, not workers.  Regression: each worker made its own
    pytest-N, and a late worker deleted an earlier one's."""
    pytester.makepyfile(TMP_SUITE)
    pytester.makeini("[pytest]\ntmp_path_retention_policy = failed\ntmp_path_retention_count = 2\n")
    root = pytester.path / "temproot"
    root.mkdir()
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(root))
    results = _temproot_runs(pytester, times=3)
    for result in results:
        result.assert_outcomes(passed=4, failed=4)
    user = root / f"pytest-of-{getpass.getuser()}"
    runs = sorted(path.name for path in user.glob("pytest-[0-9]*"))
    assert runs == ["pytest-1", "pytest-2"]  # the 2 newest runs (tmp_path_retention_count), as serially
    for name in runs:
        kept = sorted(path.name for path in (user / name).glob("popen-gw*/test_tmp_*") if not path.is_symlink())
        # the failed tests' folders (odd i) are kept; the passed ones' are removed
        assert kept == [f"test_tmp_{i}_0" for i in (1, 3, 5, 7)]


def test_a_warning_class_of_another_signature_reaches_the_summary(pytester: pytest.Pytester) -> None:
    """Regression: a warning class whose __init__ takes two arguments,
    raised in a test, crashed the controller with INTERNALERROR."""
    pytester.makepyfile(
        """
        import warnings

        class TwoArgs(UserWarning):
            def __init__(self, what, why):
                super().__init__(f"{what}: {why}")

        def test_warns():
            warnings.warn(TwoArgs("disk", "almost full"))
        """
    )
    serial = pytester.runpytest_subprocess(*RUN, timeout=TIMEOUT)
    parallel = run(pytester, "-n", "2")
    assert parallel.ret == serial.ret == pytest.ExitCode.OK
    assert parallel.parseoutcomes() == serial.parseoutcomes() == {"passed": 1, "warnings": 1}
    parallel.stdout.fnmatch_lines(["*TwoArgs: disk: almost full*"])
    parallel.stdout.no_fnmatch_line("*INTERNALERROR*")


@pytest.mark.multirun  # several whole runs: a CI step of its own
def test_an_option_value_taken_for_a_test_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """``--durations-file ../d.json``: pytest chose the rootdir before our
    option existed, took ../d.json for a test path, and lost the project's
    ini file (and its capacities) without a word."""
    project = pytester.mkdir("project")
    # the ini's pythonpath makes the conftest importable: without the ini the
    # conftest fails to import, so the check must come before conftests load
    (project / "pytest.ini").write_text("[pytest]\npythonpath = lib\nrestask_resources =\n    gpu: 2\n")
    (project / "lib").mkdir()
    (project / "lib" / "shop.py").write_text("PRICE = 1\n")
    (project / "conftest.py").write_text("import shop\n")
    (project / "test_gpu.py").write_text("import pytest\n@pytest.mark.resource('gpu', slots=2)\ndef test_gpu(): pass\n")
    (pytester.path / "d.json").write_text("{}")
    os.chdir(project)
    spaced = pytester.runpytest_subprocess(*RUN, "-n", "2", "--durations-file", "../d.json", timeout=TIMEOUT)
    assert spaced.ret == pytest.ExitCode.USAGE_ERROR
    spaced.stderr.fnmatch_lines(
        ["*--durations-file ../d.json:*taken for a test path*write --durations-file=../d.json*"]
    )
    joined = pytester.runpytest_subprocess(*RUN, "-n", "2", "--durations-file=../d.json", timeout=TIMEOUT)
    joined.assert_outcomes(passed=1)
    # the space form is fine where it changes nothing: a file inside the project
    (project / "inside.json").write_text("{}")
    inside = pytester.runpytest_subprocess(*RUN, "-n", "2", "--durations-file", "inside.json", timeout=TIMEOUT)
    inside.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("flag", "named"), [("--sw", "--sw/--stepwise"), ("--stepwise", "--sw/--stepwise"), ("--sw-skip", "--sw-skip")]
)
def test_stepwise_with_workers_is_refused(pytester: pytest.Pytester, flag: str, named: str) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    result = run(pytester, "-n", "2", flag)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{STEPWISE_CONFLICT.format(flag=named, n=2)}*"])
    auto = run(pytester, "-n", "auto", flag)
    auto.stderr.fnmatch_lines([f"*{STEPWISE_CONFLICT.format(flag=named, n='auto')}*"])
    assert run(pytester, "-n", "0", flag).ret == pytest.ExitCode.OK


def test_xdists_dist_modes_are_said_to_do_nothing(pytester: pytest.Pytester) -> None:
    """With pytest-xdist installed, --dist=loadgroup (say, from an ini's
    addopts of xdist days) would be taken and silently ignored."""
    pytester.makepyfile("def test_x(): pass\n")
    result = run(pytester, "-n", "2", "--dist=loadgroup")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"*{DIST_IGNORED.format(dist='loadgroup')[:70]}*"])
    run(pytester, "-n", "2").assert_outcomes(passed=1)  # no warning without --dist


def test_worker_terminal_output_outside_tests_stays_off_the_terminal(pytester: pytest.Pytester) -> None:
    """Regression (review): a worker's terminal writer wrote to the
    controller's stderr, in the middle of its progress line."""
    pytester.makeconftest(
        """
        import os
        def pytest_sessionfinish(session):
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            reporter.write_line("END " + os.environ.get("PYTEST_XDIST_WORKER", "controller"))
        """
    )
    pytester.makepyfile("import pytest\n@pytest.mark.parametrize('i', range(4))\ndef test_x(i): pass\n")
    result = run(pytester, "-n", "2", "--setup-show")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*END controller*"])  # as serially
    output = result.stdout.str() + result.stderr.str()
    assert "END gw" not in output
    assert "SETUP" not in output  # --setup-show on workers: nowhere, as before
