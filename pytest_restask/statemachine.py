"""The task state machine: which test runs where and when.

Every task sits in exactly one queue::

    requested --bootstrap--> triaging --triage--> ready --start--> started --> finished
                                          \\--(invalid, impossible)--------------^
    ready, triaging, requested --abort--> finished

``bootstrap`` starts the workers and moves requested tasks to triage;
``triage`` finishes what can never run (a bad declaration, more slots than
exist); ``start`` gives each idle worker the first ready task whose
resources can be granted; the ``monitor`` side is the event methods
(:meth:`StateMachine.worker_ready`, :meth:`~StateMachine.reached_teardown`,
:meth:`~StateMachine.task_done`, :meth:`~StateMachine.worker_died`,
:meth:`~StateMachine.tick`).  Every finished task carries a :class:`Reason`.

A worked example with one exclusive "db", tasks ``a`` and ``b`` both on
"db", ``c`` free, workers gw0 and gw1:

1. ``start``: gw0 gets ``a`` (grants db).  For gw1, ``b`` cannot be granted
   and becomes a *claim*: no later task that conflicts with "db" may start
   before it (so a stream of shared readers cannot starve it).  ``c`` does
   not conflict and goes to gw1.
2. gw0 reports that ``a`` reached its teardown and asks for its next test.
   ``b`` can be granted if ``a``'s hold is handed over, so gw0 gets ``b``
   while ``a`` still holds "db" until its teardown is done: ``a``'s
   fixtures end inside ``a``'s hold, ``b``'s start inside ``b``'s, and
   nobody else can take "db" in between.  Because ``b``'s grant covers
   ``a``'s, the worker may keep the fixtures they share.
3. If nothing could be granted, gw0 is told so: it ends every fixture
   narrower than session scope inside ``a``'s hold, and ``a``'s resources
   are released when its teardown is done.

The machine is pure: it imports neither pytest nor execnet, talks to the
processes through the :class:`Spawner` protocol, tells what happens to an
injected :class:`~.events.Observer` (every task transition, what a waiting
task waits for, every worker phase), and takes the time as a parameter, so
it is tested with a fake spawner and a fake clock.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import heapq
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, final

from .events import (
    HOST_BUSY,
    REQUEUED,
    RETRY,
    Blocker,
    Observer,
    Reason,
    TaskChanged,
    TaskState,
    TaskWaiting,
    WorkerChanged,
    WorkerPhase,
)
from .resources import FREE, Grant, LockTable, Mode, Request, Requirement, merge_requests

__all__ = ["Reason", "Spawner", "StateMachine", "Task", "TaskState", "WorkerPhase"]


#: Why the run stopped when no worker could start.
EVERY_WORKER_FAILED: Final = "every worker failed to start (see 'failed outside a test' above); fix that and run again"


@final
@dataclass(eq=False, slots=True)
class Task:
    """One test to run, and where it is in its life."""

    #: Position in the collected items; the key in the lock table.
    id: int
    #: The test's node id, for messages.
    name: str
    requirement: Requirement = FREE
    #: A declaration error found at collection, finished in triage.
    error: str | None = None
    #: Seconds this task may take (0: no limit), or None for the run's limit.
    timeout: float | None = None
    #: Seconds it is expected to take (from earlier runs); orders the ready queue.
    estimate: float = 1.0
    #: Its place in :func:`prioritize`'s order but for length: tasks of one
    #: group may trade places to keep a worker in its module.
    group: tuple[int, float, int] = (2, 0.0, 0)
    worker: str | None = None
    grant: Grant | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: Reason | None = None
    #: Human detail of the reason: the crash cause, the abort cause, ...
    detail: str = ""
    #: Handed back because another run held this host-wide resource (see
    #: :meth:`StateMachine.hand_back`): not tried again before ``not_before``.
    host_busy: str | None = None
    not_before: float = 0.0
    #: How many times it was handed back.
    bounces: int = 0
    #: The keys of the ``@once`` fixtures it uses (see :class:`OnceFixture`).
    once: tuple[str, ...] = ()


class Spawner(Protocol):
    """What the state machine asks of the processes; :mod:`.spawner` implements it."""

    def start_worker(self, worker: str) -> None:
        """Start (or restart) a worker; ``worker_ready`` or ``worker_died`` follows."""

    def send_next(self, worker: str, task: Task | None, keep_fixtures: bool, final: bool) -> None:
        """Tell a worker which task to run next (None: nothing for now).

        ``keep_fixtures``: fixtures of the previous task may live on into
        ``task``; otherwise everything narrower than session scope ends first.
        ``final``: nothing more will come soon, so end session fixtures too.
        """

    def send_ahead(self, worker: str, tasks: Sequence[Task]) -> None:
        """Tell a busy worker which free tasks follow what it was sent so far,
        in order, before it asks (each keeps the fixtures of the one before)."""

    def kill_worker(self, worker: str) -> None:
        """End a worker at once; ``worker_died`` follows."""

    def end_once(self, worker: str, key: str) -> None:
        """Tell a worker to tear down the ``@once`` fixture it set up, before
        its next task; ``once_ended`` follows."""

    def stop_worker(self, worker: str) -> None:
        """Shut an idle worker down cleanly at the end of the run."""


@dataclass(slots=True)
class _Worker:
    name: str
    phase: WorkerPhase = WorkerPhase.STARTING
    #: The task the worker is running now.
    running: Task | None = None
    #: Tasks sent to follow ``running``, in order: one handed over at its
    #: teardown, or free tasks sent ahead (see ``_send_ahead``).
    queued: collections.deque[Task] = field(default_factory=collections.deque)
    #: The estimates of ``queued``, added up as tasks join and leave it.
    queued_seconds: float = 0.0
    #: Told "nothing for now" at its running task's teardown: it ends that
    #: task's fixtures, so nothing is sent ahead until it is done.
    told_nothing: bool = False
    #: While KILLING: the task it is killed for, why, and a detail.
    kill_reason: tuple[Task, Reason, str] | None = None

    def module(self) -> str | None:
        """Return the module whose fixtures this worker will have last, if any."""
        last = self.queued[-1] if self.queued else self.running
        return None if last is None else _module(last)


@dataclass(slots=True)
class _Queues:
    requested: list[Task] = field(default_factory=list)
    triaging: list[Task] = field(default_factory=list)
    ready: list[Task] = field(default_factory=list)
    started: dict[int, Task] = field(default_factory=dict)
    finished: list[Task] = field(default_factory=list)


@final
class OnceState(enum.Enum):
    """Where an ``@once`` fixture is in the run (see :class:`OnceFixture`)."""

    NONE = "not set up"
    SETTING = "being set up"
    READY = "set up"
    FAILED = "failed to set up"
    ENDING = "being torn down"
    ENDED = "torn down"


@dataclass(slots=True)
class OnceFixture:
    """An ``@once`` fixture: set up once for the run by the first task that
    needs it (its *setter*, on its *owner* worker), which holds what the
    fixture needs besides its own needs; the other tasks that need it wait
    until the owner reports the value (or the failure); torn down on the
    owner, in a hold of its own, once the last task that uses it finished.
    If the owner dies while tasks still need it, it is set up again
    elsewhere: a new ``generation``."""

    key: str
    requirement: Requirement = FREE
    state: OnceState = OnceState.NONE
    owner: str | None = None
    setter: int | None = None
    generation: int = 0
    #: Tasks that use it and are not finished.
    left: int = 0


def _claim_blocks(claim: Requirement, requirement: Requirement) -> bool:
    """Return whether a waiting task's claim keeps ``requirement`` from starting.

    A waiting serial task holds back everything after it; otherwise two
    requirements collide on any resource they do not both merely share.
    """
    if claim.serial or requirement.serial:
        return True
    claimed = {r.name: r.mode for r in claim.requests}
    for request in requirement.requests:
        mode = claimed.get(request.name)
        if mode is not None and not (mode is Mode.SHARED and request.mode is Mode.SHARED):
            return True
    return False


#: A task handed back for a host lock is tried again after this many seconds,
#: doubled at each further hand-back up to :data:`HOST_RETRY_MAX`: no busy
#: loop, and never more than a quarter second late.
HOST_RETRY_FIRST = 0.02
HOST_RETRY_MAX = 0.25
#: Seconds below which estimates do not order tasks (see :func:`prioritize`).
SHORT = 0.05
#: At most this many tasks, and this many estimated seconds of them, are
#: sent ahead to one worker: enough that a worker never waits for a
#: controller that is busy replaying reports (tens of milliseconds on two
#: cores; a trivial test takes a fraction of one), and few enough to stay
#: one message.  Near the end of the run a worker gets no more than its
#: share of the ready tasks, so the end stays balanced.
AHEAD_TASKS = 256
AHEAD_SECONDS = 0.2
#: How far past the first task that could start a worker looks for one of
#: its own module or of a module nobody is in (see
#: :meth:`StateMachine._pick`): enough to pass the first tests of other
#: modules, few enough that a pick stays a few microseconds.
NEAR_LOOKAHEAD = 64


def prioritize(tasks: Sequence[Task], table: LockTable, workers: int) -> list[Task]:
    """Return the tasks in the order they should start.

    The span of a run is at least, for each resource, the time it is held
    exclusively plus its shared time spread over the workers (its *load*);
    the resource with the largest load is the bottleneck, and it must never
    sit idle.  So:

    1. serial tasks first (every worker is idle at the start anyway);
    2. then by the load of the busiest resource a task uses, largest first;
       tasks that share that resource before those that take it whole, so
       its readers run together, on all workers at once, and its exclusive
       users follow one after another, each handed over to the next;
    3. free tasks last: they fill whatever worker the rest leaves idle;
    4. within each of these, longer tasks first, by estimates rounded to
       powers of two (:func:`_length`), from :data:`SHORT` seconds up, so
       that tests of similar length keep collection order (and a worker
       keeps its module's fixtures more often): timing noise never reorders
       quick tests.

    Each task's place but for its length is noted as its ``group``: within
    a group a worker may take its own module's tests first, or a module
    nobody is in (see :meth:`StateMachine._pick`).  A waiting task's claim
    keeps later conflicting tasks back, so between groups this order is
    also the order in which a resource's users get it.
    """
    load: dict[str, float] = {}
    for task in tasks:
        for request in task.requirement.requests:
            load[request.name] = load.get(request.name, 0.0) + _load(request, task.estimate, table, workers)

    def key(task: Task) -> tuple[int, float, int, int]:
        length = _length(task)
        requests = task.requirement.requests
        if task.requirement.serial:
            return (0, 0.0, 0, length)
        if not requests:
            return (2, 0.0, 0, length)
        top = max(requests, key=lambda request: load[request.name])
        return (1, -load[top.name], 0 if top.mode is Mode.SHARED else 1, length)

    keyed = sorted(((key(task), task) for task in tasks), key=lambda pair: pair[0])
    for rank, task in keyed:
        task.group = rank[:3]
    return [task for _, task in keyed]


def _length(task: Task) -> int:
    """Return a task's length class for ordering: longer tasks have smaller ones."""
    return -math.floor(math.log2(max(task.estimate, SHORT)))


def _load(request: Request, seconds: float, table: LockTable, workers: int) -> float:
    """Return how long ``request`` keeps its resource from others, per worker."""
    if request.mode is Mode.SHARED:
        return seconds / max(workers, 1)
    if request.mode is Mode.COUNTED:
        return seconds * request.slots / max(table.capacity(request.name), 1)
    return seconds


@final
class StateMachine:
    """The life cycle of every task of one run; see the module docstring."""

    def __init__(
        self,
        tasks: Iterable[Task],
        table: LockTable,
        spawner: Spawner,
        workers: Sequence[str],
        *,
        task_timeout: float | None = None,
        max_restarts: int = 0,
        prefetch: bool = False,
        observer: Observer | None = None,
        once: Mapping[str, Requirement] | None = None,
    ) -> None:
        #: The queues; each task is in exactly one of them.
        self.queues = _Queues(requested=list(tasks))
        #: Grants of running (and handed-over) tasks, keyed by task id.
        self.table = table
        self._spawner = spawner
        #: Worker states by name, in start order.
        self._workers = {name: _Worker(name) for name in workers}
        #: Seconds a task may take from start to the end of its teardown.
        self._task_timeout = task_timeout
        #: How many worker replacements are allowed before the run is aborted.
        self._max_restarts = max_restarts
        #: Whether a worker running a free task is sent its next free task at once.
        self._prefetch = prefetch
        #: Told every transition (see :mod:`.events`); None: nobody listens.
        self._observer = observer
        #: What each waiting task was last said to wait for (only with an observer).
        self._waiting_for: dict[int, Blocker] = {}
        #: How many workers have been replaced so far.
        self.restarts = 0
        #: Workers that ended while running no task, and why (for the summary).
        self.lost_outside_tests: list[str] = []
        #: Workers whose process ended before it was ready, and whether any
        #: worker ever was: when every worker failed to start, the run stops.
        self._boot_failures: set[str] = set()
        self._ever_ready = False
        #: Workers that failed to start while no worker was ever ready, not
        #: replaced yet, and what the summary will say of each.
        self._held_back: list[tuple[str, str]] = []
        #: Why no further task may start, once ``abort`` was called.
        self.aborted: tuple[Reason, str] | None = None
        self._bootstrapped = False
        #: How many ready tasks each module has (see _pick).
        self._ready_in: collections.Counter[str] = collections.Counter()
        #: When tasks handed back may be tried again (a heap of times).
        self._wakeups: list[float] = []
        #: The ``@once`` fixtures by key, and those whose teardown is due.
        self.once = {key: OnceFixture(key, requirement) for key, requirement in (once or {}).items()}
        for task in self.queues.requested:
            for key in task.once:
                self.once[key].left += 1
        self._once_due: list[str] = []

    # -- queries -------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Return whether every task is finished."""
        q = self.queues
        if q.requested or q.triaging or q.ready or q.started or self._once_due:
            return False
        return not any(fixture.state is OnceState.ENDING for fixture in self.once.values())

    @property
    def finished(self) -> list[Task]:
        """The finished tasks, in the order they finished."""
        return self.queues.finished

    def phase(self, worker: str) -> WorkerPhase:
        """Return a worker's phase."""
        return self._workers[worker].phase

    def live_workers(self) -> list[str]:
        """Return the workers that have a process (not GONE)."""
        return [w.name for w in self._workers.values() if w.phase is not WorkerPhase.GONE]

    def next_deadline(self) -> float | None:
        """Return the earliest time at which :meth:`tick` has work: a running
        task times out, or a task handed back may be tried again."""
        deadlines = [d for d in map(self._deadline, self._workers.values()) if d is not None]
        if self._wakeups:
            deadlines.append(self._wakeups[0])
        return min(deadlines, default=None)

    def _deadline(self, worker: _Worker) -> float | None:
        """Return when a busy worker's task times out (one expression for
        :meth:`next_deadline` and :meth:`tick`, so rounding cannot split them)."""
        task = worker.running
        if worker.phase is not WorkerPhase.BUSY or task is None or task.started_at is None:
            return None
        limit = self._limit(task)
        return None if limit is None else task.started_at + limit

    def _limit(self, task: Task) -> float | None:
        """Return the seconds a task may take, or None for no limit."""
        limit = self._task_timeout if task.timeout is None else task.timeout
        return limit or None

    # -- the loop ------------------------------------------------------------

    def step(self, now: float) -> None:
        """Run bootstrap, triage and start once."""
        self.bootstrap(now)
        self.triage(now)
        self.start(now)

    def bootstrap(self, now: float) -> None:
        """Start the workers once, and move requested tasks to triage."""
        if not self._bootstrapped:
            self._bootstrapped = True
            for task in self.queues.requested:
                self._tell(task, TaskState.REQUESTED, now)
            for worker in self._workers.values():
                self._tell_phase(worker, worker.phase, now)
                if self.queues.requested:
                    self._spawner.start_worker(worker.name)
                else:
                    self._set_phase(worker, WorkerPhase.GONE, now)
        for task in self.queues.requested:
            self._tell(task, TaskState.TRIAGING, now)
        self.queues.triaging.extend(self.queues.requested)
        self.queues.requested.clear()

    def triage(self, now: float) -> None:
        """Finish what can never run; the rest becomes ready, in priority order."""
        runnable = []
        for task in self.queues.triaging:
            if task.error is not None:
                self._finish(task, now, Reason.INVALID, task.error)
                continue
            impossible = self.table.impossible(task.requirement)
            if impossible is not None:
                self._finish(task, now, Reason.IMPOSSIBLE, impossible)
            else:
                runnable.append(task)
        self.queues.triaging.clear()
        ordered = prioritize(runnable, self.table, len(self._workers))
        for task in ordered:
            self._tell(task, TaskState.READY, now)
        self.queues.ready.extend(ordered)
        self._ready_in.update(_module(task) for task in runnable)

    def start(self, now: float) -> None:
        """Give every idle worker the next task that can be granted (an owner
        whose ``@once`` teardown is due: that teardown first)."""
        if self._once_due:
            self._end_once(now)
        for worker in self._workers.values():
            if worker.phase is not WorkerPhase.IDLE:
                continue
            task = self._pick(replacing=None, worker=worker, now=now)
            if task is None:
                break
            self._dispatch(task, worker, now, replacing=None)
            self._spawner.send_next(worker.name, task, keep_fixtures=False, final=False)
        if self._prefetch:  # after every idle worker got its task, not before
            for worker in self._workers.values():
                if worker.phase is WorkerPhase.BUSY:
                    self._send_ahead(worker, now)

    def abort(self, reason: Reason, detail: str, now: float) -> None:
        """Finish every task that has not started; running tasks go on."""
        if self.aborted is None:
            self.aborted = (reason, detail)
        self._release_held_back(None)
        for queue in (self.queues.requested, self.queues.triaging, self.queues.ready):
            self.abort_queue(queue, reason, detail, now)

    def abort_queue(self, queue: list[Task], reason: Reason, detail: str, now: float) -> None:
        """Finish every task of one not-started queue with ``reason``."""
        for task in queue:
            self._finish(task, now, reason, detail)
        queue.clear()

    # -- monitor: events from the workers ------------------------------------

    def worker_ready(self, worker: str, now: float) -> None:
        """A worker finished starting and waits for work."""
        state = self._workers[worker]
        assert state.phase is WorkerPhase.STARTING, (worker, state.phase)
        self._set_phase(state, WorkerPhase.IDLE, now)
        self._ever_ready = True
        self._release_held_back(now)  # their failure was their own
        self.start(now)

    def reached_teardown(self, worker: str, task_id: int, now: float) -> None:
        """A worker's task reached its teardown and the worker asks what follows.

        Answered at once, never by waiting: either a task handed over from
        this one, or nothing (the worker then ends what the hold covered).
        """
        state = self._workers[worker]
        current = state.running
        assert current is not None, (worker, task_id)
        assert current.id == task_id, (worker, task_id)
        if state.phase is not WorkerPhase.BUSY:
            return  # being killed: the answer would never be read
        if state.queued:
            return  # answered ahead (see _send_ahead): that answer is on its way
        task = self._pick(replacing=current, worker=state, now=now)
        if task is None:
            state.told_nothing = True
            self._spawner.send_next(worker, None, keep_fixtures=False, final=self._nothing_waits())
            return
        grant = self._dispatch(task, state, now, replacing=current)
        assert current.grant is not None
        _enqueue(state, task)
        self._spawner.send_next(worker, task, keep_fixtures=grant.covers(current.grant), final=False)

    def task_done(self, worker: str, task_id: int, now: float, ended: float | None = None) -> None:
        """A worker finished a task's teardown (at ``ended``, if the worker
        said when: its done message may come late, and the task queued
        behind it started then)."""
        state = self._workers[worker]
        current = state.running
        assert current is not None, (worker, task_id)
        assert current.id == task_id, (worker, task_id)
        ended = now if ended is None else min(ended, now)
        self._finish(current, ended, Reason.COMPLETED, "")
        self._move_on(state, ended, now)
        self.start(now)

    def _move_on(self, state: _Worker, started: float, now: float) -> None:
        """A worker's running task is over: the next one queued behind it
        runs (since ``started``), or the worker is idle."""
        state.told_nothing = False
        if state.queued:
            state.running = state.queued.popleft()
            state.queued_seconds = state.queued_seconds - state.running.estimate if state.queued else 0.0
            state.running.started_at = started
        else:
            state.running = None
            if state.phase is WorkerPhase.BUSY:
                self._set_phase(state, WorkerPhase.IDLE, now)

    def worker_died(self, worker: str, cause: str, now: float, start_failed: bool = False) -> None:
        """A worker process ended unexpectedly (or as we asked, when killing it).

        ``start_failed``: its pytest session ended before it was ready, with
        an error of its own (configure, collection, ``pytest_sessionstart``),
        not a crash: when that happened to every worker and none was ever
        ready, replacing them would fail again, and the run stops.
        """
        state = self._workers[worker]
        if state.phase is WorkerPhase.GONE:
            return
        reason, detail = Reason.CRASHED, f"worker {worker} crashed: {cause}"
        if state.kill_reason is not None:
            killed_for, kill_reason, kill_detail = state.kill_reason
            if state.running is killed_for:
                reason, detail = kill_reason, kill_detail
            else:  # the killed task finished just before; the next one is lost with the worker
                detail = f"worker {worker} was ended because {killed_for.name} ran too long"
        lost = ""  # what the summary says of a worker that ended outside a test
        if state.running is not None:
            self._finish(state.running, now, reason, detail)
        elif state.kill_reason is None and state.phase is not WorkerPhase.KILLING:
            lost = f"worker {worker} {'failed to start' if start_failed else 'ended outside a test'}: {cause}"
        if start_failed:
            self._boot_failures.add(worker)
        for task in reversed(state.queued):  # back to the front, in their order
            self._requeue(task, now)
        state.queued.clear()
        state.queued_seconds = 0.0
        state.running = state.kill_reason = None
        state.told_nothing = False
        self._set_phase(state, WorkerPhase.GONE, now)
        if self.once:
            self._lose_once(worker)
        if self.done or self.aborted is not None:
            self._tell_lost(lost, "")
            return
        if start_failed and not self._ever_ready:
            # replaced only once another worker started: if the same start-up
            # fails everywhere, replacing would fail again
            self._held_back.append((worker, lost))
            if self._boot_failures >= self._workers.keys():
                self.abort(Reason.ABORTED, EVERY_WORKER_FAILED, now)
            return
        self._replace(worker, lost, now)

    def _replace(self, worker: str, lost: str, now: float) -> None:
        """Start a new process for a worker that ended, within the restart limit."""
        if self.restarts >= self._max_restarts:
            self._tell_lost(lost, "not replaced")
            self.abort(
                Reason.ABORTED,
                f"worker restart limit reached ({self._max_restarts}, see --max-worker-restart)",
                now,
            )
            return
        self.restarts += 1
        self._tell_lost(lost, "it was replaced")
        self._set_phase(self._workers[worker], WorkerPhase.STARTING, now)
        self._spawner.start_worker(worker)

    def _tell_lost(self, line: str, outcome: str) -> None:
        """Note a worker that ended outside a test, and what followed, for the summary."""
        if line:
            self.lost_outside_tests.append(f"{line}; {outcome}" if outcome else line)

    def _release_held_back(self, now: float | None) -> None:
        """Replace the workers held back after failing to start (``now``), or,
        when the run is ending (None), say that they were not."""
        held, self._held_back = self._held_back, []
        for worker, lost in held:
            if now is None or self.aborted is not None:
                self._tell_lost(lost, "not replaced")
            else:
                self._replace(worker, lost, now)

    def retry(self, task_id: int, now: float) -> bool:
        """Run a task that finished as crashed again (a plugin asked for it,
        see :class:`~.compat.CrashScheduler`): a new attempt at the front of
        the ready queue, the crashed one stays finished.  Return whether it
        will run (not once the run was aborted)."""
        if self.aborted is not None:
            return False
        crashed = next(task for task in reversed(self.queues.finished) if task.id == task_id)
        assert crashed.reason is Reason.CRASHED, crashed
        task = dataclasses.replace(
            crashed, worker=None, grant=None, started_at=None, finished_at=None, reason=None, detail="", not_before=0.0
        )
        self.queues.ready.insert(0, task)
        self._ready_in[_module(task)] += 1
        self._tell(task, TaskState.READY, now, cause=RETRY)
        self.start(now)
        return True

    def hand_back(self, worker: str, task_id: int, resource: str, now: float) -> None:
        """A worker could not take a host-wide lock of its running task:
        another run holds ``resource``.  The task ran nothing; it goes back
        to the front of the ready queue, keeps its claim there (so later
        conflicting tasks of this run do not pass it), and is tried again
        after a short wait (:data:`HOST_RETRY_FIRST`, doubling up to
        :data:`HOST_RETRY_MAX`); the worker takes other work."""
        state = self._workers[worker]
        task = state.running
        assert task is not None, (worker, task_id)
        assert task.id == task_id, (worker, task_id)
        task.host_busy = resource
        task.not_before = now + min(HOST_RETRY_MAX, HOST_RETRY_FIRST * 2**task.bounces)
        task.bounces += 1
        heapq.heappush(self._wakeups, task.not_before)
        self._requeue(task, now, HOST_BUSY)
        self._move_on(state, now, now)
        self.start(now)

    def once_ready(self, key: str, generation: int, now: float) -> None:
        """The owner of an ``@once`` fixture set it up: the tasks waiting for it may start."""
        fixture = self.once[key]
        if fixture.generation == generation and fixture.state is OnceState.SETTING:
            fixture.state = OnceState.READY
            if fixture.left == 0:
                self._once_due.append(key)
            self.start(now)

    def once_failed(self, key: str, generation: int, now: float) -> None:
        """The setup of an ``@once`` fixture failed: the tasks that need it
        run and error (it is not tried again); there is nothing to tear down."""
        fixture = self.once[key]
        if fixture.generation == generation and fixture.state is OnceState.SETTING:
            fixture.state = OnceState.FAILED
            self.start(now)

    def once_ended(self, worker: str, key: str, now: float) -> None:
        """The owner finished an ``@once`` fixture's teardown."""
        fixture = self.once[key]
        state = self._workers[worker]
        self.table.release(("once", key))
        fixture.state = OnceState.ENDED
        if state.phase is WorkerPhase.BUSY and state.running is None:
            self._set_phase(state, WorkerPhase.IDLE, now)
        self.start(now)

    def _end_once(self, now: float) -> None:
        """Tear down the ``@once`` fixtures whose last task finished, each on
        its owner: one that needs nothing between the owner's tests (the
        owner reads the message before its next task), one that needs
        resources once the owner is idle and they can be granted (a hold of
        its own)."""
        due, self._once_due = self._once_due, []
        for key in due:
            fixture = self.once[key]
            owner = None if fixture.owner is None else self._workers[fixture.owner]
            if owner is None or owner.phase is WorkerPhase.GONE:
                continue  # it ended with its worker (see _lose_once)
            needs = fixture.requirement
            if needs.is_free and owner.phase in (WorkerPhase.IDLE, WorkerPhase.BUSY):
                fixture.state = OnceState.ENDING
                self._spawner.end_once(owner.name, key)
                continue
            if owner.phase is not WorkerPhase.IDLE or not self.table.can_grant(needs):
                self._once_due.append(key)
                continue
            self.table.grant(("once", key), needs)
            fixture.state = OnceState.ENDING
            self._set_phase(owner, WorkerPhase.BUSY, now)
            self._spawner.end_once(owner.name, key)

    def _lose_once(self, worker: str) -> None:
        """A worker died: the ``@once`` fixtures it set up are gone with it."""
        for fixture in self.once.values():
            if fixture.owner != worker or fixture.state not in (OnceState.READY, OnceState.ENDING):
                continue
            name = fixture.key.rpartition(":")[2]
            if fixture.state is OnceState.ENDING:
                self.table.release(("once", fixture.key))
            if fixture.left > 0:
                fixture.state, fixture.owner, fixture.setter = OnceState.NONE, None, None
                fixture.generation += 1
                self.lost_outside_tests.append(
                    f"@once fixture {name!r}: worker {worker}, where it was set up, ended; "
                    f"it is set up again for the {fixture.left} test(s) still to come"
                )
            else:
                fixture.state = OnceState.ENDED
                if fixture.key in self._once_due:
                    self._once_due.remove(fixture.key)
                self.lost_outside_tests.append(
                    f"@once fixture {name!r}: worker {worker}, where it was set up, ended before its teardown ran"
                )

    def overdue(self, now: float) -> list[str]:
        """Return the workers whose task has run past its time limit."""
        return [w.name for w in self._workers.values() if (d := self._deadline(w)) is not None and now >= d]

    def tick(self, now: float) -> None:
        """Kill the workers whose task ran past the task timeout, and start
        the tasks handed back whose time to try again has come."""
        if self._wakeups and self._wakeups[0] <= now:
            while self._wakeups and self._wakeups[0] <= now:
                heapq.heappop(self._wakeups)
            self.start(now)
        for worker in self.overdue(now):
            state = self._workers[worker]
            assert state.running is not None
            self._set_phase(state, WorkerPhase.KILLING, now)
            state.kill_reason = (
                state.running,
                Reason.TIMEOUT,
                f"timed out after {self._limit(state.running):g} s on {state.name}",
            )
            self._spawner.kill_worker(state.name)

    def shutdown(self, now: float = 0.0) -> None:
        """Stop every worker; call once the run is done.

        Idle workers shut down cleanly (their session fixtures end); a worker
        still starting has run nothing and is ended at once.
        """
        self._release_held_back(None)
        for state in self._workers.values():
            if state.phase is WorkerPhase.IDLE:
                self._spawner.stop_worker(state.name)
            elif state.phase is WorkerPhase.STARTING:
                self._spawner.kill_worker(state.name)
            if state.phase is not WorkerPhase.GONE:
                self._set_phase(state, WorkerPhase.GONE, now)

    # -- implementation ------------------------------------------------------

    def _nothing_waits(self) -> bool:
        q = self.queues
        return not (q.requested or q.triaging or q.ready)

    def _send_ahead(self, state: _Worker, now: float) -> None:
        """Pipelining: tell a worker running a free task which free tasks follow.

        The answer to its teardown question is then on the way before it asks,
        so it need not wait for a round trip; when it asks anyway,
        :meth:`reached_teardown` leaves the question to the answer already
        sent.  Up to :data:`AHEAD_TASKS` tasks and :data:`AHEAD_SECONDS`
        of estimates are kept ahead, refilled in one message once half are
        used: a test of a millisecond is shorter than a round trip to a
        busy controller, so one task ahead is not enough.  Only free after
        free: the hold of a resource ends at a teardown, and only the
        controller knows then what can be granted.
        Never when a failure limit is set (the controller is then made without
        ``prefetch``): a task sent ahead would start after the failure that
        reached it.  Only short tasks (estimates up to :data:`SHORT`), where a
        round trip matters and a task bound to a busy worker cannot keep the
        run waiting at its end; and only while no worker is idle or starting,
        which would want the task now.
        """
        running = state.running
        if running is None or state.phase is not WorkerPhase.BUSY or state.told_nothing:
            return
        # refill only once half is used: one message carries many tasks
        if len(state.queued) > AHEAD_TASKS // 2 or state.queued_seconds > AHEAD_SECONDS / 2:
            return
        # all queued tasks are short and free, or the first is a hand-over
        if not all(_short_and_free(task) for task in (running, *itertools.islice(state.queued, 1))):
            return
        if any(w.phase in (WorkerPhase.IDLE, WorkerPhase.STARTING) for w in self._workers.values()):
            return
        # near the end, no worker takes more than its share of what is left
        share = max(1, len(self.queues.ready) // len(self._workers))
        limit = min(AHEAD_TASKS, len(state.queued) + share)
        sent: list[Task] = []
        while len(state.queued) < limit and state.queued_seconds < AHEAD_SECONDS:
            task = self._pick(replacing=running, short_and_free=True, worker=state, now=now)
            if task is None:
                break
            self._dispatch(task, state, now, replacing=running)
            _enqueue(state, task)
            sent.append(task)
        if sent:
            self._spawner.send_ahead(state.name, sent)

    def _pick(
        self, replacing: Task | None, short_and_free: bool = False, worker: _Worker | None = None, now: float = 0.0
    ) -> Task | None:
        """Return the ready task to start now: the first one that can be
        granted, honouring claims (with ``short_and_free``: of the free ones
        expected to be short), unless ``worker`` has a better one nearby.

        The first test of a module carries the module's fixtures in its
        estimate, so longest-first alone sends a worker to every module's
        first test in turn, and every worker into every module, each setting
        the module's fixtures up again.  So among the next
        :data:`NEAR_LOOKAHEAD` tasks of the first one's group (see
        :func:`prioritize`), ``worker`` takes a test of the module it is in,
        whose fixtures it may keep; else one as long as the first (the same
        :func:`_length`) of a module no other worker is in; else the first
        one, but never to send ahead (``short_and_free``): the worker asks
        when it gets there.  A task passed over stays first in the queue;
        a worker that is not in its module takes it, so it waits at most
        until every worker finished the module it was in.
        """
        if self.aborted is not None:
            return None
        holder = None if replacing is None else replacing.id
        near = None if worker is None else worker.module()
        near_left = near is not None and self._ready_in[near] > 0
        avoid = set() if worker is None else {w.module() for w in self._workers.values() if w is not worker}
        claims: list[Task] = []
        first: Task | None = None
        first_index = first_length = fresh = -1
        for index, task in enumerate(self.queues.ready):
            if first is not None and (index - first_index > NEAR_LOOKAHEAD or task.group != first.group):
                break
            requirement = task.requirement
            if short_and_free and not _short_and_free(task):
                if requirement.serial:
                    break  # nothing may pass a waiting serial task
                continue
            claim = next((c for c in claims if _claim_blocks(c.requirement, requirement)), None)
            if claim is not None:
                if self._observer is not None:
                    self._tell_waiting(task, _claim_blocker(claim, requirement), now)
                continue
            if task.once:
                setting = next((f for k in task.once if (f := self.once[k]).state is OnceState.SETTING), None)
                if setting is not None:  # its setup runs on another worker: the value comes soon
                    if self._observer is not None:
                        self._tell_waiting(
                            task, Blocker(f"@once {setting.key}", -1 if setting.setter is None else setting.setter), now
                        )
                    continue
                requirement = self._needs(task)
            if task.not_before > now:  # handed back: another run holds a host lock
                if self._observer is not None:
                    self._tell_waiting(task, Blocker(task.host_busy, -1, other_run=True), now)
                if requirement.serial:
                    break
                claims.append(task)
                continue
            if self.table.can_grant(requirement, replacing=holder):
                module = _module(task)
                if worker is None or module == near:
                    return self._take(index)
                if first is None:
                    first, first_index, first_length = task, index, _length(task)
                if fresh < 0 and module not in avoid and _length(task) == first_length:
                    fresh = index
                    if not near_left:
                        break
                continue
            if self._observer is not None:
                resource, other = self.table.conflict(requirement, holder) or (None, -1)
                self._tell_waiting(task, Blocker(resource, other if isinstance(other, int) else -1), now)
            if requirement.serial:
                break  # nothing may pass a waiting serial task
            claims.append(task)
        if fresh >= 0:
            return self._take(fresh)
        return None if first is None or short_and_free else self._take(first_index)

    def _take(self, index: int) -> Task:
        task = self.queues.ready.pop(index)
        self._ready_in[_module(task)] -= 1
        return task

    def _needs(self, task: Task) -> Requirement:
        """Return what a task holds while it runs: its own needs, and those
        of the ``@once`` fixtures it will set up (not of those set up already)."""
        setting = [self.once[key].requirement for key in task.once if self.once[key].state is OnceState.NONE]
        if not any(r.requests or r.serial for r in setting):
            return task.requirement
        requests = [*task.requirement.requests, *(r for need in setting for r in need.requests)]
        return merge_requests(requests, task.requirement.serial or any(need.serial for need in setting))

    def _dispatch(self, task: Task, worker: _Worker, now: float, replacing: Task | None) -> Grant:
        requirement = self._needs(task) if task.once else task.requirement
        for key in task.once:
            fixture = self.once[key]
            if fixture.state is OnceState.NONE:
                fixture.state, fixture.owner, fixture.setter = OnceState.SETTING, worker.name, task.id
        task.grant = self.table.grant(task.id, requirement, None if replacing is None else replacing.id)
        task.worker = worker.name
        self.queues.started[task.id] = task
        if self._observer is not None:
            self._waiting_for.pop(task.id, None)
            self._tell(task, TaskState.STARTED, now)
        if replacing is None:
            task.started_at = now
            worker.running = task
            self._set_phase(worker, WorkerPhase.BUSY, now)
        return task.grant

    def _requeue(self, task: Task, now: float, cause: str = REQUEUED) -> None:
        """Put a task that never began back at the front (or finish it, when
        the run was aborted meanwhile): handed over or sent ahead to a worker
        that died (:data:`REQUEUED`), or handed back (:data:`HOST_BUSY`)."""
        self.table.release(task.id)
        del self.queues.started[task.id]
        self._unset(task)
        self._tell(task, TaskState.READY, now, cause=cause)  # with the worker that gave it back
        task.worker = task.grant = task.started_at = None
        self.queues.ready.insert(0, task)
        self._ready_in[_module(task)] += 1
        if self.aborted is not None:
            self.abort_queue(self.queues.ready, *self.aborted, now)

    def _unset(self, task: Task) -> None:
        """A task that was to set up ``@once`` fixtures did not: the next one will."""
        for key in task.once:
            fixture = self.once[key]
            if fixture.state is OnceState.SETTING and fixture.setter == task.id:
                fixture.state, fixture.owner, fixture.setter = OnceState.NONE, None, None

    def _finish(self, task: Task, now: float, reason: Reason, detail: str) -> None:
        self.table.release(task.id)
        self.queues.started.pop(task.id, None)
        if task.once:
            self._unset(task)
            for key in task.once:
                fixture = self.once[key]
                fixture.left -= 1
                if fixture.left == 0 and fixture.state is OnceState.READY:
                    self._once_due.append(key)
        task.finished_at = now
        task.reason = reason
        task.detail = detail
        self.queues.finished.append(task)
        if self._observer is not None:
            self._waiting_for.pop(task.id, None)
            self._tell(task, TaskState.FINISHED, now)

    # -- telling the observer ------------------------------------------------

    def _tell(self, task: Task, state: TaskState, now: float, cause: str | None = None) -> None:
        if self._observer is not None:
            self._observer.task_changed(
                TaskChanged(
                    now,
                    task.id,
                    task.name,
                    state,
                    worker=task.worker,
                    reason=task.reason if state is TaskState.FINISHED else None,
                    detail=task.detail if state is TaskState.FINISHED else "",
                    grant=task.grant if state is TaskState.STARTED else None,
                    cause=cause,
                    resource=task.host_busy if cause == HOST_BUSY else None,
                )
            )

    def _tell_waiting(self, task: Task, blocker: Blocker, now: float) -> None:
        """Tell what holds a ready task back, when that changed."""
        assert self._observer is not None
        if self._waiting_for.get(task.id) != blocker:
            self._waiting_for[task.id] = blocker
            self._observer.task_waiting(TaskWaiting(now, task.id, task.name, blocker))

    def _set_phase(self, worker: _Worker, phase: WorkerPhase, now: float) -> None:
        worker.phase = phase
        self._tell_phase(worker, phase, now)

    def _tell_phase(self, worker: _Worker, phase: WorkerPhase, now: float) -> None:
        if self._observer is not None:
            self._observer.worker_changed(WorkerChanged(now, worker.name, phase))


def _module(task: Task) -> str:
    """Return the file part of a task's node id (all of it without ``::``)."""
    return task.name.partition("::")[0]


def _claim_blocker(claim: Task, requirement: Requirement) -> Blocker:
    """Say which resource of a waiting task's claim holds ``requirement`` back."""
    if claim.requirement.serial or requirement.serial:
        return Blocker(None, claim.id, claim=True)
    mine = {r.name: r.mode for r in requirement.requests}
    resource = next(
        r.name
        for r in claim.requirement.requests
        if r.name in mine and not (r.mode is Mode.SHARED and mine[r.name] is Mode.SHARED)
    )
    return Blocker(resource, claim.id, claim=True)


def _short_and_free(task: Task) -> bool:
    """Return whether a task may be sent ahead (see ``_send_ahead``)."""
    return task.requirement.is_free and task.estimate <= SHORT and not task.once


def _enqueue(worker: _Worker, task: Task) -> None:
    worker.queued.append(task)
    worker.queued_seconds += task.estimate
