"""The plugin in process: markers, options, configuration, and user mistakes."""

from __future__ import annotations

import pytest

from pytest_restask import plugin

RUN = ("-p", "restask")


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*RUN, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark." + plugin.RESOURCE_MARKER, "@pytest.mark." + plugin.SERIAL_MARKER])
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.resource("db", shared=True)

        @pytest.mark.serial
        def test_a(): pass

        @pytest.mark.resource("gpu", slots=1)
        def test_b(): pass
        """
    )
    pytester.runpytest(*RUN, "--strict-markers").assert_outcomes(passed=2)


BAD_MARKERS = [
    ("@pytest.mark.resource()", "needs at least one resource name"),
    ("@pytest.mark.resource(42)", "resource names must be strings, got 42 (int)"),
    ("@pytest.mark.resource('db', exclusive=True)", "unknown keyword 'exclusive' in @pytest.mark.resource"),
    ("@pytest.mark.resource('gpu', slots=0)", "slots= must be a whole number of at least 1, got 0"),
    ("@pytest.mark.resource('db', shared=True, slots=2)", "shared=True and slots= cannot be combined"),
    ("@pytest.mark.serial('db')", "@pytest.mark.serial takes no arguments"),
]


@pytest.mark.parametrize("workers", [None, "2"])
def test_bad_declarations_error_at_setup_naming_the_test(pytester: pytest.Pytester, workers: str | None) -> None:
    source = ["import pytest", ""]
    for index, (marker, _) in enumerate(BAD_MARKERS):
        source += [marker, f"def test_bad{index}(): pass", ""]
    source += ["@pytest.mark.resource('gpu', slots=3)", "def test_too_big(): pass", ""]
    source += ["def test_fine(): pass", ""]
    pytester.makepyfile(test_decl="\n".join(source))
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    args = [*RUN] if workers is None else [*RUN, "-n", workers]
    result = pytester.runpytest_subprocess(*args, timeout=120)
    result.assert_outcomes(passed=1, errors=len(BAD_MARKERS) + 1)
    for index, (_, message) in enumerate(BAD_MARKERS):
        result.stdout.fnmatch_lines(
            [f"*invalid resource declaration on test_decl.py::test_bad{index}: *{message}*"], consecutive=False
        )
    result.stdout.fnmatch_lines(
        [
            "*cannot run test_decl.py::test_too_big: resource('gpu', slots=3) asks for 3 slots of 'gpu', "
            "but its capacity is 2*"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*pytest_restask/*")  # no frame of ours


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gpu 2", "restask_resources line 'gpu 2' is not of the form 'name: capacity ?global? ?host?'"),
        ("gpu: lots", "restask_resources line 'gpu: lots': capacity must be a whole number of at least 1"),
    ],
)
def test_bad_ini_line_is_a_usage_error(pytester: pytest.Pytester, line: str, message: str) -> None:
    pytester.makeini(f"[pytest]\nrestask_resources =\n    {line}\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest(*RUN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-n", "two"), "*-n/--numprocesses: expected a number of workers or 'auto', got 'two'*"),
        (("-n", "2", "--task-timeout=0"), "*--task-timeout: expected a number of seconds greater than 0, got '0'*"),
        (("-n", "2", "--max-worker-restart=x"), "*--max-worker-restart: expected a whole number*"),
        (("-n", "2", "--pdb"), "ERROR: " + plugin.PDB_CONFLICT.format(flag="--pdb", n=2)),
        (("-n", "2", "--trace"), "ERROR: " + plugin.PDB_CONFLICT.format(flag="--trace", n=2)),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess(*RUN, "-p", "no:xdist", *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_task_timeout_without_workers_says_it_does_not_apply(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest(*RUN, "--task-timeout=5")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*" + plugin.NOT_APPLY_TIMEOUT + "*"])


def test_slots_in_process(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrestask_resources =\n    port-pool: 4\n")
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.resource("port-pool", slots=3)
        def test_three(restask_slots):
            assert restask_slots == {"port-pool": [0, 1, 2]}
            assert os.environ["RESTASK_SLOTS_PORT_POOL"] == "0,1,2"

        def test_after():
            assert "RESTASK_SLOTS_PORT_POOL" not in os.environ
        """
    )
    pytester.runpytest(*RUN).assert_outcomes(passed=2)


def test_failfast_in_process(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): assert 0\ndef test_b(): pass\ndef test_c(): pass\n")
    result = pytester.runpytest(*RUN, "--failfast")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2 of 3 tests not run: " + plugin.FAILFAST_REASON + "*"])


@pytest.mark.multirun  # several whole runs: a CI step of its own
def test_xdist_keeps_n_unless_restask_is_named(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("def test_a(worker_id): pass\ndef test_b(): pass\n")
    xdist = pytester.runpytest_subprocess("-n", "2", timeout=120)
    xdist.stdout.fnmatch_lines(["created: 2/2 workers*"])
    xdist.assert_outcomes(passed=2)
    ours = pytester.runpytest_subprocess("-p", "restask", "-n", "2", "-v", timeout=120)
    ours.stdout.no_fnmatch_line("created: *")
    ours.stdout.re_match_lines([r".*test_a \[gw\d\] PASSED.*"])
    ours.assert_outcomes(passed=2)


def test_restask_provides_n_without_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_a(worker_id):\n    assert worker_id.startswith('gw')\n")
    pytester.runpytest_subprocess("-p", "no:xdist", "-n", "2", timeout=120).assert_outcomes(passed=1)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.runpytest_subprocess("-p", "restask", "-n", "2", timeout=120).assert_outcomes(passed=1)
