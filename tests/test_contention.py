"""The contention report after a parallel run: its figures from a record
made by hand (a fake clock), and the section a real run shows."""

from __future__ import annotations

import pytest

from pytest_restask.contention import CONTENTION_TITLE, contention, contention_lines
from pytest_restask.events import Blocker, Reason, TaskChanged, TaskState, TaskWaiting
from pytest_restask.record import RunRecord
from pytest_restask.resources import Grant, Mode, Request, Requirement

from .runs import run

DB = Requirement((Request("db", Mode.EXCLUSIVE),))


def changed(time: float, task: int, state: TaskState, **fields: object) -> TaskChanged:
    return TaskChanged(time, task, f"t.py::test_{task}", state, **fields)  # type: ignore[arg-type]


def two_writers() -> RunRecord:
    """Tasks 1 and 2 both write "db" on two workers: 2 waits for 1 from 0 to 2 s;
    task 3 needs nothing and waits 1 s for a worker."""
    record = RunRecord(clock=lambda: 4.0)
    for task in (1, 2, 3):
        record.task_changed(changed(0.0, task, TaskState.READY))
    record.task_changed(changed(0.0, 1, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    record.task_waiting(TaskWaiting(0.0, 2, "t.py::test_2", Blocker("db", 1)))
    record.task_changed(changed(0.0, 3, TaskState.STARTED, worker="gw1", grant=Grant(Requirement())))
    record.ran(3, 0.0, 1.0)
    record.task_changed(changed(1.0, 3, TaskState.FINISHED, worker="gw1", reason=Reason.COMPLETED))
    record.ran(1, 0.0, 2.0)
    record.task_changed(changed(2.0, 1, TaskState.FINISHED, worker="gw0", reason=Reason.COMPLETED))
    record.task_changed(changed(2.0, 2, TaskState.STARTED, worker="gw1", grant=Grant(DB)))
    record.ran(2, 2.0, 4.0)
    record.task_changed(changed(4.0, 2, TaskState.FINISHED, worker="gw1", reason=Reason.COMPLETED))
    record.close()
    return record


def test_the_figures_of_a_run_made_by_hand() -> None:
    report = contention(two_writers(), 2, {1: 2.0, 2: 2.0, 3: 1.0}, {1: DB, 2: DB, 3: Requirement()}, {})
    # span 0..4; the tests worked 2 + 2 + 1 = 5 s of 2 workers x 4 s
    assert (report.span, report.utilisation) == (4.0, pytest.approx(5 / 8))
    # bound: db's exclusive work 2 + 2 = 4 > all work 5 / 2
    assert (report.bound, report.terms[0].name) == (4.0, "db")
    [db] = report.resources
    assert (db.name, db.tests, db.busy, db.held_back, db.waited, db.worst) == ("db", 2, 4.0, 1, 2.0, 2.0)
    assert db.worst_test == "t.py::test_2"
    lines = contention_lines(report)
    assert lines[0] == (
        "span 4.00 s (first test at 0.00 s), lower bound 4.00 s (bottleneck: db), span/bound 1.00; 2 workers 62% busy"
    )


def test_a_wait_is_charged_to_its_blocker_only_while_it_holds_back() -> None:
    """Task 2 was told blocked by 1 at 0; 1 let go at 2 s, but 2 started at 3 s
    (no worker was free): one second is the workers'."""
    record = RunRecord(clock=lambda: 5.0)
    record.task_changed(changed(0.0, 1, TaskState.READY))
    record.task_changed(changed(0.0, 1, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    record.task_changed(changed(0.0, 2, TaskState.READY))
    record.task_waiting(TaskWaiting(0.0, 2, "t.py::test_2", Blocker("db", 1)))
    record.task_changed(changed(2.0, 1, TaskState.FINISHED, worker="gw0", reason=Reason.COMPLETED))
    record.task_changed(changed(3.0, 2, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    [wait] = record.tasks[2].waits
    assert record.shares(record.tasks[2], wait) == [("db", 2.0), ("workers", 1.0)]


def test_a_wait_the_machine_never_looked_at_is_charged_to_the_hold_in_its_way() -> None:
    """No worker was free to look at task 2 while task 1 held "db": it was
    handed over at 1.5 s and began on gw0 at 2 s, when 1 ended there."""
    record = RunRecord(clock=lambda: 3.0)
    record.task_changed(changed(0.0, 1, TaskState.READY))
    record.task_changed(changed(0.0, 2, TaskState.READY))
    record.task_changed(changed(0.0, 1, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    record.task_changed(changed(1.5, 2, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    record.ran(1, 0.0, 2.0)
    record.task_changed(changed(2.0, 1, TaskState.FINISHED, worker="gw0", reason=Reason.COMPLETED))
    record.ran(2, 2.0, 3.0)
    record.task_changed(changed(3.0, 2, TaskState.FINISHED, worker="gw0", reason=Reason.COMPLETED))
    record.close()
    task = record.tasks[2]
    assert record.wait_end(task, task.waits[0]) == 2.0  # when it began, not when it was handed over
    assert record.shares(task, task.waits[0]) == [("db", 2.0)]


@pytest.mark.parametrize(("slots", "charged"), [(1, []), (2, [("gpu", 2.0)])])
def test_a_counted_request_waits_only_while_the_slots_left_are_too_few(
    slots: int, charged: list[tuple[str, float]]
) -> None:
    """gpu has 2 slots and task 1 holds one from 0 to 2 s: task 2 asking for
    one more could have started; asking for two, it waited for task 1."""
    gpu = Requirement((Request("gpu", Mode.COUNTED, slots),))
    record = RunRecord(clock=lambda: 4.0, capacities={"gpu": 2})
    record.task_changed(changed(0.0, 1, TaskState.READY))
    record.task_changed(changed(0.0, 2, TaskState.READY))
    one = Requirement((Request("gpu", Mode.COUNTED, 1),))
    record.task_changed(changed(0.0, 1, TaskState.STARTED, worker="gw0", grant=Grant(one, {"gpu": (0,)})))
    record.ran(1, 0.0, 2.0)
    record.task_changed(changed(2.0, 1, TaskState.FINISHED, worker="gw0", reason=Reason.COMPLETED))
    record.task_changed(changed(2.0, 2, TaskState.STARTED, worker="gw0", grant=Grant(gpu)))
    record.ran(2, 2.0, 3.0)
    record.close()
    task = record.tasks[2]
    shares = [(cause, seconds) for cause, seconds in record.shares(task, task.waits[0]) if cause != "workers"]
    assert shares == charged


def test_the_short_report_has_at_most_eight_lines_and_v_shows_all() -> None:
    record = RunRecord(clock=lambda: 1.0)
    requirements = {}
    for task in range(12):
        requirement = Requirement((Request(f"r{task:02}", Mode.EXCLUSIVE),))
        requirements[task] = requirement
        record.task_changed(changed(0.0, task, TaskState.READY))
        record.task_changed(changed(0.0, task, TaskState.STARTED, worker="gw0", grant=Grant(requirement)))
        record.ran(task, 0.0, 1.0)
    record.close()
    report = contention(record, 12, dict.fromkeys(range(12), 1.0), requirements, {})
    short = contention_lines(report)
    # the section's title, the run, the header, 4 resources and what is left out: 8 lines
    assert len(short) == 7
    assert short[-1] == "... and 8 more resources (-v shows all)"
    assert len(contention_lines(report, everything=True)) == 2 + 12


SUITE = """
import time
import pytest

@pytest.mark.resource("db")
@pytest.mark.parametrize("i", range(4))
def test_write(i):
    time.sleep(0.1)

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    pass
"""


def test_a_parallel_run_with_resources_shows_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            f"*{CONTENTION_TITLE}*",
            "span * s (first test at * s), lower bound * s (bottleneck: db), span/bound *; 2 workers *% busy",
            "resource * tests * busy * held back * waited * worst wait",
            "db * 4 * s * 3 * s * s test_a.py::test_write*",
        ]
    )


@pytest.mark.multirun  # three whole runs: a CI step of its own
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("-n", "2", "-q"), id="quiet"),
        pytest.param(("-n", "0"), id="in process"),
        pytest.param(("-n", "2", "-k", "free"), id="no resources"),
    ],
)
def test_no_report_when_quiet_in_process_or_without_resources(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makepyfile(test_a=SUITE)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line(f"*{CONTENTION_TITLE}*")
