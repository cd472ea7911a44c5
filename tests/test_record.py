"""The record of a run: when each test ran, where its worker never said."""

from __future__ import annotations

from pytest_restask.events import Blocker, Reason, TaskChanged, TaskState, TaskWaiting
from pytest_restask.record import RunRecord
from pytest_restask.resources import Grant, Mode, Request, Requirement

DB = Requirement((Request("db", Mode.EXCLUSIVE),))


def changed(time: float, task: int, state: TaskState, **fields: object) -> TaskChanged:
    return TaskChanged(time, task, f"t.py::test_{task}", state, **fields)  # type: ignore[arg-type]


def handed(record: RunRecord, time: float, *tasks: int, worker: str = "gw0") -> None:
    for task in tasks:
        record.task_changed(changed(0.0, task, TaskState.READY))
        record.task_changed(changed(time, task, TaskState.STARTED, worker=worker, grant=Grant(Requirement())))


def spans(record: RunRecord) -> dict[int, tuple[float, float]]:
    return {task.task_id: (start, end) for task, _, start, end in record.slices()}


def test_a_test_sent_ahead_that_crashed_ran_after_the_tests_before_it_on_its_worker() -> None:
    """Three tests sent to gw0 at 0.1 s; the first two ran 0.5-0.7 s, the
    third crashed, which the controller learnt at 0.9 s."""
    record = RunRecord(clock=lambda: 1.0)
    handed(record, 0.1, 1, 2, 3)
    record.ran(1, 0.5, 0.6)
    record.ran(2, 0.6, 0.7)
    record.task_changed(changed(0.9, 3, TaskState.FINISHED, worker="gw0", reason=Reason.CRASHED))
    record.close()
    assert spans(record) == {1: (0.5, 0.6), 2: (0.6, 0.7), 3: (0.7, 0.9)}


def test_of_an_interrupted_run_only_the_test_running_on_each_worker_is_shown_unfinished() -> None:
    """gw0 was handed 4 at 0 s, then 3, 2, 1 together at 0.1 s: 4 and 3 ran,
    2 was running when the run was interrupted at 10 s, 1 never began."""
    record = RunRecord(clock=lambda: 10.0)
    handed(record, 0.0, 4)
    handed(record, 0.1, 3, 2, 1)
    record.ran(4, 0.5, 1.0)
    record.ran(3, 1.0, 1.5)
    record.close()
    assert spans(record) == {4: (0.5, 1.0), 3: (1.0, 1.5), 2: (1.5, 10.0)}


def test_each_worker_is_read_on_its_own() -> None:
    record = RunRecord(clock=lambda: 3.0)
    handed(record, 0.0, 1, worker="gw0")
    handed(record, 0.0, 2, worker="gw1")
    record.ran(1, 0.2, 2.0)
    record.task_changed(changed(2.5, 2, TaskState.FINISHED, worker="gw1", reason=Reason.TIMEOUT))
    record.close()
    assert spans(record) == {1: (0.2, 2.0), 2: (0.0, 2.5)}


def test_a_waiting_test_the_run_stopped_before_it_began_waited_until_then() -> None:
    """Task 2 waits for "db", held by 1 until 10 s; the run aborts it at 1 s."""
    record = RunRecord(clock=lambda: 10.0)
    record.task_changed(changed(0.0, 1, TaskState.READY))
    record.task_changed(changed(0.0, 1, TaskState.STARTED, worker="gw0", grant=Grant(DB)))
    record.task_changed(changed(0.0, 2, TaskState.READY))
    record.task_waiting(TaskWaiting(0.0, 2, "t.py::test_2", Blocker("db", 1)))
    record.task_changed(changed(1.0, 2, TaskState.FINISHED, reason=Reason.ABORTED))
    record.ran(1, 0.0, 10.0)
    record.close()
    task = record.tasks[2]
    assert record.wait_end(task, task.waits[0]) == 1.0
    assert record.shares(task, task.waits[0]) == [("db", 1.0)]
    assert 2 not in spans(record)


def test_a_requeued_attempt_never_began() -> None:
    """Task 1 was sent ahead to gw0, which died before starting it; it ran on gw1."""
    record = RunRecord(clock=lambda: 3.0)
    handed(record, 0.1, 1)
    record.task_changed(changed(0.5, 1, TaskState.READY, worker="gw0", cause="requeued"))
    record.task_changed(changed(0.6, 1, TaskState.STARTED, worker="gw1", grant=Grant(Requirement())))
    record.ran(1, 1.0, 2.0)
    record.close()
    assert [attempt.worker for attempt in record.tasks[1].attempts] == ["gw1"]
    assert spans(record) == {1: (1.0, 2.0)}
