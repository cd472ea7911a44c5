"""How close the scheduler gets to the lower bound on the span (fake clock)."""

from __future__ import annotations

import random

import pytest

from pytest_restask.resources import LockTable, Mode, Request, Requirement, merge_requests
from pytest_restask.statemachine import Task, prioritize

from .simulation import Plan, SimSpawner, conflicts, make_machine

EX, SH = Mode.EXCLUSIVE, Mode.SHARED

#: The resources suite of benchmarks/run.py: (requests, how many).
KINDS: list[tuple[tuple[Request, ...], int]] = [
    ((), 120),
    ((Request("db", EX),), 40),
    ((Request("db", SH),), 60),
    ((Request("port", EX),), 24),
    ((Request("gpu", EX),), 16),
    ((Request("cache", EX), Request("db", SH)), 20),
    ((Request("cache", SH),), 20),
]


def resource_heavy(seed: int) -> tuple[list[Requirement], list[float]]:
    """The benchmark's ~300 tests of 40-150 ms, shuffled."""
    rng = random.Random(seed)
    tasks = [(merge_requests(requests), rng.uniform(0.04, 0.15)) for requests, count in KINDS for _ in range(count)]
    rng.shuffle(tasks)
    return [r for r, _ in tasks], [d for _, d in tasks]


def lower_bound(requirements: list[Requirement], durations: list[float], workers: int) -> float:
    """A lower bound on any schedule's span.

    At least the work spread over the workers; and for each resource, the
    time it is held exclusively plus the time it is held shared.  The shared
    time is at least its shared work spread over the workers, and at least
    the work of the tasks that share it while they take some other resource
    whole: those run one after another, and never while it is exclusive.
    (The benchmark's own bound leaves out that last term; see the README.)
    """
    bound = sum(durations) / workers
    names = {request.name for requirement in requirements for request in requirement.requests}
    for name in names:
        exclusive = shared = 0.0
        chains: dict[str, float] = {}
        for requirement, seconds in zip(requirements, durations, strict=True):
            modes = {request.name: request.mode for request in requirement.requests}
            if modes.get(name) is EX:
                exclusive += seconds
            elif modes.get(name) is SH:
                shared += seconds
                for other, mode in modes.items():
                    if other != name and mode is EX:
                        chains[other] = chains.get(other, 0.0) + seconds
        bound = max(bound, exclusive + max(shared / workers, *chains.values(), 0.0))
    return bound


def simulate(requirements: list[Requirement], durations: list[float], workers: int) -> float:
    sm, sim = make_machine(requirements, [Plan(body=d) for d in durations], workers=workers)
    for task, seconds in zip(sm.queues.requested, durations, strict=True):
        task.estimate = seconds  # as the durations store gives them after one run
    sim.run(sm)
    assert conflicts(sim.intervals, requirements) == []
    return max(i.end for i in sim.intervals if i.end is not None) - SimSpawner.startup


@pytest.mark.parametrize("seed", range(5))
def test_span_is_within_ten_percent_of_the_lower_bound(seed: int) -> None:
    requirements, durations = resource_heavy(seed)
    span = simulate(requirements, durations, workers=8)
    assert span <= 1.10 * lower_bound(requirements, durations, workers=8)


def test_priority_order() -> None:
    db_ex, db_sh = merge_requests([Request("db", EX)]), merge_requests([Request("db", SH)])
    port = merge_requests([Request("port", EX)])
    free, serial = merge_requests([]), merge_requests([], serial=True)
    tasks = [
        Task(0, "free-short", free, estimate=0.1),
        Task(1, "free-long", free, estimate=5.0),
        Task(2, "db-writer", db_ex, estimate=1.0),
        Task(3, "db-reader", db_sh, estimate=1.0),
        Task(4, "port", port, estimate=1.0),
        Task(5, "serial", serial, estimate=1.0),
        Task(6, "db-writer-2", db_ex, estimate=1.0),
    ]
    order = [t.name for t in prioritize(tasks, LockTable(), workers=4)]
    # serial first; db (load 2.25) before port (1); readers first; equal tasks in collection order
    assert order == ["serial", "db-reader", "db-writer", "db-writer-2", "port", "free-long", "free-short"]
