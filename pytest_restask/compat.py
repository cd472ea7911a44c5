"""pytest-xdist's plugin surface, in one place.

Plugins written for parallel runs talk to them through pytest-xdist's hooks
and objects; restask provides that surface whether or not pytest-xdist is
installed, so they work unchanged:

* on the controller, :class:`WorkerNode` stands for a worker as xdist's
  ``WorkerController`` does where plugins touch it (``workerinput``,
  ``workeroutput``, ``gateway.id``, ``gateway._rinfo()``, ``config``,
  ``nodemanager.roots``); the controller calls ``pytest_configure_node``
  before each worker process starts (a replacement gets a fresh node),
  ``pytest_testnodeready`` when it is ready, and ``pytest_testnodedown``
  once when a worker that was ready ends, with ``node.workeroutput`` as the
  worker sent it (set only after a clean end, as xdist does);
* on a worker, ``config.workerinput`` and ``config.workeroutput`` (set by
  :mod:`.worker`) and the ``PYTEST_XDIST_WORKER*`` environment variables;
* the ``worker_id`` and ``testrun_uid`` fixtures, where xdist does not
  provide them;
* ``pytest_handlecrashitem`` for a test whose worker crashed, with a
  scheduler that can run it again (:class:`CrashScheduler`);
* two plugins that enable their xdist support only when pytest-xdist itself
  is installed get it here too (:func:`enable_plugins_xdist_support`).

No ``--dist`` modes, no ``--tx`` or rsync: those hooks are declared
(:mod:`.xdisthooks`) but never called.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any, Final, final

import pytest

__all__ = [
    "CRASH_NOT_RERUN",
    "CrashScheduler",
    "GatewayInfo",
    "WorkerNode",
    "enable_plugins_xdist_support",
    "testrun_uid",
    "worker_id",
]

#: Why a crashed test is not run again once the run is stopping.
CRASH_NOT_RERUN: Final = "the run is stopping: restask starts no test again after its worker crashed"


def _workerinput(config: pytest.Config) -> dict[str, object]:
    workerinput = getattr(config, "workerinput", None)
    return workerinput if isinstance(workerinput, dict) else {}


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """The id of this worker ('gw0', 'gw1', ...), or 'master' in process."""
    return str(_workerinput(request.config).get("workerid", "master"))


@pytest.fixture(scope="session")
def testrun_uid(request: pytest.FixtureRequest) -> str:
    """An id shared by every worker of this run."""
    return str(_workerinput(request.config).get("testrunuid") or uuid.uuid4().hex)


@final
class _RemoteInfo:
    """What ``execnet.Gateway._rinfo()`` answers: the worker's interpreter."""

    def __init__(self, pid: int | None) -> None:
        self.executable = sys.executable
        self.version_info = tuple(sys.version_info[:5])
        self.platform = sys.platform
        self.cwd = os.getcwd()
        #: The worker's pid once it is known (None before it is ready).
        self.pid = pid


@final
class GatewayInfo:
    """The part of an execnet gateway that plugins read from a node.

    Workers are local processes of the controller's own interpreter, so
    what ``_rinfo()`` tells of the remote side is known here without asking.
    """

    def __init__(self, worker: str) -> None:
        #: The worker's name, "gw0".
        self.id = worker
        #: Its process id, once it said it is ready.
        self.pid: int | None = None

    def _rinfo(self, update: bool = False) -> _RemoteInfo:
        return _RemoteInfo(self.pid)


@final
class _NodeManager:
    """xdist's NodeManager, as far as plugins read it: no rsync roots."""

    def __init__(self, workers: int) -> None:
        self.roots: list[str] = []
        self.specs: list[str] = [f"popen//id=gw{index}" for index in range(workers)]


@final
class WorkerNode:
    """A worker as plugins see it in xdist's hooks (its ``WorkerController``)."""

    def __init__(self, worker: str, config: pytest.Config, workerinput: dict[str, Any], workers: int) -> None:
        self.config = config
        self.gateway = GatewayInfo(worker)
        self.nodemanager = _NodeManager(workers)
        #: What the worker gets as ``config.workerinput``; plugins add to it
        #: in ``pytest_configure_node``.  Builtins only (execnet carries it).
        self.workerinput = workerinput
        # ``workeroutput`` (what the worker's plugins put in ``config.workeroutput``)
        # is set only once the worker ended cleanly: plugins test for it with
        # hasattr, as pytest-xdist sets it only then (see :meth:`finished`).
        #: ``pytest_testnodeready`` was called for it: only then is
        #: ``pytest_testnodedown`` (a worker that never was ready ran no test,
        #: and its failure to start is restask's to report).
        self.ready = False
        #: ``pytest_testnodedown`` was called for it.
        self.down = False
        #: xdist's flag for a node it asked to shut down; restask never sets
        #: it (plugins only read it), and a node is told down once, with ``down``.
        self.shutting_down = False

    def finished(self, workeroutput: dict[str, Any]) -> None:
        """The worker ended cleanly and sent its ``config.workeroutput``."""
        self.workeroutput = workeroutput

    def __repr__(self) -> str:
        return f"<WorkerNode {self.gateway.id}>"


@final
class CrashScheduler:
    """The ``sched`` of ``pytest_handlecrashitem``.

    A plugin that wants a crashed test run again calls
    ``mark_test_pending(nodeid)`` (pytest-rerunfailures does, while the test
    has reruns left); the controller then hands the test back to the state
    machine, which runs it again, on any worker, with its resources.  Once
    the run is stopping (failfast, the restart limit) nothing runs again:
    it raises ``NotImplementedError`` as xdist's schedulers without it do,
    and the crash stays a failure.
    """

    def __init__(self, config: pytest.Config, can_retry: bool) -> None:
        self.config = config
        self._can_retry = can_retry
        #: The node ids a plugin asked to run again.
        self.pending: list[str] = []

    def mark_test_pending(self, item: str) -> None:
        if not self._can_retry:
            raise NotImplementedError(CRASH_NOT_RERUN)
        self.pending.append(item)


def enable_plugins_xdist_support(config: pytest.Config) -> None:
    """Give plugins that support xdist only when xdist is installed their
    support in a restask run without it (called on the controller and on
    workers, only where pytest-xdist is not loaded).

    * pytest-randomly sends its seed to workers from ``pytest_configure_node``,
      in hooks it registers only where the ``xdist`` plugin is loaded: its
      own hooks are registered here.
    * pytest-rerunfailures, likewise, keeps its count of each test's attempts
      in one place for all workers (a server on the controller, clients on
      the workers, connected through ``workerinput``) and cleans superseded
      subtest reports from the controller's statistics only with the
      ``xdist`` plugin loaded: its configuration for that case is made here.
      It also shows a rerun's first attempts on a worker only where an
      installed pytest-xdist is 1.20 or later (older ones stopped a worker
      at the first report); restask has no such limit.
    """
    manager = config.pluginmanager
    worker = bool(_workerinput(config))
    randomly_hooks = getattr(manager.get_plugin("randomly"), "XdistHooks", None)
    if randomly_hooks is not None and not worker and not manager.has_plugin("restask.randomly"):
        manager.register(randomly_hooks(), "restask.randomly")
    rerunfailures = manager.get_plugin("rerunfailures")
    if rerunfailures is None or manager.has_plugin("restask.rerunfailures"):
        return
    hooks = getattr(rerunfailures, "XDistHooks", None)
    server, client = getattr(rerunfailures, "ServerStatusDB", None), getattr(rerunfailures, "ClientStatusDB", None)
    if hooks is not None and server is not None and client is not None:
        workerinput = _workerinput(config)
        db = client(workerinput["sock_port"], workerinput["statusdb_token"]) if worker else server()
        setattr(config, "failures_db", db)  # noqa: B010 - where pytest-rerunfailures keeps it
        manager.register(hooks(), "restask.rerunfailures")
    if callable(getattr(rerunfailures, "works_with_current_xdist", None)):
        setattr(rerunfailures, "works_with_current_xdist", lambda: True)  # noqa: B010 - see the docstring
