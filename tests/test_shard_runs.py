"""``--shard K/N`` end to end: every test in exactly one job, the same split
everywhere, empty shards, the plan, the durations file and global resources.

Marked ``multirun`` (dozens of pytest runs): .ci/run runs it as a step of its own."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.multirun

RUN = ("-p", "restask")
TIMEOUT = 120

#: Tests log their own node id when they run: the oracle of what ran where.
CONFTEST = """
import os, pytest

@pytest.fixture(autouse=True)
def _log_run(request):
    with open(os.path.join(os.environ["RUN_LOG"]), "a") as f:
        f.write(request.node.nodeid + "\\n")
    yield
"""

SUITE = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_free(i):
    pass

@pytest.mark.resource("db")
@pytest.mark.parametrize("i", range(4))
def test_db(i):
    pass

@pytest.mark.resource("db", shared=True)
@pytest.mark.parametrize("i", range(2))
def test_db_reader(i):
    pass

@pytest.mark.resource("staging")
@pytest.mark.parametrize("i", range(3))
def test_staging(i):
    pass

@pytest.mark.serial
def test_alone():
    pass

@pytest.mark.resource()
def test_bad_marker():
    pass
"""

INI = """
[pytest]
restask_resources =
    staging: 1 global
"""

#: Recorded durations of some of the tests (the rest get the mean), skewed.
DURATIONS = {
    "test_suite.py::test_free[0]": 4.0,
    "test_suite.py::test_free[1]": 0.1,
    "test_suite.py::test_db[0]": 2.0,
    "test_suite.py::test_db[1]": 2.0,
    "test_suite.py::test_staging[0]": 1.5,
    "test_suite.py::test_alone": 0.5,
}
ALL = 17


def make_suite(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)


def ran(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


@pytest.mark.parametrize("workers", [None, "2"], ids=["in-process", "n2"])
def test_every_test_runs_in_exactly_one_shard(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str | None
) -> None:
    make_suite(pytester)
    log = pytester.path / "ran.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    durations = pytester.path / "durations.json"
    every = pytester.runpytest_subprocess(*RUN, "-p", "no:cacheprovider", timeout=TIMEOUT)
    every.assert_outcomes(passed=ALL - 1, errors=1)
    whole = Counter([*ran(log), "test_suite.py::test_bad_marker"])  # its setup error runs no fixture
    assert len(whole) == ALL
    extra = ("-n", workers) if workers else ()
    # every split from 1 to 6 jobs in process; with workers (which must make
    # the same split as their controller) three of them, for the suite's time
    for n in range(1, 7) if workers is None else (1, 2, 5):
        logged: Counter[str] = Counter()
        shards = []
        for k in range(1, n + 1):
            durations.write_text(json.dumps(DURATIONS))
            # in process, for speed: 42 runs (the workers are still subprocesses)
            result = pytester.runpytest_inprocess(*RUN, *extra, f"--shard={k}/{n}", "--durations-file=durations.json")
            outcomes = result.parseoutcomes()
            assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
            result.stdout.no_fnmatch_line("*INTERNALERROR*")
            runs = ran(log)
            if "errors" in outcomes:  # the bad marker fails at setup: no fixture logs it
                runs.append("test_suite.py::test_bad_marker")
            logged.update(runs)
            shards.append(set(runs))
            if len(runs) < ALL:
                result.stdout.fnmatch_lines([f"restask: {ALL - len(runs)} deselected by --shard {k}/{n}"])
        assert logged == whole, (n, [sorted(shard) for shard in shards])
        # a global resource is one copy for all jobs: its tests share one shard
        staging = {f"test_suite.py::test_staging[{i}]" for i in range(3)}
        assert sum(1 for shard in shards if shard & staging) == 1


def test_split_is_the_same_under_any_hash_seed_and_collection_order(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    pytester.makeconftest(
        CONFTEST
        + """
import random
def pytest_collection_modifyitems(items):
    order = os.environ.get("ORDER")
    if order == "reversed":
        items.reverse()
    elif order:
        random.Random(order).shuffle(items)
"""
    )
    pytester.path.joinpath("durations.json").write_text(json.dumps(DURATIONS))
    seen: dict[str, list[set[str]]] = {}
    for seed, order in (("0", ""), ("1", "reversed"), ("12345", "shuffle-1"), ("777", "shuffle-2")):
        os.environ["PYTHONHASHSEED"], os.environ["ORDER"] = seed, order
        try:
            shards = []
            for k in (1, 2, 3):
                result = pytester.runpytest_subprocess(
                    *RUN, f"--shard={k}/3", "--durations-file=durations.json", "--collect-only", "-q", timeout=TIMEOUT
                )
                shards.append({line for line in result.outlines if line.startswith("test_suite.py::")})
        finally:
            del os.environ["PYTHONHASHSEED"], os.environ["ORDER"]
        seen[f"{seed}/{order}"] = shards
    first = next(iter(seen.values()))
    assert sum(len(shard) for shard in first) == ALL
    assert all(shards == first for shards in seen.values()), seen


def test_empty_shard_exits_0_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    results = [pytester.runpytest_subprocess(*RUN, f"--shard={k}/4", timeout=TIMEOUT) for k in range(1, 5)]
    assert [r.ret for r in results] == [pytest.ExitCode.OK] * 4
    empty = [r for r in results if "passed" not in r.parseoutcomes()]
    assert len(empty) == 2
    for result in empty:
        result.stdout.fnmatch_lines(["restask: shard ?/4 has no tests (2 selected tests for 4 shards); nothing to run"])
    # but a selection of nothing at all is still pytest's "no tests ran"
    nothing = pytester.runpytest_subprocess(*RUN, "-k", "no_such_test", "--shard=1/4", timeout=TIMEOUT)
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_shard_combines_with_k_m_and_file_arguments(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_suite(pytester)
    pytester.makepyfile(test_other="def test_elsewhere(): pass\n")
    log = pytester.path / "ran.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    logged: Counter[str] = Counter()
    for k in (1, 2):
        result = pytester.runpytest_subprocess(
            *RUN, "test_suite.py", "-k", "free or db or alone", "-m", "not serial", f"--shard={k}/2"
        )
        assert result.ret == pytest.ExitCode.OK
        logged.update(ran(log))
    expected = [f"test_suite.py::test_free[{i}]" for i in range(6)]
    expected += [f"test_suite.py::test_db[{i}]" for i in range(4)]
    expected += [f"test_suite.py::test_db_reader[{i}]" for i in range(2)]
    assert logged == Counter(expected)


@pytest.mark.parametrize("value", ["0/4", "5/4", "a/b", "3"])
def test_bad_shard_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest_subprocess(*RUN, f"--shard={value}", timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --shard {value}: *as in --shard 1/*"])
    assert "Traceback" not in result.stderr.str()


def test_shard_plan_shows_every_shard_and_runs_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_suite(pytester)
    log = pytester.path / "ran.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    pytester.path.joinpath("durations.json").write_text(json.dumps(DURATIONS))
    result = pytester.runpytest_subprocess(
        *RUN, "--shard=2/3", "--shard-plan", "-n", "4", "--durations-file=durations.json", timeout=TIMEOUT
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "restask: shard 2/3: * of 17 selected tests (split for 4 worker(s) a job)",
            "restask: shard plan (4 worker(s) per job; * this job's shard)",
            "  shard 1/3: * tests, * s of work, at least * s, bottleneck: *",
            "* shard 2/3: * tests, * s of work, at least * s, bottleneck: *",
            "  shard 3/3: * tests, * s of work, at least * s, bottleneck: *",
        ]
    )
    assert not log.exists()
    plan = pytester.runpytest_subprocess(*RUN, "--shard-plan", timeout=TIMEOUT)
    assert plan.ret == pytest.ExitCode.USAGE_ERROR
    plan.stderr.fnmatch_lines(["ERROR: --shard-plan needs --shard K/N*"])


@pytest.mark.parametrize("form", ["object", "pairs"])
def test_durations_file_in_pytest_split_form_is_read_and_written(pytester: pytest.Pytester, form: str) -> None:
    pytester.makepyfile("import time\ndef test_slow(): time.sleep(0.2)\ndef test_fast(): pass\n")
    path = pytester.path / ".test_durations"
    known = {"test_durations_file_in_pytest_split_form_is_read_and_written.py::test_gone": 3.0}
    path.write_text(json.dumps(known if form == "object" else [list(pair) for pair in known.items()]))
    result = pytester.runpytest_subprocess(*RUN, "--durations-file=.test_durations", timeout=TIMEOUT)
    result.assert_outcomes(passed=2)
    written = json.loads(path.read_text())
    assert list(written) == sorted(written)
    prefix = "test_durations_file_in_pytest_split_form_is_read_and_written.py::"
    assert written[prefix + "test_gone"] == 3.0  # kept: not run now
    assert written[prefix + "test_slow"] >= 0.2
    assert 0 <= written[prefix + "test_fast"] < 0.2
    # a --shard job reads the file but leaves it as it was
    before = path.read_text()
    pytester.runpytest_subprocess(*RUN, "--durations-file=.test_durations", "--shard=1/2", timeout=TIMEOUT)
    assert path.read_text() == before


def test_malformed_durations_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    (pytester.path / "d.json").write_text("{not json")
    result = pytester.runpytest_subprocess(*RUN, "--durations-file=d.json", timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --durations-file *d.json: not a durations file (*); *fix it, or delete it*"])
    (pytester.path / "d.json").write_text(json.dumps({"x::a": "slow", "x::b": 1.0}))
    result = pytester.runpytest_subprocess(*RUN, "--durations-file=d.json", timeout=TIMEOUT)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*--durations-file *d.json: 1 entries are not a node id with a number of seconds*"])


def test_bad_scope_in_the_ini_names_the_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrestask_resources =\n    staging: 1 everywhere\n")
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest_subprocess(*RUN, timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: restask_resources line 'staging: 1 everywhere': after the capacity only 'global' * "
            "and 'host' * may follow, got 'everywhere'*"
        ]
    )
