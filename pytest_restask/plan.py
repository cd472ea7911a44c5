"""The plan of a run: what its tests ask of each resource, and its lower bound.

``--plan`` shows it before a run (and ``--plan-json`` as one JSON
document); the contention report after a run computes the same bound over
the durations it measured.  A test's *work* is its setup + call + teardown
seconds.  No schedule of the tests on W workers can finish before the
largest of these terms (:func:`bound_terms`):

* ``workers`` -- all work / W;
* ``serial`` -- the serial tests' work (each runs alone) + the rest / W;
* ``longest test`` -- no test is shared between workers;
* ``R`` -- per resource R: the work of its exclusive users (one at a time,
  nothing else on R beside them) + its shared users' work / W;
* ``R slots`` -- per counted resource R: the sum of slots x work over its
  capacity (the slot-seconds it must serve);
* ``A then B`` -- per pair: the exclusive work of B + the work of the tests
  that hold A exclusively and B shared.  Those run one after another (they
  all hold A), and never beside an exclusive holder of B.

The *bottleneck* is the term that gives the bound (on a tie, the first in
the order above, then by name).  Pure: imports neither pytest nor execnet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

from .resources import DEFAULT_CAPACITY, Mode, Requirement

__all__ = [
    "PLAN_SCOPES",
    "Plan",
    "PlanTest",
    "ResourceUse",
    "Term",
    "bound_terms",
    "make_plan",
    "plan_lines",
    "table",
]

#: The scope of a resource: one copy per run, one for all ``--shard`` jobs,
#: one for every run on the host (``restask_resources``' ``global``/``host``).
PLAN_SCOPES: Final = ("run", "global", "host")
#: The term of all work over the workers.
WORKERS: Final = "workers"
#: The term of the serial tests, and of the longest test.
SERIAL: Final = "serial"
LONGEST: Final = "longest test"
#: Terms shown by :func:`plan_lines` unless all are asked for.
SHOWN_TERMS: Final = 5
#: The modes, as the plan names them.
_MODES: Final = ("exclusive", "shared", "counted")
_MODE_NAMES: Final = {Mode.EXCLUSIVE: "exclusive", Mode.SHARED: "shared", Mode.COUNTED: "counted"}


@final
@dataclass(frozen=True, slots=True)
class PlanTest:
    """One test as the plan sees it: its seconds, whether they are an
    estimate (no recorded duration), and what it needs."""

    nodeid: str
    seconds: float
    requirement: Requirement
    estimated: bool = False


@final
@dataclass(frozen=True, slots=True)
class Term:
    """One lower bound: its name (see the module docstring), its kind
    (``workers``, ``serial``, ``test``, ``resource``, ``slots``, ``pair``), the resources
    it is about, and its seconds."""

    name: str
    kind: str
    resources: tuple[str, ...]
    seconds: float


@final
@dataclass(slots=True)
class ResourceUse:
    """How the tests use one resource: tests and work in each mode."""

    name: str
    capacity: int
    scope: str
    tests: dict[str, int] = field(default_factory=lambda: {mode: 0 for mode in _MODES})
    seconds: dict[str, float] = field(default_factory=lambda: {mode: 0.0 for mode in _MODES})
    #: Counted slots x seconds.
    slot_seconds: float = 0.0


@final
@dataclass(slots=True)
class Plan:
    """A run's plan; see the module docstring."""

    workers: int
    tests: int
    #: Tests whose seconds are an estimate, and the estimate.
    estimated: int
    estimate: float
    work: float
    serial_tests: int
    serial_seconds: float
    resources: list[ResourceUse]
    #: Every term, largest first.
    terms: list[Term]
    #: (node id, the message it fails with at run time) of tests that can never run.
    never_granted: list[tuple[str, str]]

    @property
    def bound(self) -> float:
        """Return the lower bound on the run's wall time."""
        return self.terms[0].seconds if self.terms else 0.0

    @property
    def bottleneck(self) -> Term | None:
        """Return the term that gives the bound."""
        return self.terms[0] if self.terms else None

    def to_data(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (``--plan-json``)."""
        return {
            "workers": self.workers,
            "tests": self.tests,
            "estimated": self.estimated,
            "estimate": self.estimate,
            "work": self.work,
            "serial": {"tests": self.serial_tests, "seconds": self.serial_seconds},
            "resources": [
                {
                    "name": use.name,
                    "capacity": use.capacity,
                    "scope": use.scope,
                    **{mode: {"tests": use.tests[mode], "seconds": use.seconds[mode]} for mode in _MODES},
                    "slot_seconds": use.slot_seconds,
                }
                for use in self.resources
            ],
            "bound": self.bound,
            "bottleneck": None if self.bottleneck is None else self.bottleneck.name,
            "terms": [
                {"name": t.name, "kind": t.kind, "resources": list(t.resources), "seconds": t.seconds}
                for t in self.terms
            ],
            "never_granted": [{"nodeid": nodeid, "message": message} for nodeid, message in self.never_granted],
        }


def bound_terms(
    tests: Iterable[tuple[float, Requirement]], workers: int, capacities: Mapping[str, int] | None = None
) -> list[Term]:
    """Return every term of the lower bound of running ``tests`` (seconds,
    requirement) on ``workers`` workers, largest first (ties: in the order
    of the module docstring, then by name)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    capacities = capacities or {}
    work = serial = longest = 0.0
    exclusive: dict[str, float] = {}
    shared: dict[str, float] = {}
    slot_seconds: dict[str, float] = {}
    pairs: dict[tuple[str, str], float] = {}
    for seconds, requirement in tests:
        work += seconds
        longest = max(longest, seconds)
        if requirement.serial:
            serial += seconds
        # one request per resource, the strongest asked (see merge_requests)
        for request in requirement.requests:
            name = request.name
            if request.mode is Mode.EXCLUSIVE:
                exclusive[name] = exclusive.get(name, 0.0) + seconds
                for other in requirement.requests:
                    if other.mode is Mode.SHARED:
                        pairs[name, other.name] = pairs.get((name, other.name), 0.0) + seconds
            elif request.mode is Mode.SHARED:
                shared[name] = shared.get(name, 0.0) + seconds
            else:
                slot_seconds[name] = slot_seconds.get(name, 0.0) + request.slots * seconds
    terms = [Term(WORKERS, "workers", (), work / workers)]
    if serial:
        terms.append(Term(SERIAL, "serial", (), serial + (work - serial) / workers))
    terms.append(Term(LONGEST, "test", (), longest))
    for name in sorted(exclusive.keys() | shared.keys()):
        value = exclusive.get(name, 0.0) + shared.get(name, 0.0) / workers
        terms.append(Term(name, "resource", (name,), value))
    for name in sorted(slot_seconds):
        capacity = capacities.get(name, DEFAULT_CAPACITY)
        terms.append(Term(f"{name} slots", "slots", (name,), slot_seconds[name] / capacity))
    for a, b in sorted(pairs):
        terms.append(Term(f"{a} then {b}", "pair", (a, b), exclusive.get(b, 0.0) + pairs[a, b]))
    order = {id(term): index for index, term in enumerate(terms)}
    terms.sort(key=lambda term: (-term.seconds, order[id(term)]))
    return terms


def make_plan(
    tests: Sequence[PlanTest],
    workers: int,
    capacities: Mapping[str, int],
    global_resources: Iterable[str] = (),
    host_resources: Iterable[str] = (),
    never_granted: Sequence[tuple[str, str]] = (),
) -> Plan:
    """Return the plan of running ``tests`` on ``workers`` workers.

    ``never_granted`` are the tests that fail at setup instead (a bad
    declaration, an impossible request): they are listed, not counted.
    """
    scopes = {name: "global" for name in global_resources}
    for name in host_resources:
        scopes[name] = "global host" if name in scopes else "host"
    uses: dict[str, ResourceUse] = {}
    for test in tests:
        for request in test.requirement.requests:  # one per resource (see merge_requests)
            use = uses.get(request.name)
            if use is None:
                capacity = capacities.get(request.name, DEFAULT_CAPACITY)
                use = uses[request.name] = ResourceUse(request.name, capacity, scopes.get(request.name, "run"))
            key = _MODE_NAMES[request.mode]
            use.tests[key] += 1
            use.seconds[key] += test.seconds
            use.slot_seconds += request.slots * test.seconds
    estimated = [test for test in tests if test.estimated]
    serial = [test for test in tests if test.requirement.serial]
    return Plan(
        workers=workers,
        tests=len(tests),
        estimated=len(estimated),
        estimate=estimated[0].seconds if estimated else 0.0,
        work=sum((test.seconds for test in tests), 0.0),
        serial_tests=len(serial),
        serial_seconds=sum((test.seconds for test in serial), 0.0),
        resources=[uses[name] for name in sorted(uses)],
        terms=bound_terms(((test.seconds, test.requirement) for test in tests), workers, capacities),
        never_granted=list(never_granted),
    )


def plan_lines(plan: Plan, all_terms: bool = False) -> list[str]:
    """Return the plan as terminal lines (``--plan``)."""
    lines = [f"{_tests(plan.tests)}, {plan.work:.2f} s of work on {plan.workers} worker(s)"]
    if plan.estimated:
        lines[0] += f"; {plan.estimated} without a recorded duration, estimated at {plan.estimate:.2f} s each"
    if plan.resources:
        rows = [["resource", "capacity", "scope", *_MODES]]
        for use in plan.resources:
            cells = [
                f"{_tests(use.tests[mode])}, {use.seconds[mode]:.2f} s" if use.tests[mode] else "-" for mode in _MODES
            ]
            rows.append([use.name, str(use.capacity), use.scope, *cells])
        lines.extend(table(rows))
    if plan.serial_tests:
        lines.append(f"serial: {_tests(plan.serial_tests)}, {plan.serial_seconds:.2f} s")
    if plan.bottleneck is not None and plan.tests:
        bottleneck = plan.bottleneck.name
        lines.append(f"lower bound: {plan.bound:.2f} s with {plan.workers} worker(s); bottleneck: {bottleneck}")
        shown = plan.terms if all_terms else plan.terms[:SHOWN_TERMS]
        more = len(plan.terms) - len(shown)
        lines.append(
            "terms: "
            + ", ".join(f"{term.name} {term.seconds:.2f} s" for term in shown)
            + (f" (and {more} smaller; -v shows all)" if more else "")
        )
    if plan.never_granted:
        lines.append(f"never granted ({len(plan.never_granted)}):")
        lines.extend(f"  {message}" for _, message in plan.never_granted)
    return lines


# Implementation


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Return rows of cells as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _tests(count: int) -> str:
    return f"{count} test" if count == 1 else f"{count} tests"
