"""Reliability: worker deaths, hangs, interrupts and odd reports on real workers.

Each test makes one kind of fault happen and checks what a user relies on:
every test reported exactly once with the cause, the rest of the run goes
on, and no process is left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from .processes import pids_in, start_pytest, survivors
from .runs import RUN, TIMEOUT, run

# -- worker death outside a test ------------------------------------------------


def test_worker_death_during_collection_is_survived(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import os

        def pytest_collection_finish(session):
            # the first worker dies while collecting; its replacement does not
            if os.environ.get("PYTEST_XDIST_WORKER") and not os.path.exists("died"):
                open("died", "w").close()
                os._exit(5)
        """
    )
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_fine(i):
            pass
        """
    )
    result = run(pytester, "-n", "1")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*restask: worker gw0 ended outside a test: exit code 5; it was replaced*"])


def test_worker_death_during_collection_every_time_hits_the_restart_limit(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import os

        def pytest_collection_finish(session):
            if os.environ.get("PYTEST_XDIST_WORKER"):
                os._exit(5)
        """
    )
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = run(pytester, "-n", "2", "--max-worker-restart=1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2 of 2 tests not run: worker restart limit reached (1, see --max-worker-restart)*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_worker_killed_between_tests_is_replaced(pytester: pytest.Pytester) -> None:
    """The killer's worker has nothing left to do while test_long runs; it is killed then."""
    pytester.makepyfile(
        """
        import os, subprocess, time, pytest

        def test_long():
            time.sleep(4)

        def test_killer():
            # a detached killer: it outlives this test and kills the worker while idle
            subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {os.getpid()}"], start_new_session=True)
        """
    )
    result = run(pytester, "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*restask: worker gw? ended outside a test: signal 9 (SIGKILL)*; it was replaced*"])


def test_kill_signal_names_the_out_of_memory_killer(pytester: pytest.Pytester) -> None:
    """The out-of-memory killer ends a process with SIGKILL, as here."""
    pytester.makepyfile(
        """
        import os, signal
        def test_oom():
            os.kill(os.getpid(), signal.SIGKILL)
        def test_fine():
            pass
        """
    )
    result = run(pytester, "-n", "1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gw0 crashed: signal 9 (SIGKILL)*out-of-memory killer*while running*test_oom*"])


def _quick_tests_then(pytester: pytest.Pytester, last: str, quick: int = 40, after: int = 5) -> None:
    """Write ``quick`` trivial tests, the test ``last``, then ``after`` more, all
    estimated short by a durations file: they are sent ahead, and their Done
    messages held back (see messages.Dones).  Each test logs its id when it passes."""
    body = """
        import os, signal, time, pytest

        def log(name):
            with open("ran.log", "a") as f:
                f.write(name + "\\n")

        @pytest.mark.parametrize("i", range({quick}))
        def test_quick(i):
            log(f"quick{{i}}")

        def test_last():
        {last}

        @pytest.mark.parametrize("i", range({after}))
        def test_after(i):
            log(f"after{{i}}")
        """
    pytester.makepyfile(
        test_held=textwrap.dedent(body).format(quick=quick, after=after, last=textwrap.indent(last, "    "))
    )
    ids = [f"test_held.py::test_quick[{i}]" for i in range(quick)] + ["test_held.py::test_last"]
    ids += [f"test_held.py::test_after[{i}]" for i in range(after)]
    pytester.path.joinpath("durations.json").write_text(json.dumps(dict.fromkeys(ids, 0.001)))


def test_crash_after_tests_whose_done_was_held_back_costs_only_the_crashing_test(pytester: pytest.Pytester) -> None:
    """The worker holds back the Done messages of quick tests (here for a
    minute, longer than the test); the crash loses none of them, and is
    blamed on the test that crashed, not on one that finished before it."""
    pytester.makeconftest("import pytest_restask.worker as worker\nworker.HOLD_SECONDS = 60\n")
    _quick_tests_then(pytester, "os.kill(os.getpid(), signal.SIGKILL)")
    result = run(pytester, "-n", "1", "-p", "no:randomly", "--durations-file", "durations.json", "-v")
    result.assert_outcomes(passed=45, failed=1)
    result.stdout.fnmatch_lines(["*gw0 crashed: signal 9 (SIGKILL)*while running test_held.py::test_last*"])
    passed = [line for line in result.stdout.lines if " PASSED" in line]
    assert len(passed) == len(set(passed)) == 45  # each reported once
    ran = pytester.path.joinpath("ran.log").read_text().split()
    assert sorted(ran) == sorted([f"quick{i}" for i in range(40)] + [f"after{i}" for i in range(5)])


def test_timeout_after_tests_whose_done_was_held_back_blames_the_hanging_test(pytester: pytest.Pytester) -> None:
    """Held-back Done messages go out within HOLD_SECONDS even while the next
    test hangs, so its timeout counts from its own start and names it."""
    _quick_tests_then(pytester, "time.sleep(60)")
    result = run(pytester, "-n", "1", "-p", "no:randomly", "--durations-file", "durations.json", "--task-timeout=2")
    result.assert_outcomes(passed=45, failed=1)
    result.stdout.fnmatch_lines(["*timed out after 2 s on gw0 while running test_held.py::test_last*"])


def test_teardown_error_then_crash_reports_each_phase_once(pytester: pytest.Pytester) -> None:
    """A test answered ahead whose teardown fails sends its reports at once;
    the worker then dies before its Done: no phase is reported twice."""
    pytester.makeconftest(
        """
        import os

        def pytest_runtest_logfinish(nodeid, location):
            if nodeid.endswith("test_last") and os.environ.get("PYTEST_XDIST_WORKER"):
                os._exit(3)
        """
    )
    _quick_tests_then(pytester, "pass", quick=4, after=2)
    body = pytester.path.joinpath("test_held.py").read_text()
    body = body.replace(
        "def test_last():",
        "@pytest.fixture\ndef bad():\n    yield\n    raise RuntimeError('teardown fails')\n\n\ndef test_last(bad):",
    )
    pytester.path.joinpath("test_held.py").write_text(body)
    assert "def test_last(bad)" in body
    result = run(pytester, "-n", "1", "-p", "no:randomly", "--durations-file", "durations.json", "-v")
    result.assert_outcomes(passed=7, errors=1)
    assert len([line for line in result.stdout.lines if "::test_last" in line and " PASSED" in line]) == 1


def test_a_test_holding_the_interpreter_does_not_time_out_the_one_before(pytester: pytest.Pytester) -> None:
    """A test that keeps the interpreter to itself (a long call into C, here a
    loop that never lets other threads run) stops the worker's thread that
    sends held-back Done messages.  When the test before it, limited to 1 s,
    seems to run past its limit, the controller reads the worker's journal,
    finds it done, and lets the long test run."""
    _quick_tests_then(
        pytester,
        "sys.setswitchinterval(100)  # no other thread runs until this test ends\n"
        "end = time.monotonic() + 2.5\n"
        "while time.monotonic() < end:\n"
        "    pass\n"
        "sys.setswitchinterval(0.005)",
        quick=3,
        after=2,
    )
    body = pytester.path.joinpath("test_held.py").read_text()
    body = body.replace("import os, signal, time, pytest", "import os, signal, sys, time, pytest")
    body = body.replace(
        '@pytest.mark.parametrize("i", range(3))\ndef test_quick',
        '@pytest.mark.timeout(1)\n@pytest.mark.parametrize("i", range(3))\ndef test_quick',
    )
    pytester.path.joinpath("test_held.py").write_text(body)
    assert "@pytest.mark.timeout(1)" in body
    result = run(pytester, "-n", "1", "-p", "no:randomly", "--durations-file", "durations.json")
    result.assert_outcomes(passed=6)


# -- hangs ------------------------------------------------------------------------


def test_timeout_ends_sleeping_spinning_and_waiting_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, subprocess, time

        def test_sleeps():
            time.sleep(60)

        def test_spins():
            while True:
                pass

        def test_waits_for_a_child():
            child = subprocess.Popen(["sleep", "60"])
            with open(f"{child.pid}.pid", "w") as f:
                f.write(str(child.pid))
            child.wait()

        def test_fine():
            pass
        """
    )
    result = run(pytester, "-n", "3", "--task-timeout=1.5")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines_random(
        [f"*timed out after 1.5 s on gw? while running*{name}*" for name in ("sleeps", "spins", "waits_for_a_child")]
    )
    assert survivors(pids_in(pytester.path)) == []


def test_timeout_marker_is_a_task_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.timeout(1)
        def test_marked():
            time.sleep(60)

        @pytest.mark.timeout(0)
        def test_unlimited():
            time.sleep(2.5)

        @pytest.mark.timeout(timeout=10)
        def test_longer_than_the_run_limit():
            time.sleep(2.5)
        """
    )
    result = run(pytester, "-n", "3", "--task-timeout=2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*timed out after 1 s on gw? while running*test_marked*"])
    result.stdout.no_fnmatch_line("*PytestUnknownMarkWarning*")


@pytest.mark.parametrize("workers", [None, "2"])
def test_bad_timeout_marker_errors_naming_the_test(pytester: pytest.Pytester, workers: str | None) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.timeout("soon")
        def test_words(): pass

        @pytest.mark.timeout(-1)
        def test_negative(): pass

        @pytest.mark.timeout(1, until=3)
        def test_unknown(): pass

        def test_fine(): pass
        """
    )
    result = run(pytester, *(("-n", workers) if workers else ()))
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*invalid timeout marker on *::test_words: expected a number of seconds (0 for no limit), got 'soon'",
            "*invalid timeout marker on *::test_negative: expected a number of seconds (0 for no limit), got -1",
            "*invalid timeout marker on *::test_unknown: unexpected keyword argument 'until'*",
        ]
    )
    result.stdout.no_fnmatch_line("*pytest_restask*")


def test_timeout_marker_without_workers_says_it_does_not_apply(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.timeout(5)\ndef test_a(): pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.timeout is on 1 test(s) but applies only when tests run on workers*"])


# -- interrupts ------------------------------------------------------------------

_SLOW_WITH_CHILD = """
import os, subprocess, time

def test_slow(worker_id):
    child = subprocess.Popen(["sleep", "60"])
    with open(f"child-{worker_id}.pid", "w") as f:
        f.write(str(child.pid))
    with open(f"worker-{worker_id}.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

def test_slow_too(worker_id):
    test_slow(worker_id)
"""


def _start_slow_run(pytester: pytest.Pytester) -> subprocess.Popen[bytes]:
    """Start a run whose two tests each start a child, and wait until both have."""
    pytester.makepyfile(_SLOW_WITH_CHILD)
    process = start_pytest(pytester, *RUN, "-n", "2")
    deadline = time.monotonic() + TIMEOUT
    while len(pids_in(pytester.path, "worker-*.pid")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids_in(pytester.path, "*.pid")) == 4
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_worker_or_grandchild(pytester: pytest.Pytester, signum: int) -> None:
    process = _start_slow_run(pytester)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    assert b"KeyboardInterrupt" in out
    assert b"2 of 2 tests not run" in out  # the partial summary
    assert survivors(pids_in(pytester.path)) == []


def test_killed_controller_leaves_no_worker_or_grandchild(pytester: pytest.Pytester) -> None:
    process = _start_slow_run(pytester)
    process.kill()
    process.communicate(timeout=TIMEOUT)
    assert survivors(pids_in(pytester.path), within=5.0) == []


def test_exit_in_a_test_ends_the_run_as_serially(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_1_fine():
            pass

        def test_2_exits():
            pytest.exit("enough for today", returncode=7)

        def test_3_later():
            pass
        """
    )
    serial = pytester.runpytest_subprocess("-p", "no:randomly", timeout=TIMEOUT)
    result = run(pytester, "-n", "1", "-p", "no:randomly")
    assert result.ret == serial.ret == 7
    for output in (serial, result):
        output.stdout.fnmatch_lines(["*1 passed*", "*! _pytest.outcomes.Exit: enough for today !*"])
        output.stdout.no_fnmatch_line("*test_3_later*PASSED*")
    assert result.parseoutcomes() == serial.parseoutcomes()


def test_keyboard_interrupt_in_a_test_ends_the_run_as_serially(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_1_fine():
            pass

        def test_2_interrupts():
            raise KeyboardInterrupt

        def test_3_later():
            pass
        """
    )
    serial = pytester.runpytest_subprocess("-p", "no:randomly", timeout=TIMEOUT)
    result = run(pytester, "-n", "1", "-p", "no:randomly")
    assert result.ret == serial.ret == pytest.ExitCode.INTERRUPTED
    assert result.parseoutcomes() == serial.parseoutcomes() == {"passed": 1}
    result.stdout.fnmatch_lines(["*! KeyboardInterrupt: raised in *::test_2_interrupts on gw0 at *.py:5 !*"])


# -- collection ----------------------------------------------------------------


@pytest.mark.parametrize("again", [False, True], ids=["first", "again"])
def test_workers_that_collect_other_tests_stop_the_run(pytester: pytest.Pytester, again: bool) -> None:
    """Also ``again``: a second run starts its workers before the controller
    has collected, so the digest reaches them in a message of its own."""
    pytester.makepyfile(
        """
        import random, pytest

        @pytest.mark.parametrize("x", [random.random()])
        def test_random(x):
            pass

        def test_stable():
            pass
        """
    )
    if again:
        run(pytester, "-n", "2")
    result = run(pytester, "-n", "2")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*collection differs on gw?*",
            "the controller collected 2 test ids, gw? 2",
            "only on the controller (1):",
            "    *::test_random[[]0.*",
            "only on gw? (1):",
            "    *::test_random[[]0.*",
        ]
    )
    result.stdout.fnmatch_lines(["*Interrupted: gw? collected different tests than the controller*"])
    result.stdout.no_fnmatch_line("*test_random*PASSED*")


# -- reports and output ----------------------------------------------------------

_ODD_REPORTS = """
import os, subprocess, sys, warnings, pytest

class Opaque:
    def __repr__(self):
        return "<Opaque thing>"

class Unpicklable(UserWarning):
    pass

def test_user_properties(record_property):
    record_property("thing", Opaque())
    record_property("nested", {"a": [Opaque(), b"bytes", 1.5]})

def test_warning_with_odd_args():
    warnings.warn(Unpicklable(lambda: 0, Opaque()))

def test_huge_output():
    sys.stdout.write("x" * (4 * 1024 * 1024))
    assert False, "fails with a big captured section"

def test_non_utf8_stdout():
    sys.stdout.buffer.write(b"\\xff\\xfe not utf-8 \\xc3\\n")
    sys.stdout.flush()
    os.write(1, "raw fd 1 \\u00e9\\n".encode())
    assert False

def test_surrogates_in_output():
    print("lone \\udce9 surrogate")
    assert False

def test_custom_longrepr(request):
    request.node.odd_longrepr = True
    assert False

def test_fd_writes():
    os.write(1, b"to fd 1\\n")
    os.write(2, b"to fd 2\\n")
    subprocess.run(["sh", "-c", "echo child out; echo child err >&2"], check=True)
"""

_ODD_CONFTEST = """
import pytest

class Custom:
    def __str__(self):
        return "a custom longrepr"

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if getattr(item, "odd_longrepr", False) and report.when == "call":
        report.longrepr = Custom()
    return report
"""


@pytest.mark.parametrize("capture", ["fd", "sys", "no"])
def test_odd_reports_and_output_do_not_break_the_run(pytester: pytest.Pytester, capture: str) -> None:
    pytester.makeconftest(_ODD_CONFTEST)
    pytester.makepyfile(test_odd=_ODD_REPORTS)
    args = ["-p", "no:randomly", f"--capture={capture}", "--junitxml=out.xml"]
    # uncaptured, odd bytes would reach pytester's own decoding; pytest's sys
    # capture fails on non-UTF-8 bytes, and goes on failing for later tests
    args += {"fd": [], "sys": ["-k", "not non_utf8"], "no": ["-k", "not non_utf8 and not surrogates"]}[capture]
    serial = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    result = run(pytester, "-n", "2", *args)
    assert result.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    # (serially, junitxml also warns that record_property does not suit xunit2;
    # it does not exist on workers, as with pytest-xdist)
    outcomes = result.parseoutcomes()
    assert outcomes == {**serial.parseoutcomes(), "warnings": 1}
    assert outcomes["failed"] == {"fd": 4, "sys": 3, "no": 2}[capture]
    result.stdout.fnmatch_lines(["*Unpicklable: (<function test_warning_with_odd_args.<locals>.<lambda>*"])
    if capture != "no":
        result.stdout.fnmatch_lines(["*_ test_custom_longrepr _*", "a custom longrepr"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.no_fnmatch_line("*crashed*")
    if capture == "no":  # a worker's fd 1 reaches the controller's terminal (on stderr)
        assert "to fd 1" in result.stderr.str()
        assert "child out" in result.stderr.str()


def test_session_fixture_teardown_error_of_an_idle_worker_is_reported(pytester: pytest.Pytester) -> None:
    """gw1 is told "nothing for now" while the serial test waits; its session
    fixture ends only at shutdown, and its error counts as serially."""
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.fixture(scope="session")
        def broken_at_exit():
            yield
            raise RuntimeError("session teardown failed")

        def test_a(broken_at_exit):
            time.sleep(0.5)

        def test_b(broken_at_exit):
            time.sleep(0.5)

        @pytest.mark.serial
        def test_serial():
            pass
        """
    )
    serial = pytester.runpytest_subprocess("-p", "no:randomly", timeout=TIMEOUT)
    result = run(pytester, "-n", "2", "-p", "no:randomly")
    assert serial.parseoutcomes() == {"passed": 3, "errors": 1}
    # one error per worker that had the fixture: it is set up once per process
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 3
    assert outcomes["errors"] in (1, 2)
    assert result.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*RuntimeError: session teardown failed*"])


# -- scale -----------------------------------------------------------------------


def test_many_workers_on_few_cores(pytester: pytest.Pytester) -> None:
    """200 tests on 32 workers of a 2-core machine: correct counts, no overlap."""
    pytester.makeconftest(
        """
        import json, os, time, pytest

        @pytest.fixture(autouse=True)
        def log(request):
            start = time.time()
            yield
            with open(f"log-{os.getpid()}.jsonl", "a") as f:
                exclusive = request.node.get_closest_marker("resource") is not None
                f.write(json.dumps([request.node.name, exclusive, start, time.time()]) + "\\n")
        """
    )
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.parametrize("i", range(180))
        def test_free(i):
            time.sleep(0.01)

        @pytest.mark.parametrize("i", range(20))
        @pytest.mark.resource("db")
        def test_db(i):
            time.sleep(0.01)
        """
    )
    result = run(pytester, "-n", "32")
    result.assert_outcomes(passed=200)
    result.stdout.fnmatch_lines(["restask: 200 tests on 32 workers*"])
    records = [json.loads(line) for path in pytester.path.glob("log-*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(name for name, *_ in records) == sorted(
        [f"test_free[{i}]" for i in range(180)] + [f"test_db[{i}]" for i in range(20)]
    )
    db = sorted((start, end) for _, exclusive, start, end in records if exclusive)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(db))


def test_journals_are_removed_even_when_a_plugin_fails_at_the_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' journals live in a directory of the run, removed at the
    end even when another plugin's unconfigure raises; a directory left by a
    controller that was killed goes with the next run, one of a live
    controller stays."""
    tmp = pytester.path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    stale = tmp / "restask-journals-999999999-x1"  # no such process
    alive = tmp / f"restask-journals-{os.getpid()}-x2"
    for directory in (stale, alive):
        directory.mkdir()
        (directory / "gw0.1.journal").write_bytes(b"")
    pytester.makeconftest("def pytest_unconfigure(config):\n    raise RuntimeError('a plugin fails at the end')\n")
    pytester.makepyfile("import pytest\n@pytest.mark.parametrize('i', range(4))\ndef test_a(i): pass\n")
    result = run(pytester, "-n", "2")
    result.stdout.fnmatch_lines(["*4 passed*"])
    assert sorted(p.name for p in tmp.iterdir()) == [alive.name]
