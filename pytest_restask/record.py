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

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from .resources import DEFAULT_CAPACITY, NOTHING, Grant, Mode, Request, Requirement

__all__ = [
    "SERIAL_TRACK",
    "WORKERS_WAIT",
    "Attempt",
    "RunRecord",
    "TaskRecord",
    "Wait",
    "WorkerEvent",
    "blocked_by",
    "merged",
]

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
    #: Its place among all attempts handed over: a worker runs its attempts in this order.
    order: int = 0
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

    def __init__(
        self,
        clock: Callable[[], float],
        capacities: Mapping[str, int] | None = None,
        requirements: Mapping[int, Requirement] | None = None,
    ) -> None:
        self._clock = clock
        #: What each task needs, for the waits of tasks that never started.
        self._requirements: Mapping[int, Requirement] = requirements or {}
        #: The capacities of counted resources (for when a counted request had no room).
        self._capacities: Mapping[str, int] = capacities or {}
        #: What the slices say, once read (see :meth:`_reading`).
        self._read: _Reading | None = None
        #: When the run began (its first event) and ended (:meth:`close`).
        self.began: float | None = None
        self.closed: float | None = None
        self.tasks: dict[int, TaskRecord] = {}
        self.workers: list[WorkerEvent] = []
        #: The workers seen, in order of their first start.
        self.worker_names: list[str] = []
        #: How many attempts were handed over (see :attr:`Attempt.order`).
        self._handed = 0
        #: Seconds of setup, call and teardown each task's reports measured.
        self.durations: dict[int, float] = {}

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
            self._handed += 1
            task.attempts.append(Attempt(event.worker or "", event.time, event.grant or NOTHING, self._handed))
        elif event.state is TaskState.FINISHED:
            if last is not None and last.ended is None:
                last.reason, last.ended = event.reason, event.time
            elif task.waits and task.waits[-1].until is None:
                task.waits[-1].until = event.time  # finished without starting: the run stopped first

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

    def reported(self, task_id: int, seconds: float) -> None:
        """A report of a task measured ``seconds`` (one of its phases)."""
        self.durations[task_id] = self.durations.get(task_id, 0.0) + seconds

    def close(self) -> None:
        """The run ended (or was interrupted) now: waits and attempts still
        open end here."""
        if self.closed is None:
            self.closed = self._clock()
            self._read = None  # read again, with what was still running

    def _begin(self, time: float) -> None:
        if self.began is None:
            self.began = time

    # -- reading ------------------------------------------------------------------

    def wait_end(self, task: TaskRecord, wait: Wait) -> float:
        """Return when a wait ended: when the test that followed it began on
        its worker (later than the machine handed it over, for a test sent
        ahead or handed over), else when the machine started it, else now."""
        if wait.until is not None:
            return self._reading().starts.get((task.task_id, wait.until), wait.until)
        return self.closed if self.closed is not None else self._clock()

    def shares(self, task: TaskRecord, wait: Wait) -> list[tuple[str, float]]:
        """Return what held a waiting task back, and for how long, in order.

        Each instant of the wait (:meth:`wait_end`) is charged to one cause:

        1. the blocker the machine told (a resource another test held, a
           serial test, the claim of a test waiting before it on the same
           resource, an ``@once`` fixture being set up, another run), from when
           it told it until the next one, or until it let go (the holder
           finished, the claim's test started);
        2. else a resource the task needs that another test held in a
           conflicting way (a serial test first), by the tests' slices: the
           machine looks at a ready task only when a worker is free, so
           a task handed over when the one before it ended was never told blocked;
        3. else :data:`WORKERS_WAIT`: it waited for a free worker.
        """
        end = self.wait_end(task, wait)
        charged: dict[str, float] = {}
        uncovered: list[tuple[float, float]] = []
        cursor = wait.since
        for index, (told, blocker) in enumerate(wait.blockers):
            told = max(told, cursor)
            following = wait.blockers[index + 1][0] if index + 1 < len(wait.blockers) else end
            finish = max(told, min(following, end))
            let_go = min(finish, self._lets_go(blocker, told, finish))
            if told > cursor:
                uncovered.append((cursor, told))
            if let_go > told:
                cause = blocked_by(blocker)
                charged[cause] = charged.get(cause, 0.0) + let_go - told
            cursor = max(told, let_go)
        if end > cursor:
            uncovered.append((cursor, end))
        attempt = next((a for a in task.attempts if a.assigned == wait.until), None)
        requirement = attempt.grant.requirement if attempt is not None else self._requirements.get(task.task_id)
        for cause, held in self._conflicts(requirement):
            pieces = [piece for a, b in uncovered for piece in _intersect(held, a, b)]
            seconds = sum(b - a for a, b in pieces)
            if seconds > 0:
                charged[cause] = charged.get(cause, 0.0) + seconds
                uncovered = _subtract(uncovered, pieces)
        rest = sum(b - a for a, b in uncovered)
        if rest > 0:
            charged[WORKERS_WAIT] = charged.get(WORKERS_WAIT, 0.0) + rest
        return list(charged.items())

    def _conflicts(self, requirement: Requirement | None) -> Iterator[tuple[str, list[tuple[float, float]]]]:
        """Yield each cause that can hold back a task that needs ``requirement``
        (serial first, then its resources by name), with when other tests held it so."""
        if requirement is None:
            return
        reading = self._reading()
        yield SERIAL_TRACK, reading.anything if requirement.serial else reading.serial
        for request in sorted(requirement.requests, key=lambda r: r.name):
            yield request.name, reading.conflicting(request, self._capacities.get(request.name, DEFAULT_CAPACITY))

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

    def _reading(self) -> _Reading:
        """Return what the slices say, worked out once the run is closed."""
        if self._read is None or self.closed is None:
            self._read = _Reading(list(self.slices()))
        return self._read

    def slices(self) -> Iterator[tuple[TaskRecord, Attempt, float, float]]:
        """Yield every attempt that began, with when it ran on its worker.

        A worker runs what it was handed in the order it was handed (tests
        sent ahead queue on it).  Where the worker's own times never came (it
        died in the test, the test timed out, the run was interrupted), the
        attempt ran at the latest from when the machine handed it over and
        the worker's previous test ended, to when the machine ended it (or
        the run did).  Of a closed run's attempts that never ended, only a
        worker's first was running: those queued behind it never began.
        """
        end_of_run = self.closed if self.closed is not None else self._clock()
        by_worker: dict[str, list[tuple[TaskRecord, Attempt]]] = {}
        for task in self.tasks.values():
            for attempt in task.attempts:
                by_worker.setdefault(attempt.worker, []).append((task, attempt))
        for queue in by_worker.values():
            queue.sort(key=lambda pair: pair[1].order)
            free_from = -math.inf
            running = False  # a never-ended attempt of this worker was taken as running
            for task, attempt in queue:
                unended = attempt.end is None and attempt.ended is None
                if unended and (self.closed is None or running):
                    continue  # still running, or queued behind the one that was
                running = running or unended
                start = attempt.start if attempt.start is not None else max(attempt.assigned, free_from)
                end = attempt.end
                if end is None:
                    end = max(start, attempt.ended if attempt.ended is not None else end_of_run)
                free_from = max(free_from, end)
                yield task, attempt, start, end


# Implementation


@final
class _Reading:
    """The slices of a run, indexed for the questions :meth:`RunRecord.shares` asks."""

    def __init__(self, slices: list[tuple[TaskRecord, Attempt, float, float]]) -> None:
        #: When each attempt began on its worker, by (task id, when it was handed over).
        self.starts = {(task.task_id, attempt.assigned): start for task, attempt, start, _ in slices}
        #: When any test ran, and when a serial one did.
        self.anything = merged((start, end) for _, _, start, end in slices)
        self.serial = merged((start, end) for _, a, start, end in slices if a.grant.requirement.serial)
        #: Each resource's holds: (start, end, mode, slots held).
        self._holds: dict[str, list[tuple[float, float, Mode, int]]] = {}
        for _, attempt, start, end in slices:
            for request in attempt.grant.requirement.requests:
                slots = len(attempt.grant.slots.get(request.name, ())) or request.slots
                self._holds.setdefault(request.name, []).append((start, end, request.mode, slots))
        self._conflicting: dict[tuple[str, Mode, int], list[tuple[float, float]]] = {}

    def conflicting(self, request: Request, capacity: int) -> list[tuple[float, float]]:
        """Return when other tests held ``request``'s resource in a way that keeps it from being granted."""
        key = (request.name, request.mode, request.slots)
        known = self._conflicting.get(key)
        if known is not None:
            return known
        holds = self._holds.get(request.name, [])
        if request.mode is Mode.EXCLUSIVE:
            spans = [(start, end) for start, end, _, _ in holds]
        elif request.mode is Mode.SHARED:
            spans = [(start, end) for start, end, mode, _ in holds if mode is not Mode.SHARED]
        else:
            spans = [(start, end) for start, end, mode, _ in holds if mode is not Mode.COUNTED]
            counted = [(start, end, slots) for start, end, mode, slots in holds if mode is Mode.COUNTED]
            spans.extend(_above(counted, capacity - request.slots))
        union = self._conflicting[key] = merged(spans)
        return union


def merged(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return the union of intervals as sorted, disjoint intervals."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersect(merged: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """Return the parts of sorted, disjoint intervals inside [start, end]."""
    index = max(bisect.bisect_right(merged, (start, math.inf)) - 1, 0)
    pieces = []
    while index < len(merged) and merged[index][0] < end:
        a, b = max(merged[index][0], start), min(merged[index][1], end)
        if b > a:
            pieces.append((a, b))
        index += 1
    return pieces


def _subtract(spans: list[tuple[float, float]], pieces: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return sorted, disjoint ``spans`` without the parts in ``pieces`` (which lie inside them)."""
    rest = []
    for start, end in spans:
        cursor = start
        for a, b in pieces:
            if b <= start or a >= end:
                continue
            if a > cursor:
                rest.append((cursor, a))
            cursor = max(cursor, b)
        if end > cursor:
            rest.append((cursor, end))
    return rest


def _above(holds: list[tuple[float, float, int]], room: int) -> list[tuple[float, float]]:
    """Return when the slots held add up to more than ``room``."""
    changes = sorted([(start, 1, slots) for start, _, slots in holds] + [(end, 0, -slots) for _, end, slots in holds])
    spans, held, since = [], 0, 0.0
    for time, _, amount in changes:
        before = held
        held += amount
        if before <= room < held:
            since = time
        elif held <= room < before:
            spans.append((since, time))
    return spans
