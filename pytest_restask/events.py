"""What the state machine tells: every task transition and worker phase.

The :class:`~.statemachine.StateMachine` calls an injected :class:`Observer`
(as it calls its spawner) at each change, with its own clock's time:

* :class:`TaskChanged` -- a task entered one of the five queues
  (:class:`TaskState`), with its worker once it has one, its grant when it
  starts, and its :class:`Reason` when it is finished;
* :class:`TaskWaiting` -- a ready task could not start, and what held it
  back (:class:`Blocker`): a resource another task holds, or the claim of a
  task waiting before it.  Told when that changes, not at every look;
* :class:`WorkerChanged` -- a worker process entered a :class:`WorkerPhase`.

Consumers (the ``pytest_restask_task_state`` hook, reports, a timeline)
read these and never poll the machine.  :class:`Observers` passes each
event to several.  Pure: imports neither pytest nor execnet.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, final

from .resources import Grant

__all__ = [
    "ENDED_WORDS",
    "HOST_BUSY",
    "Blocker",
    "Observer",
    "Observers",
    "Reason",
    "TaskChanged",
    "TaskState",
    "TaskWaiting",
    "WorkerChanged",
    "WorkerPhase",
]


@final
class Reason(enum.Enum):
    """Why a task is finished."""

    COMPLETED = "completed"
    INVALID = "invalid resource declaration"
    IMPOSSIBLE = "impossible resource request"
    CRASHED = "worker crashed"
    TIMEOUT = "timed out"
    ABORTED = "not run"


@final
class WorkerPhase(enum.Enum):
    """Where one worker process is in its life."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    KILLING = "killing"
    GONE = "gone"


@final
class TaskState(enum.Enum):
    """The queue a task is in (see :mod:`.statemachine`)."""

    REQUESTED = "requested"
    TRIAGING = "triaging"
    READY = "ready"
    STARTED = "started"
    FINISHED = "finished"


#: A finished test's outcome in one word, where the machine ended it (the
#: ``pytest_restask_task_state`` reason, the timeline's outcome).
ENDED_WORDS: Final = {Reason.CRASHED: "crashed", Reason.TIMEOUT: "timed out"}

#: Why a task went back to ``ready``: its worker died before the task began
#: (it was handed over or sent ahead), or a plugin asked to run a crashed one again.
REQUEUED = "requeued"
RETRY = "retry"
#: Why a task went back to ``ready``: another run on the host held one of its
#: host-wide resources (see :mod:`.hostlocks`), so its worker handed it back.
HOST_BUSY = "host busy"


@final
@dataclass(frozen=True, slots=True)
class TaskChanged:
    """A task entered ``state`` at ``time``."""

    time: float
    #: The task's id (its index in the collected items) and node id.
    task_id: int
    name: str
    state: TaskState
    #: The worker it was handed to (from ``started`` on; on a return to
    #: ``ready``, the worker that gave it back), else None.
    worker: str | None = None
    #: On ``finished``: why.
    reason: Reason | None = None
    #: On ``finished``: the detail of the reason (a crash's cause, why the run stopped).
    detail: str = ""
    #: On ``started``: what it was granted (resources, modes, slot numbers).
    grant: Grant | None = None
    #: On a return to ``ready``: :data:`REQUEUED`, :data:`RETRY` or :data:`HOST_BUSY`.
    cause: str | None = None
    #: With :data:`HOST_BUSY`: the host-wide resource another run held.
    resource: str | None = None


@final
@dataclass(frozen=True, slots=True)
class Blocker:
    """What keeps a ready task from starting.

    ``resource``: the resource in conflict (None when the conflict is with
    a serial task, which conflicts with everything).  ``holder``: the id of
    the task that holds it, or of the waiting task whose claim comes first
    (``claim`` True); -1 with ``other_run``: another run on the host holds
    the host-wide ``resource``, and the task waits to try again.
    """

    resource: str | None
    holder: int
    claim: bool = False
    other_run: bool = False

    def describe(self, names: dict[int, str] | None = None) -> str:
        """Say it in words: "'db' held by 3", "claim on 'db' of 4", "serial 2"."""
        who = str(self.holder) if names is None else names.get(self.holder, str(self.holder))
        if self.other_run:
            return f"{self.resource!r} held by another run"
        if self.resource is None:
            return f"serial {who}"
        if self.claim:
            return f"claim on {self.resource!r} of {who}"
        return f"{self.resource!r} held by {who}"


@final
@dataclass(frozen=True, slots=True)
class TaskWaiting:
    """A ready task could not start at ``time`` because of ``blocker``."""

    time: float
    task_id: int
    name: str
    blocker: Blocker


@final
@dataclass(frozen=True, slots=True)
class WorkerChanged:
    """A worker entered ``phase`` at ``time``."""

    time: float
    worker: str
    phase: WorkerPhase


class Observer(Protocol):
    """What the state machine tells as it goes; see the module docstring.

    Called synchronously, in order, from the machine's own calls: an
    observer must not call back into the machine.
    """

    def task_changed(self, event: TaskChanged) -> None:
        """A task entered a queue."""

    def task_waiting(self, event: TaskWaiting) -> None:
        """A ready task could not start, held back by something new."""

    def worker_changed(self, event: WorkerChanged) -> None:
        """A worker entered a phase."""


@final
class Observers:
    """Several observers as one, each told every event in turn."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self._observers = tuple(observers)

    def task_changed(self, event: TaskChanged) -> None:
        for observer in self._observers:
            observer.task_changed(event)

    def task_waiting(self, event: TaskWaiting) -> None:
        for observer in self._observers:
            observer.task_waiting(event)

    def worker_changed(self, event: WorkerChanged) -> None:
        for observer in self._observers:
            observer.worker_changed(event)
