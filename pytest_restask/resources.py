"""The resource model: what a test asks for, and the lock table that grants it.

This module owns three things:

* parsing ``@pytest.mark.resource`` / ``@pytest.mark.serial`` arguments into
  :class:`Request` values (:func:`parse_resource_marker`,
  :func:`parse_serial_marker`) and merging the requests of one test into a
  :class:`Requirement` (:func:`merge_requests`);
* parsing the ``restask_resources`` ini lines into capacities
  (:func:`parse_capacities`);
* the :class:`LockTable`, which answers "can this requirement be granted
  now?" and grants and releases atomically.

It is pure: no I/O, and it imports neither pytest nor execnet, so the worker
and the state machine can use it and it is tested without processes.
User mistakes raise :class:`ResourceError` with a message that says what is
wrong and what to do; the caller adds where (the test id or the ini line).
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

__all__ = [
    "DEFAULT_CAPACITY",
    "Grant",
    "LockTable",
    "Mode",
    "Request",
    "Requirement",
    "ResourceError",
    "NOTHING",
    "grant_from_wire",
    "grant_to_wire",
    "merge_requests",
    "parse_capacities",
    "parse_fixture_lines",
    "parse_resources",
    "parse_resource_marker",
    "parse_serial_marker",
    "slot_env_name",
]

#: Capacity of a resource that ``restask_resources`` does not name.
DEFAULT_CAPACITY: Final = 1

#: The keywords ``@pytest.mark.resource`` accepts.
RESOURCE_KEYWORDS: Final = ("shared", "slots")


class ResourceError(ValueError):
    """A user mistake in a resource declaration or in the configuration."""


@final
class Mode(enum.IntEnum):
    """How a test uses one resource; a larger value is the stronger request."""

    SHARED = 1
    COUNTED = 2
    EXCLUSIVE = 3


@final
@dataclass(frozen=True, slots=True)
class Request:
    """One resource asked for in one mode.

    ``slots`` is the number of counted slots (only for :attr:`Mode.COUNTED`,
    0 otherwise).
    """

    name: str
    mode: Mode
    slots: int = 0

    def stronger(self, other: Request) -> Request:
        """Return the stronger of two requests for the same name."""
        assert self.name == other.name
        if (self.mode, self.slots) >= (other.mode, other.slots):
            return self
        return other

    def describe(self) -> str:
        """Return the request as a user would write it in a marker."""
        if self.mode is Mode.SHARED:
            return f"resource({self.name!r}, shared=True)"
        if self.mode is Mode.COUNTED:
            return f"resource({self.name!r}, slots={self.slots})"
        return f"resource({self.name!r})"


@final
@dataclass(frozen=True, slots=True)
class Requirement:
    """Everything one test needs: its requests by name, and whether it runs alone."""

    requests: tuple[Request, ...] = ()
    serial: bool = False

    @property
    def is_free(self) -> bool:
        """Return whether the test needs nothing, so it can run beside anything."""
        return not self.requests and not self.serial

    def names(self) -> frozenset[str]:
        """Return the resource names this requirement touches."""
        return frozenset(r.name for r in self.requests)

    def describe(self) -> str:
        """Return a short human form, e.g. ``serial, resource('db')``."""
        parts = ["serial"] if self.serial else []
        parts.extend(r.describe() for r in self.requests)
        return ", ".join(parts) or "nothing"


FREE: Final = Requirement()


def parse_resource_marker(args: Sequence[object], kwargs: Mapping[str, object]) -> list[Request]:
    """Parse the arguments of one ``@pytest.mark.resource(...)``.

    Raise :class:`ResourceError` for anything that is not exactly
    ``resource(*names: str, shared: bool = False, slots: int | None = None)``.
    """
    unknown = sorted(set(kwargs) - set(RESOURCE_KEYWORDS))
    if unknown:
        raise ResourceError(
            f"unknown keyword {unknown[0]!r} in @pytest.mark.resource; it accepts only {', '.join(RESOURCE_KEYWORDS)}"
        )
    if not args:
        raise ResourceError("@pytest.mark.resource needs at least one resource name, e.g. @pytest.mark.resource('db')")
    for name in args:
        if not isinstance(name, str):
            raise ResourceError(f"resource names must be strings, got {name!r} ({type(name).__name__})")
        if not name.strip():
            raise ResourceError("resource names must not be empty")
    shared = kwargs.get("shared", False)
    if not isinstance(shared, bool):
        raise ResourceError(f"shared= must be True or False, got {shared!r}")
    slots = kwargs.get("slots")
    if slots is not None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ResourceError(f"slots= must be a whole number of at least 1, got {slots!r}")
        if shared:
            raise ResourceError(
                "shared=True and slots= cannot be combined: a counted request "
                "already runs beside other counted ones; drop one of them"
            )
        return [Request(str(name), Mode.COUNTED, slots) for name in args]
    mode = Mode.SHARED if shared else Mode.EXCLUSIVE
    return [Request(str(name), mode) for name in args]


def parse_serial_marker(args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    """Check ``@pytest.mark.serial``, which takes no arguments."""
    if args or kwargs:
        raise ResourceError("@pytest.mark.serial takes no arguments; use @pytest.mark.resource(...) to name a resource")


def merge_requests(requests: Iterable[Request], serial: bool = False) -> Requirement:
    """Merge the requests of one test: for one name the strongest wins.

    exclusive > counted > shared; of two counted requests, the larger.
    The result is sorted by name, so equal needs give equal requirements.
    """
    strongest: dict[str, Request] = {}
    for request in requests:
        known = strongest.get(request.name)
        strongest[request.name] = request if known is None else known.stronger(request)
    return Requirement(tuple(strongest[n] for n in sorted(strongest)), serial)


_CAPACITY_LINE = re.compile(r"^\s*(?P<name>[^:]+?)\s*:\s*(?P<capacity>\S+)(?P<scopes>(?:\s+\S+)*)\s*$")
#: The word after a capacity that makes a resource one copy for all CI jobs.
GLOBAL: Final = "global"
#: The word after a capacity that locks a resource across every run on the host.
HOST: Final = "host"


def parse_capacities(lines: Iterable[str]) -> dict[str, int]:
    """Parse ``restask_resources`` lines of the form ``name: capacity``."""
    return parse_resources(lines)[0]


def _ini_lines(
    lines: Iterable[str], pattern: re.Pattern[str], key: str, form: str, example: str
) -> Iterator[tuple[str, re.Match[str]]]:
    """Yield each line of an ini key that is not blank or a ``#`` comment,
    stripped, with its match; raise :class:`ResourceError` quoting one that
    does not match, with the ``form`` it should have."""
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = pattern.match(line)
        if match is None:
            raise ResourceError(f"{key} line {line!r} is not of the form '{form}' (e.g. '{example}')")
        yield line, match


def parse_resources(lines: Iterable[str]) -> tuple[dict[str, int], frozenset[str], frozenset[str]]:
    """Parse ``restask_resources`` lines ``name: capacity [global] [host]``.

    Return the capacities, the names declared ``global`` (one copy shared by
    every CI job of a ``--shard`` split, rather than one per job) and the
    names declared ``host`` (locked across every run on this machine, see
    :mod:`.hostlocks`).  Blank lines and lines starting with ``#`` are
    skipped.  Raise :class:`ResourceError` quoting the first bad line.
    """
    capacities: dict[str, int] = {}
    scoped: dict[str, set[str]] = {GLOBAL: set(), HOST: set()}
    form = "name: capacity [global] [host]"
    for line, match in _ini_lines(lines, _CAPACITY_LINE, "restask_resources", form, "gpu: 2 host"):
        name, text = match.group("name"), match.group("capacity")
        try:
            capacity = int(text)
        except ValueError:
            capacity = 0
        if capacity < 1:
            raise ResourceError(
                f"restask_resources line {line!r}: capacity must be a whole number of at least 1, got {text!r}"
            )
        if name in capacities:
            raise ResourceError(f"restask_resources line {line!r}: {name!r} is declared twice")
        for scope in match.group("scopes").split():
            if scope not in scoped:
                raise ResourceError(
                    f"restask_resources line {line!r}: after the capacity only {GLOBAL!r} (one copy for all "
                    f"CI jobs) and {HOST!r} (locked across the runs on this machine) may follow, got {scope!r}"
                )
            scoped[scope].add(name)
        capacities[name] = capacity
    return capacities, frozenset(scoped[GLOBAL]), frozenset(scoped[HOST])


_FIXTURE_LINE = re.compile(r"^(?P<fixture>[^:\s]+)\s*:\s*(?P<resource>\S+)(?:\s+(?P<mode>\S+))?$")
FIXTURE_LINE_FORM: Final = "FIXTURE: RESOURCE [shared | slots=N]"


def parse_fixture_lines(lines: Iterable[str]) -> dict[str, tuple[Request, ...]]:
    """Parse ``restask_fixtures`` lines ``FIXTURE: RESOURCE [shared | slots=N]``
    into the requests of each fixture (a fixture may have several lines).

    Blank lines and lines starting with ``#`` are skipped.  Raise
    :class:`ResourceError` quoting the first bad line.
    """
    found: dict[str, list[Request]] = {}
    for line, match in _ini_lines(lines, _FIXTURE_LINE, "restask_fixtures", FIXTURE_LINE_FORM, "db: database"):
        mode = match.group("mode")
        options: dict[str, object] = {}
        if mode == "shared":
            options["shared"] = True
        elif mode is not None and mode.startswith("slots="):
            count = mode.removeprefix("slots=")
            options["slots"] = int(count) if count.isdigit() else count
        elif mode is not None:
            raise ResourceError(
                f"restask_fixtures line {line!r}: after the resource only 'shared' or 'slots=N' may follow, "
                f"got {mode!r}"
            )
        try:
            requests = parse_resource_marker((match.group("resource"),), options)
        except ResourceError as e:
            raise ResourceError(f"restask_fixtures line {line!r}: {e}") from None
        found.setdefault(match.group("fixture"), []).extend(requests)
    return {fixture: tuple(requests) for fixture, requests in found.items()}


def slot_env_name(resource: str) -> str:
    """Return the environment variable that holds a resource's slot numbers."""
    return "RESTASK_SLOTS_" + re.sub(r"[^A-Za-z0-9]", "_", resource).upper()


@final
@dataclass(frozen=True, slots=True)
class Grant:
    """What one holder was given: its requirement and its counted slot numbers."""

    requirement: Requirement
    slots: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def covers(self, other: Grant) -> bool:
        """Return whether this grant holds at least what ``other`` holds.

        Used to decide whether fixtures set up under ``other``'s hold may live
        on into this one: every resource of ``other`` must be held here in a
        mode at least as strong, and every counted slot of ``other`` too.
        """
        if other.requirement.serial and not self.requirement.serial:
            return False
        mine = {r.name: r for r in self.requirement.requests}
        for request in other.requirement.requests:
            held = mine.get(request.name)
            if held is None or held.mode < request.mode:
                return False
            counted = request.mode is Mode.COUNTED and held.mode is Mode.COUNTED
            if counted and not set(other.slots.get(request.name, ())) <= set(self.slots.get(request.name, ())):
                return False
        return True


#: A grant of nothing: what a free test holds.
NOTHING: Final = Grant(FREE)


def grant_to_wire(grant: Grant | None) -> list[tuple[str, int, int]]:
    """Return a grant's requests as plain ``(name, mode, slots)`` tuples, to
    send to a worker beside its slot numbers (see :class:`~.messages.Next`)."""
    return [] if grant is None else [(r.name, int(r.mode), r.slots) for r in grant.requirement.requests]


def grant_from_wire(requests: Sequence[tuple[str, int, int]], slots: Mapping[str, Sequence[int]]) -> Grant:
    """Return the grant that :func:`grant_to_wire` and the slot numbers describe."""
    if not requests and not slots:
        return NOTHING
    merged = merge_requests(Request(name, Mode(mode), count) for name, mode, count in requests)
    return Grant(merged, {name: tuple(numbers) for name, numbers in slots.items()})


def _compatible(a: Request, b: Request) -> bool:
    """Return whether two requests for the same resource may be held together,
    leaving the sum of counted slots to the caller."""
    if a.mode is Mode.EXCLUSIVE or b.mode is Mode.EXCLUSIVE:
        return False
    return a.mode is b.mode


@final
class LockTable:
    """Who holds which resources, and whether a requirement can be granted now.

    Holders are opaque hashable keys (task ids).  :meth:`grant` is atomic:
    either every request of a requirement is granted or none is.

    A *hand-over* lets a worker pass its finished test's resources to its
    next test: ``grant(b, req, replacing=a)`` judges ``req`` as if ``a`` had
    already released, and keeps ``a`` held until ``release(a)``.  This is
    safe because one worker runs ``a``'s teardown strictly before ``b``'s
    setup; meanwhile everyone else sees both holds, which is stricter.
    Counted slots of ``a`` are free for ``b`` for the same reason.
    """

    __slots__ = ("_capacities", "_holders", "_serial", "_users")

    def __init__(self, capacities: Mapping[str, int] | None = None) -> None:
        #: Capacity of each counted resource; others have DEFAULT_CAPACITY.
        self._capacities: dict[str, int] = dict(capacities or {})
        #: The grants now held, by holder.
        self._holders: dict[object, Grant] = {}
        #: Indexes of ``_holders``, so that a grant is judged against the
        #: holders it could conflict with, not all of them (a worker may have
        #: hundreds of free tasks queued, each a holder): the serial ones, and
        #: by resource name the holders using it, with their request.
        self._serial: set[object] = set()
        self._users: dict[str, dict[object, Request]] = {}

    def capacity(self, name: str) -> int:
        """Return the number of slots a resource has."""
        return self._capacities.get(name, DEFAULT_CAPACITY)

    def impossible(self, requirement: Requirement) -> str | None:
        """Return why a requirement can never be granted, or None if it can."""
        for request in requirement.requests:
            capacity = self.capacity(request.name)
            if request.mode is Mode.COUNTED and request.slots > capacity:
                return (
                    f"{request.describe()} asks for {request.slots} slots of {request.name!r}, "
                    f"but its capacity is {capacity}; lower slots= or declare "
                    f"'{request.name}: {request.slots}' in restask_resources (where a plugin's "
                    "pytest_restask_capacities gives the capacity, it decides)"
                )
        return None

    def holders(self) -> Iterator[tuple[object, Grant]]:
        """Iterate over (holder, grant) pairs."""
        return iter(list(self._holders.items()))

    def is_empty(self) -> bool:
        """Return whether nothing is held."""
        return not self._holders

    def grant_of(self, holder: object) -> Grant | None:
        """Return what a holder holds."""
        return self._holders.get(holder)

    def can_grant(self, requirement: Requirement, replacing: object = None) -> bool:
        """Return whether ``requirement`` could be granted now."""
        return self._free_slots(requirement, replacing) is not None

    def grant(self, holder: object, requirement: Requirement, replacing: object = None) -> Grant:
        """Grant ``requirement`` to ``holder``; raise if it cannot be granted now."""
        assert holder not in self._holders, f"{holder!r} already holds resources"
        assert replacing is None or replacing in self._holders, f"{replacing!r} holds nothing"
        slots = self._free_slots(requirement, replacing)
        if slots is None:
            raise RuntimeError(f"cannot grant {requirement.describe()} to {holder!r} now")
        grant = Grant(requirement, slots)
        self._holders[holder] = grant
        if requirement.serial:
            self._serial.add(holder)
        for request in requirement.requests:
            self._users.setdefault(request.name, {})[holder] = request
        return grant

    def release(self, holder: object) -> Grant | None:
        """Release everything ``holder`` holds; return what it held."""
        grant = self._holders.pop(holder, None)
        if grant is not None:
            self._serial.discard(holder)
            for request in grant.requirement.requests:
                users = self._users[request.name]
                del users[holder]
                if not users:
                    del self._users[request.name]
        return grant

    def conflict(self, requirement: Requirement, replacing: object = None) -> tuple[str | None, object] | None:
        """Return what keeps ``requirement`` from being granted now: the
        resource (None for a serial conflict) and a holder in the way; or None.

        Only asked when someone wants to know (events, reports): the
        hot path asks :meth:`can_grant`.
        """
        if self.can_grant(requirement, replacing):
            return None
        others = [holder for holder in self._holders if holder != replacing]
        serial = [holder for holder in self._serial if holder != replacing]
        if serial or (requirement.serial and others):
            return None, (serial or others)[0]
        for request in requirement.requests:
            users = {holder: held for holder, held in self._users.get(request.name, {}).items() if holder != replacing}
            clash = next((holder for holder, held in users.items() if not _compatible(held, request)), None)
            if clash is not None:
                return request.name, clash
            if request.mode is Mode.COUNTED and users and self._free_slots(Requirement((request,)), replacing) is None:
                return request.name, next(iter(users))  # every slot taken
        raise AssertionError(f"{requirement.describe()} cannot be granted, yet nothing holds it back")

    def _free_slots(self, requirement: Requirement, replacing: object) -> dict[str, tuple[int, ...]] | None:
        """Return the slots a grant would get, or None if it conflicts."""
        replaced = replacing is not None and replacing in self._holders
        others = len(self._holders) - replaced
        serial_others = len(self._serial) - (replaced and replacing in self._serial)
        if others and (requirement.serial or serial_others):
            return None
        slots: dict[str, tuple[int, ...]] = {}
        for request in requirement.requests:
            used: set[int] = set()
            for holder, held in self._users.get(request.name, {}).items():
                if holder == replacing:
                    continue
                if not _compatible(held, request):
                    return None
                used.update(self._holders[holder].slots.get(request.name, ()))
            if request.mode is Mode.COUNTED:
                # the lowest free numbers, never a list of the whole capacity (it may be huge)
                free = list(
                    itertools.islice((s for s in range(self.capacity(request.name)) if s not in used), request.slots)
                )
                if len(free) < request.slots:
                    return None
                slots[request.name] = tuple(free[: request.slots])
        return slots
