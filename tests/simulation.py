"""A discrete-event simulation of workers, for testing the state machine.

The :class:`SimSpawner` plays the worker processes against a fake clock:
a task's body takes ``body`` seconds, its teardown ``teardown`` seconds; a
task marked ``crash`` kills its worker half-way through its body.  It logs
each task's hold interval (from the start of its setup to the end of its
teardown) so that an oracle can look for overlaps, independently of the
state machine's own bookkeeping.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pytest_restask.resources import DEFAULT_CAPACITY, LockTable, Mode, Requirement
from pytest_restask.statemachine import StateMachine, Task


@dataclass
class Plan:
    """What a simulated task does."""

    body: float = 1.0
    teardown: float = 0.0
    crash: bool = False
    hang: bool = False


@dataclass
class Interval:
    task: int
    worker: str
    start: float
    end: float | None = None
    slots: dict[str, tuple[int, ...]] = field(default_factory=dict)


class SimSpawner:
    """Plays worker processes against a fake clock; see the module docstring."""

    startup = 0.5

    def __init__(self, plans: dict[int, Plan]) -> None:
        self.plans = plans
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._generation: dict[str, int] = {}
        self.intervals: list[Interval] = []
        self._open: dict[str, Interval] = {}
        self.sm: StateMachine | None = None
        self.answers: list[tuple[str, int | None, bool, bool]] = []
        self.kills = 0
        self.starts = 0
        #: Answers sent ahead that a worker will find at its teardowns, in order.
        self._ahead: dict[str, list[Task | None]] = {}
        #: How many tasks each send_ahead carried.
        self.batches: list[int] = []
        #: Workers that asked at their teardown and wait for the answer.
        self._asking: set[str] = set()
        #: The tasks whose worker asked what follows them, in order.
        self.asked: list[int] = []

    # -- Spawner protocol ----------------------------------------------------

    def start_worker(self, worker: str) -> None:
        self.starts += 1
        gen = self._generation[worker] = self._generation.get(worker, 0) + 1
        self._at(self.now + self.startup, worker, gen, lambda: self._sm.worker_ready(worker, self.now))

    def send_next(self, worker: str, task: Task | None, keep_fixtures: bool, final: bool) -> None:
        self.answers.append((worker, None if task is None else task.id, keep_fixtures, final))
        gen = self._generation[worker]
        current = self._open.get(worker)
        if current is None:  # an idle worker: start at once
            assert task is not None
            self._begin(worker, gen, task, self.now)
            return
        if worker not in self._asking:  # sent ahead: the worker finds it at its teardown
            self._ahead.setdefault(worker, []).append(task)
            return
        self._asking.discard(worker)
        self._tear_down(worker, gen, current, task)

    def send_ahead(self, worker: str, tasks: Sequence[Task]) -> None:
        self.batches.append(len(tasks))
        for task in tasks:
            self.send_next(worker, task, keep_fixtures=True, final=False)

    def _tear_down(self, worker: str, gen: int, current: Interval, task: Task | None) -> None:
        def done() -> None:
            # as a worker does: it says "done" and goes on at once; what the
            # controller sends in answer arrives while the next task runs
            self._end(worker)
            if task is not None:
                self._begin(worker, gen, task, self.now)
            self._sm.task_done(worker, current.task, self.now)

        self._at(self.now + self.plans[current.task].teardown, worker, gen, done)

    def _reach_teardown(self, worker: str, gen: int, task: Task) -> None:
        """Like the worker: use an answer sent ahead, or ask and wait."""
        if self._ahead.get(worker):
            self._tear_down(worker, gen, self._open[worker], self._ahead[worker].pop(0))
            return
        self._asking.add(worker)
        self.asked.append(task.id)
        self._sm.reached_teardown(worker, task.id, self.now)

    def kill_worker(self, worker: str) -> None:
        self.kills += 1
        gen = self._generation[worker]
        self._at(self.now, worker, gen, lambda: self._die(worker, "killed"))

    def stop_worker(self, worker: str) -> None:
        self._generation[worker] = self._generation.get(worker, 0) + 1

    # -- simulation ------------------------------------------------------------

    @property
    def _sm(self) -> StateMachine:
        assert self.sm is not None
        return self.sm

    def _at(self, when: float, worker: str, gen: int, action: Callable[[], None]) -> None:
        def guarded() -> None:
            if self._generation.get(worker) == gen:
                action()

        heapq.heappush(self._events, (when, next(self._seq), guarded))

    def _begin(self, worker: str, gen: int, task: Task, now: float) -> None:
        assert task.grant is not None
        self._open[worker] = Interval(task.id, worker, now, slots=dict(task.grant.slots))
        plan = self.plans[task.id]
        if plan.crash:
            self._at(now + plan.body / 2, worker, gen, lambda: self._die(worker, "exit code 1"))
        elif not plan.hang:
            self._at(now + plan.body, worker, gen, lambda: self._reach_teardown(worker, gen, task))

    def _end(self, worker: str) -> None:
        interval = self._open.pop(worker)
        interval.end = self.now
        self.intervals.append(interval)

    def _die(self, worker: str, cause: str) -> None:
        self._generation[worker] += 1
        self._ahead.pop(worker, None)
        self._asking.discard(worker)
        if worker in self._open:
            self._end(worker)
        self._sm.worker_died(worker, cause, self.now)

    def run(self, sm: StateMachine, limit: float = 1e6, until: float | None = None) -> None:
        """Run the simulation until nothing happens any more (or the time ``until``)."""
        self.sm = sm
        sm.step(self.now)
        while self._events or not sm.done:
            if until is not None and self._events and self._events[0][0] > until:
                return
            deadline = sm.next_deadline()
            if self._events and (deadline is None or self._events[0][0] <= deadline):
                when, _, action = heapq.heappop(self._events)
                self.now = max(self.now, when)
                action()
            elif deadline is not None:
                self.now = max(self.now, deadline)
                sm.tick(self.now)
            else:
                break
            assert self.now < limit, "simulation did not end"
        sm.shutdown(self.now)


def make_machine(
    requirements: Sequence[Requirement],
    plans: Sequence[Plan],
    workers: int,
    capacities: dict[str, int] | None = None,
    names: Sequence[str] | None = None,
    estimates: Sequence[float] | None = None,
    **kwargs: float | int | None,
) -> tuple[StateMachine, SimSpawner]:
    """A machine and its simulated workers; ``estimates`` are the seconds an
    earlier run measured (by default each task counts as never seen)."""
    names = names or [f"t{i}" for i in range(len(requirements))]
    tasks = [Task(i, name, req) for i, (name, req) in enumerate(zip(names, requirements, strict=True))]
    if estimates is not None:
        for task, seconds in zip(tasks, estimates, strict=True):
            task.estimate = seconds
    spawner = SimSpawner(dict(enumerate(plans)))
    sm = StateMachine(
        tasks,
        LockTable(capacities),
        spawner,
        [f"gw{i}" for i in range(workers)],
        **kwargs,  # type: ignore[arg-type]
    )
    return sm, spawner


def conflicts(
    intervals: Sequence[Interval],
    requirements: Sequence[Requirement],
    capacities: dict[str, int] | None = None,
) -> list[str]:
    """The overlap oracle: every moment where the holds broke the rules."""
    capacities = capacities or {}
    problems = []
    points = sorted({i.start for i in intervals})
    for t in points:
        live = [i for i in intervals if i.start <= t and (i.end is None or t < i.end)]
        if len(live) > 1 and any(requirements[i.task].serial for i in live):
            problems.append(f"serial task overlaps at {t}: {[i.task for i in live]}")
        by_name: dict[str, list[tuple[Interval, Mode, int]]] = {}
        for interval in live:
            for request in requirements[interval.task].requests:
                by_name.setdefault(request.name, []).append((interval, request.mode, request.slots))
        for name, users in by_name.items():
            modes = {m for _, m, _ in users}
            if len(users) > 1 and (Mode.EXCLUSIVE in modes or len(modes) > 1):
                problems.append(f"{name!r} overlaps at {t}: {[(u.task, m.name) for u, m, _ in users]}")
            if modes == {Mode.COUNTED}:
                used = [s for u, _, _ in users for s in u.slots.get(name, ())]
                if sum(n for _, _, n in users) > capacities.get(name, DEFAULT_CAPACITY):
                    problems.append(f"{name!r} over capacity at {t}")
                if len(used) != len(set(used)):
                    problems.append(f"{name!r} slot given twice at {t}: {used}")
    return problems


__all__ = ["Interval", "LockTable", "Plan", "SimSpawner", "conflicts", "make_machine"]
