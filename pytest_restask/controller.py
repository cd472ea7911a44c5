"""The distributed session: runs the collected tests on worker processes.

Registered by :mod:`.plugin` when ``-n N`` asks for workers.  The
controller collects as pytest always does (so ``-k``, ``-m``, ``--lf``,
deselection and collection errors behave exactly as in a serial run), turns
the items into tasks, and drives the :class:`~.statemachine.StateMachine`
with the :class:`~.spawner.ExecnetSpawner`'s events.  What workers report
is replayed into pytest's own hooks (``pytest_runtest_logstart``,
``pytest_runtest_logreport``, ``pytest_warning_recorded``,
``pytest_runtest_logfinish``), so the terminal, ``--junitxml`` and other
plugins see the reports of a serial run.  No scheduling decision is made
here.

Tests that never reach a worker because their declaration is wrong run
here, in process, where the same check as without ``-n`` fails their setup:
the verdict is the same by construction.  A test whose worker crashed or
timed out gets a failed report for the phase it was in, then a teardown
report, so every reporter closes it.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final, Literal, TextIO, TypeAlias, final

import pytest

from . import heap
from .compat import CrashScheduler, WorkerNode
from .declarations import declaration_error, declaration_of, once_definitions
from .durations import Durations
from .events import Observer, Observers
from .hostlocks import WAITED_WORD, HostWaits, WriterIntents, waits_line
from .interrupts import interrupt_on_sigterm
from .messages import (
    CAPACITIES_KEY,
    LOCK_DIR_KEY,
    SHARD_WORKERS_KEY,
    AtTeardown,
    Done,
    Dones,
    Finished,
    HandBack,
    Interrupted,
    Missing,
    OnceEnded,
    OnceOutcome,
    Ran,
    Ready,
    Report,
    Setup,
    WarningRecorded,
    WireReport,
    WorkerFailed,
    collection_digest,
    finished_at,
    plain_dict,
)
from .once import SETUP, VALUE
from .record import RunRecord
from .resources import LockTable
from .settings import Settings
from .spawner import STOP_GRACE, Event, ExecnetSpawner
from .statemachine import OnceState, Reason, StateMachine, Task
from .taskstate import Outcomes, TaskStateHook, has_listeners
from .views import RunViews

__all__ = ["Controller"]

Phase: TypeAlias = Literal["setup", "call", "teardown"]

MISSING_TEXT: Final = (
    "{nodeid} was not collected on {worker}: the workers collected other tests than the controller; "
    "make the collection deterministic (no random parametrization)"
)
LOST_TEXT: Final = "{detail} while running {nodeid}"
COLLECTION_DIFFERS: Final = (
    "{worker} collected different tests than the controller; make the collection deterministic "
    "(for example, no random values in parametrize ids)"
)
NOT_ENDED: Final = "it had not ended when the run's last test was done"
KEYBOARD_TEXT: Final = "raised in {nodeid} on {worker} at {where}"
STILL_HELD: Final = "restask internal error: resources still held after the run: {holders}; please report this"
SUMMARY_TEXT: Final = (
    "restask: {tests} tests on {workers} workers in {wall:.2f}s; "
    "their setup, call and teardown add up to {busy:.2f}s ({ratio:.1f}x)"
)

#: Workers import this package before pytest can rewrite its asserts.  The
#: warning says nothing useful, and any such warning about another module is
#: raised on the controller as well, so it is still shown once.  (The text
#: after this prefix differs between pytest versions, and -W takes no regex.)
_REWRITE_FILTER: Final = "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"


def _worker_name(index: int) -> str:
    return f"gw{index}"


@final
class Controller:
    """The distributed session; see the module docstring."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        durations: Durations | None = None,
        clock: Callable[[], float] = time.monotonic,
        views: RunViews | None = None,
    ) -> None:
        self._config = config
        self._settings = settings
        #: Earlier runs' durations: the scheduler's estimates.
        self._durations = durations or Durations()
        self._clock = clock
        self._testrunuid = uuid.uuid4().hex
        #: The collected items; a task's id is its index here.
        self._items: list[pytest.Item] = []
        #: Which of several equal node ids each item is.
        self._occurrence: list[int] = []
        #: Tasks whose logstart was replayed.
        self._logged: set[int] = set()
        #: Outcome of each phase ("setup", "call", "teardown") reported for each task.
        self._phases: dict[int, dict[str, str]] = {}
        #: The report fields taken from the item, by task, while it runs.
        self._fields: dict[int, dict[str, Any]] = {}
        #: Tasks whose worker said they reached teardown.
        self._in_teardown: set[int] = set()
        #: What failing workers said before they ended, and which said it.
        self._worker_failures: dict[str, list[str]] = {}
        #: How a worker's collection differed from the controller's, by worker.
        self._collection_differences: dict[str, str] = {}
        #: The sorted node ids collected here, and their digest for the workers.
        self._nodeids: list[str] = []
        self._digest = ""
        #: The worker whose report is being replayed (for ``[gwN]`` in -v).
        self._replaying: str | None = None
        #: Seconds of setup, call and teardown the workers reported.
        self._busy = 0.0
        #: When the loop started and ended, by the controller's clock.
        self._span: tuple[float, float] | None = None
        self._settled = 0
        #: The session and machine of the running loop (for stop checks).
        self._session: pytest.Session | None = None
        self._machine: StateMachine | None = None
        self._workercount = 0
        #: Workers started before collection, until the loop takes them over.
        self._spawner: ExecnetSpawner | None = None
        #: The terminal's output while the loop runs (see _PacedOutput).
        self._output: _PacedOutput | None = None
        #: Workers whose current process said its session failed to start.
        self._start_failed: set[str] = set()
        #: Warnings workers raised as they ended, already shown: (module, class, text).
        self._config_warnings: set[tuple[str, str, str]] = set()
        #: The current process of each worker as plugins see it (pytest-xdist's hooks).
        self._nodes: dict[str, WorkerNode] = {}
        #: How many processes each worker name has had (for its --basetemp).
        self._generations: collections.Counter[str] = collections.Counter()
        #: Each task's outcome so far, for ``pytest_restask_task_state``.
        self._outcomes = Outcomes()
        #: Waits for host locks that other runs held (with host-wide resources).
        self._host_waits: HostWaits | None = None
        self._intents: WriterIntents | None = None
        #: The last outcome of each ``@once`` fixture's setup: (generation, kind, value or message).
        self._once_outcomes: dict[str, tuple[int, str, Any]] = {}
        #: The task whose report is being replayed (for its wait in -v).
        self._replaying_task: int | None = None
        #: Who shows the contention report and the timeline, and the record it keeps.
        self._views = views
        self._record: RunRecord | None = None

    # -- hooks --------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        terminal = self._config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.showfspath = False  # tests of many files interleave

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        """Start as many workers as the last run that selected tests the same
        way had tests to run, before collecting: their start-up and collection then overlap
        the controller's.  With nothing remembered, they start after it,
        one per runnable test at most."""
        if self._config.option.collectonly:
            return
        self._workercount = min(self._settings.workers, _remembered_runnable(self._config))
        if self._workercount:
            self._spawner = ExecnetSpawner(self._setup_for, self._locate, once_for=self._once_for)
            self._spawner.start_early(_worker_name(i) for i in range(self._workercount))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self._spawner is not None:  # started early, and the loop never ran
            self._spawner.kill_all()
            self._spawner = None
        # a worker whose session failed (a conftest that raises on workers) is
        # an error of the run even when the other workers ran every test
        if self._worker_failures and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> Generator[None, object, object]:
        result = yield
        worker = self._replaying
        if worker is None or not isinstance(result, tuple) or len(result) != 3:
            return result
        category, letter, word = result
        waits = self._host_waits
        waited = None if waits is None or self._replaying_task is None else waits.waited.get(self._replaying_task)
        after = "" if waited is None else " (" + WAITED_WORD.format(seconds=waited[0], resource=waited[1]) + ")"
        if isinstance(word, tuple) and word[0]:
            return category, letter, (f"[{worker}] {word[0]}{after}", word[1])
        if isinstance(word, str) and word:
            return category, letter, f"[{worker}] {word}{after}"
        return result

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        # the same entry checks as pytest's own loop
        if session.testsfailed and not self._config.option.continue_on_collection_errors:
            errors = session.testsfailed
            raise session.Interrupted(f"{errors} error{'s' if errors != 1 else ''} during collection")
        if self._config.option.collectonly:
            return True
        self._items = list(session.items)
        self._nodeids = sorted({item.nodeid for item in self._items})
        self._digest = collection_digest(self._nodeids)
        seen: dict[str, int] = {}
        for item in self._items:
            self._occurrence.append(seen.get(item.nodeid, 0))
            seen[item.nodeid] = self._occurrence[-1] + 1
        table = LockTable(self._settings.capacities)
        estimates = self._durations.estimates(item.nodeid for item in self._items)
        tasks = [self._task(index, item, table, estimates[index]) for index, item in enumerate(self._items)]
        runnable = sum(task.error is None for task in tasks)
        heap.freeze(self._config)
        _remember_runnable(self._config, runnable)
        if not runnable and self._spawner is not None:  # started early for nothing
            self._spawner.kill_all()
            self._spawner, self._workercount = None, 0
        # workers started early stay: a few idle ones cost less than a restart
        self._workercount = max(self._workercount, min(self._settings.workers, runnable))
        spawner = self._spawner or ExecnetSpawner(self._setup_for, self._locate, once_for=self._once_for)
        self._spawner = None  # the loop owns it now, and ends it
        spawner.collected(self._digest)
        machine = StateMachine(
            tasks,
            table,
            spawner,
            [_worker_name(i) for i in range(self._workercount)],
            task_timeout=self._settings.task_timeout,
            max_restarts=self._settings.max_restarts,
            # tasks sent ahead would start after a failure that reached the limit
            prefetch=not (
                self._settings.failfast or self._config.option.maxfail or self._config.getoption("stepwise", False)
            ),
            observer=self._observer(tasks),
            once={key: once.requirement for key, once in once_definitions(self._config).items()},
        )
        self._session = session
        completed = False
        # a CI job cancelled with SIGTERM ends like Ctrl-C: workers ended, a summary, exit 2
        restore_sigterm = interrupt_on_sigterm()
        try:
            with self._paced_terminal():
                self._loop(session, machine, spawner)
                self._drain(spawner)
            for worker in list(self._nodes):  # ended without a word, or not yet
                self._node_down(worker, NOT_ENDED)
            completed = True
            heap.freeze(self._config)
        finally:
            restore_sigterm()
            if self._record is not None:
                self._record.close()
            if self._intents is not None:
                self._intents.release_all()
            if completed:
                # waited for at pytest's cleanup, after the summary and every plugin's
                # unconfigure: a worker's interpreter takes a second to exit with 10,000 tests
                self._config.add_cleanup(spawner.close)
            else:
                spawner.kill_all()
        if not table.is_empty():
            holders = ", ".join(
                self._items[holder].nodeid if isinstance(holder, int) else repr(holder) for holder, _ in table.holders()
            )
            raise RuntimeError(STILL_HELD.format(holders=holders))
        if machine.aborted is not None and not (session.shouldfail or session.shouldstop):
            session.shouldfail = machine.aborted[1]
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def _observer(self, tasks: list[Task]) -> Observer | None:
        """Return who the state machine tells what happens: plugins'
        ``pytest_restask_task_state``, and the waits for host locks."""
        observers: list[Observer] = []
        if has_listeners(self._config):
            observers.append(TaskStateHook(self._config, self._outcomes.word))
        if self._settings.lock_dir is not None:
            self._intents = WriterIntents(self._settings.lock_dir)
            self._host_waits = HostWaits(self._intents, {task.id: task.requirement for task in tasks})
            observers.append(self._host_waits)
        if self._views is not None:
            requirements = {task.id: task.requirement for task in tasks if task.error is None}
            self._record = self._views.record_for(requirements, self._workercount, self._outcomes.word)
            if self._record is not None:
                observers.append(self._record)
        return observers[0] if len(observers) == 1 else Observers(observers) if observers else None

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self._span is not None and self._logged:
            wall = max(self._span[1] - self._span[0], 1e-9)
            text = SUMMARY_TEXT.format(
                tests=len(self._logged), workers=self._workercount, wall=wall, busy=self._busy, ratio=self._busy / wall
            )
            terminalreporter.write_line(text)
        if self._host_waits is not None and self._host_waits.waited:
            terminalreporter.write_line(waits_line(self._host_waits.waited.values()))
        for text, workers in self._worker_failures.items():
            who = "worker" if len(set(workers)) == 1 else "workers"
            terminalreporter.write_sep("-", f"{who} {_times(workers)} failed outside a test", red=True)
            terminalreporter.write_line(text.rstrip())
        for worker, text in sorted(self._collection_differences.items()):
            terminalreporter.write_sep("-", f"collection differs on {worker}", red=True)
            terminalreporter.write_line(text)
        if self._machine is not None:
            for line in self._machine.lost_outside_tests:
                terminalreporter.write_line(f"restask: {line}", yellow=True)

    # -- the loop -----------------------------------------------------------------

    def _loop(self, session: pytest.Session, machine: StateMachine, spawner: ExecnetSpawner) -> None:
        started = self._clock()
        self._machine = machine
        machine.step(started)
        self._settle(machine)
        while not machine.done:
            deadline = machine.next_deadline()
            event = self._next_event(spawner, None if deadline is None else max(0.0, deadline - self._clock()))
            if event is None:
                # a task past its limit may be done, its done message held back: look first
                caught_up = [spawner.catch_up(worker) for worker in machine.overdue(self._clock())]
                if not any(caught_up):
                    machine.tick(self._clock())
            else:
                self._handle(event, machine)
            self._settle(machine)
        self._span = (started, self._clock())
        if self._record is not None:  # the run's span ends here, not after the workers' shutdown
            self._record.close()
        machine.shutdown(self._span[1])

    def _next_event(self, spawner: ExecnetSpawner, timeout: float | None) -> Event | None:
        """Return the next event, or None after ``timeout`` seconds; the
        terminal shows what was written before the loop waits."""
        try:
            return spawner.events.get_nowait()
        except queue.Empty:
            pass
        if self._output is not None:
            self._output.release()
        try:
            return spawner.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def _drain(self, spawner: ExecnetSpawner) -> None:
        """Report what workers say while they shut down.

        A worker ends the session fixtures it kept at shutdown; a teardown
        error there arrives as a report of the last test it ran, a failing
        plugin as a worker failure, a plugin's warning as it ends as a
        warning, and its end as :class:`~.messages.Finished`.
        """
        deadline = self._clock() + STOP_GRACE
        while True:
            talking = spawner.talking()
            try:
                event = spawner.events.get(timeout=DRAIN_POLL if talking else 0)
            except queue.Empty:
                if not talking or self._clock() > deadline:
                    return
                continue
            if isinstance(event.message, Report):
                self._replay_reports(event.worker, event.message.task_id, event.message.reports)
            elif isinstance(event.message, WorkerFailed):
                self._worker_failed(event.worker, event.message)
            elif isinstance(event.message, Finished):
                self._node_finished(event.worker, event.message)
            elif isinstance(event.message, WarningRecorded):  # raised as the worker ended
                self._replay_warning(event.message)
            elif event.message is None:
                self._node_down(event.worker, event.cause)

    def _handle(self, event: Event, machine: StateMachine) -> None:
        now = self._clock()
        worker, message = event.worker, event.message
        if message is None:
            self._node_down(worker, event.cause)
            machine.worker_died(worker, event.cause, now, start_failed=worker in self._start_failed)
            self._start_failed.discard(worker)
        elif isinstance(message, Finished):
            self._node_finished(worker, message)
        elif isinstance(message, Ready):
            if message.nodeids:
                self._collection_differed(worker, message.nodeids, machine)
            else:
                self._node_ready(worker, message.pid)
                machine.worker_ready(worker, now)
        elif isinstance(message, Report):
            self._replay_reports(worker, message.task_id, message.reports)
        elif isinstance(message, AtTeardown):
            self._replay_reports(worker, message.task_id, message.reports)
            self._in_teardown.add(message.task_id)
            machine.reached_teardown(worker, message.task_id, self._clock())
        elif isinstance(message, Done):
            self._task_done(worker, message.task_id, message.reports, machine, message.ran)
        elif isinstance(message, Dones):
            for task_id, reports, ran in message.done:
                self._task_done(worker, task_id, reports, machine, ran)
        elif isinstance(message, WarningRecorded):
            self._replay_warning(message)
        elif isinstance(message, OnceOutcome):
            self._once_outcomes[message.key] = (message.generation, message.kind, message.payload)
            if message.kind == VALUE:
                machine.once_ready(message.key, message.generation, now)
            else:
                machine.once_failed(message.key, message.generation, now)
        elif isinstance(message, OnceEnded):
            machine.once_ended(worker, message.key, now)
        elif isinstance(message, HandBack):
            machine.hand_back(worker, message.task_id, message.resource, now)
        elif isinstance(message, Missing):
            item = self._items[message.task_id]
            self._report_failure(
                worker, message.task_id, "setup", MISSING_TEXT.format(nodeid=item.nodeid, worker=worker)
            )
            machine.task_done(worker, message.task_id, now)
        elif isinstance(message, WorkerFailed):
            self._worker_failed(worker, message)
        elif isinstance(message, Interrupted):
            nodeid = self._items[message.task_id].nodeid
            if message.kind == "exit":
                raise pytest.exit.Exception(message.text, message.returncode)
            raise KeyboardInterrupt(KEYBOARD_TEXT.format(nodeid=nodeid, worker=worker, where=message.text))
        else:
            raise AssertionError(f"unexpected message {message.name!r} from {worker}")

    def _task_done(self, worker: str, task_id: int, reports: list[WireReport], machine: StateMachine, ran: Ran) -> None:
        self._replay_reports(worker, task_id, reports)
        self._fields.pop(task_id, None)
        self._log_finish(task_id)
        if self._record is not None and len(ran) == 2:
            self._record.ran(task_id, ran[0], ran[1])
        now = self._clock()
        stop = finished_at(reports)  # by the wall clock, which the worker shares
        ended = None if stop is None else now - max(0.0, time.time() - stop)
        machine.task_done(worker, task_id, now, ended)

    @contextlib.contextmanager
    def _paced_terminal(self) -> Iterator[None]:
        """Pace the terminal reporter's output while the loop runs (see
        :class:`_PacedOutput`); everything is shown, and the file put back, at the end."""
        reporter = self._config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)  # pytest's TerminalWriter keeps its file in _file
        file = getattr(writer, "_file", None)
        if file is None or not callable(getattr(file, "write", None)):
            yield
            return
        output = self._output = _PacedOutput(file, self._clock)
        setattr(writer, "_file", output)  # noqa: B010 - private on purpose, see _PacedOutput
        # what hooks print() goes the same way, so it stays in order
        stdout, sys.stdout = sys.stdout, (output if sys.stdout is file else sys.stdout)
        try:
            yield
        finally:
            setattr(writer, "_file", file)  # noqa: B010
            if sys.stdout is output:
                sys.stdout = stdout
            self._output = None
            output.release()

    def _collection_differed(self, worker: str, nodeids: list[str], machine: StateMachine) -> None:
        """Stop the run: a worker that collected other tests might run the
        wrong one under a right name.  The worker is given nothing."""
        self._collection_differences[worker] = describe_difference(worker, self._nodeids, nodeids)
        reason = COLLECTION_DIFFERS.format(worker=worker)
        if self._session is not None and not self._session.shouldstop:
            self._session.shouldstop = reason
        machine.abort(Reason.ABORTED, reason, self._clock())

    def _check_stop(self) -> None:
        """Abort the queues as soon as a report reached pytest's failure limit,
        before anything else can start."""
        session, machine = self._session, self._machine
        if session is None or machine is None or machine.aborted is not None:
            return
        stop = session.shouldfail or session.shouldstop
        if stop:
            machine.abort(Reason.ABORTED, str(stop), self._clock())

    def _settle(self, machine: StateMachine) -> None:
        """Report the tasks that finished without a worker's reports."""
        while self._settled < len(machine.finished):
            task = machine.finished[self._settled]
            self._settled += 1
            if task.reason in (Reason.INVALID, Reason.IMPOSSIBLE):
                item = self._items[task.id]
                item.ihook.pytest_runtest_protocol(item=item, nextitem=None)
                self._check_stop()
            elif task.reason in (Reason.CRASHED, Reason.TIMEOUT):
                when = self._lost_phase(task.id)
                text = LOST_TEXT.format(detail=task.detail, nodeid=task.name)
                crashed = None
                if task.reason is Reason.CRASHED:  # a plugin may run it again (pytest_handlecrashitem)
                    crashed = CrashScheduler(self._config, can_retry=machine.aborted is None)
                self._report_failure(task.worker or "", task.id, when, text, crashed)
                if crashed is not None and crashed.pending:
                    self._forget_attempt(task.id)
                    machine.retry(task.id, self._clock())

    # -- replaying reports ---------------------------------------------------------

    def _replay_reports(self, worker: str, task_id: int, reports: list[WireReport]) -> None:
        fields = self._fields.get(task_id)
        if fields is None:  # one dict per task, shared by its reports
            fields = self._fields[task_id] = _item_fields(self._items[task_id])
            # what pytest-xdist's reports carry (pytest-rerunfailures reads them)
            fields.update(worker_id=worker, item_index=task_id, testrun_uid=self._testrunuid)
        for data in reports:
            if isinstance(data, list):  # a PlainPass
                when, duration, start, stop = data
                report = pytest.TestReport(
                    **fields, outcome="passed", longrepr=None, when=when, duration=duration, start=start, stop=stop
                )
            else:
                data.update(fields)
                report = self._config.hook.pytest_report_from_serializable(config=self._config, data=data)
            self._replay(worker, task_id, report)

    def _replay(self, worker: str, task_id: int, report: pytest.TestReport) -> None:
        self._log_start(task_id)
        self._phases.setdefault(task_id, {})[report.when or ""] = report.outcome
        self._outcomes.note(task_id, report)
        self._busy += report.duration
        if self._record is not None:
            self._record.reported(task_id, report.duration)
        self._replaying, self._replaying_task = worker, task_id
        try:
            self._config.hook.pytest_runtest_logreport(report=report)
        finally:
            self._replaying = self._replaying_task = None
        self._check_stop()

    def _report_failure(
        self, worker: str, task_id: int, when: Phase, text: str, crashed: CrashScheduler | None = None
    ) -> None:
        """Report a test that failed outside pytest's reach, then close it.

        A crashed test's report goes through ``pytest_handlecrashitem``
        first, as under pytest-xdist, with ``crashed`` as its scheduler.
        """
        item = self._items[task_id]
        if when not in self._phases.get(task_id, {}):  # lost after its last report: nothing to add
            report = _report(item, "failed", when, text)
            if crashed is not None:
                self._config.hook.pytest_handlecrashitem(crashitem=item.nodeid, report=report, sched=crashed)
            self._replay(worker, task_id, report)
        if "teardown" not in self._phases[task_id]:
            self._replay(worker, task_id, _report(item, "passed", "teardown", None))
        self._log_finish(task_id)

    def _forget_attempt(self, task_id: int) -> None:
        """Forget what was replayed of a task's attempt: it runs again."""
        self._logged.discard(task_id)
        self._phases.pop(task_id, None)
        self._fields.pop(task_id, None)
        self._in_teardown.discard(task_id)
        self._outcomes.forget(task_id)

    def _lost_phase(self, task_id: int) -> Phase:
        """Return the phase a test was in when its worker was lost.

        The call, unless it had run or could not run (setup not passed):
        then the teardown, so no phase is ever reported twice.
        """
        phases = self._phases.get(task_id, {})
        setup = phases.get("setup", "passed")
        if task_id in self._in_teardown or "call" in phases or setup != "passed":
            return "teardown"
        return "call"

    def _replay_warning(self, message: WarningRecorded) -> None:
        if message.when == "config":  # raised as a worker ended: once, however many workers raise it
            key = (message.category_module, message.category_name, message.message)
            if key in self._config_warnings:
                return
            self._config_warnings.add(key)
        instance = _rebuild_warning(message.category_module, message.category_name, message.message)
        category = type(instance)
        warning = warnings.WarningMessage(instance, category, message.filename, message.lineno)
        self._config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": warning,
                "when": message.when,
                "nodeid": message.nodeid,
                "location": message.location,
            }
        )

    def _log_start(self, task_id: int) -> None:
        if task_id not in self._logged:
            self._logged.add(task_id)
            item = self._items[task_id]
            self._config.hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)

    def _log_finish(self, task_id: int) -> None:
        item = self._items[task_id]
        self._log_start(task_id)
        self._config.hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    # -- tasks and workers ---------------------------------------------------------

    def _task(self, index: int, item: pytest.Item, table: LockTable, estimate: float) -> Task:
        error = declaration_error(item, table)
        if error is not None:
            return Task(index, item.nodeid, error=error)
        declaration = declaration_of(item)
        return Task(
            index,
            item.nodeid,
            declaration.requirement,
            timeout=declaration.timeout,
            estimate=estimate,
            once=declaration.once,
        )

    def _once_for(self, worker: str, task: Task) -> dict[str, list[Any]]:
        """Say what ``worker`` does with each ``@once`` fixture of ``task``
        (see :mod:`.once`): set it up, take its value, or fail."""
        machine = self._machine
        assert machine is not None
        told: dict[str, list[Any]] = {}
        for key in task.once:
            fixture = machine.once[key]
            if fixture.state is OnceState.SETTING and fixture.setter == task.id:
                told[key] = [SETUP, fixture.generation, None]
            elif fixture.state in (OnceState.READY, OnceState.FAILED):
                generation, kind, payload = self._once_outcomes[key]
                told[key] = [kind, generation, payload]
        return told

    def _locate(self, task: Task) -> tuple[str, int]:
        return self._items[task.id].nodeid, self._occurrence[task.id]

    def _setup_for(self, worker: str) -> Setup:
        """Make a worker process's first message, and its node for the
        plugins (``pytest_configure_node`` fills its ``workerinput``)."""
        params = self._config.invocation_params
        self._generations[worker] += 1
        # the controller owns stopping and distribution; see worker.py
        overrides = ["-n", "0", "--maxfail=0", "-W", _REWRITE_FILTER, f"--basetemp={self._basetemp(worker)}"]
        if self._config.pluginmanager.has_plugin("xdist"):
            overrides.append("--dist=no")
        workerinput = {
            "workerid": worker,
            "workercount": self._workercount,
            "testrunuid": self._testrunuid,
            "mainargv": list(sys.argv),
            SHARD_WORKERS_KEY: self._settings.shard_workers,
            CAPACITIES_KEY: dict(self._settings.capacities),
        }
        if self._settings.lock_dir is not None:
            workerinput[LOCK_DIR_KEY] = str(self._settings.lock_dir)
        node = self._nodes[worker] = WorkerNode(worker, self._config, workerinput, self._settings.workers)
        self._config.hook.pytest_configure_node(node=node)
        args = [*params.args, *overrides]
        return Setup(args=args, invocation_dir=str(params.dir), workerinput=plain_dict(workerinput))

    def _basetemp(self, worker: str) -> Path:
        """Return a worker process's ``--basetemp``: a folder of its own in
        the run's one numbered ``pytest-N`` folder (or in ``--basetemp``),
        as pytest-xdist does, so that pytest's retention keeps what it keeps
        serially and no worker removes another's (or an earlier run's) folders.
        A replacement gets a new folder: the one it replaces keeps the
        ``tmp_path`` of the test that crashed."""
        generation = self._generations[worker]
        name = f"popen-{worker}" if generation == 1 else f"popen-{worker}-{generation}"
        return run_basetemp(self._config) / name

    # -- the nodes plugins see (pytest-xdist's hooks) ------------------------------

    def _node_ready(self, worker: str, pid: int) -> None:
        node = self._nodes[worker]
        node.gateway.pid = pid
        node.ready = True
        self._config.hook.pytest_testnodeready(node=node)

    def _node_finished(self, worker: str, message: Finished) -> None:
        """A worker's session ended cleanly: its plugins' output is known."""
        node = self._nodes.get(worker)
        if node is not None and not node.down:
            node.finished(dict(message.workeroutput))
            self._node_down(worker, None)

    def _node_down(self, worker: str, error: str | None) -> None:
        """Tell plugins that a worker process that was ready ended, once."""
        node = self._nodes.get(worker)
        if node is not None and node.ready and not node.down:
            node.down = True
            self._config.hook.pytest_testnodedown(node=node, error=error)

    def _worker_failed(self, worker: str, message: WorkerFailed) -> None:
        """Keep what a worker said as it failed, for the summary (each text once)."""
        self._worker_failures.setdefault(message.text, []).append(worker)
        if message.boot:
            self._start_failed.add(worker)


def run_basetemp(config: pytest.Config) -> Path:
    """Return this run's base temporary folder, made as pytest makes it
    (the numbered ``pytest-N``, or ``--basetemp``).  pytest keeps its
    ``TempPathFactory`` in the private ``config._tmp_path_factory``."""
    factory: pytest.TempPathFactory = getattr(config, "_tmp_path_factory")  # noqa: B009 - private, see above
    return factory.getbasetemp()


#: Where the number of runnable tests of recent runs is kept, by selection.
RUNNABLE_KEY: Final = "restask/runnable"
#: How many command lines :data:`RUNNABLE_KEY` remembers.
RUNNABLE_KEPT: Final = 32


#: Options that choose which tests run; with the test paths they make the
#: key under which a run's size is remembered.  (Other options, such as
#: pytester's ever-new ``--basetemp``, do not change what runs.)
SELECTING_OPTIONS: Final = ("keyword", "markexpr", "lf", "deselect", "ignore", "ignore_glob", "shard")


def _command_line(config: pytest.Config) -> str:
    selection = [str(config.invocation_params.dir), *config.args]
    selection.extend(f"{name}={getattr(config.option, name, None)!r}" for name in SELECTING_OPTIONS)
    return "\0".join(selection)


def _remembered_runnable(config: pytest.Config) -> int:
    """Return how many tests the last run with this selection could run (0 if unknown)."""
    cache = getattr(config, "cache", None)
    known = None if cache is None else cache.get(RUNNABLE_KEY, None)
    count = known.get(_command_line(config)) if isinstance(known, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def _remember_runnable(config: pytest.Config, count: int) -> None:
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    known = cache.get(RUNNABLE_KEY, None)
    known = dict(known) if isinstance(known, dict) else {}
    key = _command_line(config)
    known.pop(key, None)  # to the end: the most recent are kept
    known[key] = count
    cache.set(RUNNABLE_KEY, dict(list(known.items())[-RUNNABLE_KEPT:]))


def describe_difference(worker: str, ours: list[str], theirs: list[str], shown: int = 10) -> str:
    """Say which node ids only the controller, and which only ``worker``, collected."""
    mine, other = collections.Counter(ours), collections.Counter(theirs)
    lines = [f"the controller collected {len(ours)} test ids, {worker} {len(theirs)}"]
    for title, ids in (
        ("only on the controller", sorted((mine - other).elements())),
        (f"only on {worker}", sorted((other - mine).elements())),
    ):
        if ids:
            lines.append(f"{title} ({len(ids)}):")
            lines.extend(f"    {nodeid}" for nodeid in ids[:shown])
            if len(ids) > shown:
                lines.append(f"    ... and {len(ids) - shown} more")
    return "\n".join(lines)


def _item_fields(item: pytest.Item) -> dict[str, Any]:
    """Return a report's :data:`~.messages.ITEM_FIELDS`, as pytest fills them in."""
    return {"nodeid": item.nodeid, "location": item.location, "keywords": dict.fromkeys(item.keywords, 1)}


def _report(
    item: pytest.Item, outcome: Literal["passed", "failed"], when: Phase, longrepr: str | None
) -> pytest.TestReport:
    return pytest.TestReport(
        **_item_fields(item),
        outcome=outcome,
        longrepr=longrepr,
        when=when,
        sections=[],
        user_properties=[],
    )


#: Seconds between two looks at whether every worker's channel has closed,
#: at the end of the run (a channel's close is no event).
DRAIN_POLL: Final = 0.01
#: Seconds between two writes to the terminal while the loop is busy.
PACE: Final = 0.05


@final
class _PacedOutput:
    """The terminal reporter's file while the loop runs.

    pytest flushes its terminal after every report: one ``write`` system
    call a test, which wakes whatever reads the output (a terminal, a CI
    log, a pipe).  Serially that is cheap, but with every core busy running
    tests the woken reader takes the controller's core, and each such write
    was measured at 65-95 µs -- about a third of all the controller does for
    a trivial test.  Here what is written is kept and passed on when the
    loop is about to wait for workers anyway, or at pytest's flush once
    :data:`PACE` seconds have passed since it was last passed on: the
    terminal lags by at most that.  Text the file cannot
    encode fails at once, as pytest expects (it then writes it escaped).
    ``sys.stdout``, when it is the same file, is paced alike, so that what a
    plugin prints stays in order with the reporter's output.
    """

    def __init__(self, file: TextIO, clock: Callable[[], float]) -> None:
        self._file = file
        self._clock = clock
        self._encoding = getattr(file, "encoding", None) or "utf-8"
        self._errors = getattr(file, "errors", None) or "strict"
        self._parts: list[str] = []
        self._last = clock()

    def write(self, text: str) -> int:
        text.encode(self._encoding, self._errors)  # raises UnicodeEncodeError as the file would
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self._clock() - self._last >= PACE:
            self.release()

    def release(self) -> None:
        """Pass on what was written, now."""
        self._last = self._clock()
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._file.write(text)
            self._file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _times(workers: list[str]) -> str:
    """Say which workers, and how often each: "gw0 (2 times), gw1", "gw1 (3 times)"."""
    counts = collections.Counter(workers)
    return ", ".join(name if n == 1 else f"{name} ({n} times)" for name, n in sorted(counts.items()))


def _rebuild_warning(module: str, name: str, text: str) -> Warning:
    """Return a worker's warning as an instance of its class, from the text
    it showed.  A class that cannot be found, or whose ``__init__`` does not
    take the text alone, becomes a ``UserWarning`` that names it."""
    found = getattr(sys.modules.get(module), name, None)
    if isinstance(found, type) and issubclass(found, Warning):
        try:
            return found(text)
        except Exception:  # a constructor of another signature: the fallback below
            pass
    return UserWarning(f"{module}.{name}: {text}")
