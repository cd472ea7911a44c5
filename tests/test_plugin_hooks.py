"""The hooks restask offers other plugins: ``pytest_restask_capacities`` and
``pytest_restask_task_state``, implemented in a conftest, end to end."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

import pytest

from .runs import run
from .test_fixture_resources import ORACLE, most_at_once, spans

CAPACITIES = """
import os, json
import pytest

@pytest.hookimpl(optionalhook=True)
def pytest_restask_capacities(config):
    with open(os.path.join(str(config.rootpath), "calls.jsonl"), "a") as f:
        f.write(json.dumps([os.getpid(), os.environ.get("PYTEST_XDIST_WORKER")]) + "\\n")
    return {"gpu": int(os.environ.get("GPUS", "2"))}
"""


def calls(pytester: pytest.Pytester) -> list[list[object]]:
    return [json.loads(line) for line in (pytester.path / "calls.jsonl").read_text().splitlines()]


def test_capacities_from_a_hook_win_over_the_ini_and_are_asked_once(pytester: pytest.Pytester) -> None:
    """gpu: 1 in the ini, 2 from the hook: two tests of one slot each run at
    once (never three), and a test of two slots can run at all."""
    pytester.makeconftest(ORACLE + CAPACITIES)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 1\n")
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.resource("gpu", slots=1)
        @pytest.mark.parametrize("i", range(6))
        def test_one_gpu(i):
            time.sleep(0.2)

        @pytest.mark.resource("gpu", slots=2)
        def test_two_gpus(restask_slots):
            assert restask_slots == {"gpu": [0, 1]}
        """
    )
    result = run(pytester, "-n", "4")
    result.assert_outcomes(passed=7)
    assert most_at_once([s for s in spans(pytester) if "one_gpu" in s.test]) == 2
    assert len(calls(pytester)) == 1
    assert calls(pytester)[0][1] is None  # on the controller, not on a worker


def test_a_shard_split_and_its_workers_use_the_hooks_capacities(pytester: pytest.Pytester) -> None:
    """Workers repeat the controller's --shard split: with the ini's
    capacity they would judge the two-slot test impossible, split
    otherwise, and collect other tests than the controller."""
    pytester.makeconftest(ORACLE + CAPACITIES)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 1\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.resource("gpu", slots=2)
        def test_two_gpus():
            pass

        @pytest.mark.parametrize("i", range(6))
        def test_free(i):
            pass
        """
    )
    for shard in ("1/2", "2/2"):
        (pytester.path / "calls.jsonl").unlink(missing_ok=True)
        result = run(pytester, "-n", "2", f"--shard={shard}", "-p", "no:cacheprovider")
        assert result.ret == 0, result.stdout.str()
        result.stdout.no_fnmatch_line("*collection differs*")
        assert len(calls(pytester)) == 1
    # and without workers: the same split, the same verdict
    result = run(pytester, "--shard=1/1")
    result.assert_outcomes(passed=7)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ('{"gpu": 0}', "returned 0 for 'gpu'; a capacity must be a whole number of at least 1"),
        ('{"gpu": "2"}', "returned '2' for 'gpu'; a capacity must be a whole number of at least 1"),
        ('{"gpu": True}', "returned True for 'gpu'; a capacity must be a whole number of at least 1"),
        ('["gpu"]', "returned ['gpu']; return a mapping of resource names to capacities"),
        ("{42: 2}", "returned a capacity for 42; resource names are strings"),
    ],
)
def test_a_bad_capacity_from_a_hook_is_a_usage_error_naming_resource_and_plugin(
    pytester: pytest.Pytester, answer: str, message: str
) -> None:
    conftest = pytester.makeconftest(
        f"import pytest\n\n@pytest.hookimpl(optionalhook=True)\ndef pytest_restask_capacities(config):\n"
        f"    return {answer}\n"
    )
    pytester.makepyfile("def test_one(): pass")
    for args in ((), ("-n", "2")):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert f"ERROR: pytest_restask_capacities of {conftest} {message}" in result.stderr.str()
        assert "Traceback" not in result.stderr.str()


def test_a_hook_that_raises_ends_the_run_with_an_internal_error_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_restask_task_state(nodeid, state, worker, reason):
            if state in ("started", "finished"):  # also what the session's end would tell
                raise RuntimeError("the plugin broke")
        """
    )
    pytester.makepyfile("def test_one(): pass\ndef test_two(): pass")
    for args in (("-n", "2"), ()):
        result = run(pytester, *args)  # a hang would end in pytester's timeout
        assert result.ret == pytest.ExitCode.INTERNAL_ERROR
        result.stdout.fnmatch_lines(["INTERNALERROR*conftest.py*", "INTERNALERROR*the plugin broke*"])


def test_the_hooks_are_optional_without_restask(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CAPACITIES + STATES)
    pytester.makepyfile("def test_one(): pass")
    pytester.runpytest_subprocess("-p", "no:restask").assert_outcomes(passed=1)


STATES = """
import json, os
import pytest

@pytest.hookimpl(optionalhook=True)
def pytest_restask_task_state(nodeid, state, worker, reason):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "states.jsonl"), "a") as f:
        f.write(json.dumps([nodeid, state, worker, reason, os.getpid(), os.environ.get("PYTEST_XDIST_WORKER")]) + "\\n")
"""

OUTCOMES = """
import os, time, pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_passed(): time.sleep(0.05)
def test_failed(): assert 0
def test_skipped(): pytest.skip("no")
@pytest.mark.xfail(strict=True)
def test_xfailed(): assert 0
def test_error(broken): pass
@pytest.mark.resource("gpu", slots=3)
def test_cannot_run(): pass
@pytest.mark.parametrize("i", range(20))
def test_quick(i): pass
"""


def states(pytester: pytest.Pytester) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """Each test's transitions, in order; also checks they all came from one
    process (the controller), never a worker."""
    lines = [json.loads(line) for line in (pytester.path / "states.jsonl").read_text().splitlines()]
    assert {(pid, worker) for *_, pid, worker in lines} == {(lines[0][4], None)}
    found: dict[str, list[tuple[str, str | None, str | None]]] = defaultdict(list)
    for nodeid, state, worker, reason, *_ in lines:
        found[nodeid.rsplit("::", 1)[-1]].append((state, worker, reason))
    return found


def check_order(transitions: list[tuple[str, str | None, str | None]]) -> None:
    """The five states in order: requested, triaging, then ready (or finished
    from triage), started on a worker, finished with a reason; a return to
    ready only as "requeued" or "retry"."""
    assert transitions[:2] == [("requested", None, None), ("triaging", None, None)]
    rest = transitions[2:]
    if rest[0][0] == "finished":  # triage finished it
        assert rest == [("finished", None, "cannot run")]
        return
    assert rest[0] == ("ready", None, None)
    for (state, worker, reason), (after, _, _) in itertools.pairwise(rest):
        if state == "ready":
            assert after in ("started", "finished")
        elif state == "started":
            assert worker is not None
            assert reason is None
            assert after in ("finished", "ready")
        else:
            raise AssertionError(f"{state} followed by {after}")
    assert rest[-1][0] == "finished"
    assert rest[-1][2] is not None
    for state, _, reason in rest[1:-1]:
        assert state == "started" or reason in ("requeued", "retry")


@pytest.mark.parametrize("workers", ["2", "0"])
def test_every_test_passes_through_the_five_states_with_its_outcome(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makeconftest(STATES)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    pytester.makepyfile(test_outcomes=OUTCOMES)
    run(pytester, "-n", workers).assert_outcomes(passed=21, failed=1, skipped=1, xfailed=1, errors=2)
    found = states(pytester)
    assert len(found) == 26
    for transitions in found.values():
        check_order(transitions)
    expected_worker = "master" if workers == "0" else "gw"
    for name, outcome in [
        ("test_passed", "passed"),
        ("test_failed", "failed"),
        ("test_skipped", "skipped"),
        ("test_xfailed", "xfailed"),
        ("test_error", "error"),
        ("test_quick[0]", "passed"),
    ]:
        assert found[name][-1][2] == outcome, (name, found[name])
        assert (found[name][-1][1] or "").startswith(expected_worker)
        assert [state for state, _, _ in found[name]] == ["requested", "triaging", "ready", "started", "finished"]
    assert found["test_cannot_run"][-1] == ("finished", None, "cannot run")


def test_a_crash_is_finished_as_crashed_and_its_handed_over_task_requeued(pytester: pytest.Pytester) -> None:
    """One worker: test_a holds "db" and its fixture's teardown kills the
    worker, after test_b (also "db") was handed over to it.  test_a is
    finished as crashed; test_b, which never began, goes back to ready as
    requeued, with the worker it was on, and then runs on a new one."""
    pytester.makeconftest(STATES)
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.fixture
        def dies_at_teardown():
            yield
            os._exit(3)

        @pytest.mark.resource("db")
        def test_a(dies_at_teardown):
            pass

        @pytest.mark.resource("db")
        def test_b():
            pass
        """
    )
    run(pytester, "-n", "1").assert_outcomes(passed=2, errors=1)
    found = states(pytester)
    for transitions in found.values():
        check_order(transitions)
    assert found["test_a"][-1] == ("finished", "gw0", "crashed")
    assert found["test_b"][3:] == [
        ("started", "gw0", None),
        ("ready", "gw0", "requeued"),
        ("started", "gw0", None),
        ("finished", "gw0", "passed"),
    ]
    lines = [json.loads(line) for line in (pytester.path / "states.jsonl").read_text().splitlines()]
    events = [(line[0].rsplit("::", 1)[-1], line[1], line[3]) for line in lines]
    assert events.index(("test_a", "finished", "crashed")) < events.index(("test_b", "ready", "requeued"))


def test_failfast_finishes_what_never_started_straight_from_its_queue(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STATES)
    pytester.makepyfile(
        """
        import time, pytest

        def test_a_failure():
            assert 0

        @pytest.mark.parametrize("i", range(12))
        def test_slow(i):
            time.sleep(0.3)
        """
    )
    for workers in ("2", "0"):
        (pytester.path / "states.jsonl").unlink(missing_ok=True)
        result = run(pytester, "-n", workers, "--failfast")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        found = states(pytester)
        for transitions in found.values():
            check_order(transitions)
        never = [name for name, transitions in found.items() if "started" not in [s for s, _, _ in transitions]]
        assert never, "failfast kept no test from starting: the check would pass for nothing"
        for name in never:
            assert found[name] == [
                ("requested", None, None),
                ("triaging", None, None),
                ("ready", None, None),
                ("finished", None, "not run: stopping after the first failure (--failfast)"),
            ]


def test_a_run_that_pytest_xdist_distributes_tells_no_task_states(pytester: pytest.Pytester) -> None:
    """With pytest-xdist installed and ``-p restask`` not named, ``-n`` is
    xdist's: restask schedules nothing, so it tells nothing either."""
    pytest.importorskip("xdist")
    pytester.makeconftest(STATES)
    pytester.makepyfile("def test_one(): pass\ndef test_two(): pass")
    result = pytester.runpytest_subprocess("-n", "2", timeout=60)
    result.assert_outcomes(passed=2)
    assert not (pytester.path / "states.jsonl").exists()


def test_a_capacities_hook_that_raises_ends_the_run_with_an_internal_error_naming_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_restask_capacities(config):
            raise RuntimeError("cannot count the gpus")
        """
    )
    pytester.makepyfile("def test_one(): pass")
    result = run(pytester, "-n", "2")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["INTERNALERROR*conftest.py*pytest_restask_capacities*", "INTERNALERROR*cannot count*"])
