"""The contention report: after a parallel run, what held it back.

Computed from a :class:`~.record.RunRecord` (what the state machine saw, and
when each test ran on its worker) and the durations measured in the run:

* per resource: the tests that held it, its busy time (when at least one
  test held it), and the total and worst wait of tests it held back (a
  test's time in ``ready`` is charged to what the machine said held it
  back, while it did; see :meth:`~.record.RunRecord.shares`);
* per run: its span, its lower bound (the plan's formula, :func:`~.plan.bound_terms`,
  over the measured durations) and their ratio, and how busy the workers were
  (the tests' time on them over span x workers).

Pure: imports neither pytest nor execnet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from .events import Reason
from .plan import Term, bound_terms, table
from .record import SERIAL_TRACK, WORKERS_WAIT, RunRecord, merged
from .resources import Requirement

__all__ = ["CONTENTION_TITLE", "Contention", "ResourceContention", "contention", "contention_lines"]

#: The title of the report's section.
CONTENTION_TITLE: Final = "restask contention"
#: The report's lines (after its title) unless all are asked for (-v).
SHORT_LINES: Final = 7


@final
@dataclass(frozen=True, slots=True)
class ResourceContention:
    """One resource (or ``serial``) in the report."""

    name: str
    #: Tests that held it.
    tests: int
    #: Seconds in which at least one test held it.
    busy: float
    #: Tests it held back, their waits charged to it, and the longest one.
    held_back: int
    waited: float
    worst: float
    worst_test: str


@final
@dataclass(frozen=True, slots=True)
class Contention:
    """The report's figures; see the module docstring."""

    span: float
    workers: int
    #: The tests' seconds on the workers / (span x workers).
    utilisation: float
    #: Seconds from the run's start to its first test's (the workers' start-up).
    first_test: float
    terms: list[Term]
    #: Largest total wait first.
    resources: list[ResourceContention]

    @property
    def bound(self) -> float:
        """Return the run's lower bound over its measured durations."""
        return self.terms[0].seconds if self.terms else 0.0


def contention(
    record: RunRecord,
    workers: int,
    measured: Mapping[int, float],
    requirements: Mapping[int, Requirement],
    capacities: Mapping[str, int],
) -> Contention:
    """Return the contention of a run on ``workers`` workers; ``measured``
    and ``requirements`` by task id (the tests that did not run are left out).

    A test that crashed, timed out or was still running when the run was
    interrupted counts in the bound with its time on the worker (its reports
    measured less, or nothing)."""
    began = record.began if record.began is not None else 0.0
    end = record.closed if record.closed is not None else began
    held: dict[str, list[tuple[float, float]]] = defaultdict(list)
    holders: dict[str, set[int]] = defaultdict(set)
    worked, first = 0.0, end
    work = dict(measured)
    for task, attempt, start, stop in record.slices():
        worked += stop - start
        first = min(first, start)
        if attempt.end is None or attempt.reason in (Reason.CRASHED, Reason.TIMEOUT):
            work[task.task_id] = max(work.get(task.task_id, 0.0), stop - start)
        names = [request.name for request in attempt.grant.requirement.requests]
        if attempt.grant.requirement.serial:
            names.append(SERIAL_TRACK)
        for name in names:
            held[name].append((start, stop))
            holders[name].add(task.task_id)
    waited: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for task in record.tasks.values():
        for wait in task.waits:
            for name, seconds in record.shares(task, wait):
                if name != WORKERS_WAIT:
                    waited[name][task.task_id] += seconds
    rows = []
    for name in sorted(held.keys() | waited.keys()):
        waits = waited.get(name, {})
        worst_id = max(waits, key=lambda task_id: (waits[task_id], -task_id), default=None)
        rows.append(
            ResourceContention(
                name=name,
                tests=len(holders.get(name, ())),
                busy=sum(end - start for start, end in merged(held.get(name, []))),
                held_back=len(waits),
                waited=sum(waits.values()),
                worst=0.0 if worst_id is None else waits[worst_id],
                worst_test="" if worst_id is None else record.tasks[worst_id].name,
            )
        )
    rows.sort(key=lambda row: (-row.waited, -row.busy, row.name))
    span = max(end - began, 1e-9)
    terms = bound_terms(
        ((value, requirements[task_id]) for task_id, value in work.items() if task_id in requirements),
        workers,
        capacities,
    )
    return Contention(span, workers, worked / (span * workers), max(first - began, 0.0), terms, rows)


def contention_lines(report: Contention, everything: bool = False) -> list[str]:
    """Return the report as lines for the terminal summary: at most
    :data:`SHORT_LINES` unless ``everything``."""
    bound = report.bound
    ratio = report.span / bound if bound > 0 else 0.0
    bottleneck = report.terms[0].name if report.terms else "-"
    workers = "1 worker" if report.workers == 1 else f"{report.workers} workers"
    lines = [
        f"span {report.span:.2f} s (first test at {report.first_test:.2f} s), lower bound {bound:.2f} s "
        f"(bottleneck: {bottleneck}), span/bound {ratio:.2f}; {workers} {report.utilisation:.0%} busy"
    ]
    rows = [["resource", "tests", "busy", "held back", "waited", "worst wait"]]
    for row in report.resources:
        worst = f"{row.worst:.2f} s {row.worst_test}" if row.held_back else "-"
        tests, busy = (str(row.tests), f"{row.busy:.2f} s") if row.tests else ("-", "-")
        rows.append([row.name, tests, busy, str(row.held_back), f"{row.waited:.2f} s", worst])
    if len(rows) == 1:
        return lines  # no resource held anything or held anyone back
    room = len(rows) if everything else SHORT_LINES - len(lines)
    shown = rows if len(rows) <= room else rows[: room - 1]
    lines.extend(table(shown))
    if len(shown) < len(rows):
        lines.append(f"... and {len(rows) - len(shown)} more resources (-v shows all)")
    return lines
