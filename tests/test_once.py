"""``@once`` fixtures, end to end: set up once for the run, torn down after
the last test that uses them.

The oracle is the suite's own log: the fixture notes its setup and teardown,
every test notes when it starts and ends, with its pid and the value it got.
"""

from __future__ import annotations

import json

import pytest

from .runs import run

#: The log every suite here writes: ``note`` for fixtures and tests, and
#: each test's start and end.
ORACLE = """
import json, os, time
import pytest
from pytest_restask import once, requires

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log.jsonl")


def note(event, name="", **extra):
    with open(LOG, "a") as f:
        f.write(json.dumps({"ev": event, "id": name, "pid": os.getpid(), "t": time.time(), **extra}) + "\\n")


@pytest.fixture(autouse=True)
def _oracle(request):
    note("start", request.node.nodeid)
    yield
    note("end", request.node.nodeid)
"""

CONFTEST = (
    ORACLE
    + """
@once
def schema(tmp_path_factory):
    note("setup")
    time.sleep(0.2)
    yield {"url": "db://" + str(tmp_path_factory.getbasetemp()), "made by": os.getpid()}
    time.sleep(0.1)
    note("teardown")
"""
)

#: Six tests use the fixture, nine free ones take longer.  The pauses matter
#: only with workers (ONCE_PAUSE scales them; one after another, the log
#: comes out the same without them).
TESTS = """
import os, time
import pytest
from conftest import note

PAUSE = float(os.environ.get("ONCE_PAUSE", "1"))

@pytest.mark.parametrize("i", range(6))
def test_uses(i, schema):
    note("value", value=schema)
    time.sleep(0.4 * PAUSE)

@pytest.mark.parametrize("i", range(9))
def test_free(i):
    time.sleep(0.5 * PAUSE)
"""


def records(pytester: pytest.Pytester) -> list[dict[str, object]]:
    path = pytester.path / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_once_log(pytester: pytest.Pytester, workers: int) -> dict[str, object]:
    """Check the log of a run of CONFTEST and TESTS; return facts to compare."""
    log = records(pytester)
    setups = [r for r in log if r["ev"] == "setup"]
    teardowns = [r for r in log if r["ev"] == "teardown"]
    assert len(setups) == 1
    assert len(teardowns) == 1
    values = [r["value"] for r in log if r["ev"] == "value"]
    assert len(values) == 6
    assert all(value == values[0] for value in values)  # every test saw the same value
    ends = {str(r["id"]): float(r["t"]) for r in log if r["ev"] == "end"}  # type: ignore[arg-type]
    uses_end = max(t for name, t in ends.items() if "test_uses" in name)
    teardown = float(teardowns[0]["t"])  # type: ignore[arg-type]
    assert teardown > uses_end  # after the last test that used it
    pids = {r["pid"] for r in log if r["ev"] == "start" and "test_uses" in str(r["id"])}
    return {"pids": len(pids), "teardown_before_last_end": teardown < max(ends.values()), "workers": workers}


def test_a_once_fixture_is_set_up_once_for_the_run_and_torn_down_after_its_last_user(
    pytester: pytest.Pytester,
) -> None:
    """Must show 5: 6 tests use it at -n 3, spread over three workers; free
    tests go on after the last of them; its setup and teardown are logged
    once each, the teardown after the last user ended and before the run's
    last test ended, and every test saw the same value."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_once=TESTS)
    result = run(pytester, "-n", "3", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=15)
    facts = check_once_log(pytester, 3)
    assert facts["pids"] == 3
    assert facts["teardown_before_last_end"] is True  # not held back until the run's end


def test_without_workers_it_is_an_ordinary_session_fixture(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same suite without -n: the same log, the teardown at the session's end."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_once=TESTS)
    monkeypatch.setenv("ONCE_PAUSE", "0.05")
    result = run(pytester, "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=15)
    facts = check_once_log(pytester, 0)
    assert facts["pids"] == 1
    assert facts["teardown_before_last_end"] is False


FAILING = """
import os, json, time
from pytest_restask import once

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log.jsonl")

@once
def schema():
    with open(LOG, "a") as f:
        f.write(json.dumps({"ev": "setup", "pid": os.getpid()}) + "\\n")
    time.sleep(0.2)
    raise RuntimeError("cannot migrate the schema")

@once
def handle():
    yield open(__file__)
"""

USERS = """
import pytest

@pytest.mark.parametrize("i", range(5))
def test_schema(i, schema):
    pass

@pytest.mark.parametrize("i", range(3))
def test_handle(i, handle):
    pass

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    pass
"""


def test_a_failing_setup_errors_every_user_and_runs_once(pytester: pytest.Pytester) -> None:
    """Must show 5: a failing setup is not tried again for each test; its
    cause is shown once in full, the other users refer to it."""
    pytester.makeconftest(FAILING)
    pytester.makepyfile(test_users=USERS)
    result = run(pytester, "-n", "3", "-p", "no:randomly")
    result.assert_outcomes(passed=4, errors=8)
    assert len(records(pytester)) == 1  # the setup ran once
    text = result.stdout.str()
    assert text.count('raise RuntimeError("cannot migrate the schema")') == 1  # in full once
    # the errors section (the short summary repeats them, whole where CI is set)
    lines = result.stdout.lines
    reference = "@once fixture 'schema' failed to set up: RuntimeError: cannot migrate the schema (in "
    assert sum(line.startswith(reference) for line in lines) == 4
    # a value that cannot reach other workers: every user errors, naming the fixture and the type
    unsent = "@once fixture 'handle' made a value of type TextIOWrapper that cannot be sent"
    assert sum(line.startswith(unsent) for line in lines) == 3
    result.stdout.no_fnmatch_line("*pytest_restask/*")  # no frame of ours


REQUIRES = (
    ORACLE
    + """
@once
@requires("db")
def schema():
    note("setup-start")
    time.sleep(0.3)
    note("setup-end")
    yield "db://schema"
    note("teardown-start")
    time.sleep(0.3)
    note("teardown-end")
"""
)

REQUIRES_TESTS = """
import time
import pytest

@pytest.mark.parametrize("i", range(4))
def test_uses(i, schema):
    time.sleep(0.2)

@pytest.mark.resource("db")
@pytest.mark.parametrize("i", range(6))
def test_db(i):
    time.sleep(0.2)
"""


def db_overlaps(pytester: pytest.Pytester, conftest: str) -> int:
    """Run REQUIRES_TESTS; return how many db tests overlapped the fixture's setup or teardown."""
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_db=REQUIRES_TESTS)
    result = run(pytester, "-n", "3", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=10)
    log = records(pytester)
    moments = {str(r["ev"]): float(r["t"]) for r in log if not r["id"]}  # type: ignore[arg-type]
    windows = [(moments["setup-start"], moments["setup-end"]), (moments["teardown-start"], moments["teardown-end"])]
    starts = {str(r["id"]): float(r["t"]) for r in log if r["ev"] == "start"}  # type: ignore[arg-type]
    ends = {str(r["id"]): float(r["t"]) for r in log if r["ev"] == "end"}  # type: ignore[arg-type]
    db_spans = [(starts[name], ends[name]) for name in starts if "::test_db[" in name]
    assert len(db_spans) == 6
    return sum(s < end and begin < e for begin, end in windows for s, e in db_spans)


def test_setup_and_teardown_hold_what_the_fixture_requires(pytester: pytest.Pytester) -> None:
    """@once with @requires("db"): no test that takes db runs while the
    fixture is set up or torn down."""
    assert db_overlaps(pytester, REQUIRES) == 0


def test_without_requires_the_setup_overlaps_the_db_tests(pytester: pytest.Pytester) -> None:
    """The negative control: the same fixture without @requires("db")."""
    assert db_overlaps(pytester, REQUIRES.replace('@requires("db")\n', "")) > 0
