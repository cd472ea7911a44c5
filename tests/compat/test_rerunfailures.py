"""pytest-rerunfailures (14 and later) on restask workers.

``--reruns N`` runs a failed test again on the same worker, within one hold
of the test's resources, with its fixtures set up afresh for each attempt;
pytest-rerunfailures keeps its count of attempts on the controller (a
server its workers connect to through ``workerinput``).  Compared with the
serial run: the counts (``N rerun``), the ``-rA`` lines and the JUnit test
cases, with and without pytest-xdist installed; the attempts of a test that
holds "db" never interleave with another "db" test; and a test whose worker
crashed is run again (xdist's ``pytest_handlecrashitem``), which a serial
run cannot show, since there the crash ends pytest itself.
"""

from __future__ import annotations

import json

import pytest

from . import runs

pytestmark = runs.needs("pytest-rerunfailures")

SUITE = """
import json, os, time, pytest

LOG = os.path.join(os.path.dirname(__file__), "attempts.jsonl")

def log(**entry):
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\\n")

def attempts(name):
    if not os.path.exists(LOG):
        return 0
    with open(LOG) as f:
        return sum(json.loads(line).get("setup") == name for line in f)

@pytest.fixture
def fresh(request):
    # set up for every attempt: pytest-rerunfailures drops the cached value
    log(setup=request.node.name)
    yield
    log(teardown=request.node.name)

@pytest.mark.resource("db")
def test_flaky_db(fresh):
    start = time.time()
    time.sleep(0.2)
    log(test="test_flaky_db", start=start, end=time.time())
    assert attempts("test_flaky_db") >= 3  # passes on its third attempt

@pytest.mark.parametrize("i", range(3))
@pytest.mark.resource("db")
def test_other_db(fresh, i):
    start = time.time()
    time.sleep(0.2)
    log(test=f"test_other_db[{i}]", start=start, end=time.time())

def test_always_fails(fresh):
    assert False

@pytest.mark.flaky(reruns=1)
def test_marker_flaky(fresh):
    assert attempts("test_marker_flaky") >= 2

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    time.sleep(0.1)
"""


def _log(pytester: pytest.Pytester) -> list[dict[str, object]]:
    path = pytester.path / "attempts.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    return entries


@pytest.mark.parametrize("xdist", ["with xdist", "without xdist"])
def test_reruns_match_the_serial_run(pytester: pytest.Pytester, xdist: str) -> None:
    pytester.makepyfile(SUITE)
    extra = ("-p", "no:xdist") if xdist == "without xdist" else ()
    serial = runs.run(pytester, runs.SERIAL, "--reruns=2", *extra, workers=None, disabled=("randomly",))
    serial_log = _log(pytester)
    parallel = runs.run(pytester, runs.PARALLEL, "--reruns=2", *extra, workers=runs.WORKERS, disabled=("randomly",))
    parallel_log = _log(pytester)
    runs.assert_same(runs.Comparison(serial, parallel))
    assert serial.outcomes == {"failed": 1, "passed": 9, "rerun": 5}, serial.tail()
    assert _rerun_lines(parallel) == _rerun_lines(serial)
    for entries in (serial_log, parallel_log):
        # each attempt set its fixture up and tore it down: 3 + 3 + 2 attempts
        setups = [e["setup"] for e in entries if "setup" in e]
        assert sorted(setups).count("test_flaky_db") == 3
        assert sorted(setups).count("test_always_fails") == 3
        assert sorted(setups).count("test_marker_flaky") == 2
        assert len([e for e in entries if "teardown" in e]) == len(setups)
    _assert_db_attempts_do_not_interleave(parallel_log)


def _rerun_lines(run: runs.Run) -> list[str]:
    """The short summary's lines, sorted: which test passed, failed, was rerun."""
    lines = run.result.stdout.lines
    start = lines.index(next(line for line in lines if "short test summary info" in line))
    return sorted(line for line in lines[start + 1 :] if line.split(" ")[0] in ("PASSED", "FAILED", "RERUN", "ERROR"))


def _assert_db_attempts_do_not_interleave(entries: list[dict[str, object]]) -> None:
    """From the first attempt of test_flaky_db to the end of its last, no
    other "db" test ran: the hold lasts across the reruns."""
    flaky = [e for e in entries if e.get("test") == "test_flaky_db"]
    others = [e for e in entries if str(e.get("test", "")).startswith("test_other_db")]
    assert len(flaky) == 3
    assert len(others) == 3
    first = min(float(str(e["start"])) for e in flaky)
    last = max(float(str(e["end"])) for e in flaky)
    for other in others:
        assert float(str(other["end"])) <= first or float(str(other["start"])) >= last, (other, first, last)


CRASH = """
import os

def test_crashes_once():
    if not os.path.exists("crashed"):
        open("crashed", "w").close()
        os._exit(3)

def test_fine():
    pass
"""


@pytest.mark.parametrize("xdist", ["with xdist", "without xdist"])
def test_a_crashed_test_is_rerun_on_a_new_worker(pytester: pytest.Pytester, xdist: str) -> None:
    pytester.makepyfile(CRASH)
    extra = ("-p", "no:xdist") if xdist == "without xdist" else ()
    parallel = runs.run(pytester, runs.PARALLEL, "--reruns=1", *extra, workers=runs.WORKERS, disabled=("randomly",))
    assert parallel.outcomes == {"passed": 2, "rerun": 1}, parallel.tail()
    assert ("test_a_crashed_test_is_rerun_on_a_new_worker", "test_crashes_once", "passed") in parallel.testcases


def test_negative_control_without_reruns_the_crash_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CRASH)
    parallel = runs.run(pytester, runs.PARALLEL, workers=runs.WORKERS, disabled=("randomly",))
    assert parallel.outcomes == {"passed": 1, "failed": 1}, parallel.tail()
