"""The messages between the controller and its workers.

One dataclass per message; :func:`to_wire` turns a message into plain
builtins that execnet can carry (``(name, fields)``), :func:`from_wire`
turns them back through one dispatch table, and an unknown name raises
:class:`ProtocolError` naming it.  The fields of the two messages that carry
many tasks (:class:`Ahead`, :class:`Dones`) cross as one ``marshal`` string
each: execnet's serializer is written in Python and took about 35 µs a test
to write and read a Dones, marshal takes 0.5 µs.  Both ends are the same
interpreter, so they read the same marshal format.  Reports cross as the dicts of
``pytest_report_to_serializable``, or, for the common phase that passed with
nothing to show, as a :data:`PlainPass` of four fields; the task id rides
beside them.

This module imports nothing but the standard library: the worker side
imports it before anything else of ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import struct
from collections.abc import Iterable
from typing import Any, ClassVar, Final, TypeAlias, final

__all__ = [
    "Ahead",
    "ITEM_FIELDS",
    "JOURNAL_DONE",
    "JOURNAL_TEARDOWN",
    "PlainPass",
    "Ran",
    "WireReport",
    "AtTeardown",
    "Collected",
    "Done",
    "Dones",
    "EndOnce",
    "Finished",
    "HandBack",
    "Interrupted",
    "Message",
    "Missing",
    "Next",
    "OnceEnded",
    "OnceOutcome",
    "ProtocolError",
    "Ready",
    "Report",
    "Setup",
    "Shutdown",
    "WarningRecorded",
    "WorkerFailed",
    "collection_digest",
    "finished_at",
    "from_wire",
    "journal_entry",
    "read_journal",
    "plain",
    "plain_dict",
    "to_wire",
    "uncarried",
]

#: The key in ``config.workerinput`` that marks a restask worker (its value: :data:`PROTOCOL_VERSION`).
WORKERINPUT_KEY: Final = "restask_protocol"
#: ``config.workerinput`` key: the workers per job that ``--shard`` balanced
#: for, so that a worker (run with ``-n 0``) splits as the controller did.
SHARD_WORKERS_KEY: Final = "restask_shard_workers"
#: ``config.workerinput`` key: the capacities of counted resources, as the
#: controller merged them from the ini file and ``pytest_restask_capacities``
#: (which is called once, on the controller).
CAPACITIES_KEY: Final = "restask_capacities"
#: ``config.workerinput`` key: the lock directory of host-wide resources, as
#: the controller resolved it (the same for the controller and its workers).
LOCK_DIR_KEY: Final = "restask_lock_dir"
#: Fields of a serialized report that the controller takes from its own
#: item instead (they are the item's): fewer bytes on the wire, and the
#: controller's reports share their strings with its items.
ITEM_FIELDS: Final = ("nodeid", "location", "keywords")
#: The kinds of line in a worker's journal (see :class:`Dones`): a task
#: answered ahead began its teardown, with its reports so far; a task was
#: done and held back, with its reports.
JOURNAL_TEARDOWN: Final = "teardown"
JOURNAL_DONE: Final = "done"
#: Bumped whenever a message changes shape.
PROTOCOL_VERSION: Final = 13

Wire: TypeAlias = tuple[str, dict[str, Any]]
#: When a task ran on its worker, by the worker's ``time.monotonic()`` (one
#: clock for every process of a host): ``[start, end]`` from the start of its
#: protocol to the end of its teardown; ``[start]`` while it is not done.
Ran: TypeAlias = list[float]
#: A phase that passed with no output, properties or extra attributes:
#: ``[when, duration, start, stop]``.  Most reports are such; this form is
#: a fraction of the full dict to build, carry and read back.
PlainPass: TypeAlias = list[Any]
#: A report on the wire: serialized data without the :data:`ITEM_FIELDS`,
#: or a :data:`PlainPass`.
WireReport: TypeAlias = dict[str, Any] | PlainPass


class ProtocolError(RuntimeError):
    """A message that this side does not understand."""


class Message:
    """Base of every message; subclasses are frozen dataclasses."""

    name: ClassVar[str]
    #: Fields that cross as ``marshal`` bytes: lists of many builtins.
    marshalled: ClassVar[tuple[str, ...]] = ()


# -- controller -> worker -------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Setup(Message):
    """The first message: how to start the worker's pytest session."""

    name: ClassVar[str] = "setup"
    #: The controller's command-line arguments, plus the worker's overrides.
    args: list[str]
    #: The directory pytest was started in.
    invocation_dir: str
    #: ``config.workerinput`` for the worker (xdist-compatible keys).
    workerinput: dict[str, Any]
    #: :func:`collection_digest` of the controller's items: a worker that
    #: collects anything else says so at once, with its list.
    collection: str = ""
    #: The worker was started before the controller finished collecting: the
    #: digest follows in :class:`Collected`, which the worker awaits before
    #: it says it is ready.
    collection_follows: bool = False
    #: A file in which the worker notes each :class:`Dones` entry before it
    #: holds it back, so that none is lost if the worker dies (see
    #: :class:`Dones`); empty: hold nothing back.
    journal: str = ""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Collected(Message):
    """The controller's collection digest, for a worker started early."""

    name: ClassVar[str] = "collected"
    collection: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Next(Message):
    """The task a worker runs next, or ``task_id=None`` for nothing now."""

    name: ClassVar[str] = "next"
    task_id: int | None
    nodeid: str = ""
    #: Which of several items with this node id (0 for the first).
    occurrence: int = 0
    #: Counted slot numbers by resource name.
    slots: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    #: Fixtures of the previous task may live on into this one.
    keep_fixtures: bool = False
    #: Nothing more is expected soon: end session-scoped fixtures too.
    final: bool = False
    #: What the task was granted, ``(name, mode, slots)`` each (see
    #: :func:`~.resources.grant_to_wire`): fixtures that need resources are checked
    #: against it, and live on into the task only where it keeps their hold.
    requests: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    #: What to do with each ``@once`` fixture the task uses, by key:
    #: ``[kind, generation, payload]`` (see :mod:`.once`).
    once: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class EndOnce(Message):
    """Tear down an ``@once`` fixture set up here: the last test that uses
    it has finished (sent only to an idle worker, inside a hold of what the
    fixture needs)."""

    name: ClassVar[str] = "end_once"
    key: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Ahead(Message):
    """Free tasks that follow what a busy worker was sent so far, in order.

    Each is as a :class:`Next` with ``keep_fixtures`` and no slots; the
    worker runs them one after another without asking.
    """

    name: ClassVar[str] = "ahead"
    marshalled: ClassVar[tuple[str, ...]] = ("tasks",)
    #: (task id, node id, occurrence) of each task.
    tasks: list[tuple[int, str, int]]

    def nexts(self) -> list[Next]:
        """Return each task as the :class:`Next` it stands for."""
        return [Next(task_id, nodeid, occurrence, keep_fixtures=True) for task_id, nodeid, occurrence in self.tasks]


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """Finish the session and exit."""

    name: ClassVar[str] = "shutdown"


# -- worker -> controller -------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Ready(Message):
    """The worker collected its tests and waits for work."""

    name: ClassVar[str] = "ready"
    pid: int
    collected: int
    #: The worker's node ids, sent only when they differ from the controller's.
    nodeids: list[str] = dataclasses.field(default_factory=list)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Report(Message):
    """Test reports sent on their own (most ride on :class:`AtTeardown`
    and :class:`Done`)."""

    name: ClassVar[str] = "report"
    task_id: int
    reports: list[WireReport]


@final
@dataclasses.dataclass(frozen=True, slots=True)
class WarningRecorded(Message):
    """A warning captured on the worker."""

    name: ClassVar[str] = "warning"
    message: str
    category_module: str
    category_name: str
    filename: str
    lineno: int
    when: str
    nodeid: str
    location: tuple[str, int, str] | None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class AtTeardown(Message):
    """A task reached its teardown; the worker waits for a :class:`Next`."""

    name: ClassVar[str] = "at_teardown"
    task_id: int
    #: Its reports so far (setup, call): the controller sees a failure
    #: before it decides what follows.
    reports: list[WireReport] = dataclasses.field(default_factory=list)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Done(Message):
    """A task's teardown is done: its resources may be released."""

    name: ClassVar[str] = "done"
    task_id: int
    #: Its reports not sent yet, in order.
    reports: list[WireReport] = dataclasses.field(default_factory=list)
    #: When it ran (:data:`Ran`).
    ran: Ran = dataclasses.field(default_factory=list)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Dones(Message):
    """Several tasks done, sent together: each as a :class:`Done` would be.

    Only tasks that were answered ahead and reported nothing but
    :data:`PlainPass` phases are held back for this, for up to
    a few dozen tasks or a few dozen milliseconds.  The worker writes each to its
    ``journal`` first (:func:`journal_entry`), so that the controller's side
    recovers the ones not sent yet when the worker dies: an entry
    ``(JOURNAL_DONE, task id, reports, ran)`` for each, and
    ``(JOURNAL_TEARDOWN, task id, reports so far, [start])`` when the
    teardown of a task answered ahead begins (those reports would otherwise
    go only with its Done).
    """

    name: ClassVar[str] = "dones"
    marshalled: ClassVar[tuple[str, ...]] = ("done",)
    #: (task id, its reports, when it ran) of each task, in the order they finished.
    done: list[tuple[int, list[WireReport], Ran]]


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Missing(Message):
    """The worker did not collect the task's test; it ran nothing for it."""

    name: ClassVar[str] = "missing"
    task_id: int
    nodeid: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class OnceOutcome(Message):
    """An ``@once`` fixture was set up here: its value, or why it failed."""

    name: ClassVar[str] = "once_outcome"
    #: "value" or "failed" (then ``payload`` is the message the other tests show).
    kind: str
    key: str
    generation: int
    payload: Any


@final
@dataclasses.dataclass(frozen=True, slots=True)
class OnceEnded(Message):
    """The teardown of an ``@once`` fixture asked for by :class:`EndOnce` ran
    (its error, if any, came before as a report of the last test run here)."""

    name: ClassVar[str] = "once_ended"
    key: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class HandBack(Message):
    """The worker could not take a host-wide lock of the task (another run
    holds ``resource``): it ran nothing for it and holds none of its locks."""

    name: ClassVar[str] = "hand_back"
    task_id: int
    resource: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class WorkerFailed(Message):
    """The worker's session failed outside any test (e.g. a conftest error)."""

    name: ClassVar[str] = "worker_failed"
    text: str
    #: It failed before it was ready for tests (configure, collection,
    #: ``pytest_sessionstart``): ``text`` holds all it said, and the process
    #: exits with pytest's exit code.
    boot: bool = False


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Finished(Message):
    """The worker's pytest session ended; its last message.

    ``workeroutput`` is ``config.workeroutput`` as plugins filled it (as
    pytest-xdist sends it): the controller hands it to
    ``pytest_testnodedown`` as ``node.workeroutput``.
    """

    name: ClassVar[str] = "finished"
    workeroutput: dict[str, Any]


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Interrupted(Message):
    """A test raised ``pytest.exit()`` or ``KeyboardInterrupt``: the run ends,
    as it would serially."""

    name: ClassVar[str] = "interrupted"
    task_id: int
    #: "exit" (``pytest.exit``) or "keyboard" (``KeyboardInterrupt``).
    kind: str
    #: ``pytest.exit``'s reason, or where the interrupt was raised.
    text: str
    #: ``pytest.exit``'s return code, if it gave one.
    returncode: int | None = None


_MESSAGES: Final[dict[str, type[Message]]] = {
    cls.name: cls
    for cls in (
        Setup,
        Collected,
        Next,
        Ahead,
        Shutdown,
        Ready,
        Report,
        WarningRecorded,
        AtTeardown,
        Done,
        Dones,
        Missing,
        HandBack,
        EndOnce,
        OnceOutcome,
        OnceEnded,
        WorkerFailed,
        Finished,
        Interrupted,
    )
}


def to_wire(message: Message) -> Wire:
    """Return a message as builtins for the channel."""
    assert dataclasses.is_dataclass(message)
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    for name in message.marshalled:
        try:
            fields[name] = marshal.dumps(fields[name])
        except ValueError:  # something marshal cannot hold, such as a float subclass
            fields[name] = marshal.dumps(plain(fields[name]))
    return (message.name, fields)


def from_wire(wire: object) -> Message:
    """Return the message that :func:`to_wire` made; raise for anything else."""
    if not (isinstance(wire, tuple) and len(wire) == 2 and isinstance(wire[1], dict)):
        raise ProtocolError(f"malformed message {wire!r:.200}")
    name, fields = wire
    cls = _MESSAGES.get(name)
    if cls is None:
        raise ProtocolError(f"unknown message {name!r}")
    fields = dict(fields)
    try:
        for field in cls.marshalled:
            fields[field] = marshal.loads(fields[field])
            if not isinstance(fields[field], list):
                raise TypeError(f"{field} is a {type(fields[field]).__name__}, not a list")
    except (KeyError, TypeError, ValueError, EOFError) as e:
        raise ProtocolError(f"message {name!r} has an unreadable field: {e!r}") from None
    try:
        return cls(**fields)
    except TypeError as e:
        raise ProtocolError(f"message {name!r} has the wrong fields: {e}") from None


def finished_at(reports: list[WireReport]) -> float | None:
    """Return when a task's last report says its phase ended (``time.time()``), if it does."""
    if not reports:
        return None
    last = reports[-1]
    stop = last[3] if isinstance(last, list) else last.get("stop")
    return stop if isinstance(stop, float) else None


def journal_entry(kind: str, task_id: int, reports: list[WireReport], ran: Ran | None = None) -> bytes:
    """Return one journal entry: its length, then the entry in marshal's format.

    Written for every quick test, so it must be cheap (a fifth of JSON's
    cost); the controller and its workers run the same interpreter, which
    reads it back (:func:`read_journal`).  Raises ValueError for a report
    that marshal cannot hold.
    """
    data = marshal.dumps((kind, task_id, reports, ran or []))
    return _LENGTH.pack(len(data)) + data


def read_journal(data: bytes) -> list[tuple[str, int, list[WireReport], Ran]]:
    """Return the entries of a journal; a torn last entry (the worker died
    while writing it) ends the list."""
    entries = []
    offset = 0
    while offset + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        start, offset = offset + _LENGTH.size, offset + _LENGTH.size + size
        if offset > len(data):
            break
        try:
            kind, task_id, reports, ran = marshal.loads(data[start:offset])
        except (EOFError, ValueError, TypeError):
            break
        entries.append((kind, task_id, reports, ran))
    return entries


_LENGTH: Final = struct.Struct("<I")


def collection_digest(nodeids: Iterable[str]) -> str:
    """Return a short fingerprint of a collection, in order."""
    digest = hashlib.sha256()
    for nodeid in nodeids:
        digest.update(nodeid.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


#: What execnet carries between processes (sets and frozensets too).
_CARRIED: Final = (type(None), bool, int, float, complex, str, bytes)


def uncarried(value: object, depth: int = 0) -> str | None:
    """Return what in ``value`` execnet cannot carry (None when it all can)."""
    if depth > 100:
        return "it is nested too deeply"
    if type(value) in _CARRIED:
        return None
    if type(value) in (list, tuple, set, frozenset):
        for element in value:  # type: ignore[attr-defined]
            found = uncarried(element, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, dict) and type(value) is dict:
        for key, element in value.items():
            found = uncarried(key, depth + 1) or uncarried(element, depth + 1)
            if found is not None:
                return found
        return None
    return f"it holds a {type(value).__module__}.{type(value).__qualname__}"


def plain_dict(value: dict[str, Any]) -> dict[str, Any]:
    """Return a dict of plugins' values (``workerinput``, ``workeroutput``)
    as builtins, by :func:`plain`."""
    return {str(key): plain(item) for key, item in value.items()}


def plain(value: object) -> object:
    """Return ``value`` as builtins that the channel can always carry.

    A report's data holds whatever tests and plugins put there: objects in
    ``user_properties``, a custom ``longrepr``, text with lone surrogates.
    Containers are rebuilt, subclasses of numbers and text become the
    builtin type (neither serializer takes subclasses), text is made
    encodable, and anything else becomes its ``str()``, so a report is shown
    as well as it can be rather than lost.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        text = str.__str__(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    try:
        text = str(value)  # as pytest shows a longrepr, and junitxml a property
    except Exception as e:  # a broken __str__ must not lose the report
        text = f"<{type(value).__qualname__} object: str() failed: {e!r}>"
    return plain(text)
