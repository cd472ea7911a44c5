"""``--timeline=FILE``: the run as a Chrome trace, checked against what each
test logged of itself (see :mod:`tests.traces`)."""

from __future__ import annotations

import copy
import signal
import time

import pytest

from pytest_restask.settings import TIMELINE_NO_DIRECTORY

from .processes import start_pytest
from .runs import RUN, run
from .traces import LOGGING_CONFTEST, logged, problems, read, slices

#: Every kind of resource, serial, two crashes (one holding "db") and a timeout.
SUITE = """
import os, time
import pytest

@pytest.mark.resource("db")
@pytest.mark.parametrize("i", range(5))
def test_write(i):
    time.sleep(0.1)

@pytest.mark.resource("db", shared=True)
@pytest.mark.parametrize("i", range(6))
def test_read(i):
    time.sleep(0.1)

@pytest.mark.resource("gpu", slots=1)
@pytest.mark.parametrize("i", range(4))
def test_train(i):
    time.sleep(0.1)

@pytest.mark.resource("gpu", slots=2)
def test_train_wide():
    time.sleep(0.1)

@pytest.mark.parametrize("i", range(8))
def test_free(i):
    time.sleep(0.05)

@pytest.mark.serial
def test_alone():
    time.sleep(0.1)

def test_crash():
    os._exit(3)

@pytest.mark.resource("db")
def test_crash_holding_db():
    os._exit(3)

@pytest.mark.timeout(1)
def test_hangs():
    time.sleep(30)
"""
CAPACITIES = {"gpu": 2}


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    return pytester


def collected(pytester: pytest.Pytester) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q")
    return [line for line in result.stdout.lines if "::" in line]


def test_the_timeline_of_a_run_with_crashes_and_a_timeout_keeps_its_promises(suite: pytest.Pytester) -> None:
    result = run(suite, "-n", "3", "--timeline=trace.json")
    result.assert_outcomes(passed=25, failed=3)
    result.stdout.fnmatch_lines(["restask: timeline written to *trace.json*"])
    trace = read(suite.path / "trace.json")
    nodeids = collected(suite)
    assert len(nodeids) == 28
    assert problems(trace, nodeids, logged(suite.path), CAPACITIES) == []
    # and none of it holds vacuously:
    tests = slices(trace)
    outcomes = sorted(s.args["outcome"] for s in tests if s.args["outcome"] != "passed")
    assert outcomes == ["crashed", "crashed", "timed out"]
    instants = [e["name"] for e in trace["traceEvents"] if e["ph"] == "i"]
    assert sum(name.startswith("crashed: ") for name in instants) == 2
    assert sum(name.startswith("timed out: ") for name in instants) == 1
    # a worker lost is replaced while tests are left to run
    assert 1 <= sum(name == "worker restart" for name in instants) <= 3
    assert len({s.tid for s in tests}) == 3
    assert any(a.tid != b.tid and a.start < b.end and b.start < a.end for a in tests for b in tests)
    waits = [e for e in trace["traceEvents"] if e["ph"] == "b"]
    assert {e["name"] for e in waits} >= {"waiting for db", "waiting for gpu"}
    counters = [e["args"] for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "gpu"]
    assert max(c["slots"] for c in counters) == 2
    train = next(s for s in tests if s.name == "test_suite.py::test_train_wide")
    assert train.args["resources"] == [{"name": "gpu", "mode": "counted", "slots": [0, 1]}]
    assert train.args["worker"] in {"gw0", "gw1", "gw2"}


def test_the_checks_fail_on_a_timeline_that_breaks_them(suite: pytest.Pytester) -> None:
    """The negative control: the same checks, on doctored copies of a real timeline."""
    run(suite, "-n", "3", "--timeline=trace.json", "-k", "write or read or free")
    trace = read(suite.path / "trace.json")
    nodeids = [s.name for s in slices(trace)]
    ran = logged(suite.path)
    assert problems(trace, nodeids, ran, CAPACITIES) == []

    def doctored(change: str) -> list[str]:
        copied = copy.deepcopy(trace)
        events = [e for e in copied["traceEvents"] if e["ph"] == "X"]
        writes = [e for e in events if "test_write" in e["name"]]
        if change == "overlap":  # one write moved onto another
            writes[1]["ts"] = writes[0]["ts"]
            writes[1]["tid"] = writes[0]["tid"] % 3 + 1
        elif change == "late":  # a slice that begins after the test did
            writes[0]["ts"] += 50_000
        elif change == "twice":
            copied["traceEvents"].append(dict(writes[0]))
        return problems(copied, nodeids, ran, CAPACITIES)

    assert any("overlap on 'db'" in p for p in doctored("overlap"))
    assert any("outside its slice" in p for p in doctored("late"))
    assert any("each once" in p for p in doctored("twice"))


def test_an_in_process_run_has_one_track(suite: pytest.Pytester) -> None:
    result = run(suite, "--timeline=trace.json", "-k", "train_wide or free or alone")
    result.assert_outcomes(passed=10)
    trace = read(suite.path / "trace.json")
    tests = slices(trace)
    assert {s.tid for s in tests} == {1}
    names = [e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"]
    assert names == ["master"]
    nodeids = [n for n in collected(suite) if "train_wide" in n or "free" in n or "alone" in n]
    assert problems(trace, nodeids, logged(suite.path), CAPACITIES) == []
    wide = next(s for s in tests if s.name.endswith("test_train_wide"))
    assert wide.args["resources"] == [{"name": "gpu", "mode": "counted", "slots": [0, 1]}]


def test_the_timeline_is_written_when_the_run_stops_at_failfast(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_a="""
        import time
        def test_fails():
            assert False
        def test_later():
            time.sleep(0.2)
        """
    )
    result = run(pytester, "-n", "1", "--failfast", "--timeline=trace.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    tests = slices(read(pytester.path / "trace.json"))
    assert [(s.name, s.args["outcome"]) for s in tests] == [("test_a.py::test_fails", "failed")]


@pytest.mark.multirun  # three runs, each interrupted: a CI step of its own
@pytest.mark.parametrize(
    ("signum", "workers"),
    [
        pytest.param(signal.SIGINT, "2", id="SIGINT"),
        pytest.param(signal.SIGTERM, "2", id="SIGTERM"),
        pytest.param(signal.SIGTERM, "0", id="SIGTERM in process"),
    ],
)
def test_the_timeline_is_written_when_the_run_is_interrupted(
    pytester: pytest.Pytester, signum: int, workers: str
) -> None:
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_a="""
        import time
        from pathlib import Path
        def test_quick():
            pass
        def test_slow():
            Path("started").touch()
            time.sleep(60)
        """
    )
    process = start_pytest(pytester, *RUN, "-n", workers, "--timeline=trace.json", "-p", "no:randomly")
    deadline = time.monotonic() + 60
    while not (pytester.path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the quick test's done message arrives
    process.send_signal(signum)
    process.communicate(timeout=60)
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    trace = read(pytester.path / "trace.json")
    outcomes = {s.name: s.args["outcome"] for s in slices(trace)}
    assert outcomes == {"test_a.py::test_quick": "passed", "test_a.py::test_slow": "interrupted"}
    nodeids = ["test_a.py::test_quick", "test_a.py::test_slow"]
    assert problems(trace, nodeids, logged(pytester.path), {}) == []


def test_a_timeline_in_a_missing_directory_is_refused_before_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\n")
    result = run(pytester, "-n", "1", "--timeline=missing/trace.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = TIMELINE_NO_DIRECTORY.format(value="missing/trace.json", directory=pytester.path / "missing")
    assert expected in result.stderr.str()


def test_a_timeline_that_cannot_be_written_is_said_and_the_run_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\n")
    (pytester.path / "taken").mkdir()  # a directory where the file should go
    result = run(pytester, "-n", "1", "--timeline=taken")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["restask: could not write the timeline to *taken: *"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_a_run_that_fails_to_collect_still_writes_a_timeline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(:\n")
    result = run(pytester, "-n", "2", "--timeline=trace.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert slices(read(pytester.path / "trace.json")) == []


def test_where_pytest_xdist_runs_n_no_timeline_is_written_and_it_says_so(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_a="def test_one(): pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "--timeline=trace.json", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*--timeline records restask's runs*name -p restask*"])
    assert not (pytester.path / "trace.json").exists()


def test_the_timeline_is_written_through_a_link_as_any_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\n")
    (pytester.path / "link.json").symlink_to("target.json")
    run(pytester, "--timeline=link.json").assert_outcomes(passed=1)
    assert (pytester.path / "link.json").is_symlink()
    assert [s.name for s in slices(read(pytester.path / "target.json"))] == ["test_a.py::test_one"]
