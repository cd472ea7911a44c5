"""pytest-xdist's hook specifications, for runs without pytest-xdist.

Plugins written for parallel runs talk to them through pytest-xdist's hooks
(pytest-cov fills ``node.workerinput`` in ``pytest_configure_node`` and reads
``node.workeroutput`` in ``pytest_testnodedown``).  Where pytest-xdist is
installed its own ``xdist.newhooks`` declares them; where it is not,
:mod:`.plugin` adds these, so that restask can call them and plugins that
implement them load.  Same names, arguments and ``firstresult`` as
pytest-xdist 3.x; :mod:`.compat` documents what restask calls and what each
argument is.  Hooks of xdist features restask does not have (rsync, gateway
set-up, schedulers) are declared so that their implementations load; they
are never called.
"""

from __future__ import annotations

from typing import Any

import pytest

# pluggy reads each spec's signature and options; the bodies never run.


@pytest.hookspec()
def pytest_xdist_setupnodes(config: pytest.Config, specs: Any) -> None:
    """Called before any remote node is set up (never called by restask)."""


@pytest.hookspec()
def pytest_xdist_newgateway(gateway: Any) -> None:
    """Called on new raw gateway creation (never called by restask)."""


@pytest.hookspec()
def pytest_xdist_rsyncstart(source: Any, gateways: Any) -> None:
    """Called before rsyncing a directory to remote gateways (never called by restask)."""


@pytest.hookspec()
def pytest_xdist_rsyncfinish(source: Any, gateways: Any) -> None:
    """Called after rsyncing a directory to remote gateways (never called by restask)."""


@pytest.hookspec(firstresult=True)
def pytest_xdist_getremotemodule() -> Any:
    """Called when creating remote node (never called by restask)."""


@pytest.hookspec()
def pytest_configure_node(node: Any) -> None:
    """Configure a worker node before it starts: fill ``node.workerinput``."""


@pytest.hookspec()
def pytest_testnodeready(node: Any) -> None:
    """A worker node is ready to run tests."""


@pytest.hookspec()
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """A worker node ended: ``error`` is None after a clean end, else why."""


@pytest.hookspec()
def pytest_xdist_node_collection_finished(node: Any, ids: Any) -> None:
    """Called by a node after it collected (never called by restask)."""


@pytest.hookspec(firstresult=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Return a scheduler for pytest-xdist (never called by restask)."""


@pytest.hookspec(firstresult=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Return the number of workers for ``-n auto``."""
    raise NotImplementedError


@pytest.hookspec(firstresult=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Any) -> None:
    """A test's worker crashed: change its report if need be, or ask
    ``sched.mark_test_pending(crashitem)`` to run it again."""
