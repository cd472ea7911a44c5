"""The hooks restask offers other plugins and conftests (pluggy hookspecs).

Registered by the plugin's ``pytest_addhooks``.  Both are called on the
controller only (the process that runs ``pytest``), never on a worker:

* :func:`pytest_restask_capacities` once, at configure time;
* :func:`pytest_restask_task_state` at every transition of every task.

Implement them with ``@pytest.hookimpl(optionalhook=True)``, so that the
conftest keeps working where restask is not loaded (``-p no:restask``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

__all__ = ["pytest_restask_capacities", "pytest_restask_task_state"]


def pytest_restask_capacities(config: pytest.Config) -> Mapping[str, int] | None:
    """Return capacities of counted resources, ``{name: capacity}``, computed
    at run time (count the GPUs, read an environment variable).

    Merged over the ini file's ``restask_resources``: a hook's value wins over
    the ini's for the same name; of two implementations naming one resource,
    the one pluggy calls first (``tryfirst``, or registered later) wins.
    Called once, on the controller, before collection; workers and the
    ``--shard`` split get its result and never call it.  A capacity that is
    not a whole number of at least 1 stops the run with a usage error naming
    the resource and the plugin.  Return None to add nothing.
    """


def pytest_restask_task_state(nodeid: str, state: str, worker: str | None, reason: str | None) -> None:
    """Called at every transition of every task, in order, once each.

    ``state``: ``requested``, ``triaging``, ``ready``, ``started`` (handed to
    a worker, possibly queued ahead of it) or ``finished``.  ``worker``: the
    worker's id from ``started`` on (``"master"`` in a run without ``-n``),
    else None; on a return to ``ready`` the worker that gave the task back.
    ``reason``: on ``finished``, how it ended (``passed``, ``failed``,
    ``error``, ``skipped``, ``xfailed``, ``xpassed``, ``crashed``,
    ``timed out``, ``cannot run``, or ``not run: <why>`` for a task the run
    stopped before it started); on a return to ``ready``, ``requeued`` (its
    worker died before it began) or ``retry`` (a plugin runs a crashed test
    again); otherwise None.  Runs on the controller, in the scheduler's
    loop: keep it quick.
    """
