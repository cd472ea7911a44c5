"""What a user sees of the schedule: the plan before a run, the contention
report and the timeline after it.

* :class:`PlanView` is the plugin of ``--plan`` and ``--plan-json``: the run
  collects (as ``--collect-only``, which those options turn on), and after
  collection (and after ``--shard`` kept this job's part) the view computes
  the :class:`~.plan.Plan` from the durations store and shows it in the
  terminal summary, or prints it as the only JSON document on stdout (the
  terminal's own output then goes to stderr).
* :class:`RunViews` keeps the :class:`~.record.RunRecord` of a run: the
  controller hands it the record it fills (:meth:`RunViews.record_for`);
  an in-process run fills it from pytest's hooks (only for ``--timeline``).
  After a parallel run that used resources it shows the contention report
  (:mod:`.contention`), and at the session's end, however it ended, it writes
  the ``--timeline`` (:mod:`.timeline`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Generator, Mapping
from typing import Final, final

import pytest

from .contention import CONTENTION_TITLE, contention, contention_lines
from .declarations import declaration_error, requirement_of
from .durations import Durations
from .events import Reason, TaskChanged, TaskState, WorkerChanged, WorkerPhase
from .holds import SLOTS_KEY
from .interrupts import interrupt_on_sigterm
from .plan import Plan, PlanTest, make_plan, plan_lines
from .record import RunRecord
from .resources import NOTHING, Grant, LockTable, Requirement, ResourceError
from .settings import Settings, owns_n
from .taskstate import LOCAL_WORKER, Outcomes
from .timeline import trace, write_trace

__all__ = [
    "PLAN_TITLE",
    "PLAN_XDIST_N",
    "TIMELINE_NOT_WRITTEN",
    "TIMELINE_WRITTEN",
    "PlanView",
    "RunViews",
    "plan_of_items",
]

#: The line that says where the timeline went, and the one that says it could not be written.
TIMELINE_WRITTEN: Final = "restask: timeline written to {path} (open it in https://ui.perfetto.dev or chrome://tracing)"
TIMELINE_NOT_WRITTEN: Final = "restask: could not write the timeline to {path}: {error}"

#: The title of the ``--plan`` section.
PLAN_TITLE: Final = "restask plan"
#: Said under the plan when pytest-xdist owns ``-n``.
PLAN_XDIST_N: Final = (
    "-n is pytest-xdist's in this run, so the plan is for 1 worker; name -p restask to plan for its -n"
)


def plan_of_items(items: list[pytest.Item], settings: Settings, store: Durations, workers: int) -> Plan:
    """Return the plan of running ``items`` on ``workers`` workers with the
    store's durations (its estimate for tests it does not know)."""
    table = LockTable(settings.capacities)
    fallback = store.fallback()
    tests, never = [], []
    for item in items:
        error = declaration_error(item, table)
        if error is not None:
            never.append((item.nodeid, error if item.nodeid in error else f"{item.nodeid}: {error}"))
            continue
        known = store.known.get(item.nodeid)
        seconds = fallback if known is None else known
        tests.append(PlanTest(item.nodeid, seconds, requirement_of(item), estimated=known is None))
    return make_plan(tests, workers, settings.capacities, settings.global_resources, settings.host_resources, never)


@final
class PlanView:
    """Shows the plan of the collected tests (``--plan``, ``--plan-json``)."""

    def __init__(self, config: pytest.Config, settings: Settings, store: Durations) -> None:
        self._config = config
        self._settings = settings
        self._store = store
        #: The plan, once collection is done.
        self.plan: Plan | None = None
        if settings.plan == "json":
            _terminal_to_stderr(config)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # workers: the -n given (the option, since a plan turns -n off), or 1 without it
        self.plan = plan_of_items(session.items, self._settings, self._store, self._settings.shard_workers)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        # here, not in the terminal summary: also with -p no:terminal
        if self.plan is None or self._settings.plan != "json":
            return
        data = self.plan.to_data()
        data["shard"] = None if self._settings.shard is None else "{}/{}".format(*self._settings.shard)
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        sys.stdout.flush()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.plan is None or self._settings.plan != "text":
            return
        terminalreporter.write_sep("=", PLAN_TITLE)
        for line in plan_lines(self.plan, all_terms=self._config.get_verbosity() > 0):
            terminalreporter.write_line(line)
        if self._config.getoption("numprocesses", None) and not owns_n(self._config):
            terminalreporter.write_line(PLAN_XDIST_N, yellow=True)


def _terminal_to_stderr(config: pytest.Config) -> None:
    """Put pytest's terminal on stderr, so that stdout holds only the JSON."""
    manager = config.pluginmanager
    reporter = manager.get_plugin("terminalreporter")
    if reporter is None:  # -p no:terminal
        return
    manager.unregister(reporter, "terminalreporter")
    manager.register(pytest.TerminalReporter(config, sys.stderr), "terminalreporter")


@final
class RunViews:
    """The contention report and the timeline of a run; see the module docstring."""

    def __init__(self, config: pytest.Config, settings: Settings, record_here: bool = True) -> None:
        self._config = config
        #: Whether this process's runs are restask's to record (not where pytest-xdist distributes).
        self._record_here = record_here
        self._settings = settings
        #: The run's record (None: nothing to show, or the run has not begun).
        self.record: RunRecord | None = None
        #: A test's outcome by task id, and what each task needed.
        self._outcome: Callable[[int], str] = _passed
        self._requirements: Mapping[int, Requirement] = {}
        self._workers = 0
        #: In process: the items by identity (their task ids), their outcomes, and the one running.
        self._ids: dict[int, int] = {}
        self._outcomes = Outcomes()
        self._running: tuple[int, pytest.Item] | None = None
        #: What became of the --timeline, to say in the summary.
        self._written = ""
        #: Puts SIGTERM's handler back (an in-process run that records turns it into Ctrl-C).
        self._restore: Callable[[], None] = _nothing

    def record_for(
        self, requirements: Mapping[int, Requirement], workers: int, outcome: Callable[[int], str]
    ) -> RunRecord | None:
        """Return the record the controller should fill (None: it need not):
        with ``--timeline``, or when some test needs a resource or runs alone."""
        if self._settings.timeline is None and all(r.is_free for r in requirements.values()):
            return None
        self.record = RunRecord(time.monotonic, self._settings.capacities, requirements)
        self._requirements, self._workers, self._outcome = requirements, workers, outcome
        return self.record

    # -- in process (--timeline without -n) ------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self._settings.workers or self._settings.timeline is None or self._config.option.collectonly:
            return
        if not self._record_here:
            return
        self.record = RunRecord(time.monotonic, self._settings.capacities)
        self._restore = interrupt_on_sigterm()  # a cancelled CI job still writes the timeline
        self._ids = {id(item): index for index, item in enumerate(session.items)}
        self._outcome = self._outcomes.word
        self.record.worker_changed(WorkerChanged(time.monotonic(), LOCAL_WORKER, WorkerPhase.STARTING))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        task_id = self._ids.get(id(item)) if self.record is not None and not self._settings.workers else None
        if task_id is None or self.record is None:
            return (yield)
        record, start = self.record, time.monotonic()
        record.task_changed(TaskChanged(start, task_id, item.nodeid, TaskState.STARTED, LOCAL_WORKER, grant=NOTHING))
        self._running = (task_id, item)
        try:
            result = yield
        finally:
            self._running = None
        # not reached when the run is interrupted: the test stays open, and the trace says so
        end = time.monotonic()
        record.ran(task_id, start, end)
        record.task_changed(TaskChanged(end, task_id, item.nodeid, TaskState.FINISHED, reason=Reason.COMPLETED))
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._running is None or self.record is None:
            return
        task_id, item = self._running
        self._outcomes.note(task_id, report)
        if report.when == "setup":  # its hold began before its setup: what it holds is known
            self.record.tasks[task_id].attempts[-1].grant = _grant_of(item)

    # -- after the run -----------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self._written:
            terminalreporter.write_line(self._written)
        record = self.record
        if record is None or not self._settings.workers or self._config.get_verbosity() < 0:
            return
        if all(r.is_free for r in self._requirements.values()):
            return
        record.close()
        report = contention(record, self._workers, record.durations, self._requirements, self._settings.capacities)
        terminalreporter.write_sep("-", CONTENTION_TITLE)
        for line in contention_lines(report, everything=self._config.get_verbosity() > 0):
            terminalreporter.write_line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self._restore()
        path, record = self._settings.timeline, self.record
        if path is None or self._config.option.collectonly or not self._record_here:
            return
        if record is None:  # no test ran (an error in collection): an empty trace, as asked
            record = RunRecord(time.monotonic)
        record.close()
        try:
            write_trace(path, trace(record, self._outcome))
        except OSError as e:
            self._written = TIMELINE_NOT_WRITTEN.format(path=path, error=e.strerror or e)
        else:
            self._written = TIMELINE_WRITTEN.format(path=path)


def _nothing() -> None:
    pass


def _passed(task_id: int) -> str:
    return "passed"


def _grant_of(item: pytest.Item) -> Grant:
    """Return what an in-process test held: its requirement and slots."""
    try:
        requirement = requirement_of(item)
    except ResourceError:
        return NOTHING
    return Grant(requirement, {name: tuple(slots) for name, slots in item.stash.get(SLOTS_KEY, {}).items()})
