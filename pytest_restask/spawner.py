"""execnet: starts, feeds, watches and replaces the worker subprocesses.

:class:`ExecnetSpawner` implements the state machine's
:class:`~.statemachine.Spawner` protocol.  Workers are execnet ``popen``
gateways, each started on its own thread so that they boot concurrently.
Everything a worker says, and its end, arrives as an :class:`Event` on one
queue that the controller drains; events of a replaced worker's earlier
process are dropped here, so a replacement keeps its ``gwN`` name safely.

Workers may be started early (:meth:`ExecnetSpawner.start_early`), while
the controller still collects, so that their own start-up and collection
overlap it; the state machine's first ``start_worker`` for such a worker
then finds it already on its way.  A worker started before the
controller's collection digest exists gets the digest in a
:class:`~.messages.Collected` message once :meth:`ExecnetSpawner.collected`
is called.

Each worker process has a journal file in a directory of the run; when the
process dies, the tasks it noted there as done but had not sent yet (see
:class:`~.messages.Dones`) are told before its end.

This is the only controller-side module that imports execnet.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

import execnet

from .cpus import usable_cpus
from .messages import (
    JOURNAL_DONE,
    JOURNAL_TEARDOWN,
    Ahead,
    AtTeardown,
    Collected,
    Done,
    Dones,
    EndOnce,
    Message,
    Next,
    Ran,
    Ready,
    Report,
    Setup,
    Shutdown,
    WireReport,
    WorkerFailed,
    from_wire,
    read_journal,
    to_wire,
)
from .resources import grant_to_wire
from .statemachine import Task

__all__ = ["KILL_GRACE", "STOP_GRACE", "Event", "ExecnetSpawner", "describe_exit"]

#: Seconds between asking a worker to end (SIGTERM) and forcing it (SIGKILL).
KILL_GRACE: Final = 2.0
#: Seconds a worker has to exit after a clean shutdown before it is killed.
STOP_GRACE: Final = 10.0

#: Runs in the fresh interpreter: the controller's import path, then the worker.
_BOOTSTRAP: Final = """
import sys
sys.path[:] = channel.receive()
from pytest_restask.worker import serve
serve(channel)
"""


@final
@dataclass(frozen=True, slots=True)
class Event:
    """Something a worker said (``message``) or its end (``message`` None)."""

    worker: str
    message: Message | None
    #: Why the process ended, when it did: "exit code 3", "signal 9 (SIGKILL)".
    cause: str = ""


@dataclass(eq=False)
class _Process:
    generation: int
    #: Its first message (made when it was asked for).
    setup: Setup
    gateway: execnet.Gateway | None = None
    channel: execnet.Channel | None = None
    popen: subprocess.Popen[bytes] | None = None
    #: Asked to end before its process existed; ``_start`` ends it.
    cancelled: bool = False
    #: Its setup said the collection digest follows, and it has not been sent.
    awaits_digest: bool = False
    #: Where the worker notes the Done messages it holds back (see
    #: :class:`~.messages.Dones`), the tasks whose Done was passed on, and
    #: those that sent a Report of their own.
    journal: str = ""
    delivered: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)
    #: Its end was told: nothing it sent later counts.
    over: bool = False
    #: The channel delivered its last message.
    closed: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


def describe_exit(returncode: int | None) -> str:
    """Return a process's end in words."""
    if returncode is None:
        return "unknown exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        text = f"signal {-returncode} ({name})"
        if -returncode == signal.SIGKILL:  # no process sends itself that by accident
            text += ", as sent by the out-of-memory killer or kill -9"
        return text
    return f"exit code {returncode}"


@final
class ExecnetSpawner:
    """Worker processes on execnet; see the module docstring."""

    def __init__(
        self,
        setup_for: Callable[[str], Setup],
        locate: Callable[[Task], tuple[str, int]],
        python: str | None = None,
        boot_slots: int | None = None,
        once_for: Callable[[str, Task], dict[str, list[Any]]] | None = None,
    ) -> None:
        #: Makes the first message for a worker by name.
        self._setup_for = setup_for
        #: How a task names its item to a worker: (node id, occurrence).
        self._locate = locate
        #: What a worker does with the ``@once`` fixtures of a task (see :mod:`.once`).
        self._once_for = once_for
        self._python = python or sys.executable
        #: Every worker event, in arrival order.
        self.events: queue.Queue[Event] = queue.Queue()
        self._group = execnet.Group()
        self._lock = threading.Lock()
        #: The current process of each worker.
        self._processes: dict[str, _Process] = {}
        self._generations = 0
        #: Workers started early whose first ``start_worker`` is still to come.
        self._early: set[str] = set()
        #: The controller's collection digest, once :meth:`collected` gave it.
        self._digest: str | None = None
        #: kill_all was called: nothing may start any more.
        self._closed = False
        #: How many workers may boot at once, and those booting (started,
        #: not yet ready or ended), and those waiting for their turn.
        self._boot_slots = max(boot_slots or usable_cpus(), 1)
        self._booting: set[_Process] = set()
        self._waiting: collections.deque[tuple[str, _Process]] = collections.deque()
        #: The directory of the workers' journals, made on the first start.
        self._journals: str | None = None

    # -- the Spawner protocol ---------------------------------------------------

    def start_worker(self, worker: str) -> None:
        if self._journals is None:  # only the controller's thread starts workers
            self._journals = _journal_directory()
        with self._lock:
            if self._closed:
                return
            if worker in self._early:  # already on its way (start_early)
                self._early.discard(worker)
                return
            self._generations += 1
            generation = self._generations
            journal = os.path.join(self._journals, f"{worker}.{generation}.journal")
        # made here, on the controller's thread: it calls plugins' hooks
        setup = self._setup_for(worker)
        with self._lock:
            process = self._processes[worker] = _Process(generation, setup=setup, journal=journal)
            self._waiting.append((worker, process))
        self._boot_next()

    def send_next(self, worker: str, task: Task | None, keep_fixtures: bool, final: bool) -> None:
        if task is None:
            message = Next(None, final=final)
        else:
            slots = {} if task.grant is None else {k: list(v) for k, v in task.grant.slots.items()}
            nodeid, occurrence = self._locate(task)
            once = self._once_for(worker, task) if task.once and self._once_for is not None else {}
            message = Next(task.id, nodeid, occurrence, slots, keep_fixtures, final, grant_to_wire(task.grant), once)
        self._send(worker, message)

    def end_once(self, worker: str, key: str) -> None:
        self._send(worker, EndOnce(key))

    def send_ahead(self, worker: str, tasks: Sequence[Task]) -> None:
        self._send(worker, Ahead([(task.id, *self._locate(task)) for task in tasks]))

    def kill_worker(self, worker: str) -> None:
        process = self._processes.get(worker)
        if process is None:
            return
        with self._lock:
            process.cancelled = True
            popen = process.popen
        if popen is None:
            return  # still starting: _start ends it as soon as it exists
        _signal_group(popen, signal.SIGTERM)
        threading.Thread(target=self._force, args=(process,), name=f"restask-kill-{worker}", daemon=True).start()

    def stop_worker(self, worker: str) -> None:
        self._send(worker, Shutdown())

    # -- the rest -------------------------------------------------------------------

    def start_early(self, workers: Iterable[str]) -> None:
        """Start workers before the state machine asks for them."""
        for worker in workers:
            self.start_worker(worker)
            with self._lock:
                self._early.add(worker)

    def collected(self, digest: str) -> None:
        """Give the collection digest to the workers started without it."""
        with self._lock:
            self._digest = digest
            for process in self._processes.values():
                if process.awaits_digest and process.channel is not None and not process.ended.is_set():
                    process.awaits_digest = False
                    with contextlib.suppress(OSError):
                        process.channel.send(to_wire(Collected(digest)))

    def close(self) -> None:
        """Wait for every worker to end (killing what will not), then the group."""
        self._forget_waiting()
        processes = list(self._processes.values())
        for process in processes:
            if not process.ended.wait(STOP_GRACE) and process.popen is not None:
                _signal_group(process.popen, signal.SIGKILL)
        self._group.terminate(timeout=KILL_GRACE)
        self._remove_journals()

    def talking(self) -> bool:
        """Return whether any worker may still say something: its channel
        is open and its process lives.  (A worker whose code returned closes
        its channel; its interpreter may take a while longer to exit.)"""
        processes = list(self._processes.values())
        return any(not (process.closed.is_set() or process.ended.is_set()) for process in processes)

    def kill_all(self) -> None:
        """End every worker at once (on an interrupt), also one still booting."""
        with self._lock:
            self._closed = True  # _start ends what it boots from now on
            processes = list(self._processes.values())
            for process in processes:
                process.cancelled = True
        self._forget_waiting()
        for process in processes:
            if process.popen is not None:
                _signal_group(process.popen, signal.SIGKILL)
        self._group.terminate(timeout=KILL_GRACE)
        self._remove_journals()

    def _remove_journals(self) -> None:
        if self._journals is not None:
            shutil.rmtree(self._journals, ignore_errors=True)

    def _boot_next(self) -> None:
        """Start waiting workers while fewer than ``boot_slots`` boot.

        Eight interpreters importing pytest at once on two cores make even
        the first of them ready late; booting a few at a time, the first
        worker starts on tests early and the rest follow.  A worker killed
        while it waited ends without a process.
        """
        while True:
            with self._lock:
                if not self._waiting or len(self._booting) >= self._boot_slots:
                    return
                worker, process = self._waiting.popleft()
                unwanted = process.cancelled or self._closed
                if not unwanted:
                    self._booting.add(process)
            if unwanted:
                self._end_unstarted(worker, process)
                continue
            name = f"restask-start-{worker}"
            threading.Thread(target=self._start, args=(worker, process), name=name, daemon=True).start()

    def _booted(self, process: _Process) -> None:
        """A worker said it is ready, or ended: its boot slot is free."""
        with self._lock:
            if process not in self._booting:
                return
            self._booting.discard(process)
        self._boot_next()

    def _forget_waiting(self) -> None:
        """End the workers that never got a boot slot (at the end of the run)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for worker, process in waiting:
            self._end_unstarted(worker, process)

    def _end_unstarted(self, worker: str, process: _Process) -> None:
        process.ended.set()
        self._emit(worker, process, Event(worker, None, "ended before it started"))

    def _send(self, worker: str, message: Message) -> None:
        process = self._processes[worker]
        if process.channel is None or process.ended.is_set():
            return  # it is ending; its end event is on the way
        with contextlib.suppress(OSError):  # the channel closed: the end event is on the way
            process.channel.send(to_wire(message))

    def _current(self, worker: str, process: _Process) -> bool:
        with self._lock:
            return self._processes.get(worker) is process

    def _start(self, worker: str, process: _Process) -> None:
        try:
            gateway = self._group.makegateway(f"popen//id={worker}.{process.generation}//python={self._python}")
            with self._lock:
                process.gateway = gateway
                # execnet keeps the subprocess private; its exit code names a crash
                process.popen = getattr(getattr(gateway, "_io", None), "popen", None)
                cancelled = process.cancelled
            if process.popen is not None:
                name = f"restask-watch-{worker}"
                threading.Thread(target=self._watch, args=(worker, process), name=name, daemon=True).start()
            if cancelled:
                self._close(process)
                return
            channel = gateway.remote_exec(_BOOTSTRAP)
            process.channel = channel
            channel.setcallback(lambda data: self._on_data(worker, process, data), endmarker=_END)
            channel.send(list(sys.path))
            with self._lock:  # against collected(): the digest goes in the setup or after it
                cancelled = process.cancelled
                if not cancelled:
                    setup = dataclasses.replace(process.setup, journal=process.journal)
                    if self._digest is None:
                        setup = dataclasses.replace(setup, collection_follows=True)
                    else:
                        setup = dataclasses.replace(setup, collection=self._digest)
                    channel.send(to_wire(setup))
                    process.awaits_digest = setup.collection_follows
            if cancelled:  # kill_all meanwhile: it never gets a session
                self._close(process)
        except Exception as e:
            process.ended.set()
            self._emit(worker, process, Event(worker, None, f"could not start: {e}"))

    def catch_up(self, worker: str) -> bool:
        """Pass on the Done messages a live worker noted in its journal but
        has not sent: a test that holds the interpreter (a long call into C)
        keeps the worker's sending thread from running.  Return whether there
        were any.  Called when a task seems to have run past its time limit;
        the task may long be done."""
        process = self._processes.get(worker)
        if process is None:
            return False
        with self._lock:
            if process.over:
                return False
            entries = _read_journal(process.journal)
            done = [(task_id, reports, ran) for kind, task_id, reports, ran in entries if kind == JOURNAL_DONE]
            return self._deliver(worker, process, Dones(done))

    def _on_data(self, worker: str, process: _Process, data: object) -> None:
        if data is not _END:
            message = from_wire(data)
            if isinstance(message, (Done, Dones, Report)):
                # in the order of the journal, against catch_up and _recover
                with self._lock:
                    self._deliver(worker, process, message)
            else:
                self._emit(worker, process, Event(worker, message))
            return
        process.closed.set()
        if process.popen is None:  # nothing to watch: the channel is all we know
            process.ended.set()
            self._emit(worker, process, Event(worker, None, "its channel closed"))
            return
        threading.Thread(target=self._close, args=(process,), daemon=True).start()

    def _close(self, process: _Process) -> None:
        """The worker's code ended (or it died): a gateway outlives the code it
        ran, so ask it to exit, and force it after a grace period."""
        if process.gateway is not None:
            with contextlib.suppress(OSError, EOFError):  # it is gone already
                process.gateway.exit()
        self._force(process)

    def _watch(self, worker: str, process: _Process) -> None:
        """Wait for a worker's process to end, then end what it left behind.

        Its death is told by the process, not by the channel: a child it
        forked may hold the channel open.  The group goes with it (children
        of a crashed test must not live on past its hold); then the channel's
        last messages are let through before the end is told.
        """
        assert process.popen is not None
        returncode = process.popen.wait()
        with contextlib.suppress(OSError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        if process.channel is not None:
            process.closed.wait(KILL_GRACE)
        self._recover(worker, process)
        process.ended.set()
        self._emit(worker, process, Event(worker, None, describe_exit(returncode)))

    def _recover(self, worker: str, process: _Process) -> None:
        """Tell what a dead worker noted in its journal but never sent (see
        :class:`~.messages.Dones`): the tasks it finished and held back, and
        the reports of the task whose teardown it died in."""
        with self._lock:
            done: list[tuple[int, list[WireReport], Ran]] = []
            in_teardown: dict[int, list[WireReport]] = {}
            for kind, task_id, reports, ran in _read_journal(process.journal):
                if task_id in process.delivered:
                    continue
                if kind == JOURNAL_TEARDOWN:
                    # a Report since then carried these reports, or there were none
                    in_teardown[task_id] = [] if task_id in process.reported else reports
                elif kind == JOURNAL_DONE:
                    in_teardown.pop(task_id, None)
                    done.append((task_id, reports, ran))
            self._deliver(worker, process, Dones(done))
            for task_id, reports in in_teardown.items():  # at most the last task
                self._put(worker, process, Event(worker, AtTeardown(task_id, reports)))
            process.over = True

    def _deliver(self, worker: str, process: _Process, message: Message) -> bool:
        """Queue what of a Done, Dones or Report is new (see
        :meth:`_first_delivery`); return whether anything was.  Call with the lock held."""
        new = self._first_delivery(process, message)
        if new is not None:
            self._put(worker, process, Event(worker, new))
        return new is not None

    def _first_delivery(self, process: _Process, message: Message) -> Message | None:
        """Return what of a Done, Dones or Report is new, noting it; call
        with the lock held.  A task's Done may come twice, from the channel
        and from the journal (:meth:`catch_up`): only the first counts."""
        if process.over:
            return None
        if isinstance(message, Report):
            process.reported.add(message.task_id)
            return message
        if isinstance(message, Done):
            if message.task_id in process.delivered:
                return None
            process.delivered.add(message.task_id)
            return message
        assert isinstance(message, Dones)
        done = [entry for entry in message.done if entry[0] not in process.delivered]
        process.delivered.update(entry[0] for entry in done)
        return Dones(done) if done else None

    def _put(self, worker: str, process: _Process, event: Event) -> None:
        """Queue an event of the worker's current process; call with the lock held."""
        if self._processes.get(worker) is process:
            self.events.put(event)

    def _force(self, process: _Process) -> None:
        if not process.ended.wait(KILL_GRACE) and process.popen is not None:
            _signal_group(process.popen, signal.SIGKILL)

    def _emit(self, worker: str, process: _Process, event: Event) -> None:
        if event.message is None or isinstance(event.message, (Ready, WorkerFailed)):
            self._booted(process)
        if self._current(worker, process):
            self.events.put(event)


_END: Final = object()


#: The prefix of the directories of the workers' journals, then the
#: controller's process id: a directory left by a controller that was
#: killed is removed by the next run.
JOURNALS_PREFIX: Final = "restask-journals-"


def _journal_directory() -> str:
    """Make this run's journal directory, and remove those of dead controllers."""
    pattern = re.compile(re.escape(JOURNALS_PREFIX) + r"(\d+)-\w+$")
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            found = pattern.match(name)
            if found is None or _alive(int(found.group(1))):
                continue
            path = os.path.join(base, name)
            if os.stat(path).st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{JOURNALS_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's: alive
        return True
    return True


def _read_journal(path: str) -> list[tuple[str, int, list[WireReport], Ran]]:
    """Return the entries of a worker's journal (none if it never wrote one)."""
    try:
        with open(path, "rb") as file:
            return read_journal(file.read())
    except OSError:
        return []


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    """Signal a worker's process group (its own pid), or just the worker."""
    try:
        os.killpg(popen.pid, signum)
    except OSError:
        with contextlib.suppress(OSError):
            popen.send_signal(signum)
