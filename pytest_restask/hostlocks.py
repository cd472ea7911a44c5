"""Host-wide resources: locks that every restask run on this machine sees.

A resource declared ``host`` in ``restask_resources`` (``postgres: 1 host``)
is locked twice: in the run's own :class:`~.resources.LockTable`, which
orders the run's tests, and here, through filelock, so that two runs (two
tox environments, two terminals, two CI jobs on one runner) never use it in
conflicting ways at once.  In the lock directory each resource has:

* ``NAME.rw.db`` -- a :class:`filelock.ReadWriteLock` (an SQLite database):
  write mode for an exclusive user, read mode for shared and counted users;
* ``NAME.slotK.lock`` -- for a counted resource, one exclusive file lock per
  slot, so that two runs never hand slot K to two tests at once;
* ``NAME.intent.db`` -- a writer's intent: an exclusive user that had to
  wait holds it in write mode (see :class:`WriterIntents`), and shared and
  counted users of every run look at it (read mode, at once released) before
  they take the read lock, so that a stream of readers from other runs
  cannot starve a writer;
* ``NAME.capacity.db`` and ``NAME.capacity`` -- the capacity the live runs
  declared (see :func:`register_capacities`).

Every lock here is one the kernel drops when its process dies (SQLite's
and ``flock``'s locks on an open file), so a run killed with SIGKILL frees
what it held.  Locks are taken without blocking, in sorted order; on the
first busy one, everything taken so far is released (:meth:`HostLocks.take`
returns the busy name): two runs never deadlock, and a test holds all its
host locks or none.

A filelock read/write lock belongs to the thread that took it and does not
survive a fork: a :class:`HostLocks` is made in the process that uses it,
and used from one thread.  ``NAME`` is the resource name with every
character outside ``[A-Za-z0-9._-]`` written as ``%XX``.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import filelock

from .events import HOST_BUSY, TaskChanged, TaskState, TaskWaiting, WorkerChanged
from .resources import Mode, Request, Requirement

__all__ = [
    "CAPACITY_MISMATCH",
    "HostLockError",
    "HostLocks",
    "HostWaits",
    "Taken",
    "WriterIntents",
    "default_lock_dir",
    "waits_line",
    "prepare_lock_dir",
    "register_capacities",
]

CAPACITY_MISMATCH: Final = (
    "host-wide resource {name!r} is declared with capacity {ours} here, but another run using the lock "
    "directory {directory} declared it with capacity {theirs}; runs that share a host resource must agree "
    "on its capacity (fix restask_resources in one of them, or give them different --lock-dir=DIR)"
)
UNUSABLE_DIR: Final = (
    "the lock directory {directory} for host-wide resources is not usable: {why}; "
    "pass --lock-dir=DIR (or set restask_lock_dir) to a writable directory"
)
WAITS_LINE: Final = (
    "restask: {tests} test(s) waited {seconds:.2f}s in all for host locks held by other runs ({resources})"
)
WAITED_WORD: Final = "waited {seconds:.2f}s for host lock {resource!r}"
#: Seconds to wait for another run that is registering its capacities.
REGISTER_TIMEOUT: Final = 10.0


class HostLockError(Exception):
    """A user-fixable problem with host-wide resources (the message says what to do)."""


def default_lock_dir() -> Path:
    """Return the lock directory runs use without ``--lock-dir``: one per
    user under the system's temporary directory, the same for every run of
    that user on this host."""
    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):  # no name for this uid (containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return Path(tempfile.gettempdir()) / f"pytest-restask-locks-of-{_safe(user)}"


def prepare_lock_dir(directory: Path) -> Path:
    """Create the lock directory if missing and check that it is usable;
    raise :class:`HostLockError` naming it."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise HostLockError(UNUSABLE_DIR.format(directory=directory, why="it is a file")) from None
    except OSError as e:
        raise HostLockError(UNUSABLE_DIR.format(directory=directory, why=e.strerror or str(e))) from None
    if not directory.is_dir():
        raise HostLockError(UNUSABLE_DIR.format(directory=directory, why="it is not a directory"))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise HostLockError(UNUSABLE_DIR.format(directory=directory, why="it is not writable"))
    return directory


def waits_line(waited: Iterable[tuple[float, str]]) -> str:
    """Say how long tests waited for other runs' host locks, in all and by
    resource, from each waiting test's (seconds, resource)."""
    by_resource: dict[str, float] = {}
    tests = 0
    for seconds, resource in waited:
        by_resource[resource] = by_resource.get(resource, 0.0) + seconds
        tests += 1
    resources = ", ".join(f"{name!r} {seconds:.2f}s" for name, seconds in sorted(by_resource.items()))
    return WAITS_LINE.format(tests=tests, seconds=sum(by_resource.values()), resources=resources)


def _safe(name: str) -> str:
    """Return ``name`` as a file name: ``%XX`` for what is not plain."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else f"%{ord(c):02X}" for c in name)


def _read_write(directory: Path, name: str, kind: str) -> filelock.ReadWriteLock:
    # an instance (an SQLite connection) of its own: two holds in one process
    # (a controller's intent and its capacity, inline test runs) stay apart
    return filelock.ReadWriteLock(directory / f"{_safe(name)}.{kind}.db", blocking=False, is_singleton=False)


def _exclusive(path: Path) -> filelock.UnixFileLock:
    # never a "soft" lock (a marker file), which outlives a killed holder
    return filelock.UnixFileLock(path, blocking=False, fallback_to_soft=False)


def register_capacities(directory: Path, capacities: Mapping[str, int]) -> list[filelock.ReadWriteLock]:
    """Record this run's capacity of each host-wide resource, or raise
    :class:`HostLockError` when a live run declared another.

    Each capacity is held in read mode for as long as the run lives (keep
    the returned locks); a run that finds the write mode free is the only
    live one and writes its capacity down.  A directory-wide lock makes the
    check and the record one step, so of two runs that start together,
    the second is told.
    """
    held: list[filelock.ReadWriteLock] = []
    mutex = filelock.UnixFileLock(directory / "capacities.lock", fallback_to_soft=False)
    with mutex.acquire(timeout=REGISTER_TIMEOUT):
        for name, capacity in sorted(capacities.items()):
            record = directory / f"{_safe(name)}.capacity"
            lock = _read_write(directory, name, "capacity")
            try:
                lock.acquire_write()
            except filelock.Timeout:  # a live run declared it: the same?
                theirs = record.read_text().strip() if record.exists() else "?"
                if theirs != str(capacity):
                    for other in held:
                        other.release()
                    raise HostLockError(
                        CAPACITY_MISMATCH.format(name=name, ours=capacity, theirs=theirs, directory=directory)
                    ) from None
            else:
                record.write_text(f"{capacity}\n")
                lock.release()
            lock.acquire_read()
            held.append(lock)
    return held


@final
@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`HostLocks.take` answered: the counted slots taken (by
    resource), or the first resource that another holder keeps busy."""

    slots: Mapping[str, tuple[int, ...]]
    busy: str | None = None


@dataclass(slots=True)
class _Held:
    """One resource held by this process: its mode and its slot locks."""

    request: Request
    main: filelock.ReadWriteLock
    slots: dict[int, filelock.UnixFileLock]

    def release(self) -> None:
        for lock in self.slots.values():
            lock.release()
        self.main.release()


@final
class HostLocks:
    """The host-wide locks one process takes for the tests it runs (a worker,
    or an in-process run): try all without blocking, hold all or none."""

    def __init__(self, directory: Path, capacities: Mapping[str, int], names: Collection[str]) -> None:
        self.directory = directory
        self._capacities = dict(capacities)
        #: The host-wide resources; requests for others are left to the run.
        self.names = frozenset(names)
        #: What is held now, by resource name.
        self._held: dict[str, _Held] = {}

    def requests(self, requests: Iterable[Request]) -> list[Request]:
        """Return the requests for host-wide resources among ``requests``."""
        return [request for request in requests if request.name in self.names]

    def held(self) -> dict[str, tuple[int, ...]]:
        """Return the resources held now, each with its slot numbers."""
        return {name: tuple(sorted(held.slots)) for name, held in self._held.items()}

    def take(
        self, requests: Iterable[Request], preferred: Mapping[str, Sequence[int]] | None = None, running: bool = False
    ) -> Taken:
        """Take every host-wide request not held yet in the same way, without
        blocking, in sorted order.  A counted request takes the ``preferred``
        slot numbers where free, then the lowest free ones.  On the first busy
        lock, release what this call took and say which resource was busy.

        ``running``: the test that holds the locks still runs (a worker tries
        its next test's locks at the teardown of the one before).  A lock
        held in another mode or count is then busy, not let go and taken
        again: between the two, another run could take it while the teardown
        still uses the resource."""
        preferred = preferred or {}
        taken: list[str] = []
        requests = self.requests(requests)
        for request in sorted(requests, key=lambda r: r.name):
            known = self._held.get(request.name)
            if known is not None and known.request == request:
                if request.mode is not Mode.EXCLUSIVE and self._writer_waits(request.name):
                    # kept from the test before, but a writer of another run
                    # waits: a later reader must not pass it (let go, try later)
                    for name in taken:
                        self._release(name)
                    return Taken({}, busy=request.name)
                continue
            if known is not None:  # another mode or count: taken again, once nothing uses it
                if running:
                    for name in taken:
                        self._release(name)
                    return Taken({}, busy=request.name)
                self._release(request.name)
            held = self._try(request, preferred.get(request.name, ()))
            if held is None:
                for name in taken:
                    self._release(name)
                return Taken({}, busy=request.name)
            self._held[request.name] = held
            taken.append(request.name)
        wanted = {r.name for r in requests}
        return Taken({name: tuple(sorted(h.slots)) for name, h in self._held.items() if h.slots and name in wanted})

    def keep_only(self, requests: Iterable[Request]) -> None:
        """Release every resource held but not asked for by ``requests``."""
        names = {request.name for request in requests}
        for name in [name for name in self._held if name not in names]:
            self._release(name)

    def release_all(self) -> None:
        """Release everything (at the end of a session)."""
        self.keep_only(())

    def _release(self, name: str) -> None:
        self._held.pop(name).release()

    def _writer_waits(self, name: str) -> bool:
        """Return whether an exclusive user of another run waits for ``name``."""
        intent = _read_write(self.directory, name, "intent")
        try:
            intent.acquire_read()
        except filelock.Timeout:
            return True
        intent.release()
        return False

    def _try(self, request: Request, preferred: Sequence[int]) -> _Held | None:
        main = _read_write(self.directory, request.name, "rw")
        try:
            if request.mode is Mode.EXCLUSIVE:
                main.acquire_write()
            else:
                intent = _read_write(self.directory, request.name, "intent")
                intent.acquire_read()  # busy while another run's writer waits
                try:
                    main.acquire_read()
                finally:
                    intent.release()
        except filelock.Timeout:
            return None
        held = _Held(request, main, {})
        if request.mode is Mode.COUNTED and not self._take_slots(held, preferred):
            held.release()
            return None
        return held

    def _take_slots(self, held: _Held, preferred: Sequence[int]) -> bool:
        request = held.request
        capacity = self._capacities.get(request.name, 1)
        for slot in _candidates(preferred, capacity):
            lock = _exclusive(self.directory / f"{_safe(request.name)}.slot{slot}.lock")
            try:
                lock.acquire()
            except filelock.Timeout:
                continue
            held.slots[slot] = lock
            if len(held.slots) == request.slots:
                return True
        return False


def _candidates(preferred: Iterable[int], capacity: int) -> Iterable[int]:
    """Yield the slot numbers to try: the preferred ones, then the rest in order."""
    first = [slot for slot in preferred if 0 <= slot < capacity]
    yield from first
    yield from (slot for slot in range(capacity) if slot not in first)


@final
class WriterIntents:
    """The writer-intent locks a run holds while its exclusive users of
    host-wide resources wait for another run (see the module docstring).

    Held for a resource while at least one of its waiting exclusive users
    (by any hashable key) wants it, until each is :meth:`done`.  Only
    fairness depends on it, never safety, so a controller may hold it (it
    is dropped the instant the controller dies).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._wanted: dict[str, set[object]] = {}
        self._held: dict[str, filelock.ReadWriteLock] = {}

    def want(self, name: str, user: object) -> None:
        """``user`` waits to use ``name`` exclusively: hold its intent (tried
        again at every call while a reader of another run looks at it)."""
        self._wanted.setdefault(name, set()).add(user)
        self._try(name)

    def done(self, user: object) -> None:
        """``user`` no longer waits: drop the intents nobody else wants."""
        for name in [name for name, users in self._wanted.items() if user in users]:
            users = self._wanted[name]
            users.discard(user)
            if not users:
                del self._wanted[name]
                lock = self._held.pop(name, None)
                if lock is not None:
                    lock.release()

    def release_all(self) -> None:
        """Drop every intent (at the end of the run)."""
        for lock in self._held.values():
            lock.release()
        self._held.clear()
        self._wanted.clear()

    def _try(self, name: str) -> None:
        if name in self._held:
            return
        lock = _read_write(self.directory, name, "intent")
        try:
            lock.acquire_write()
        except filelock.Timeout:
            return  # another run's writer waits too, or a reader is looking
        self._held[name] = lock


@final
class HostWaits:
    """An observer of the state machine (see :mod:`.events`): how long each
    task waited for host locks that other runs held, and the writer intents
    of the exclusive users among them (held from their first hand-back until
    they finish)."""

    def __init__(self, intents: WriterIntents, requirements: Mapping[int, Requirement]) -> None:
        self._intents = intents
        self._requirements = requirements
        #: When each task handed back was first handed back, and for what.
        self._since: dict[int, tuple[float, str]] = {}
        #: Tasks handed back and not started since.
        self._waiting: set[int] = set()
        #: Seconds each task waited for another run, and the resource it waited for last.
        self.waited: dict[int, tuple[float, str]] = {}

    def task_changed(self, event: TaskChanged) -> None:
        task = event.task_id
        if event.state is TaskState.READY and event.cause == HOST_BUSY and event.resource is not None:
            since, _ = self._since.get(task, (event.time, ""))
            self._since[task] = (since, event.resource)
            self._waiting.add(task)
            exclusive = any(
                r.name == event.resource and r.mode is Mode.EXCLUSIVE for r in self._requirements[task].requests
            )
            if exclusive:
                self._intents.want(event.resource, task)
        elif event.state in (TaskState.STARTED, TaskState.FINISHED) and task in self._waiting:
            since, resource = self._since[task]
            self.waited[task] = (event.time - since, resource)
            if event.state is TaskState.STARTED:
                self._waiting.discard(task)
        if event.state is TaskState.FINISHED:
            self._waiting.discard(task)
            self._intents.done(task)

    def task_waiting(self, event: TaskWaiting) -> None:
        pass

    def worker_changed(self, event: WorkerChanged) -> None:
        pass
