"""Splitting a suite over CI jobs for ``--shard K/N``.

Each of N CI jobs collects the whole suite, calls :func:`split` with the
same tests and estimates, and runs only shard K.  So the split must come out
the same in every job: it depends only on the tests as a multiset, never on
their order or on ``PYTHONHASHSEED``.

A shard is balanced by its *lower bound* (:func:`bound`), not by its sum of
seconds: with ``workers`` workers per job, a shard cannot finish before its
work spread over the workers, before the exclusive work on any one resource
run back to back (shared and counted work spread over the workers beside it),
or before its serial tests run alone and the rest spread over the workers.
Each job has its own copy of an ordinary resource, so the tests on one
exclusive resource are spread over the shards.  A *global* resource (one
copy for all jobs, ``staging: 1 global``) is different: every test that
touches it goes to one shard, so two jobs never use it at once; a test on
two global resources glues their groups together.

The method: glued groups and single tests are *units*; units are placed
heaviest first (by their own bound), each on the shard whose bound is
smallest with it added (ties: fewer seconds, then the lower index); then
units move out of the slowest shard, or swap with another shard's, while
that lowers its bound (at most :data:`MAX_IMPROVEMENTS` times).  Every tie
is broken by the tests' canonical order (node id, then estimate, then
requirement), never by the input order.

It is pure: no I/O, and it imports neither pytest nor execnet.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, final

from .resources import Mode, Requirement

__all__ = [
    "SERIAL",
    "SHARD_K_RANGE",
    "SHARD_NOT_NUMBERS",
    "SHARD_N_RANGE",
    "SHARD_SYNTAX",
    "Shard",
    "ShardError",
    "ShardTest",
    "bound",
    "parse_shard",
    "split",
]

#: The bottleneck name when a shard's serial tests set its bound.
SERIAL: Final = "serial"

#: ``--shard`` is not of the form K/N.
SHARD_SYNTAX: Final = "--shard {text}: write K/N, this job's number K of N jobs, as in --shard 1/4"
#: K or N is not a whole number.
SHARD_NOT_NUMBERS: Final = "--shard {text}: K and N must be whole numbers, as in --shard 1/4"
#: N is below 1.
SHARD_N_RANGE: Final = "--shard {text}: N must be at least 1, as in --shard 1/4"
#: K is outside 1..N.
SHARD_K_RANGE: Final = "--shard {text}: K must be between 1 and N (here {n}), as in --shard 1/{n}"

#: How many moves or swaps the improvement pass makes at most.
MAX_IMPROVEMENTS: Final = 200
#: How many units of a shard, spread over its weights, the pass tries to move ...
MOVE_CANDIDATES: Final = 64
#: ... and to swap (each against as many of another shard).
SWAP_CANDIDATES: Final = 16
#: A change must lower the slowest shard's bound by more than this fraction of it.
RELATIVE_GAIN: Final = 1e-9


class ShardError(ValueError):
    """A malformed ``--shard`` value."""


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard K/N`` into ``(K, N)`` with ``1 <= K <= N``."""
    shown = text.strip() or repr(text)
    parts = text.split("/")
    if len(parts) != 2:
        raise ShardError(SHARD_SYNTAX.format(text=shown))
    try:
        k, n = int(parts[0]), int(parts[1])
    except ValueError:
        raise ShardError(SHARD_NOT_NUMBERS.format(text=shown)) from None
    if n < 1:
        raise ShardError(SHARD_N_RANGE.format(text=shown))
    if not 1 <= k <= n:
        raise ShardError(SHARD_K_RANGE.format(text=shown, n=n))
    return k, n


@final
@dataclass(frozen=True, slots=True)
class ShardTest:
    """One test to place: its node id, its estimated seconds and its needs."""

    nodeid: str
    seconds: float
    requirement: Requirement


@final
@dataclass
class Shard:
    """One CI job's share of the suite."""

    #: 1-based, as in ``--shard K/N``.
    index: int
    #: Indices into the sequence given to :func:`split`, in its order.
    tests: list[int] = field(default_factory=list)
    #: The sum of the tests' estimates.
    seconds: float = 0.0
    #: The shard's lower bound (:func:`bound`).
    bound: float = 0.0
    #: What sets the bound: a resource name, :data:`SERIAL`, or None for work / workers.
    bottleneck: str | None = None


def bound(tests: Iterable[ShardTest], workers: int) -> tuple[float, str | None]:
    """Return the lower bound of running ``tests`` on ``workers`` workers, and its bottleneck.

    The bound is the largest of: all work / workers; for each resource, its
    exclusive work plus its shared and counted work / workers; the serial
    work plus the other work / workers.  The bottleneck is the resource name
    (the first by name among equals), :data:`SERIAL`, or None when work /
    workers is as large as any of them.
    """
    _check_workers(workers)
    load = _Load(workers)
    cache: dict[Requirement, _Needs] = {}
    for test in tests:
        load.add(_profile(test.seconds, _needs(test.requirement, cache)))
    return load.bound()


def split(tests: Sequence[ShardTest], shards: int, workers: int, global_resources: Collection[str] = ()) -> list[Shard]:
    """Split ``tests`` into ``shards`` shards of about equal :func:`bound`.

    Every test lands in exactly one shard; tests that touch a resource in
    ``global_resources`` land in one shard together.  The result depends only
    on the tests as a multiset.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    _check_workers(workers)
    for test in tests:
        if not 0 <= test.seconds < math.inf:
            raise ValueError(f"{test.nodeid}: estimate must be finite and not negative, got {test.seconds!r}")
    cache: dict[Requirement, _Needs] = {}
    needs = [_needs(test.requirement, cache) for test in tests]
    keys = [(test.nodeid, test.seconds, need.key) for test, need in zip(tests, needs, strict=True)]
    # canonical order: rank r is the r-th test by (node id, seconds, requirement); the sort
    # is stable, but equal keys are interchangeable tests, so their input order does not matter
    order = sorted(range(len(tests)), key=keys.__getitem__)
    profiles = [_profile(tests[i].seconds, needs[i]) for i in order]
    units = _Units(profiles, frozenset(global_resources), workers)
    loads = [_Load(workers) for _ in range(shards)]
    members: list[list[int]] = [[] for _ in range(shards)]
    for unit, profile in enumerate(units.profiles):
        target = _place(loads, profile)
        loads[target].add(profile)
        members[target].append(unit)
    floor = max([_Load.merged(loads).bound()[0] / shards, *units.weights[:1]])
    _Improver(loads, members, units).run(floor)
    result = []
    for number, shard_units in enumerate(members, start=1):
        ranks = sorted(rank for unit in shard_units for rank in units.ranks[unit])
        # summed afresh in canonical order, so the figures do not depend on the moves
        load = _Load(workers)
        for rank in ranks:
            load.add(profiles[rank])
        value, bottleneck = load.bound()
        result.append(Shard(number, sorted(order[rank] for rank in ranks), load.work, value, bottleneck))
    return result


# Implementation


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")


class _Needs(NamedTuple):
    """A requirement as the split sees it."""

    #: A sort key: equal keys, equal requirements.
    key: tuple[bool, tuple[tuple[str, int, int], ...]]
    serial: bool
    #: The resource names, sorted, each with whether it is used exclusively.
    resources: tuple[tuple[str, bool], ...]


def _needs(requirement: Requirement, cache: dict[Requirement, _Needs]) -> _Needs:
    """Return a requirement's sort key and resources, computed once per distinct requirement."""
    known = cache.get(requirement)
    if known is not None:
        return known
    exclusive: dict[str, bool] = {}
    for request in requirement.requests:
        exclusive[request.name] = exclusive.get(request.name, False) or request.mode is Mode.EXCLUSIVE
    key = (requirement.serial, tuple(sorted((r.name, int(r.mode), r.slots) for r in requirement.requests)))
    needs = _Needs(key, requirement.serial, tuple((name, exclusive[name]) for name in sorted(exclusive)))
    cache[requirement] = needs
    return needs


class _Profile(NamedTuple):
    """What one test or unit adds to a shard's sums.

    ``resources`` holds ``(name, exclusive seconds, shared seconds)``, sorted by name.
    """

    seconds: float
    serial: float
    resources: tuple[tuple[str, float, float], ...]

    def bound(self, workers: int) -> float:
        """Return the bound of this alone."""
        value = max(self.seconds / workers, self.serial + (self.seconds - self.serial) / workers)
        for _, exclusive, shared in self.resources:
            value = max(value, exclusive + shared / workers)
        return value


def _profile(seconds: float, needs: _Needs) -> _Profile:
    serial = seconds if needs.serial else 0.0
    if not needs.resources:
        return _Profile(seconds, serial, ())
    return _Profile(
        seconds,
        serial,
        tuple((name, seconds, 0.0) if exclusive else (name, 0.0, seconds) for name, exclusive in needs.resources),
    )


def _merge(profiles: Sequence[_Profile]) -> _Profile:
    sums: dict[str, list[float]] = {}
    for profile in profiles:
        for name, exclusive, shared in profile.resources:
            pair = sums.setdefault(name, [0.0, 0.0])
            pair[0] += exclusive
            pair[1] += shared
    return _Profile(
        sum(p.seconds for p in profiles),
        sum(p.serial for p in profiles),
        tuple((name, sums[name][0], sums[name][1]) for name in sorted(sums)),
    )


@final
class _Units:
    """The units: single tests and glued global groups, heaviest first.

    Unit ``u`` holds the test ranks ``ranks[u]``, adds ``profiles[u]`` to its
    shard, and has ``weights[u]``, its own bound: no shard holding it can
    finish sooner.  A smaller ``u`` is a heavier unit (ties: more seconds,
    then the lower first rank).
    """

    __slots__ = ("profiles", "ranks", "weights")

    def __init__(self, profiles: Sequence[_Profile], global_resources: frozenset[str], workers: int) -> None:
        ranks, merged = _glue(profiles, global_resources)
        weights = [
            p.bound(workers) if p.resources or p.serial else p.seconds / workers  # the common case, inlined
            for p in merged
        ]
        keys = [(-weights[u], -merged[u].seconds, ranks[u][0]) for u in range(len(merged))]
        order = sorted(range(len(merged)), key=keys.__getitem__)
        self.ranks: list[tuple[int, ...]] = [ranks[u] for u in order]
        self.profiles: list[_Profile] = [merged[u] for u in order]
        self.weights: list[float] = [weights[u] for u in order]


def _glue(
    profiles: Sequence[_Profile], global_resources: frozenset[str]
) -> tuple[list[tuple[int, ...]], list[_Profile]]:
    """Return the units' ranks and profiles: tests on one global resource, or on two glued ones, make one unit."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    touched: list[list[str]] = []
    for profile in profiles:
        names = [name for name, _, _ in profile.resources if name in global_resources] if global_resources else []
        touched.append(names)
        for name in names:
            parent.setdefault(name, name)
        for name in names[1:]:
            a, b = find(names[0]), find(name)
            if a != b:
                # the smaller name is the root, so roots do not depend on the order of tests
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[int]] = {}
    ranks: list[tuple[int, ...]] = []
    merged: list[_Profile] = []
    for rank, names in enumerate(touched):
        if names:
            groups.setdefault(find(names[0]), []).append(rank)
        else:
            ranks.append((rank,))
            merged.append(profiles[rank])
    for root in sorted(groups):
        ranks.append(tuple(groups[root]))
        merged.append(_merge([profiles[rank] for rank in groups[root]]))
    return ranks, merged


@final
class _Load:
    """The running sums of one shard, and its bound."""

    __slots__ = ("_ranked", "exclusive", "serial", "shared", "terms", "top", "work", "workers")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        #: All seconds.
        self.work = 0.0
        #: Seconds of serial tests.
        self.serial = 0.0
        #: Exclusive and shared (or counted) seconds per resource.
        self.exclusive: dict[str, float] = {}
        self.shared: dict[str, float] = {}
        #: Resource term per name: exclusive + shared / workers.
        self.terms: dict[str, float] = {}
        #: The largest term, or 0: adding only raises terms, so :meth:`add` keeps it.
        self.top = 0.0
        #: The terms, largest first (ties by name), or None until asked for again.
        self._ranked: list[tuple[str, float]] | None = None

    @classmethod
    def merged(cls, loads: Sequence[_Load]) -> _Load:
        """Return the sums of several loads together."""
        whole = cls(loads[0].workers)
        for load in loads:
            whole.add(
                _Profile(
                    load.work,
                    load.serial,
                    tuple((n, load.exclusive[n], load.shared[n]) for n in sorted(load.exclusive)),
                )
            )
        return whole

    def add(self, profile: _Profile) -> None:
        self.work += profile.seconds
        self.serial += profile.serial
        for name, exclusive, shared in profile.resources:
            self.exclusive[name] = self.exclusive.get(name, 0.0) + exclusive
            self.shared[name] = self.shared.get(name, 0.0) + shared
            term = self.terms[name] = self.exclusive[name] + self.shared[name] / self.workers
            self.top = max(self.top, term)
        self._ranked = None

    def remove(self, profile: _Profile) -> None:
        self.work -= profile.seconds
        self.serial -= profile.serial
        for name, exclusive, shared in profile.resources:
            self.exclusive[name] -= exclusive
            self.shared[name] -= shared
            self.terms[name] = self.exclusive[name] + self.shared[name] / self.workers
        self.top = max(self.terms.values(), default=0.0)
        self._ranked = None

    def bound_after(self, add: _Profile | None, remove: _Profile | None) -> float:
        """Return the bound after adding ``add`` and removing ``remove``, changing nothing."""
        workers = self.workers
        work, serial = self.work, self.serial
        changed: dict[str, float] = {}
        for profile, sign in ((add, 1.0), (remove, -1.0)):
            if profile is None:
                continue
            work += sign * profile.seconds
            serial += sign * profile.serial
            for name, exclusive, shared in profile.resources:
                changed[name] = changed.get(name, self.terms.get(name, 0.0)) + sign * (exclusive + shared / workers)
        value = max(work / workers, serial + (work - serial) / workers, *changed.values())
        for name, term in self.ranked():
            if name not in changed:
                return max(value, term)
        return value

    def ranked(self) -> list[tuple[str, float]]:
        if self._ranked is None:
            self._ranked = sorted(self.terms.items(), key=lambda item: (-item[1], item[0]))
        return self._ranked

    def bound(self) -> tuple[float, str | None]:
        """Return the bound and its bottleneck, summed afresh from the sums."""
        workers = self.workers
        value, bottleneck = self.work / workers, None
        if self.serial:
            term = self.serial + (self.work - self.serial) / workers
            if term > value:
                value, bottleneck = term, SERIAL
        for name in sorted(self.exclusive):
            term = self.exclusive[name] + self.shared[name] / workers
            if term > value:
                value, bottleneck = term, name
        return value, bottleneck


def _place(loads: Sequence[_Load], profile: _Profile) -> int:
    """Return the shard whose bound is smallest with ``profile`` added (ties: less work, lower index)."""
    best, best_value, best_work = 0, math.inf, math.inf
    seconds, serial, resources = profile.seconds, profile.serial, profile.resources
    workers = loads[0].workers
    # _Load.bound_after(profile, None), inlined: this loop runs shards times per unit
    for index, load in enumerate(loads):
        work = load.work
        value = (work + seconds + (load.serial + serial) * (workers - 1)) / workers
        if load.top > value:
            value = load.top
        for name, exclusive, shared in resources:
            term = load.terms.get(name, 0.0) + exclusive + shared / workers
            if term > value:
                value = term
        if value < best_value or (value == best_value and work < best_work):
            best, best_value, best_work = index, value, work
    return best


@final
class _Improver:
    """The local improvement pass: move or swap units out of the slowest shard while that lowers its bound."""

    __slots__ = ("loads", "members", "units")

    def __init__(self, loads: list[_Load], members: list[list[int]], units: _Units) -> None:
        self.loads = loads
        self.members = members
        self.units = units

    def run(self, floor: float) -> None:
        """Improve until nothing helps, the bound reaches ``floor`` (no split beats it), or the budget is spent."""
        loads, shards = self.loads, len(self.loads)
        for _ in range(MAX_IMPROVEMENTS):
            bounds = [load.bound_after(None, None) for load in loads]
            worst = max(range(shards), key=lambda s: (bounds[s], -s))
            if shards == 1 or bounds[worst] <= floor * (1 + RELATIVE_GAIN):
                return
            limit = bounds[worst] * (1 - RELATIVE_GAIN)
            others = [s for s in range(shards) if s != worst and bounds[s] < limit]
            best = self._best_move(worst, others, limit) or self._best_swap(worst, others, limit)
            if best is None:
                return
            _, other, unit, partner = best
            self._transfer(unit, worst, other)
            if partner >= 0:
                self._transfer(partner, other, worst)

    def _sample(self, shard: int, size: int) -> list[int]:
        """Return up to ``size`` units of a shard, spread evenly over their weights."""
        units = sorted(self.members[shard])
        if len(units) <= size:
            return units
        step = len(units) / size
        return [units[int(i * step)] for i in range(size)]

    def _best_move(self, worst: int, others: Sequence[int], limit: float) -> _Change | None:
        source, profiles = self.loads[worst], self.units.profiles
        best: _Change | None = None
        for unit in self._sample(worst, MOVE_CANDIDATES):
            profile = profiles[unit]
            left = source.bound_after(None, profile)
            if left >= limit:
                continue
            for other in others:
                value = max(left, self.loads[other].bound_after(profile, None))
                if value < limit and (best is None or (value, other, unit, -1) < best):
                    best = (value, other, unit, -1)
        return best

    def _best_swap(self, worst: int, others: Sequence[int], limit: float) -> _Change | None:
        source, profiles = self.loads[worst], self.units.profiles
        best: _Change | None = None
        outgoing = self._sample(worst, SWAP_CANDIDATES)
        for other in others:
            target = self.loads[other]
            for partner in self._sample(other, SWAP_CANDIDATES):
                for unit in outgoing:
                    after = target.bound_after(profiles[unit], profiles[partner])
                    if after >= limit:
                        continue
                    value = max(after, source.bound_after(profiles[partner], profiles[unit]))
                    if value < limit and (best is None or (value, other, unit, partner) < best):
                        best = (value, other, unit, partner)
        return best

    def _transfer(self, unit: int, source: int, target: int) -> None:
        profile = self.units.profiles[unit]
        self.members[source].remove(unit)
        self.loads[source].remove(profile)
        self.members[target].append(unit)
        self.loads[target].add(profile)


#: A move or swap: (the larger bound of the two shards after it, the other shard, the unit, the partner or -1).
_Change = tuple[float, int, int, int]
