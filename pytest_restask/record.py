"""What happened in a run, task by task: the record that the contention
report and the timeline read.

:class:`RunRecord` is a state machine observer (see :mod:`.events`): it
keeps each task's waits (from ``ready`` to ``started``, and what held it
back meanwhile) and attempts (the worker, the grant, and when the machine
handed it over or ended it).  The controller adds what only the workers
know (:meth:`RunRecord.ran`): when each test really ran, by the worker's
``time.monotonic()`` -- tests are sent ahead and their "done" messages
arrive in batches, so the machine's own times are when it learnt of them.
An in-process run fills the same record from pytest's hooks.

Pure: imports neither pytest nor execnet.  All times are the host's
``time.monotonic()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, final

from .events import (
    HOST_BUSY,
    REQUEUED,
    Blocker,
    Reason,
    TaskChanged,
    TaskState,
    TaskWaiting,
    WorkerChanged,
    WorkerPhase,
)
from .resources import NOTHING, Grant

__all__ = ["SERIAL_TRACK", "WORKERS_WAIT", "Attempt", "RunRecord", "TaskRecord", "Wait", "WorkerEvent", "blocked_by"]

#: What a wait is charged to when a serial test held the ready one back (or it is serial).
SERIAL_TRACK: Final = "serial"
#: What a wait is charged to when nothing held it back but busy workers.
WORKERS_WAIT: Final = "workers"


@final
@dataclass(slots=True)
class Wait:
    """One stay in ``ready``: from ``since`` to ``until`` (None while it lasts),
    and what held the task back, in order, each from when it began."""

    since: float
    until: float | None = None
    blockers: list[tuple[float, Blocker]] = field(default_factory=list)


@final
@dataclass(slots=True)
class Attempt:
    """One time a task was handed to a worker."""

    worker: str
    #: When the machine handed it over (it may start later on the worker).
    assigned: float
    grant: Grant
    #: When it really ran, by its worker's clock (:meth:`RunRecord.ran`).
    start: float | None = None
    end: float | None = None
    #: Why the machine finished it (completed, crashed, timed out), and when:
    #: when it learnt of it, not when it ended on the worker.
    reason: Reason | None = None
    ended: float | None = None


@final
@dataclass(slots=True)
class TaskRecord:
    """One task's waits and attempts."""

    task_id: int
    name: str
    waits: list[Wait] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


@final
@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker process started (``start``, or ``restart`` for a replacement)."""

    time: float
    worker: str
    kind: str


def blocked_by(blocker: Blocker) -> str:
    """Return the resource a blocker is charged to (:data:`SERIAL_TRACK` for a serial conflict)."""
    return SERIAL_TRACK if blocker.resource is None else blocker.resource


@final
class RunRecord:
    """The record of a run; see the module docstring."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: When the run began (its first event) and ended (:meth:`close`).
        self.began: float | None = None
        self.closed: float | None = None
        self.tasks: dict[int, TaskRecord] = {}
        self.workers: list[WorkerEvent] = []
        #: The workers seen, in order of their first start.
        self.worker_names: list[str] = []

    # -- the observer -----------------------------------------------------------

    def task_changed(self, event: TaskChanged) -> None:
        self._begin(event.time)
        task = self.tasks.get(event.task_id)
        if task is None:
            task = self.tasks[event.task_id] = TaskRecord(event.task_id, event.name)
        last = task.attempts[-1] if task.attempts else None
        if event.state is TaskState.READY:
            if last is not None and last.ended is None and event.cause in (REQUEUED, HOST_BUSY):
                task.attempts.pop()  # handed to a worker that died, or gave it back: it never began
            task.waits.append(Wait(event.time))
        elif event.state is TaskState.STARTED:
            if task.waits and task.waits[-1].until is None:
                task.waits[-1].until = event.time
            task.attempts.append(Attempt(event.worker or "", event.time, event.grant or NOTHING))
        elif event.state is TaskState.FINISHED and last is not None and last.ended is None:
            last.reason, last.ended = event.reason, event.time

    def task_waiting(self, event: TaskWaiting) -> None:
        task = self.tasks.get(event.task_id)
        if task is not None and task.waits and task.waits[-1].until is None:
            task.waits[-1].blockers.append((event.time, event.blocker))

    def worker_changed(self, event: WorkerChanged) -> None:
        self._begin(event.time)
        if event.phase is WorkerPhase.STARTING:
            first = event.worker not in self.worker_names
            if first:
                self.worker_names.append(event.worker)
            self.workers.append(WorkerEvent(event.time, event.worker, "start" if first else "restart"))

    # -- what the workers know ----------------------------------------------------

    def ran(self, task_id: int, start: float, end: float | None) -> None:
        """A task's latest attempt ran from ``start`` to ``end`` (its worker's clock)."""
        task = self.tasks.get(task_id)
        if task is not None and task.attempts:
            task.attempts[-1].start, task.attempts[-1].end = start, end

    def close(self) -> None:
        """The run ended (or was interrupted) now: waits and attempts still
        open end here."""
        if self.closed is None:
            self.closed = self._clock()

    def _begin(self, time: float) -> None:
        if self.began is None:
            self.began = time

    # -- reading ------------------------------------------------------------------

    def shares(self, wait: Wait, end: float) -> Iterator[tuple[str, float]]:
        """Yield what held a waiting task back and for how long, up to ``end``
        (or the wait's end).

        Each blocker counts from when the machine told it until the next one,
        or until it let go: the holder finished, the task whose claim came
        first started.  The machine tells a blocker when it looks at the
        task, and looks only when a worker is free; the rest of a wait (no
        blocker, or one that let go) is charged to :data:`WORKERS_WAIT`.
        """
        stop = end if wait.until is None else wait.until
        marks = [(wait.since, None), *wait.blockers]
        for index, (begin, blocker) in enumerate(marks):
            finish = marks[index + 1][0] if index + 1 < len(marks) else stop
            let_go = finish if blocker is None else min(finish, self._lets_go(blocker, begin, finish))
            if let_go > begin:
                yield (WORKERS_WAIT if blocker is None else blocked_by(blocker)), let_go - begin
            if finish > max(let_go, begin):
                yield WORKERS_WAIT, finish - max(let_go, begin)

    def _lets_go(self, blocker: Blocker, since: float, limit: float) -> float:
        """Return when a blocker told at ``since`` stopped holding back (at most ``limit``)."""
        holder = self.tasks.get(blocker.holder)
        if holder is None or blocker.other_run:
            return limit
        for attempt in holder.attempts:
            if blocker.claim and attempt.assigned >= since:
                return attempt.assigned  # the claim's task started
            if not blocker.claim and attempt.assigned <= since and (attempt.ended is None or attempt.ended >= since):
                return limit if attempt.ended is None else attempt.ended
        return limit

    def slices(self) -> Iterator[tuple[TaskRecord, Attempt, float, float]]:
        """Yield every attempt that began, with when it ran on its worker.

        Where the worker's own times never came (it died in the test, the
        test timed out, the run was interrupted), the attempt ran at the
        latest from when the machine handed it over and its worker's previous
        test ended, to when the machine ended it (or the run did).
        """
        end_of_run = self.closed if self.closed is not None else self._clock()
        attempts = [(task, attempt) for task in self.tasks.values() for attempt in task.attempts]
        attempts.sort(key=lambda pair: pair[1].start if pair[1].start is not None else pair[1].assigned)
        free_from: dict[str, float] = {}
        for task, attempt in attempts:
            if attempt.start is None and attempt.ended is None and self.closed is None:
                continue  # still running, and the run goes on
            start = attempt.start
            if start is None:
                start = max(attempt.assigned, free_from.get(attempt.worker, attempt.assigned))
            end = attempt.end
            if end is None:
                if attempt.ended is None and self.closed is None:
                    continue
                end = max(start, attempt.ended if attempt.ended is not None else end_of_run)
            free_from[attempt.worker] = max(free_from.get(attempt.worker, end), end)
            yield task, attempt, start, end
