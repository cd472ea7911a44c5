"""The worker side: runs inside each execnet subprocess.

The spawner sends a short bootstrap that sets ``sys.path`` and calls
:func:`serve`; :func:`serve` receives a :class:`~.messages.Setup` and runs
an ordinary ``pytest.main`` with :class:`WorkerSession` as a plugin.  The
session collects as usual, then, instead of pytest's own loop, asks the
controller for tasks one at a time.

The next item and teardown
--------------------------
pytest tears down after each test only what the next item does not share,
so it must know the next item at teardown; the controller only decides it
then (it cannot grant the next test's resources earlier).  So the worker
runs each item with ``nextitem=item`` -- pytest's own teardown then ends
nothing -- and its ``pytest_runtest_teardown`` hook, which runs first,
sends :class:`~.messages.AtTeardown`, waits for the :class:`~.messages.Next`
answer and ends exactly what the answer does not need.  (Between free
tests the controller sends the answer ahead, while the test runs: the
worker finds it already there and asks nothing.)  The answer is one of:

* a next task whose grant covers this one's: what the next item shares;
* a next task that does not: everything narrower than session scope, so no
  fixture ends outside the hold it was used under;
* nothing for now: everything narrower than session scope; session-scoped
  fixtures end when the worker shuts down (as with pytest-xdist);
* nothing, and ``final``: everything, as after the last test serially.

The teardown runs inside pytest's teardown phase, so a fixture error there
is this test's teardown error, as in a serial run.  The controller owns
stopping (``-x``, ``--maxfail``, ``--failfast``): the worker is started
with ``--maxfail=0`` and clears its session's stop flags after each test.

Faults
------
* The worker compares its collected ids with the controller's digest as
  soon as it has collected, and sends its list only when they differ; the
  controller then stops the run, naming the difference.
* ``pytest.exit()`` or ``KeyboardInterrupt`` in a test is sent as
  :class:`~.messages.Interrupted` before it ends this session as usual;
  the controller raises the same, so the run ends as it would serially.
* Session-scoped fixtures that a worker kept while idle end when it shuts
  down; an error there becomes a second teardown report of its last test.
* A daemon thread ends the worker, and its process group, once the
  controller is gone (re-parented), even in the middle of a hung test.
* A report that execnet cannot carry is sent again through
  :func:`~.messages.plain`.
* The Done messages of tests answered ahead are held back and sent
  together (:class:`_HeldDones`), after being noted in a journal file that
  the controller's side reads when the worker dies: a crash still costs
  only the test that crashed, and no other test's result is lost.

This module imports nothing of ours but the messages, :mod:`.holds` (with
the declarations it checks fixtures against) and the grants' wire form from
:mod:`.resources`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any, Final, Protocol, TextIO, final

import pytest

from pytest_restask.holds import Holds
from pytest_restask.hostlocks import HostLocks, Taken
from pytest_restask.messages import (
    ITEM_FIELDS,
    JOURNAL_DONE,
    JOURNAL_TEARDOWN,
    PROTOCOL_VERSION,
    WORKERINPUT_KEY,
    Ahead,
    AtTeardown,
    Collected,
    Done,
    Dones,
    EndOnce,
    Finished,
    HandBack,
    Interrupted,
    Message,
    Missing,
    Next,
    OnceEnded,
    OnceOutcome,
    ProtocolError,
    Ran,
    Ready,
    Report,
    Setup,
    Shutdown,
    WarningRecorded,
    WireReport,
    WorkerFailed,
    collection_digest,
    from_wire,
    journal_entry,
    plain,
    plain_dict,
    to_wire,
    uncarried,
)
from pytest_restask.once import OnceRunner
from pytest_restask.resources import Grant, Request, grant_from_wire
from pytest_restask.settings import settings_of

__all__ = ["WorkerSession", "serve"]


class Channel(Protocol):
    """The part of ``execnet.Channel`` the worker uses."""

    def send(self, item: object) -> None: ...

    def receive(self, timeout: float | None = None) -> Any: ...

    #: Raised by ``receive`` when nothing arrived within the timeout.
    TimeoutError: type[Exception]


class WorkerSession:
    """The pytest plugin that drives a worker's session from the channel."""

    def __init__(
        self,
        channel: Channel,
        workerinput: dict[str, Any],
        collection: str = "",
        collection_follows: bool = False,
        journal: str = "",
        boot_log: _BootLog | None = None,
    ) -> None:
        self._channel = channel
        #: What pytest wrote to stderr before the session started.
        self._boot_log = boot_log
        #: Done messages held back to go together (none without a journal).
        self._held = _HeldDones(self._send_wire, journal) if journal else None
        #: The controller's :func:`~.messages.collection_digest`.
        self._collection = collection
        #: The digest comes in a message of its own, once the controller has it.
        self._collection_follows = collection_follows
        #: Set on ``config`` before any other plugin configures.
        self._workerinput = workerinput
        #: ``config.workeroutput``: what plugins send back (see :class:`~.messages.Finished`).
        self.workeroutput: dict[str, Any] = {}
        #: An internal error before the session was ready, for the boot failure.
        self.boot_error = ""
        #: What a rerun of the current task (pytest-rerunfailures) ends at
        #: each teardown after the first: the same as the first's answer.
        self._teardown_target: pytest.Item | pytest.Session | None = None
        #: The answer that says which task follows the current one, for the
        #: fixtures that need resources (see :class:`~.holds.Holds`).
        self._following: Next | None = None
        #: The current hold, and the fixtures living under holds.
        self._holds: Holds | None = None
        #: Collected items by node id (a list: ids may repeat).
        self._items: dict[str, list[pytest.Item]] = {}
        #: The task being run: (task id, item), and whether it asked for its next.
        self._current: tuple[int, pytest.Item] | None = None
        self._asked = False
        #: The answer received during the current task's teardown.
        self._next: Next | None = None
        #: Tasks sent ahead (:class:`~.messages.Ahead`) not started yet, in order.
        self._pending: collections.deque[Next] = collections.deque()
        #: Reports of the current task not sent yet.
        self._reports: list[WireReport] = []
        #: The last task run, and its item: a shutdown's teardown belongs to it.
        self._last: tuple[int, pytest.Item] | None = None
        self._session: pytest.Session | None = None
        self._config: pytest.Config | None = None
        #: Whether passed phases with nothing to show travel as a PlainPass.
        self._plain_passes = False
        #: The current task's next was sent ahead: nobody waits for its Done.
        self._answered_ahead = False
        #: When the current task began, by ``time.monotonic()`` (see :data:`~.messages.Ran`).
        self._began = 0.0
        #: Host-wide locks (see :mod:`.hostlocks`), made at the first task that needs one.
        self._host: HostLocks | None = None
        #: The host locks of the task that follows, tried when its predecessor
        #: reached teardown: (task id, what was taken or found busy).
        self._taken: tuple[int, Taken] | None = None
        #: This worker's side of ``@once`` fixtures (see :mod:`.once`), and
        #: the teardowns asked for during a test, to run after it.
        self._once = OnceRunner(self._tell_once, uncarried)
        self._once_due: list[str] = []

    @property
    def started(self) -> bool:
        """Return whether the session reached the test loop."""
        return self._session is not None

    def send(self, message: Message) -> None:
        """Send a message, after the Done messages held back (they came first)."""
        if self._held is None:
            self._send_wire(to_wire(message))
            return
        with self._held.lock:
            self._held.flush()
            self._send_wire(to_wire(message))

    def _send_wire(self, wire: object) -> None:
        try:
            self._channel.send(wire)
        except OSError:
            raise  # the channel is gone: nothing to retry
        except Exception:
            # execnet carries builtins only; a report may hold anything
            self._channel.send(plain(wire))

    def _send_done(self, task_id: int, reports: list[WireReport]) -> None:
        """Say a task is done: held back when it was answered ahead and its
        reports are all :data:`~.messages.PlainPass`, else at once."""
        ran = [self._began, time.monotonic()]
        if self._held is not None and self._answered_ahead and all(isinstance(r, list) for r in reports):
            self._held.hold(task_id, reports, ran)
        else:
            self.send(Done(task_id, reports, ran))

    def flush(self) -> None:
        """Send the Done messages held back."""
        if self._held is not None:
            with self._held.lock:
                self._held.flush()

    def receive(self) -> Message:
        """Return the next message: a task sent ahead first, else from the
        channel (after sending what was held back: the controller may be
        waiting for it)."""
        if self._pending:
            return self._unpack(self._pending.popleft())
        self.flush()
        return self._unpack(from_wire(self._channel.receive()))

    def poll(self) -> Message | None:
        """Return a message that has already arrived, or None."""
        if self._pending:
            return self._pending.popleft()
        try:
            return self._unpack(from_wire(self._channel.receive(timeout=0)))
        except self._channel.TimeoutError:
            return None

    def _unpack(self, message: Message) -> Message:
        """Keep the tasks of an :class:`Ahead` in order, and return the first."""
        if not isinstance(message, Ahead):
            return message
        first, *rest = message.nexts()
        self._pending.extend(rest)
        return first

    # -- pytest hooks -------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_load_initial_conftests(self, early_config: pytest.Config) -> Generator[None, None, None]:
        # the xdist-compatible surface, before any conftest or plugin
        # configures (as pytest-xdist sets it): junitxml, the cache and others
        # skip their controller-only work where ``config.workerinput`` exists,
        # pytest-metadata fills ``config.workeroutput`` in a tryfirst configure
        setattr(early_config, "workerinput", self._workerinput)  # noqa: B010 - not declared on Config
        setattr(early_config, "workeroutput", self.workeroutput)  # noqa: B010
        self._config = early_config
        self._holds = Holds(early_config)
        early_config.pluginmanager.register(self._holds, "restask.holds")
        self._once.install()
        try:
            return (yield)
        except BaseException:
            self._once.uninstall()
            raise

    @pytest.hookimpl(wrapper=True)
    def pytest_unconfigure(self, config: pytest.Config) -> Generator[None, None, None]:
        """Send the warnings plugins raise as the worker ends to the controller,
        for its warnings summary (pytest-benchmark warns there that it is
        disabled under a parallel run); Python would print them in the
        middle of the controller's progress line."""
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            try:
                return (yield)
            finally:
                for record in records:
                    self._send_warning(record, "config", "", None)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.workeroutput["exitstatus"] = int(exitstatus)  # as pytest-xdist's workers

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        _quiet_terminal(session.config)
        # the terminal reporter took /dev/null as its file; with -s a test's
        # print() goes where its fd 1 goes: to the controller's stderr
        if session.config.getoption("capture") == "no":
            sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115

    def pytest_internalerror(self, excrepr: object) -> bool | None:
        # pytest prints it to stdout, which execnet points at /dev/null
        text = f"INTERNALERROR on the worker:\n{excrepr}"
        if self.started:
            self.send(WorkerFailed(text))
            return None
        # told once, with the rest of the boot failure (see serve); True:
        # pytest need not print it to stderr as well
        self.boot_error += text + "\n"
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self._session = session
        if self._boot_log is not None:
            self._boot_log.start()
        _terminal_to_stdout(session.config)
        # a plugin that serializes reports its own way gets every report whole
        # (asked now: conftests of subdirectories registered during collection)
        implementations = session.config.hook.pytest_report_to_serializable.get_hookimpls()
        self._plain_passes = {impl.plugin_name for impl in implementations} <= PYTEST_SERIALIZERS
        for item in session.items:
            self._items.setdefault(item.nodeid, []).append(item)
        nodeids = sorted(self._items.keys())
        if self._collection_follows:
            collected = self.receive()
            if not isinstance(collected, Collected):
                raise ProtocolError(f"expected 'collected' before work, got {collected.name!r}")
            self._collection = collected.collection
        # only a differing collection is sent whole: the controller names the difference
        same = not self._collection or collection_digest(nodeids) == self._collection
        self.send(Ready(os.getpid(), len(session.items), [] if same else nodeids))
        message = self._receive_work()
        while isinstance(message, Next) and message.task_id is not None:
            self._run(message)
            message = self._next if self._next is not None and self._next.task_id is not None else self._receive_work()
        if not isinstance(message, (Shutdown, Next)):
            raise ProtocolError(f"unexpected message {message.name!r} while idle")
        if self._last is not None:
            self._end_session_fixtures(*self._last)
        if self._host is not None:
            self._host.release_all()
        self._once.uninstall()
        self.flush()
        return True

    def _receive_work(self) -> Message:
        """Receive what an idle worker is sent: tear down each ``@once``
        fixture the controller ends, and return the next other message."""
        self._end_once_due()
        message = self.receive()
        while isinstance(message, EndOnce):
            self._end_once(message.key)
            message = self.receive()
        return message

    def _answer(self, message: Message | None, wait: bool) -> Message | None:
        """Return the answer to a teardown's question: an ``@once`` teardown
        that comes first waits until this test is done (between tests)."""
        while isinstance(message, EndOnce):
            self._once_due.append(message.key)
            message = self.receive() if wait else self.poll()
        return message

    def _end_once_due(self) -> None:
        due, self._once_due = self._once_due, []
        for key in due:
            self._end_once(key)

    def _end_once(self, key: str) -> None:
        """Tear down an ``@once`` fixture set up here.  An error is a second
        teardown report of the last test run here (as a session fixture's,
        serially, is the last test's)."""
        call = pytest.CallInfo.from_call(lambda: self._once.end(key), when="teardown")
        if call.excinfo is not None and self._last is not None:
            task_id, item = self._last
            self.send(Report(task_id, [self._serialize(pytest.TestReport.from_item_and_call(item, call))]))
        self.send(OnceEnded(key))

    def _tell_once(self, kind: str, key: str, generation: int, payload: object) -> None:
        self.send(OnceOutcome(kind, key, generation, payload))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        __tracebackhide__ = True  # a fixture's teardown error shows the fixture, as serially
        if self._current is None or self._current[1] is not item:
            return
        if self._asked:  # a rerun of the same test: end what its first teardown ended
            try:
                _teardown_to(item.session, self._teardown_target)
            finally:
                self._end_unheld()
            return
        self._ask_and_tear_down(self._current[0], item)

    def _ask_and_tear_down(self, task_id: int, item: pytest.Item) -> None:
        """Ask what follows a task, then end what the answer does not need."""
        __tracebackhide__ = True
        self._asked = True
        # Answered ahead (short free tests, see the state machine's
        # _send_ahead): nothing is sent now, and the setup and call reports
        # ride with Done.  They are noted in the journal first, so that a
        # crash in this teardown does not lose them.
        answer = self._answer(self.poll(), wait=False)
        self._answered_ahead = answer is not None
        if answer is not None and self._held is not None:
            self._held.note_teardown(task_id, self._reports, [self._began])
        if answer is None:
            self.send(AtTeardown(task_id, self._take_reports()))
            answer = self._answer(self.receive(), wait=True)
        if not isinstance(answer, Next):
            raise ProtocolError(f"expected 'next' at teardown, got {getattr(answer, 'name', answer)!r}")
        self._next = answer
        target: pytest.Item | pytest.Session | None = item.session
        following = answer
        if answer.task_id is not None:
            # tried now, while this task's locks are held: when another run
            # holds one, the next task is handed back, and this teardown ends
            # what this task's hold covered, as if nothing followed
            self._taken = (answer.task_id, self._take_host(answer, running=True))
            if self._taken[1].busy is not None:
                following = Next(None)
        if following.task_id is None:
            # an @once fixture set up here lives until the controller ends it
            target = None if answer.final and not self._once.owns() else item.session
        elif answer.keep_fixtures:
            target = self._lookup(answer) or item.session
        self._teardown_target = target
        self._following = following
        try:
            _teardown_to(item.session, target)
        finally:
            self._end_unheld()

    def _end_unheld(self) -> None:
        """End the fixtures that need what the next task does not keep holding."""
        __tracebackhide__ = True
        holds, answer = self._holds, self._following
        if holds is not None and holds.live:
            following = (
                None if answer is None or answer.task_id is None else grant_from_wire(answer.requests, answer.slots)
            )
            holds.end_unheld(following)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._current is None:
            return
        if report.when == "call" and report.passed and self._config is not None:
            # plugins settle a call's outcome where the terminal asks for its
            # status, which it does not here: pytest 9's subtests fails a
            # test that passed with failed subtests
            self._config.hook.pytest_report_teststatus(report=report, config=self._config)
        # sent with the next AtTeardown or Done, for fewer messages; a failure
        # at once, for the failure limit and so that a crash cannot lose it
        self._reports.append(self._serialize(report))
        if report.failed:
            self.send(Report(self._current[0], self._take_reports()))

    def _serialize(self, report: pytest.TestReport) -> WireReport:
        assert self._config is not None
        if self._plain_passes and _is_plain_pass(report):
            return [report.when, report.duration, getattr(report, "start", 0.0), getattr(report, "stop", 0.0)]
        data: dict[str, Any] = self._config.hook.pytest_report_to_serializable(config=self._config, report=report)
        for key in ITEM_FIELDS:  # the controller has them from its own item
            data.pop(key, None)
        return data

    def _take_reports(self) -> list[WireReport]:
        reports, self._reports = self._reports, []
        return reports

    def pytest_warning_recorded(
        self,
        warning_message: warnings.WarningMessage,
        when: str,
        nodeid: str,
        location: tuple[str, int, str] | None,
    ) -> None:
        if when != "runtest":
            return  # the controller configured and collected too, and warned itself
        self._send_warning(warning_message, when, nodeid, location)

    def _send_warning(
        self,
        warning_message: warnings.WarningMessage,
        when: str,
        nodeid: str,
        location: tuple[str, int, str] | None,
    ) -> None:
        category = warning_message.category or UserWarning
        self.send(
            WarningRecorded(
                message=str(warning_message.message),
                category_module=category.__module__,
                category_name=category.__qualname__,
                filename=str(warning_message.filename),
                lineno=int(warning_message.lineno or 0),
                when=when,
                nodeid=nodeid,
                location=None if location is None else (str(location[0]), int(location[1]), str(location[2])),
            )
        )

    # -- implementation -------------------------------------------------------

    def _lookup(self, message: Next) -> pytest.Item | None:
        items = self._items.get(message.nodeid, [])
        return items[message.occurrence] if message.occurrence < len(items) else None

    def _host_locks(self) -> HostLocks | None:
        """Return this worker's host locks, made at first use (None: the run has no host-wide resources)."""
        if self._host is None:
            assert self._config is not None
            settings = settings_of(self._config)
            if settings.lock_dir is not None:
                self._host = HostLocks(settings.lock_dir, settings.capacities, settings.host_resources)
        return self._host

    def _take_host(self, message: Next, running: bool = False) -> Taken:
        """Take the host locks of a task, or say which one another run holds
        (``running``: the test before it is still in its teardown)."""
        host = self._host_locks() if message.requests else None
        if host is None:
            return Taken({})
        return host.take(_requests(message), message.slots, running=running)

    def _keep_host_for(self, following: Next | None) -> None:
        """Release the host locks the task that follows does not take over
        (all of them when it was found busy, or when nothing follows)."""
        if self._host is None:
            return
        taken = self._taken
        takes_over = (
            following is not None and taken is not None and taken[0] == following.task_id and taken[1].busy is None
        )
        self._host.keep_only(_requests(following) if takes_over and following is not None else ())

    def _run(self, message: Next) -> None:
        assert message.task_id is not None
        assert self._session is not None
        self._next = None
        item = self._lookup(message)
        if item is None:
            self._taken = None
            self._keep_host_for(None)
            self.send(Missing(message.task_id, message.nodeid))
            return
        taken, self._taken = self._taken, None
        if taken is None or taken[0] != message.task_id:
            taken = (message.task_id, self._take_host(message))
        if taken[1].busy is not None:  # another run holds it: the controller retries later
            self._keep_host_for(None)
            self.send(HandBack(message.task_id, taken[1].busy))
            return
        grant = grant_from_wire(message.requests, message.slots)
        if taken[1].slots:  # the host's slot numbers, which other runs do not use now
            grant = Grant(grant.requirement, {**grant.slots, **taken[1].slots})
        self._current, self._asked, self._answered_ahead = (message.task_id, item), False, False
        self._last = self._current
        if message.once:
            if self._config is not None and not self._config.pluginmanager.is_registered(self._once):
                # its fixture hook only from the first task with an @once fixture on
                self._config.pluginmanager.register(self._once, "restask.once")
            self._once.where = f"{message.nodeid} on {self._workerinput.get('workerid')}"
            self._once.told(message.once)
        assert self._holds is not None
        self._began = time.monotonic()
        self._holds.enter(item, grant)
        try:
            item.ihook.pytest_runtest_protocol(item=item, nextitem=item)
        except pytest.exit.Exception as e:
            self.send(Report(message.task_id, self._take_reports()))
            self.send(Interrupted(message.task_id, "exit", e.msg, e.returncode))
            raise
        except KeyboardInterrupt as e:
            self.send(Report(message.task_id, self._take_reports()))
            self.send(Interrupted(message.task_id, "keyboard", _where(e)))
            raise
        finally:
            self._holds.leave(item)
            self._current = None
        if not self._asked:
            # a plugin ran the protocol without our teardown hook; ask now
            self._ask_and_tear_down(message.task_id, item)
        self._keep_host_for(self._next)
        self._send_done(message.task_id, self._take_reports())
        self._end_once_due()
        # the controller owns stopping; see the module docstring
        self._session.shouldfail = False
        self._session.shouldstop = False

    def _end_session_fixtures(self, task_id: int, item: pytest.Item) -> None:
        """End what a worker told "nothing for now" kept (its session-scoped
        fixtures), when it shuts down.

        Serially these end in the last test's teardown, so an error here is
        reported as a second teardown report of the last test this worker
        ran, which counts exactly as it would in a serial run.
        """
        assert self._session is not None
        session = self._session
        call = pytest.CallInfo.from_call(lambda: _teardown_to(session, None), when="teardown")
        if call.excinfo is not None:
            self.send(Report(task_id, [self._serialize(pytest.TestReport.from_item_and_call(item, call))]))


#: Done messages are held back until this many wait, or for at most this
#: many seconds: one message for a few dozen trivial tests, and the
#: controller's picture (terminal, timeouts) lags by no more than that.
HOLD_DONES: Final = 32
HOLD_SECONDS: Final = 0.05


@final
class _HeldDones:
    """Done messages of tasks answered ahead, sent together as one
    :class:`~.messages.Dones`.

    Each is first appended to the journal file (one entry, see
    :func:`~.messages.journal_entry`; the kernel
    keeps it even if this process is killed the next moment), so that when
    the worker dies the controller's side reads the ones it never received
    and a crash still costs exactly the test that crashed.  The reports of
    a task answered ahead are noted there too when its teardown begins
    (:meth:`note_teardown`): they would otherwise ride only with its Done,
    and a crash in that teardown would lose its passed setup and call.  A daemon thread
    sends what waited :data:`HOLD_SECONDS`, even while a test hangs, so a
    timeout is judged from when the hanging test really started.  ``lock``
    keeps these sends and the worker's own in order.
    """

    def __init__(self, send_wire: Callable[[object], None], journal: str) -> None:
        self.lock = threading.Lock()
        self._send_wire = send_wire
        self._held: list[tuple[int, list[WireReport], Ran]] = []
        self._fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._waiting = threading.Event()
        threading.Thread(target=self._send_late, name="restask-held-dones", daemon=True).start()

    def note_teardown(self, task_id: int, reports: list[WireReport], ran: Ran) -> None:
        """Note a task's reports so far as its teardown begins."""
        self._note(JOURNAL_TEARDOWN, task_id, reports, ran)

    def hold(self, task_id: int, reports: list[WireReport], ran: Ran) -> None:
        """Note a task as done, and send it with others."""
        self._note(JOURNAL_DONE, task_id, reports, ran)
        with self.lock:
            self._held.append((task_id, reports, ran))
            if len(self._held) >= HOLD_DONES:
                self.flush()
            elif len(self._held) == 1:
                self._waiting.set()

    def _note(self, kind: str, task_id: int, reports: list[WireReport], ran: Ran) -> None:
        try:
            entry = journal_entry(kind, task_id, reports, ran)
        except ValueError:  # a report marshal cannot hold: a crash loses it, as without a journal
            entry = journal_entry(kind, task_id, [], ran)
        os.write(self._fd, entry)

    def flush(self) -> None:
        """Send what is held; call with ``lock`` held."""
        if self._held:
            held, self._held = self._held, []
            self._send_wire(to_wire(Dones(held)))

    def _send_late(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(HOLD_SECONDS)
            self._waiting.clear()
            with self.lock, contextlib.suppress(OSError):  # OSError: the channel is gone
                self.flush()


#: pytest's own plugins on ``pytest_report_to_serializable``: "reports", and
#: on pytest 9 "subtests" (only for its SubtestReport, never a plain pass).
PYTEST_SERIALIZERS: Final = frozenset({"reports", "subtests"})


@functools.cache
def _plain_attributes() -> frozenset[str]:
    """The attributes of a report that pytest itself makes, on this version."""
    report = pytest.TestReport("n", ("f", 0, "d"), {}, "passed", None, "call")
    return frozenset(vars(report))


def _is_plain_pass(report: pytest.TestReport) -> bool:
    """Return whether a report is a passed phase with nothing to show: no
    output, no properties, nothing a plugin added (``wasxfail`` or others).
    Such a report is rebuilt on the controller from four numbers."""
    return (
        type(report) is pytest.TestReport
        and report.outcome == "passed"
        and report.longrepr is None
        and not report.sections
        and not report.user_properties
        and vars(report).keys() <= _plain_attributes()
    )


@final
class _QuietTerminal:
    """The worker's terminal reporter without its hooks.

    Nobody reads a worker's terminal (it is /dev/null): its hooks would only
    format every result for nothing and, at the end, run every plugin's
    terminal summary (hypothesis's imports all of hypothesis there, 0.6 s).
    But pytest and plugins ask for the reporter while tests run
    (``config.get_terminal_writer()`` for assertion diffs on pytest 8 and
    ``--setup-show``), so this stands in for it under its name: every
    attribute is the real reporter's, and pluggy finds no hook on it.
    """

    def __init__(self, reporter: object) -> None:
        self._reporter = reporter

    def __getattr__(self, name: str) -> object:
        return getattr(self._reporter, name)


def _quiet_terminal(config: pytest.Config) -> None:
    manager = config.pluginmanager
    reporter = manager.get_plugin("terminalreporter")
    if reporter is not None and not isinstance(reporter, _QuietTerminal):
        manager.unregister(reporter)
        manager.register(_QuietTerminal(reporter), "terminalreporter")


def _terminal_to_stdout(config: pytest.Config) -> None:
    """Point the worker's terminal writer at whatever ``sys.stdout`` is when
    it writes (see :class:`_CurrentStdout`), once the session is ready for tests.

    Its reporter shows nothing (see :class:`_QuietTerminal`), but plugins
    write to ``config.get_terminal_writer()`` while a test runs:
    pytest-timeout dumps the stacks of a test that timed out there, and
    serially that lands in the test's captured output.  Outside a test (and
    where capturing is suspended, as for ``--setup-show``) ``sys.stdout`` is
    /dev/null on a worker, and what is written goes nowhere, as before: the
    controller's progress line is not interrupted.  pytest keeps the file in
    the writer's private ``_file``.
    """
    writer = config.get_terminal_writer()
    if getattr(writer, "_file", None) is not None:
        setattr(writer, "_file", _CurrentStdout())  # noqa: B010 - private, see above


@final
class _CurrentStdout:
    """A file that writes to the ``sys.stdout`` of the moment: a test's
    capture while it runs, /dev/null on a worker otherwise (``-s``: fd 1)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)


def _requests(message: Next) -> tuple[Request, ...]:
    """Return what a task was granted, as requests (see :func:`~.resources.grant_from_wire`)."""
    return grant_from_wire(message.requests, {}).requirement.requests


def _where(error: BaseException) -> str:
    """Return "file:line" of the frame that raised ``error``."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown location"


def _teardown_to(session: pytest.Session, target: pytest.Item | pytest.Session | None) -> None:
    """End every fixture that ``target`` does not descend from.

    ``target`` is an item (keep what it shares), the session (keep only
    session scope) or None (end everything).  pytest keeps this stack in
    the private ``session._setupstate``; its ``teardown_exact`` only calls
    ``listchain()`` on the node, which the session has too.
    """
    __tracebackhide__ = True
    setupstate = getattr(session, "_setupstate")  # noqa: B009 - private on purpose, see above
    setupstate.teardown_exact(target)


def _environment(workerinput: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The pytest-xdist environment variables other plugins read."""
    yield "PYTEST_XDIST_WORKER", str(workerinput["workerid"])
    yield "PYTEST_XDIST_WORKER_COUNT", str(workerinput["workercount"])
    yield "PYTEST_XDIST_TESTRUNUID", str(workerinput["testrunuid"])


def serve(channel: Channel) -> None:
    """Run one worker: receive the setup, run pytest, report a failure."""
    # own process group: ending a hung test's worker ends its children too,
    # and Ctrl-C in the terminal reaches only the controller, which relays it
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _follow_parent(os.getppid())
    _stdout_to_stderr()
    setup = from_wire(channel.receive())
    if not isinstance(setup, Setup):
        raise ProtocolError(f"expected 'setup' first, got {setup.name!r}")
    os.chdir(setup.invocation_dir)
    os.environ.update(_environment(setup.workerinput))
    workerinput = dict(setup.workerinput, **{WORKERINPUT_KEY: PROTOCOL_VERSION})
    boot_log = _BootLog(sys.stderr)
    sys.stderr = boot_log
    session = WorkerSession(
        channel, workerinput, setup.collection, setup.collection_follows, setup.journal, boot_log=boot_log
    )
    try:
        code = pytest.main(setup.args, plugins=[session])
    except BaseException:
        channel.send(to_wire(WorkerFailed(boot_log.text() + traceback.format_exc(), boot=not session.started)))
        raise
    finally:
        boot_log.release()
    if not session.started:
        # told once, in full: what pytest printed and the internal error
        said = session.boot_error + boot_log.text()
        text = f"{said.rstrip()}\npytest ended before running tests (exit code {int(code)})".lstrip()
        channel.send(to_wire(WorkerFailed(text, boot=True)))
        sys.stdout.flush()
        os._exit(int(code))  # the controller names the exit code pytest gave
    channel.send(to_wire(Finished(plain_dict(session.workeroutput))))
    sys.stdout.flush()
    # Nothing more runs here but the interpreter's exit, which looks through
    # every object for garbage: about a second with 10,000 collected tests,
    # and the controller waits for it.  Frozen objects are not looked at.
    if hasattr(gc, "freeze"):  # not on PyPy
        gc.freeze()


@final
class _BootLog:
    """``sys.stderr`` until the session is ready for tests.

    pytest writes a usage error or a conftest's import error to
    ``sys.stderr``; on a worker that is the controller's terminal, and every
    replacement would write it again.  Until the session starts, what is
    written is kept here: a worker that fails to start sends it with its
    failure (shown once by the controller); one that starts writes it out.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._parts: list[str] = []
        self._released = False
        #: Warnings Python would print meanwhile (a plugin's ``warnings.warn``
        #: in ``pytest_configure``): the controller configured the same
        #: plugins and showed them, so they are told only in a failure.
        self._warnings: list[str] = []
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show_warning

    def _show_warning(self, *args: Any, **kwargs: Any) -> None:
        self._warnings.append(warnings.formatwarning(*args[:5]))

    def write(self, text: str) -> int:
        if self._released:
            return self._stream.write(text)
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self._released:
            self._stream.flush()

    def text(self) -> str:
        """Return what was kept, warnings first."""
        return "".join(self._warnings + self._parts)

    def release(self) -> None:
        """Pass on what comes (what was kept is not written)."""
        self._released = True
        if warnings.showwarning == self._show_warning:
            warnings.showwarning = self._showwarning
        if sys.stderr is self:
            sys.stderr = self._stream

    def start(self) -> None:
        """The session is ready: what was kept was no failure; write it out."""
        if not self._released:
            self._stream.write("".join(self._parts))
            self._parts.clear()
            self.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: Seconds between two looks at whether the controller still lives.
PARENT_POLL: Final = 0.5


def _follow_parent(parent: int) -> None:
    """End this worker, and what its tests started, once the controller is gone.

    A controller killed with SIGKILL cannot end its workers, and a worker in
    the middle of a long test would not read the closed channel until the
    test ends; a daemon thread notices that the process was re-parented.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        if os.getpgrp() == os.getpid():  # our own group: the test's children go too
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="restask-follow-parent", daemon=True).start()


def _stdout_to_stderr() -> None:
    """Point file descriptor 1 at the controller's stderr.

    execnet carries the channel on the worker's original stdin and stdout
    and points fd 1 at /dev/null; what a test's subprocess (or ``os.write``)
    sends to fd 1 outside capturing would be lost.  It goes to stderr
    instead, where the controller's terminal shows it.  ``sys.stdout``
    becomes /dev/null, for the worker's terminal reporter: the worker's own
    session header must not reach the terminal.  With ``-s`` tests get fd 1
    back as ``sys.stdout`` (see :meth:`WorkerSession.pytest_sessionstart`).
    """
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the whole life of the process
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
