"""End to end: ``pytest -p restask -n N`` on real worker processes."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_restask import cpus
from pytest_restask.controller import PACE, _PacedOutput
from pytest_restask.resources import Mode, Request

from . import suite
from .processes import start_pytest
from .runs import RUN, TIMEOUT, run


def test_mixed_suite_never_overlaps_conflicting_tests(pytester: pytest.Pytester) -> None:
    """300 tests: exclusive, shared, counted, serial and free, at -n 8."""
    specs = suite.mixed(300, seed=3, sleep=(0.0, 0.01))
    suite.write(pytester, specs, ini="[pytest]\nrestask_resources =\n    gpu: 2\n")
    result = run(pytester, "-n", "8")
    result.assert_outcomes(passed=300)
    assert suite.check(pytester, specs, {"gpu": 2}) == []
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_exclusive_tests_run_one_at_a_time_and_others_in_parallel(pytester: pytest.Pytester) -> None:
    db = [suite.Spec(f"test_db{i}", (Request("db", Mode.EXCLUSIVE),), sleep=0.3) for i in range(3)]
    free = [suite.Spec(f"test_free{i}", sleep=0.3) for i in range(3)]
    suite.write(pytester, db + free, files=1)
    result = run(pytester, "-n", "3")
    result.assert_outcomes(passed=6)
    assert suite.check(pytester, db + free, {}) == []
    records = [json.loads(line) for line in (pytester.path / "holds.jsonl").read_text().splitlines()]
    # the free tests did overlap something: the run was parallel
    free_runs = [r for r in records if "free" in r["id"]]
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in free_runs for b in records if a is not b)


def test_counted_slots_reach_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    pytester.makepyfile(
        """
        import os, time, pytest

        @pytest.mark.parametrize("i", range(4))
        @pytest.mark.resource("gpu", slots=1)
        def test_gpu(i, restask_slots):
            assert os.environ["RESTASK_SLOTS_GPU"] == ",".join(map(str, restask_slots["gpu"]))
            assert restask_slots["gpu"][0] in (0, 1)
            time.sleep(0.2)

        @pytest.mark.resource("gpu", slots=2)
        def test_both(restask_slots):
            assert restask_slots == {"gpu": [0, 1]}

        def test_none(restask_slots):
            assert restask_slots == {}
            assert not any(k.startswith("RESTASK_SLOTS_") for k in os.environ)
        """
    )
    run(pytester, "-n", "3").assert_outcomes(passed=6)
    pytester.runpytest(*RUN).assert_outcomes(passed=6)


def test_outcomes_match_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_outcomes="""
        import pytest, warnings

        @pytest.fixture
        def broken():
            raise RuntimeError("setup broke")

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown broke")

        def test_pass(): pass
        def test_fail(): assert 1 == 2
        def test_error(broken): pass
        def test_teardown_error(broken_teardown): pass
        @pytest.mark.skip(reason="because")
        def test_skip(): pass
        @pytest.mark.xfail
        def test_xfail(): assert 0
        @pytest.mark.xfail
        def test_xpass(): pass
        @pytest.mark.resource("db")
        def test_db_fail(): assert 0
        @pytest.mark.resource()
        def test_bad_marker(): pass
        @pytest.mark.resource("gpu", slots=9)
        def test_impossible(): pass
        @pytest.mark.parametrize("x", [1, 2, 3])
        def test_param(x): assert x != 2
        def test_warns():
            warnings.warn(UserWarning("careful"))
        def test_output():
            print("hello from the test")
        """
    )
    serial = pytester.runpytest_subprocess(*RUN, "--junitxml=serial.xml", "-rA", timeout=TIMEOUT)
    parallel = run(pytester, "-n", "3", "--junitxml=parallel.xml", "-rA")
    expected = {"passed": 6, "failed": 3, "skipped": 1, "xfailed": 1, "xpassed": 1, "errors": 4, "warnings": 1}
    assert serial.parseoutcomes() == parallel.parseoutcomes() == expected
    for result in (serial, parallel):
        result.stdout.fnmatch_lines(["*careful*", "*hello from the test*"])
        result.stdout.no_fnmatch_line("*INTERNALERROR*")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
    cases = {}
    for name in ("serial", "parallel"):
        root = ET.parse(pytester.path / f"{name}.xml").getroot()
        cases[name] = sorted(
            (c.get("classname"), c.get("name"), tuple(sorted(ch.tag for ch in c if ch.tag != "system-out")))
            for c in root.iter("testcase")
        )
    assert cases["serial"] == cases["parallel"]
    assert len({(c, n) for c, n, _ in cases["parallel"]}) == 15


def test_verbose_names_the_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = run(pytester, "-n", "2", "-v", "--durations=2")
    result.stdout.re_match_lines([r".*test_a \[gw\d\] PASSED.*", r".*slowest 2 durations.*"])
    result.assert_outcomes(passed=2)


def test_passed_phases_keep_their_timing(pytester: pytest.Pytester) -> None:
    """Passed phases travel in a short form; the controller's reports carry
    the worker's durations and times, as pytest's --durations shows them."""
    pytester.makepyfile(
        """
        import time, pytest
        @pytest.fixture
        def slow_setup():
            time.sleep(0.3)
            yield
            time.sleep(0.2)
        def test_sleeps(slow_setup):
            time.sleep(0.4)
        """
    )
    result = run(pytester, "-n", "1", "--durations=0", "--durations-min=0.1", "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"0\.4\ds call .*test_sleeps", r"0\.3\ds setup .*test_sleeps", r"0\.2\ds teardown .*"]
    )
    case = ET.parse(pytester.path / "out.xml").getroot().find(".//testcase")
    assert case is not None
    assert float(case.get("time", 0)) >= 0.9


def test_assertion_diffs_and_setup_show_work_on_workers(pytester: pytest.Pytester) -> None:
    """Regression (review): pytest asks the terminal reporter for its writer
    while tests run (assertion diffs on pytest 8, --setup-show), so workers
    keep it until their last test is done."""
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture
        def value():
            return [1, 2]
        def test_diff(value):
            assert value == [1, 3]
        def test_fine(value):
            assert value == [1, 2]
        """
    )
    result = run(pytester, "-n", "1", "--setup-show")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*At index 1 diff: 2 != 3*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_a_plugin_that_serializes_reports_gets_them_whole(pytester: pytest.Pytester) -> None:
    """With a plugin of its own on pytest_report_to_serializable, every report
    goes through the hooks, passed or not, and keeps what the plugin added."""
    pytester.makeconftest(
        """
        def pytest_report_to_serializable(report):
            if report.when == "call":
                report.stamp = "carried"
        def pytest_terminal_summary(terminalreporter):
            for report in terminalreporter.stats.get("passed", []):
                terminalreporter.write_line(f"stamp={getattr(report, 'stamp', None)}")
        """
    )
    pytester.makepyfile("def test_a(): pass\n")
    result = run(pytester, "-n", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["stamp=carried"])


_EARLY_CONFTEST = """
import os, time

def log(line):
    with open(os.path.join(os.environ["LOG_DIR"], "events.log"), "a") as f:
        f.write(line + "\\n")

def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        log("worker-start")

def pytest_collection_finish(session):
    if hasattr(session.config, "workerinput"):
        return
    saw = False
    if os.environ.get("WAIT_FOR_WORKER"):
        # only a worker started before this collection ended can end the wait
        deadline = time.monotonic() + float(os.environ["WAIT_FOR_WORKER"])
        while not saw and time.monotonic() < deadline:
            time.sleep(0.05)
            with open(os.path.join(os.environ["LOG_DIR"], "events.log")) as f:
                saw = "worker-start" in f.read()
    log(f"controller-collected saw-worker={saw}")
"""


@pytest.mark.multirun  # many whole runs: a CI step of its own
def test_second_run_starts_workers_while_the_controller_collects(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run remembers how many tests it could run; the next run with
    the same command line starts that many workers before collecting."""
    pytester.makeconftest(_EARLY_CONFTEST)
    pytester.makepyfile("import pytest\n@pytest.mark.parametrize('x', range(3))\ndef test_a(x): pass\n")
    monkeypatch.setenv("LOG_DIR", str(pytester.path))
    (pytester.path / "events.log").write_text("")
    run(pytester, "-n", "2").assert_outcomes(passed=3)
    first = (pytester.path / "events.log").read_text().splitlines()
    assert first[0] == "controller-collected saw-worker=False"
    assert "worker-start" in first[1:]
    (pytester.path / "events.log").write_text("")
    monkeypatch.setenv("WAIT_FOR_WORKER", "60")
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=3)
    again = (pytester.path / "events.log").read_text().splitlines()
    # (a worker still starting when the others finished all tests is ended unused)
    assert again.index("worker-start") < again.index("controller-collected saw-worker=True")
    # another selection is another run: nothing is remembered for it
    (pytester.path / "events.log").write_text("")
    monkeypatch.setenv("WAIT_FOR_WORKER", "5")
    run(pytester, "-n", "2", "-k", "test_a").assert_outcomes(passed=3)
    assert (pytester.path / "events.log").read_text().splitlines()[0] == "controller-collected saw-worker=False"


_BOOT_CONFTEST = """
import os, time

def _log(what):
    with open(os.path.join(os.environ["LOG_DIR"], "boot.log"), "a") as f:
        f.write(f"{os.getpid()} {what} {time.time()}\\n")

def pytest_configure(config):
    if hasattr(config, "workerinput"):
        _log("configure")

def pytest_collection_finish(session):
    if hasattr(session.config, "workerinput"):
        time.sleep(0.5)  # a slow collection: boots that overlap show it
        _log("collected")
"""


def test_workers_boot_a_few_at_a_time(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """No more workers boot at once than there are CPUs: with all of them
    booting together on a small machine, even the first would be ready late.
    Each worker logs its configure and the end of its collection; those
    spans lie inside its boot, so at no moment may more of them overlap."""
    slots = os.cpu_count() or 1
    workers = slots + 2
    pytester.makeconftest(_BOOT_CONFTEST)
    pytester.makepyfile(
        f"import time, pytest\n@pytest.mark.parametrize('x', range({4 * workers}))\ndef test_a(x): time.sleep(0.2)\n"
    )
    monkeypatch.setenv("LOG_DIR", str(pytester.path))
    run(pytester, "-n", str(workers)).assert_outcomes(passed=4 * workers)
    events: dict[str, dict[str, float]] = {}
    for line in (pytester.path / "boot.log").read_text().splitlines():
        pid, what, when = line.split()
        events.setdefault(pid, {})[what] = float(when)
    spans = [(e["configure"], e["collected"]) for e in events.values() if "collected" in e]
    assert len(spans) >= slots + 1  # enough workers booted for an overlap to show
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most <= slots, sorted(spans)


def test_worker_compatibility_surface(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest
        @pytest.mark.parametrize("i", range(2))
        def test_ids(i, worker_id, testrun_uid):
            assert re.fullmatch(r"gw[01]", worker_id)
            assert os.environ["PYTEST_XDIST_WORKER"] == worker_id
            assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "2"
            assert os.environ["PYTEST_XDIST_TESTRUNUID"] == testrun_uid
        import re
        """
    )
    run(pytester, "-n", "2").assert_outcomes(passed=2)
    # in process, as with pytest-xdist
    pytester.makepyfile(test_local="def test_local(worker_id):\n    assert worker_id == 'master'\n")
    pytester.runpytest(*RUN, "test_local.py").assert_outcomes(passed=1)


def test_module_fixture_ends_inside_the_hold(pytester: pytest.Pytester) -> None:
    """A module fixture of exclusive "db" tests takes a lock file on setup and
    drops it on teardown; if any such fixture outlived its hold, another
    worker's setup would find the file and fail."""
    pytester.makeconftest(
        """
        import os, pytest

        @pytest.fixture(scope="module")
        def schema(request):
            path = os.path.join(str(request.config.rootpath), "db.lock")
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, request.module.__name__.encode())
            os.close(fd)
            with open(os.path.join(str(request.config.rootpath), "setups.log"), "a") as log:
                log.write(request.module.__name__ + "\\n")
            yield
            os.remove(path)
        """
    )
    for m in range(4):
        pytester.makepyfile(
            **{
                f"test_mod{m}": """
                import time, pytest
                pytestmark = pytest.mark.resource("db")

                @pytest.mark.parametrize("i", range(3))
                def test_db(schema, i):
                    time.sleep(0.05)

                @pytest.mark.resource("db", shared=False)
                def test_free_of_fixture():
                    pass
                """
            }
        )
        pytester.makepyfile(**{f"test_free{m}": "import time\ndef test_f():\n    time.sleep(0.05)\n"})
    result = run(pytester, "-n", "3")
    result.assert_outcomes(passed=20)
    setups = (pytester.path / "setups.log").read_text().split()
    # set up once per module visit: consecutive db tests of a module share it
    assert len(setups) <= 8, setups


def test_failfast_stops_starting_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.resource("db")
        def test_0_fails():
            assert 0

        @pytest.mark.parametrize("i", range(30))
        @pytest.mark.resource("db")
        def test_later(i):
            time.sleep(0.01)
        """
    )
    for flag in ("--failfast", "-x", "--maxfail=1"):
        result = run(pytester, "-n", "2", flag)
        outcomes = result.parseoutcomes()
        assert outcomes["failed"] == 1
        assert outcomes.get("passed", 0) <= 1, flag
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        not_run = 30 - outcomes.get("passed", 0)
        result.stdout.fnmatch_lines([f"*{not_run} of 31 tests not run: stopping after *"])


def test_failfast_after_a_triage_error_starts_nothing(pytester: pytest.Pytester) -> None:
    """Regression (review): the first worker to be ready was given a test
    although a declaration error had already reached the -x limit."""
    pytester.makepyfile(
        """
        import pytest
        def test_1(): pass
        @pytest.mark.resource()
        def test_bad(): pass
        def test_2(): pass
        """
    )
    result = run(pytester, "-n", "2", "-x")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*2 of 3 tests not run: stopping after 1 failures*"])


def test_warnings_are_reported_once(pytester: pytest.Pytester) -> None:
    """Regression (review): workers forwarded the collection warnings that
    the controller had already recorded."""
    pytester.makepyfile(
        """
        import warnings
        warnings.warn(UserWarning("at import"))

        class TestNotCollected:
            def __init__(self): pass

        def test_warns():
            warnings.warn(UserWarning("in the test"))
        """
    )
    serial = pytester.runpytest_subprocess(*RUN, timeout=TIMEOUT)
    parallel = run(pytester, "-n", "3")
    assert parallel.parseoutcomes() == serial.parseoutcomes() == {"passed": 1, "warnings": 3}


def test_crash_costs_one_test_and_the_worker_is_replaced(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.resource("db")
        def test_a_crash():
            os._exit(3)

        @pytest.mark.parametrize("i", range(6))
        @pytest.mark.resource("db")
        def test_after(i, worker_id):
            assert worker_id == "gw0"  # the replacement keeps the name
        """
    )
    result = run(pytester, "-n", "1", "-v")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*worker gw0 crashed: exit code 3 while running test_crash_costs*::test_a_crash*"])


def test_crash_in_any_phase_gives_each_phase_one_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import json, os

        def pytest_runtest_logreport(report):
            if os.environ.get("PYTEST_XDIST_WORKER") is None:
                with open("phases.jsonl", "a") as f:
                    f.write(json.dumps([report.nodeid.split("::")[1], report.when, report.outcome]) + "\\n")
        """
    )
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.fixture
        def dies_in_setup():
            os._exit(5)

        @pytest.fixture
        def dies_in_teardown():
            yield
            os._exit(6)

        @pytest.fixture
        def broken_then_dies():
            yield
            os._exit(7)

        @pytest.fixture
        def broken(broken_then_dies):
            raise RuntimeError("no")

        def test_setup(dies_in_setup): pass
        def test_teardown(dies_in_teardown): pass
        def test_call(): os._exit(8)
        def test_setup_error_then_crash(broken): pass
        def test_fine(): pass
        """
    )
    result = run(pytester, "-n", "2")
    # as serially: a passed call with a failed teardown counts once in each
    result.assert_outcomes(passed=2, failed=2, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*crashed: exit code 5 while running*test_setup*",
            "*crashed: exit code 6 while running*test_teardown*",
            "*crashed: exit code 8 while running*test_call*",
            "*crashed: exit code 7 while running*test_setup_error_then_crash*",
        ]
    )
    phases: dict[str, list[tuple[str, str]]] = {}
    for line in (pytester.path / "phases.jsonl").read_text().splitlines():
        name, when, outcome = json.loads(line)
        phases.setdefault(name, []).append((when, outcome))
    assert phases == {
        "test_setup": [("call", "failed"), ("teardown", "passed")],
        "test_teardown": [("setup", "passed"), ("call", "passed"), ("teardown", "failed")],
        # a passed setup waits to go with the call's report (fewer messages): lost with it
        "test_call": [("call", "failed"), ("teardown", "passed")],
        "test_setup_error_then_crash": [("setup", "failed"), ("teardown", "failed")],
        "test_fine": [("setup", "passed"), ("call", "passed"), ("teardown", "passed")],
    }


def test_a_crashed_test_leaves_no_process_behind(pytester: pytest.Pytester) -> None:
    """Regression (review): a child of a crashed test outlived its hold, and a
    forked child that kept the channel open hung the run."""
    pytester.makepyfile(
        """
        import multiprocessing, os, subprocess, time, pytest

        @pytest.mark.resource("db")
        def test_1_starts_a_server_and_dies():
            server = subprocess.Popen(["sleep", "60"])
            with open("server.pid", "w") as f:
                f.write(str(server.pid))
            os._exit(3)

        def _linger():
            time.sleep(60)

        def test_1_forks_and_dies():
            multiprocessing.get_context("fork").Process(target=_linger).start()
            os._exit(4)

        @pytest.mark.resource("db")
        def test_2_db_is_free_again():
            pid = int(open("server.pid").read())
            time.sleep(0.5)  # the group is killed as the worker's death is seen
            try:  # gone, or a zombie waiting for a reaper
                with open(f"/proc/{pid}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                state = "gone"
            assert state in ("gone", "Z")
        """
    )
    result = run(pytester, "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(["*crashed: exit code 3*", "*crashed: exit code 4*"])


def test_segfault_and_kill_are_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ctypes, os, signal

        def test_segv():
            ctypes.string_at(0)

        def test_killed():
            os.kill(os.getpid(), signal.SIGKILL)

        def test_fine():
            pass
        """
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(
        ["*crashed: signal 11 (SIGSEGV) while running*test_segv*", "*crashed: signal 9 (SIGKILL)*while running*"]
    )


def test_restart_limit_ends_the_run_cleanly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.parametrize("i", range(8))
        def test_crash(i):
            os._exit(1)
        """
    )
    result = run(pytester, "-n", "1", "--max-worker-restart=2")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 3
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*worker restart limit reached (2, see --max-worker-restart)*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_timeout_ends_the_test_and_releases_its_resources(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.resource("db")
        def test_hangs():
            time.sleep(60)

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.resource("db")
        def test_db(i, worker_id):
            pass
        """
    )
    result = run(pytester, "-n", "1", "--task-timeout=1")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*timed out after 1 s on gw0 while running*test_hangs*"])


@pytest.mark.multirun  # many whole runs: a CI step of its own
def test_selection_options_behave_as_serially(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.slow
        def test_slow(): pass
        def test_one(): pass
        def test_two(): assert 0
        """
    )
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    run(pytester, "-n", "2", "-k", "one").assert_outcomes(passed=1, deselected=2)
    run(pytester, "-n", "2", "-m", "slow", "--strict-markers").assert_outcomes(passed=1, deselected=2)
    for args in ((), ("--lf",), ("--ff",), ("--lf", "-k", "two or one")):
        parallel = run(pytester, "-n", "2", *args)
        serial = pytester.runpytest_subprocess(*RUN, *args, timeout=TIMEOUT)
        assert parallel.parseoutcomes() == serial.parseoutcomes(), args
    assert parallel.parseoutcomes() == {"failed": 1}
    collect = run(pytester, "-n", "2", "--collect-only", "-q")
    collect.stdout.fnmatch_lines(["*test_slow*", "*test_one*", "*test_two*", "3 tests collected*"])
    assert collect.ret == pytest.ExitCode.OK


def test_collection_error_is_reported_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok(): pass\n", test_broken="def test_x(:\n")
    result = run(pytester, "-n", "2")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert len(re.findall(r"ERROR collecting test_broken.py", result.stdout.str())) == 1
    run(pytester, "-n", "2", "--continue-on-collection-errors").assert_outcomes(passed=1, errors=1)


def test_fixture_teardown_error_belongs_to_the_last_test_of_the_hold(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="module")
        def schema():
            yield
            raise RuntimeError("drop failed")

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.resource("db")
        def test_db(schema, i):
            pass
        """
    )
    serial = pytester.runpytest_subprocess(*RUN, timeout=TIMEOUT)
    parallel = run(pytester, "-n", "2")
    for result in (serial, parallel):
        result.assert_outcomes(passed=3, errors=1)
        result.stdout.fnmatch_lines(["*ERROR at teardown of test_db[[]2[]]*", "*RuntimeError: drop failed*"])


AUTO_SUITE = """
import os, pytest
@pytest.mark.parametrize("i", range(8))
def test_count(i):
    assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == os.environ["EXPECTED_WORKERS"]
"""


def _run_auto(pytester: pytest.Pytester, cpus: set[int] | None) -> str:
    """Run ``-n auto`` in a child limited to ``cpus`` (None: as this process); return its output."""

    def limit() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    command = [sys.executable, "-m", "pytest", *RUN, "-n", "auto"]
    done = subprocess.run(command, cwd=pytester.path, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limit)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_auto_counts_the_cpus_this_process_may_use(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: -n auto counted os.cpu_count(), so on a CI runner limited
    by CPU affinity (or a cgroup quota) it started too many workers."""
    pytester.makepyfile(AUTO_SUITE)
    allowed = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("EXPECTED_WORKERS", "1")
    assert "restask: 8 tests on 1 workers in " in _run_auto(pytester, {allowed[0]})
    if len(allowed) > 1:  # the control: without the limit, every allowed CPU
        monkeypatch.setenv("EXPECTED_WORKERS", str(cpus.usable_cpus()))
        assert f"restask: 8 tests on {cpus.usable_cpus()} workers in " in _run_auto(pytester, None)


@pytest.mark.multirun  # several whole runs: a CI step of its own
def test_auto_takes_the_environment_variable_then_a_plugins_hook(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(AUTO_SUITE)
    pytester.makeconftest("def pytest_xdist_auto_num_workers(config):\n    return 3\n")
    monkeypatch.setenv("EXPECTED_WORKERS", "3")
    run(pytester, "-n", "auto", "-p", "no:xdist").assert_outcomes(passed=8)
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "2")
    monkeypatch.setenv("EXPECTED_WORKERS", "2")
    run(pytester, "-n", "auto").assert_outcomes(passed=8)
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "many")
    bad = run(pytester, "-n", "auto")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*PYTEST_XDIST_AUTO_NUM_WORKERS='many'*"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_the_workers_and_exits_2(pytester: pytest.Pytester, signum: int) -> None:
    pytester.makepyfile(
        """
        import os, time
        def test_slow(worker_id):
            with open(f"pid-{worker_id}", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
        def test_slow_too(worker_id):
            test_slow(worker_id)
        """
    )
    process = start_pytest(pytester, *RUN, "-n", "2")
    deadline = time.monotonic() + 60
    while len(list(pytester.path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    assert b"KeyboardInterrupt" in out
    time.sleep(0.5)
    for path in pytester.path.glob("pid-*"):
        pid = int(path.read_text())
        state = "gone"
        with contextlib.suppress(FileNotFoundError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state in ("gone", "Z"), path.name


def test_no_tests_exits_5(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("x = 1\n")
    assert run(pytester, "-n", "2").ret == pytest.ExitCode.NO_TESTS_COLLECTED


# -- the controller's heap -------------------------------------------------------

FREEZE_PROBE = """
import gc
from pathlib import Path

def pytest_configure(config):
    # added after restask's thaw, so run before it: the heap is still
    # frozen here, after pytest's own clean-ups (its unraisable check)
    if not hasattr(config, "workerinput"):
        config.add_cleanup(lambda: Path("frozen-at-cleanup").write_text(str(gc.get_freeze_count())))
"""


def test_the_controller_heap_is_frozen_to_its_end_and_thawed_after(pytester: pytest.Pytester) -> None:
    """pytest run in process (an IDE, pytester) leaves the program's heap as it was."""
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile("def test_a(): pass\n")
    assert gc.get_freeze_count() == 0
    pytester.runpytest_inprocess(*RUN, "-n", "1").assert_outcomes(passed=1)
    assert int((pytester.path / "frozen-at-cleanup").read_text()) > 0
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_the_program_is_left_to_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile("def test_a(): pass\n")
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        pytester.runpytest_inprocess(*RUN, "-n", "1").assert_outcomes(passed=1)
        # frozen objects freed by reference counting leave the count
        assert int((pytester.path / "frozen-at-cleanup").read_text()) <= frozen
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_a_controller_cycle_that_raises_when_collected_is_reported(pytester: pytest.Pytester) -> None:
    """As in a serial run, though the controller freezes its heap: what is
    garbage is collected first."""
    pytester.makeconftest(
        """
        import gc

        class _Cycle:
            def __init__(self):
                self.me = self

            def __del__(self):
                raise RuntimeError("finalizer of a controller cycle")

        _kept = [_Cycle()]
        gc.collect()  # the cycle is in the oldest generation now

        def pytest_collection_finish(session):
            if not hasattr(session.config, "workerinput"):
                _kept.clear()  # garbage from here on, which only a full collection finds
        """
    )
    pytester.makepyfile("def test_a(): pass\n")
    for args in ((), ("-n", "1")):
        result = run(pytester, *args)
        result.assert_outcomes(passed=1)
        assert "RuntimeError: finalizer of a controller cycle" in result.stdout.str() + result.stderr.str(), args


# -- the controller's terminal output --------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_paced_output_keeps_writes_until_the_pace_has_passed_or_it_is_released() -> None:
    """pytest flushes its terminal after every report; while the loop runs,
    what it writes reaches the file at most every PACE seconds, or when the
    loop is about to wait, and all of it, in order."""
    file, clock = io.StringIO(), _Clock()
    output = _PacedOutput(file, clock)
    for letter in ".F.":
        output.write(letter)
        output.flush()
    assert file.getvalue() == ""  # within the pace: kept
    clock.now += PACE
    output.write("s")
    output.flush()
    assert file.getvalue() == ".F.s"
    output.write("x")
    output.release()  # the loop waits: shown at once
    assert file.getvalue() == ".F.sx"
    assert output.getvalue() == ".F.sx"  # anything else is the file's


def test_paced_output_rejects_what_the_terminal_cannot_encode_at_once() -> None:
    """pytest writes text escaped when its file raises UnicodeEncodeError;
    kept text must raise on write, not later when it is passed on."""
    file = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    output = _PacedOutput(file, _Clock())
    with pytest.raises(UnicodeEncodeError):
        output.write("caf\u00e9")
    output.write("cafe")
    output.release()
    file.flush()
    assert file.buffer.getvalue() == b"cafe"  # type: ignore[attr-defined]


def test_what_a_plugin_prints_stays_in_order_with_the_terminal(pytester: pytest.Pytester) -> None:
    """While the loop paces the terminal, print() in a report hook goes the
    same way: each line follows the report it was printed for."""
    pytester.makeconftest(
        """
        import os

        def pytest_runtest_logreport(report):
            if report.when == "call" and not os.environ.get("PYTEST_XDIST_WORKER"):
                print(f"\\nhook saw {report.nodeid.split('::')[-1]}")
        """
    )
    pytester.makepyfile("import pytest\n@pytest.mark.parametrize('i', range(20))\ndef test_o(i): pass\n")
    result = run(pytester, "-n", "2", "-v", "-p", "no:randomly")
    result.assert_outcomes(passed=20)
    lines = [line for line in result.stdout.lines if " PASSED" in line or line.startswith("hook saw")]
    assert len(lines) == 40
    for passed, saw in zip(lines[::2], lines[1::2], strict=True):
        name = re.search(r"::(test_o\[\d+\])", passed)
        assert name is not None, passed
        assert saw == f"hook saw {name.group(1)}", (passed, saw)
