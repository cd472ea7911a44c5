"""What a user sees of the schedule: the ``--plan`` before a run.

:class:`PlanView` is the plugin of ``--plan`` and ``--plan-json``: the run
collects (as ``--collect-only``, which those options turn on), and after
collection (and after ``--shard`` kept this job's part) the view computes
the :class:`~.plan.Plan` from the durations store and shows it in the
terminal summary, or prints it as the only JSON document on stdout (the
terminal's own output then goes to stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Final, final

import pytest

from .declarations import declaration_error, requirement_of
from .durations import Durations
from .plan import Plan, PlanTest, make_plan, plan_lines
from .resources import LockTable
from .settings import Settings

__all__ = ["PLAN_TITLE", "PlanView", "plan_of_items"]

#: The title of the ``--plan`` section.
PLAN_TITLE: Final = "restask plan"


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

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.plan is None:
            return
        if self._settings.plan == "json":
            data = self.plan.to_data()
            data["shard"] = None if self._settings.shard is None else "{}/{}".format(*self._settings.shard)
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            sys.stdout.flush()
            return
        terminalreporter.write_sep("=", PLAN_TITLE)
        for line in plan_lines(self.plan, all_terms=self._config.get_verbosity() > 0):
            terminalreporter.write_line(line)


def _terminal_to_stderr(config: pytest.Config) -> None:
    """Put pytest's terminal on stderr, so that stdout holds only the JSON."""
    manager = config.pluginmanager
    reporter = manager.get_plugin("terminalreporter")
    if reporter is None:  # -p no:terminal
        return
    manager.unregister(reporter, "terminalreporter")
    manager.register(pytest.TerminalReporter(config, sys.stderr), "terminalreporter")
