"""The ``pytest_restask_task_state`` hook: each task's transitions, told to plugins.

The same calls with and without ``-n``, so a plugin behaves the same either way:

* distributed: :class:`TaskStateHook` is the state machine's observer (see
  :mod:`.events`) and turns each :class:`~.events.TaskChanged` into a call;
* in process: :class:`LocalTaskStates` makes the same sequence from pytest's
  own loop -- every test ``requested``, ``triaging``, then ``ready`` (or
  ``finished`` with ``cannot run`` for a bad declaration, as triage does),
  ``started`` on ``"master"`` when its protocol begins and ``finished``
  when it ends; what the run stopped before it started is ``finished`` with
  ``not run: <why>`` at the end.

The reason on ``finished`` of a test that ran is its outcome, one word
(:class:`Outcomes`).  Both call the hook only when some plugin implements
it: a run without one pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Final, final

import pytest

from .declarations import declaration_error
from .events import ENDED_WORDS, Reason, TaskChanged, TaskState, TaskWaiting, WorkerChanged
from .resources import LockTable
from .settings import settings_of

__all__ = ["LOCAL_WORKER", "LocalTaskStates", "Outcomes", "TaskStateHook", "finished_reason", "has_listeners"]

#: The ``worker`` of tests run in process, as pytest-xdist names the controller.
LOCAL_WORKER: Final = "master"
#: The reason of a test that never ran: a bad declaration, an impossible request.
CANNOT_RUN: Final = "cannot run"
INTERRUPTED: Final = "the run was interrupted"

_REASONS: Final = {
    **ENDED_WORDS,
    Reason.INVALID: CANNOT_RUN,
    Reason.IMPOSSIBLE: CANNOT_RUN,
}


def has_listeners(config: pytest.Config) -> bool:
    """Return whether any plugin implements ``pytest_restask_task_state``."""
    return bool(config.hook.pytest_restask_task_state.get_hookimpls())


def not_run(why: str) -> str:
    """Return the reason of a test the run stopped before it started."""
    return f"not run: {why}"


def finished_reason(reason: Reason, detail: str, outcome: str) -> str:
    """Return the hook's ``reason`` for a finished task."""
    if reason is Reason.COMPLETED:
        return outcome
    if reason is Reason.ABORTED:
        return not_run(detail)
    return _REASONS[reason]


@final
class Outcomes:
    """The outcome of each test so far, one word, from its reports.

    ``failed`` (its call failed) > ``error`` (its setup or teardown failed) >
    ``xfailed``, ``xpassed``, ``skipped`` > ``passed``.  A report of a
    phase that will be run again (pytest-rerunfailures' ``rerun``) counts
    for nothing.
    """

    def __init__(self) -> None:
        self._words: dict[object, str] = {}

    def note(self, key: object, report: pytest.TestReport) -> None:
        """Take one report of the test ``key`` into account."""
        if report.outcome not in ("passed", "failed", "skipped"):
            return  # rerun, or a plugin's own
        word = self._words.get(key)
        if report.failed:
            new = "failed" if report.when == "call" else "error"
            self._words[key] = "failed" if word == "failed" else new
        elif word not in ("failed", "error") and report.when != "teardown":
            if hasattr(report, "wasxfail"):
                self._words[key] = "xfailed" if report.skipped else "xpassed"
            elif report.skipped:
                self._words[key] = "skipped"

    def word(self, key: object) -> str:
        """Return a test's outcome."""
        return self._words.get(key, "passed")

    def forget(self, key: object) -> None:
        """Forget a test's reports: it runs again."""
        self._words.pop(key, None)


@final
class TaskStateHook:
    """Calls ``pytest_restask_task_state`` for each task transition (an
    :class:`~.events.Observer` of the distributed run's state machine)."""

    def __init__(self, config: pytest.Config, outcome: Callable[[int], str]) -> None:
        self._hook = config.hook.pytest_restask_task_state
        self._outcome = outcome

    def task_changed(self, event: TaskChanged) -> None:
        reason = event.cause
        if event.state is TaskState.FINISHED:
            assert event.reason is not None
            reason = finished_reason(event.reason, event.detail, self._outcome(event.task_id))
        self._hook(nodeid=event.name, state=event.state.value, worker=event.worker, reason=reason)

    def task_waiting(self, event: TaskWaiting) -> None:
        pass

    def worker_changed(self, event: WorkerChanged) -> None:
        pass


@final
class LocalTaskStates:
    """The same calls for a run without workers; see the module docstring."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._outcomes = Outcomes()
        #: Items told ``ready`` (or ``started``) and not ``finished`` yet, by identity.
        self._open: dict[int, pytest.Item] = {}
        self._current: pytest.Item | None = None
        #: A listener raised: the run ends with pytest's internal error, and
        #: nothing more is told (a call at the session's end would raise
        #: again, outside pytest's handler).
        self._broken = False

    def _tell(self, item: pytest.Item, state: TaskState, worker: str | None = None, reason: str | None = None) -> None:
        if self._broken:
            return
        try:
            self._config.hook.pytest_restask_task_state(
                nodeid=item.nodeid, state=state.value, worker=worker, reason=reason
            )
        except BaseException:
            self._broken = True
            raise

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if not has_listeners(self._config):  # nobody listens: no cost per test
            self._config.pluginmanager.unregister(self)
            return
        if session.testsfailed and not self._config.option.continue_on_collection_errors:
            return  # pytest's loop stops before any test
        if self._config.option.collectonly:
            return
        table = LockTable(settings_of(self._config).capacities)
        for state in (TaskState.REQUESTED, TaskState.TRIAGING):
            for item in session.items:
                self._tell(item, state)
        for item in session.items:
            if declaration_error(item, table) is not None:
                self._tell(item, TaskState.FINISHED, reason=CANNOT_RUN)
            else:
                self._open[id(item)] = item
                self._tell(item, TaskState.READY)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        known = self._open.get(id(item)) is item
        if known:
            self._current = item
            self._outcomes.forget(item)
            self._tell(item, TaskState.STARTED, LOCAL_WORKER)
        result = yield
        if known:
            self._current = None
            del self._open[id(item)]
            self._tell(item, TaskState.FINISHED, LOCAL_WORKER, self._outcomes.word(item))
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._current is not None:
            self._outcomes.note(self._current, report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        why = str(session.shouldfail or session.shouldstop or INTERRUPTED)
        open_items, self._open = list(self._open.values()), {}
        for item in open_items:
            worker = LOCAL_WORKER if item is self._current else None
            self._tell(item, TaskState.FINISHED, worker, not_run(why))
