"""The run's settings: what the options and ini keys say, checked once.

Built in ``pytest_configure`` on the controller and on every worker, and
handed to the controller, so that the controller needs nothing of the
plugin module.  Also answers whether restask owns ``-n`` (pytest-xdist's
option where xdist is installed) and what ``-n auto`` means.

Imports pytest and the pure modules only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, final

import pytest

from . import cpus
from .hostlocks import HostLockError, default_lock_dir, prepare_lock_dir
from .messages import CAPACITIES_KEY, LOCK_DIR_KEY, SHARD_WORKERS_KEY
from .resources import Request, ResourceError, parse_fixture_lines, parse_resources
from .sharding import ShardError, parse_shard

__all__ = [
    "AUTO_HOOK_ANSWER",
    "AUTO_KEY",
    "CAPACITY_HOOK_ANSWER",
    "SHARD_PLAN_NEEDS_SHARD",
    "TIMELINE_NO_DIRECTORY",
    "Settings",
    "has_xdist",
    "numprocesses",
    "owns_n",
    "settings_of",
]

TIMELINE_NO_DIRECTORY: Final = (
    "--timeline={value}: the directory {directory} does not exist; create it, or name a file in one that does"
)
SHARD_PLAN_NEEDS_SHARD: Final = "--shard-plan needs --shard K/N, to know N (K marks the shard listed)"
CAPACITY_HOOK_ANSWER: Final = (
    "pytest_restask_capacities of {plugin} returned {value!r} for {name!r}; "
    "a capacity must be a whole number of at least 1"
)
CAPACITY_HOOK_NAME: Final = (
    "pytest_restask_capacities of {plugin} returned a capacity for {name!r}; resource names are strings"
)
CAPACITY_HOOK_TYPE: Final = (
    "pytest_restask_capacities of {plugin} returned {value!r}; return a mapping of resource names to capacities"
)
AUTO_HOOK_ANSWER: Final = (
    "pytest_xdist_auto_num_workers returned {answer!r} for -n auto; a plugin must return a whole number of at least 1"
)


def has_xdist(pluginmanager: pytest.PytestPluginManager) -> bool:
    """Return whether pytest-xdist is loaded in this run."""
    return pluginmanager.has_plugin("xdist") or pluginmanager.has_plugin("xdist.plugin")


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """What the options and ini keys say, checked once at configure time.

    A frozen value, made once by :meth:`from_config` (and kept in the
    config's stash, see :func:`settings_of`): the controller, the shard
    split and the declarations read it and nothing else of the options, and
    a unit test makes one directly, ``Settings(workers=2, ...)``.
    """

    #: Worker processes to start; 0 runs in process.
    workers: int = 0
    #: Capacity of each counted resource, from ``restask_resources`` and
    #: ``pytest_restask_capacities`` (on a worker: as the controller merged them).
    capacities: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Requests of fixtures named in ``restask_fixtures``, by fixture name.
    fixture_resources: Mapping[str, tuple[Request, ...]] = dataclasses.field(default_factory=dict)
    #: Resources with one copy for every CI job of a ``--shard`` split.
    global_resources: frozenset[str] = frozenset()
    #: Resources locked across every run on this host (see :mod:`.hostlocks`).
    host_resources: frozenset[str] = frozenset()
    #: Where their locks live, created and checked (None: no host resources).
    lock_dir: Path | None = None
    #: This job's part of a CI split: (K, N), or None.
    shard: tuple[int, int] | None = None
    #: Workers per CI job that ``--shard`` balances for (also with --shard-plan, and on workers).
    shard_workers: int = 1
    #: Stop starting tests after the first failure.
    failfast: bool = False
    #: Seconds a test may take on a worker, or None.
    task_timeout: float | None = None
    #: Worker replacements allowed before the run stops.
    max_restarts: int = 0
    #: ``--plan`` ("text") or ``--plan-json`` ("json"): show the plan, run nothing.
    plan: str | None = None
    #: ``--timeline=FILE``: where to write the run's trace (relative to where pytest was started).
    timeline: Path | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read and check the options and ini keys; raise :class:`pytest.UsageError`."""
        try:
            capacities, global_resources, host_resources = parse_resources(config.getini("restask_resources"))
            fixture_resources = parse_fixture_lines(config.getini("restask_fixtures"))
        except ResourceError as e:
            raise pytest.UsageError(f"{e} (in the ini file {config.inipath})") from None
        try:
            lock_dir = prepare_lock_dir(_lock_dir(config)) if host_resources else None
        except HostLockError as e:
            raise pytest.UsageError(str(e)) from None
        workers = _workers_wanted(config)
        restarts = config.getoption("maxworkerrestart", None)
        settings = cls(
            workers=workers,
            capacities=MappingProxyType(_capacities(config, capacities)),
            fixture_resources=MappingProxyType(fixture_resources),
            global_resources=global_resources,
            host_resources=host_resources,
            lock_dir=lock_dir,
            shard=_shard_wanted(config),
            shard_workers=_shard_workers(config),
            failfast=config.getoption("failfast"),
            task_timeout=config.getoption("task_timeout"),
            max_restarts=4 * workers if restarts is None else int(restarts),
            plan=_plan(config),
            timeline=_timeline(config),
        )
        config.stash[SETTINGS_KEY] = settings
        return settings


SETTINGS_KEY: Final = pytest.StashKey[Settings]()


def settings_of(config: pytest.Config) -> Settings:
    """Return the run's settings, made in ``pytest_configure``
    (a config that restask did not configure gets the defaults)."""
    return config.stash.get(SETTINGS_KEY, None) or Settings()


def _lock_dir(config: pytest.Config) -> Path:
    """Return the lock directory: on a restask worker the controller's, else
    ``--lock-dir``, ``restask_lock_dir`` (relative to the ini file's
    directory) or the per-user default."""
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and LOCK_DIR_KEY in workerinput:
        return Path(workerinput[LOCK_DIR_KEY])
    option = config.getoption("lock_dir", None)
    if option:
        return Path(config.invocation_params.dir, os.path.expanduser(option)).resolve()
    ini = config.getini("restask_lock_dir")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return Path(base, os.path.expanduser(str(ini))).resolve()
    return default_lock_dir()


def _capacities(config: pytest.Config, ini: dict[str, int]) -> dict[str, int]:
    """Return the capacities: on a restask worker as the controller sent
    them, else the ini's with ``pytest_restask_capacities`` merged over them."""
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and CAPACITIES_KEY in workerinput:
        return {str(name): int(capacity) for name, capacity in workerinput[CAPACITIES_KEY].items()}
    merged = dict(ini)
    merged.update(_hook_capacities(config))
    return merged


def _hook_capacities(config: pytest.Config) -> dict[str, int]:
    """Call each implementation of ``pytest_restask_capacities`` on its own,
    to name the plugin whose answer is wrong; the one pluggy calls first wins."""
    manager = config.pluginmanager
    implementations = config.hook.pytest_restask_capacities.get_hookimpls()
    merged: dict[str, int] = {}
    for implementation in implementations:  # pluggy calls the last one first
        others = [other.plugin for other in implementations if other is not implementation]
        caller = manager.subset_hook_caller("pytest_restask_capacities", remove_plugins=others)
        plugin = implementation.plugin_name
        for answer in caller(config=config):
            if not isinstance(answer, Mapping):
                raise pytest.UsageError(CAPACITY_HOOK_TYPE.format(plugin=plugin, value=answer))
            for name, value in answer.items():
                if not isinstance(name, str):
                    raise pytest.UsageError(CAPACITY_HOOK_NAME.format(plugin=plugin, name=name))
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise pytest.UsageError(CAPACITY_HOOK_ANSWER.format(plugin=plugin, value=value, name=name))
                merged[name] = value
    return merged


def _plan(config: pytest.Config) -> str | None:
    if config.getoption("plan_json", False):
        return "json"
    return "text" if config.getoption("plan", False) else None


def _timeline(config: pytest.Config) -> Path | None:
    """Return the ``--timeline`` path; stop now when its directory is missing,
    rather than after a long run that could not write it."""
    value = config.getoption("timeline", None)
    if not value:
        return None
    path: Path = config.invocation_params.dir / value
    if not path.parent.is_dir():
        raise pytest.UsageError(TIMELINE_NO_DIRECTORY.format(value=value, directory=path.parent))
    return path


def _shard_wanted(config: pytest.Config) -> tuple[int, int] | None:
    value = config.getoption("shard", None)
    if value is None:
        if config.getoption("shard_plan", False):
            raise pytest.UsageError(SHARD_PLAN_NEEDS_SHARD)
        return None
    try:
        return parse_shard(value)
    except ShardError as e:
        raise pytest.UsageError(str(e)) from None


def owns_n(config: pytest.Config) -> bool:
    """Return whether ``-n`` is restask's to act on (see the module docstring)."""
    if not has_xdist(config.pluginmanager):
        return True
    named = config.getoption("plugins", None) or []
    return "restask" in named or "pytest_restask.plugin" in named


def _workers_wanted(config: pytest.Config) -> int:
    if config.getoption("collectonly"):
        return 0
    return numprocesses(config)


def numprocesses(config: pytest.Config) -> int:
    value = config.getoption("numprocesses", None)
    if not value or not owns_n(config):
        return 0
    auto = config.stash.get(AUTO_KEY, None)
    if auto is not None:
        return auto
    if value in ("auto", "logical"):
        auto = config.stash[AUTO_KEY] = _auto_workers(config)
        return auto
    return int(value)


AUTO_KEY: Final = pytest.StashKey[int]()


def _auto_workers(config: pytest.Config) -> int:
    """Return the workers of ``-n auto``: ``PYTEST_XDIST_AUTO_NUM_WORKERS``,
    else another plugin's ``pytest_xdist_auto_num_workers`` (not
    pytest-xdist's own, which counts every CPU of the machine), else the
    CPUs this process may use (:func:`~.cpus.usable_cpus`)."""
    try:
        workers = cpus.env_workers(os.environ)
    except cpus.AutoWorkersError as e:
        raise pytest.UsageError(str(e)) from None
    if workers is not None:
        return workers
    manager = config.pluginmanager
    xdist = [plugin for name, plugin in manager.list_name_plugin() if name.split(".")[0] == "xdist"]
    hook = manager.subset_hook_caller("pytest_xdist_auto_num_workers", remove_plugins=xdist)
    answer = hook(config=config)
    if answer is not None:
        if isinstance(answer, bool) or not isinstance(answer, int) or answer < 1:
            raise pytest.UsageError(AUTO_HOOK_ANSWER.format(answer=answer))
        return answer
    return cpus.usable_cpus()


def _shard_workers(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and SHARD_WORKERS_KEY in workerinput:
        return int(workerinput[SHARD_WORKERS_KEY])
    return max(numprocesses(config), 1)
