"""pytest-restask: resource-aware parallel test runs.

The pytest entry point (``-p restask``).  It owns the options, the ini keys
and the markers (what a test's markers declare is read in
:mod:`.declarations`, what the options say in :mod:`.settings`: the
controller imports those, never this module), and picks the mode of the run
in ``pytest_configure``:

* in process (no ``-n``, ``-n 0``, ``--collect-only``, or pytest-xdist owns
  ``-n``): :class:`LocalRun` checks declarations at setup and hands out slots;
* distributed (``-n N``): :class:`~.controller.Controller` runs the tests on
  worker subprocesses, and :class:`LocalRun` runs only the tests that fail
  triage, so that their verdict is the same as in process;
* a restask worker (``config.workerinput`` carries our key): nothing here;
  :mod:`.worker` drives the session.

``-n`` and ``--max-worker-restart`` are pytest-xdist's when it is installed:
then restask takes them over only when ``-p restask`` is named (on the
command line or in ``addopts``), and otherwise leaves xdist alone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import time
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Final, final

import pytest

from . import compat, durations, heap, hookspecs, xdisthooks
from .declarations import declaration_error, requirement_of
from .durations import Durations, DurationsRecorder
from .holds import SLOTS_KEY, Holds
from .hostlocks import WAITED_WORD, HostLockError, HostLocks, WriterIntents, register_capacities, waits_line
from .messages import WORKERINPUT_KEY
from .resources import FIXTURE_LINE_FORM, FREE, Grant, LockTable, Mode
from .settings import AUTO_KEY, Settings, has_xdist, numprocesses, owns_n
from .sharding import Shard, ShardTest, split
from .statemachine import HOST_RETRY_FIRST, HOST_RETRY_MAX
from .taskstate import LocalTaskStates
from .views import PlanView, RunViews

__all__ = [
    "FAILFAST_REASON",
    "LocalRun",
    "ShardSelection",
    "restask_slots",
]

# Help texts, shared between options and ini keys.  Style as pytest's own:
# start with a capital letter; a single phrase has no final period.
NUMPROCESSES_DESC: Final = (
    "Run the tests on N worker processes ('auto': one per CPU this process may use); 0 runs them in this process"
)
MAX_RESTART_DESC: Final = "Stop the run after this many worker replacements (default: 4 x the number of workers)"
FAILFAST_DESC: Final = "Stop starting tests after the first failure; running tests finish and are reported"
TIMEOUT_DESC: Final = (
    "End a test on a worker that runs longer than this many seconds (setup, call and teardown) "
    "and report it failed (default: no limit; applies only with -n)"
)
RESOURCES_DESC: Final = (
    "Capacities of counted resources, one 'name: capacity' line each (default capacity: 1); "
    "'name: capacity global' for one copy shared by all --shard jobs, "
    "'name: capacity host' to lock it across every run on this machine"
)
LOCK_DIR_DESC: Final = (
    "Directory of the locks of host-wide resources ('name: capacity host'); runs see each other's locks only "
    "if they share it (default: a per-user directory under the system's temporary directory)"
)
FIXTURES_DESC: Final = (
    f"Resources of fixtures you do not own (a plugin's), one '{FIXTURE_LINE_FORM}' line each: "
    "every test that uses the fixture needs the resource"
)
SHARD_DESC: Final = "Run only part K of N of the selected tests, balanced by durations and resources (CI jobs)"
SHARD_PLAN_DESC: Final = "With --shard K/N: show every shard's test count, expected time and bottleneck; run nothing"
PLAN_DESC: Final = (
    "Show what the collected tests ask of each resource and the run's lower bound on wall time "
    "with -n workers, and the bottleneck; run nothing"
)
PLAN_JSON_DESC: Final = "As --plan, as one JSON document on stdout (the terminal's output goes to stderr)"
TIMELINE_DESC: Final = (
    "Write the run to FILE as a Chrome trace (open it in ui.perfetto.dev or chrome://tracing): "
    "each test on its worker, waits for resources, how much of each resource is held"
)
DURATIONS_FILE_DESC: Final = (
    "Read and write test durations in this JSON file (pytest-split's .test_durations form) instead of the cache"
)
RESOURCE_MARKER: Final = (
    "resource(*names, shared=False, slots=None): the test needs these resources; "
    "exclusive by default, shared=True beside other shared users, slots=K counted "
    "slots of the capacity in restask_resources (pytest-restask)"
)
SERIAL_MARKER: Final = "serial: the test runs alone, with no other test at the same time (pytest-restask)"
FAILFAST_REASON: Final = "stopping after the first failure (--failfast)"
NOT_APPLY_TIMEOUT: Final = "--task-timeout applies only when tests run on workers (-n N); it is ignored here"
PDB_CONFLICT: Final = "{flag} cannot be used with -n {n}: a debugger needs the test in this process; use -n 0"
STEPWISE_CONFLICT: Final = (
    "{flag} cannot be used with -n {n}: stepwise resumes after the last failure in collection order, "
    "which assumes that every test before it ran and passed, but a parallel run starts tests out of that order "
    "and stops with tests before the failure not run; use -n 0 with {flag}"
)
DIST_IGNORED: Final = (
    "--dist={dist} is pytest-xdist's and does nothing here: restask runs -n and schedules by resources; "
    "instead of xdist_group, declare what tests share with @pytest.mark.resource"
)
SPACE_FORM: Final = (
    "{option} {value}: written as two words, {value!r} was taken for a test path when pytest chose the rootdir "
    "and ini file (before plugins load), which moved the rootdir to {rootdir}; write {option}={value}"
)
#: restask's options that take a value: written as ``--opt VALUE``, pytest's
#: first look at the command line (before plugins load) sees VALUE as a test path.
VALUE_OPTIONS: Final = (
    "--durations-file",
    "--timeline",
    "--lock-dir",
    "--shard",
    "--task-timeout",
    "--max-worker-restart",
    "--numprocesses",
    "-n",
)

TIMEOUT_MARKER: Final = (
    "timeout(seconds): end the test on its worker after this many seconds, setup to teardown, "
    "and report it failed; 0 for no limit (pytest-restask; pytest-timeout's marker where it is installed)"
)
NOT_APPLY_TIMEOUT_MARKER: Final = (
    "@pytest.mark.timeout is on {count} test(s) but applies only when tests run on workers (-n N) "
    "or with pytest-timeout installed; it is ignored here"
)

TIMELINE_UNDER_XDIST: Final = (
    "--timeline records restask's runs (-p restask with -n N, or no -n); pytest-xdist runs this one, "
    "so no timeline is written: name -p restask to let restask run -n"
)
HOST_WAITING: Final = (
    "restask: {nodeid} waits for host lock {resource!r}, held by another run (lock directory {directory})"
)
SHARD_LINE: Final = "restask: shard {shard}: {selected} of {total} selected tests (split for {workers} worker(s) a job)"
SHARD_DESELECTED: Final = "restask: {count} deselected by --shard {shard}"
SHARD_EMPTY: Final = "restask: shard {shard} has no tests ({total} selected tests for {n} shards); nothing to run"
SHARD_PLAN_HEADER: Final = "restask: shard plan ({workers} worker(s) per job; * this job's shard)"
SHARD_PLAN_ROW: Final = (
    "{mark} shard {shard}: {tests} tests, {seconds:.2f} s of work, at least {bound:.2f} s, bottleneck: {bottleneck}"
)


def _count(value: str, expected: str) -> int:
    """Parse a whole number of at least 0; say what was ``expected`` if it is not."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number


def parse_numprocesses(value: str) -> int | str:
    """Parse ``-n``: a whole number of at least 0, or 'auto' ('logical', as
    pytest-xdist spells it with psutil, means the same here)."""
    return value if value in ("auto", "logical") else _count(value, "a number of workers or 'auto'")


def parse_count(value: str) -> int:
    """Parse a whole number of at least 0."""
    return _count(value, "a whole number of at least 0")


def parse_timeout(value: str) -> float:
    """Parse a number of seconds greater than 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds greater than 0, got {value!r}")
    return seconds


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("restask", "resource-aware parallel runs (pytest-restask)")
    group.addoption("--failfast", action="store_true", default=False, help=FAILFAST_DESC)
    group.addoption("--task-timeout", dest="task_timeout", metavar="SECONDS", type=parse_timeout, help=TIMEOUT_DESC)
    group.addoption("--shard", dest="shard", metavar="K/N", default=None, help=SHARD_DESC)
    group.addoption("--shard-plan", dest="shard_plan", action="store_true", default=False, help=SHARD_PLAN_DESC)
    group.addoption("--plan", dest="plan", action="store_true", default=False, help=PLAN_DESC)
    group.addoption("--plan-json", dest="plan_json", action="store_true", default=False, help=PLAN_JSON_DESC)
    group.addoption("--timeline", dest="timeline", metavar="FILE", default=None, help=TIMELINE_DESC)
    group.addoption("--durations-file", dest="durations_file", metavar="FILE", default=None, help=DURATIONS_FILE_DESC)
    parser.addini("restask_resources", RESOURCES_DESC, type="linelist", default=[])
    parser.addini("restask_fixtures", FIXTURES_DESC, type="linelist", default=[])
    group.addoption("--lock-dir", dest="lock_dir", metavar="DIR", default=None, help=LOCK_DIR_DESC)
    parser.addini("restask_lock_dir", LOCK_DIR_DESC, default="")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    """Add ``-n`` and ``--max-worker-restart``, and pytest-xdist's hooks,
    unless pytest-xdist has them.

    Not in ``pytest_addoption``: ``-p restask`` loads this plugin before
    the entry points, so whether xdist will be there is known only now,
    after every ``-p`` and entry-point plugin and before the full parse.
    A wrapper, so that it runs before every plugin's own implementation:
    pytest-cov decides here, from ``-n`` in the early parse, whether the run
    is distributed.  Also the first hook here to see the config, early
    enough to add the clean-up pytest runs last (see :mod:`.heap`).
    """
    heap.allow_freezing(early_config)
    if not has_xdist(early_config.pluginmanager):
        early_config.pluginmanager.add_hookspecs(xdisthooks)
        _add_worker_options(early_config, parser, args)
    # before any conftest is imported: with the wrong rootdir, a conftest may
    # fail to import (its ini's pythonpath lost) before we could say why
    _refuse_options_taken_for_paths(early_config, early_config.known_args_namespace.file_or_dir or [])
    return (yield)


def _add_worker_options(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    group = parser.getgroup("restask")
    # pytest reserves lowercase short options for itself; -n is the
    # spelling users know from xdist, so it is added the way xdist does
    group._addoption(
        "-n",
        "--numprocesses",
        dest="numprocesses",
        metavar="N",
        type=parse_numprocesses,
        default=None,
        help=NUMPROCESSES_DESC,
    )
    group.addoption(
        "--max-worker-restart",
        dest="maxworkerrestart",
        metavar="N",
        type=parse_count,
        default=None,
        help=MAX_RESTART_DESC,
    )
    # the early parse ran before these options existed: give it their values
    known = early_config.known_args_namespace
    parsed = parser.parse_known_args(args)
    for name in ("numprocesses", "maxworkerrestart"):
        setattr(known, name, getattr(parsed, name))


def _refuse_options_taken_for_paths(config: pytest.Config, test_paths: Sequence[str]) -> None:
    """Stop when a value of ours written as a separate word moved the rootdir.

    pytest chooses the rootdir, and so the ini file, from the test paths of
    its first look at the command line, before any plugin (and its options)
    is loaded: in ``--durations-file ../d.json`` it sees ``../d.json`` as a
    test path, and the rootdir becomes the common ancestor of it and the
    real test paths, where the project's ini file (and its
    ``restask_resources``) may no longer be found.  The full parse later
    knows the option, so what is collected looks right while the
    configuration is silently another.  Taken as moved: the value names an
    existing path outside the common ancestor of the real test paths (or of
    the invocation directory, when none is given).
    """
    params = config.invocation_params
    words = [str(arg) for arg in params.args]
    real = [str(arg).split("::")[0] for arg in test_paths]
    paths = [params.dir / path for path in real if (params.dir / path).exists()] or [params.dir]
    anchor = Path(os.path.commonpath([str(path.resolve()) for path in paths]))
    for option, value in itertools.pairwise(words):
        if option not in VALUE_OPTIONS or value.startswith("-"):
            continue
        path = (params.dir / value).resolve()
        if path.exists() and _moves_rootdir(config, anchor, path):
            raise pytest.UsageError(SPACE_FORM.format(option=option, value=value, rootdir=config.rootpath))


#: Files whose presence makes a directory pytest's rootdir candidate.
INI_NAMES: Final = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def _moves_rootdir(config: pytest.Config, anchor: Path, value: Path) -> bool:
    """Return whether a test path ``value`` beside those under ``anchor``
    changed the rootdir: pytest looks for the ini file from the common
    ancestor upwards, or takes that ancestor when there is none."""
    if value.is_relative_to(anchor):
        return False  # the common ancestor is the same
    top = Path(os.path.commonpath([str(anchor), str(value)]))
    if config.inipath is None:
        return True  # the rootdir is the common ancestor, which moved up
    below = [anchor, *(parent for parent in anchor.parents if parent.is_relative_to(top) and parent != top)]
    return any((directory / name).is_file() for directory in below for name in INI_NAMES)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    """Resolve ``-n auto`` before pytest-xdist's (tryfirst)
    ``pytest_cmdline_main`` replaces the option's value with its own count."""
    if config.getoption("numprocesses", None) in ("auto", "logical"):
        numprocesses(config)
    if has_xdist(config.pluginmanager) and owns_n(config):
        config.pluginmanager.register(_KeepDist(config.getoption("dist", "no")), "restask.keepdist")
    return (yield)


@final
class _KeepDist:
    """Puts back the ``--dist`` the user gave, where restask runs ``-n``.

    pytest-xdist's ``pytest_cmdline_main`` turns ``-n N`` into ``--dist=load``
    for its own session, which restask blocks; plugins that ask
    ``--dist`` whether the run is xdist's then believe this controller
    distributes with xdist (pytest-benchmark warns at its end, outside the
    summary).  tryfirst, and registered after every plugin: it runs before
    any other plugin configures.
    """

    def __init__(self, dist: object) -> None:
        self._dist = dist

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.option.dist = self._dist
        if self._dist not in ("no", None):
            warning = pytest.PytestConfigWarning(DIST_IGNORED.format(dist=self._dist))
            config.issue_config_time_warning(warning, stacklevel=2)


def _is_restask_worker(config: pytest.Config) -> bool:
    workerinput = getattr(config, "workerinput", None)
    return isinstance(workerinput, dict) and WORKERINPUT_KEY in workerinput


def _xdist_distributes(config: pytest.Config) -> bool:
    """Return whether this is pytest-xdist's run (its controller or a worker
    of its own), where restask schedules nothing and tells no task states."""
    if getattr(config, "workerinput", None) is not None:
        return True
    return has_xdist(config.pluginmanager) and not owns_n(config) and config.getoption("dist", "no") != "no"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RESOURCE_MARKER)
    config.addinivalue_line("markers", SERIAL_MARKER)
    if not config.pluginmanager.has_plugin("timeout"):  # pytest-timeout registers its own
        config.addinivalue_line("markers", TIMEOUT_MARKER)
    if not has_xdist(config.pluginmanager):
        config.pluginmanager.register(compat, "restask.compat")
    if any(config.getoption(name, False) for name in ("plan", "plan_json", "shard_plan")):
        config.option.collectonly = True  # a plan runs nothing
    settings = Settings.from_config(config)
    if _is_restask_worker(config):
        if not has_xdist(config.pluginmanager):
            compat.enable_plugins_xdist_support(config)
        if settings.shard is not None:  # the same split as the controller's, or the collections differ
            config.pluginmanager.register(ShardSelection(config, settings, durations.load(config)), "restask.shard")
        return
    if settings.lock_dir is not None and not config.option.collectonly:
        _register_host_capacities(config, settings)
    recorder = DurationsRecorder(config, save=settings.shard is None)
    config.pluginmanager.register(recorder, "restask.durations")
    if settings.shard is not None:
        config.pluginmanager.register(ShardSelection(config, settings, recorder.durations), "restask.shard")
    config.pluginmanager.register(LocalRun(config, settings), "restask.local")
    xdist_runs = _xdist_distributes(config)
    if xdist_runs and settings.timeline is not None:
        config.issue_config_time_warning(pytest.PytestConfigWarning(TIMELINE_UNDER_XDIST), stacklevel=2)
    views = RunViews(config, settings, record_here=not xdist_runs)
    config.pluginmanager.register(views, "restask.views")
    if settings.plan is not None:
        config.pluginmanager.register(PlanView(config, settings, recorder.durations), "restask.plan")
    if not settings.workers:
        if not xdist_runs:
            config.pluginmanager.register(LocalTaskStates(config), "restask.taskstate")
        if settings.task_timeout is not None:
            config.issue_config_time_warning(pytest.PytestConfigWarning(NOT_APPLY_TIMEOUT), stacklevel=2)
        return
    for flag, used in (("--pdb", config.getoption("usepdb")), ("--trace", config.getoption("trace"))):
        if used:
            raise pytest.UsageError(PDB_CONFLICT.format(flag=flag, n=settings.workers))
    # --sw-skip sets --sw as well: it is looked at first, to name what was typed
    for flag, used in (
        ("--sw-skip", config.getoption("stepwise_skip", False)),
        ("--sw/--stepwise", config.getoption("stepwise", False)),
    ):
        if used:
            n = "auto" if AUTO_KEY in config.stash else settings.workers
            raise pytest.UsageError(STEPWISE_CONFLICT.format(flag=flag, n=n))
    if not has_xdist(config.pluginmanager):
        compat.enable_plugins_xdist_support(config)
    # pytest-xdist is installed and -p restask was named: its session steps
    # aside, whether its own (also trylast) configure ran before ours or not
    for name in ("dsession", "terminaldistreporter"):
        config.pluginmanager.set_blocked(name)
    from .controller import Controller

    controller = Controller(config, settings, recorder.durations, views=views)
    config.pluginmanager.register(controller, "restask.controller")


def _register_host_capacities(config: pytest.Config, settings: Settings) -> None:
    """Tell the other runs on this host our capacities of host-wide resources
    (or stop, when a live run declared others), for as long as this run lives."""
    assert settings.lock_dir is not None
    capacities = {name: settings.capacities.get(name, 1) for name in settings.host_resources}
    try:
        held = register_capacities(settings.lock_dir, capacities)
    except HostLockError as e:
        raise pytest.UsageError(str(e)) from None

    def release() -> None:
        for lock in held:
            lock.release()

    config.add_cleanup(release)


@pytest.fixture
def restask_slots(request: pytest.FixtureRequest) -> dict[str, list[int]]:
    """The slot numbers of each counted resource this test holds, e.g. ``{"gpu": [1]}``."""
    return {name: list(numbers) for name, numbers in request.node.stash.get(SLOTS_KEY, {}).items()}


#: The holder of a grant made only to see what the next test would hold.
_PREVIEW: Final = object()


@final
class LocalRun:
    """The hooks for tests that run in this process, and the run's summary.

    Checks each test's declaration at setup (a bad one is a setup error
    that names the test), hands out counted slots, implements
    ``--failfast``, and says how many tests did not run.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self._config = config
        self._settings = settings
        #: Slots handed to tests running in this process.
        self.table = LockTable(settings.capacities)
        #: The hold of the test running here, and the fixtures living under holds.
        self.holds = Holds(config)
        config.pluginmanager.register(self.holds, "restask.holds")
        #: Host-wide locks of the tests running here (None: no host resources).
        self.host: HostLocks | None = None
        self._intents: WriterIntents | None = None
        if settings.lock_dir is not None:
            self.host = HostLocks(settings.lock_dir, settings.capacities, settings.host_resources)
            self._intents = WriterIntents(settings.lock_dir)
        #: Seconds tests here waited for host locks other runs held, and for what.
        self.host_waited: dict[str, tuple[float, str]] = {}
        #: Tests whose reporting finished (in any mode).
        self._finished = 0
        self._interrupted = False
        self._session: pytest.Session | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._session = session

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self._settings.workers or self._config.pluginmanager.has_plugin("timeout"):
            return
        marked = [item for item in session.items if item.get_closest_marker("timeout") is not None]
        if marked:  # once, at the first marked test
            path, line, _ = marked[0].location
            warning = pytest.PytestConfigWarning(NOT_APPLY_TIMEOUT_MARKER.format(count=len(marked)))
            warnings.warn_explicit(warning, type(warning), str(self._config.rootpath / path), (line or 0) + 1)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        error = declaration_error(item, self.table)
        if error is not None:
            pytest.fail(error, pytrace=False)
        grant = self.table.grant(item, requirement_of(item))
        if self.host is not None:
            grant = self._take_host(item, grant)
        self.holds.enter(item, grant)

    def _take_host(self, item: pytest.Item, grant: Grant) -> Grant:
        """Take the test's host locks, waiting (here nothing else could run)
        while another run holds one; say so once the wait passes a second."""
        assert self.host is not None
        assert self._intents is not None
        requests = self.host.requests(grant.requirement.requests)
        if not requests:
            return grant
        started = time.monotonic()
        delay, told, waited_for = HOST_RETRY_FIRST, False, None
        try:
            while True:
                taken = self.host.take(requests, grant.slots)
                if taken.busy is None:
                    break
                waited_for = taken.busy
                self.host.keep_only(())  # all or none: never wait while holding one
                if any(r.name == waited_for and r.mode is Mode.EXCLUSIVE for r in requests):
                    self._intents.want(waited_for, item.nodeid)
                if not told and time.monotonic() - started > 1.0:
                    told = True
                    message = HOST_WAITING.format(
                        nodeid=item.nodeid, resource=waited_for, directory=self.host.directory
                    )
                    self._tell(message)
                time.sleep(delay)
                delay = min(2 * delay, HOST_RETRY_MAX)
        finally:  # also when interrupted while waiting: the summary says how long
            self._intents.done(item.nodeid)
            if waited_for is not None:
                self.host_waited[item.nodeid] = (time.monotonic() - started, waited_for)
        return Grant(grant.requirement, {**grant.slots, **taken.slots}) if taken.slots else grant

    def _tell(self, line: str) -> None:
        """Show a line now, in the middle of a test's setup (past capturing)."""
        reporter = self._config.pluginmanager.get_plugin("terminalreporter")
        capture = self._config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
                reporter.write_line(line, yellow=True)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> object:
        __tracebackhide__ = True  # a fixture's teardown error shows the fixture, as serially
        try:
            return (yield)
        finally:
            try:
                if nextitem is not None and self.holds.live:  # without a next item, pytest ends every fixture
                    self.holds.end_unheld(self._following(item, nextitem))
            finally:
                if self.table.release(item) is not None:
                    self.holds.leave(item)
                if self.host is not None:  # what the next test also takes stays held
                    following = None if nextitem is None else self._following(item, nextitem)
                    self.host.keep_only(() if following is None else following.requirement.requests)

    def _following(self, item: pytest.Item, nextitem: pytest.Item) -> Grant | None:
        """Return what the next test will hold, handed over from ``item``
        as a worker's next test is (None: it will not run, so nothing)."""
        if declaration_error(nextitem, self.table) is not None:
            return None
        held = self.table.grant_of(item) is not None
        following = self.table.grant(_PREVIEW, requirement_of(nextitem), replacing=item if held else None)
        self.table.release(_PREVIEW)
        return following

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = self._session
        if self._settings.failfast and report.failed and not hasattr(report, "wasxfail") and session is not None:
            session.shouldfail = FAILFAST_REASON

    def pytest_runtest_logfinish(self) -> None:
        self._finished += 1

    def pytest_keyboard_interrupt(self) -> None:
        self._interrupted = True

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        session = self._session
        if session is None or self._config.getoption("collectonly"):
            return
        if self.host_waited:
            terminalreporter.write_line(waits_line(self.host_waited.values()))
            if self._config.get_verbosity() > 0:
                for nodeid, (seconds, resource) in self.host_waited.items():
                    terminalreporter.write_line(
                        f"  {nodeid}: " + WAITED_WORD.format(seconds=seconds, resource=resource)
                    )
        not_run = len(session.items) - self._finished
        stopped = session.shouldfail or session.shouldstop
        if not_run > 0 and (self._finished > 0 or self._interrupted or stopped):
            why = stopped or "the run was interrupted"
            terminalreporter.write_sep("-", f"{not_run} of {len(session.items)} tests not run: {why}", yellow=True)


@final
class ShardSelection:
    """Keeps this CI job's part of the selected tests (``--shard K/N``).

    Runs after every other ``pytest_collection_modifyitems`` (``-k``, ``-m``
    and the like select first), splits what is left with
    :func:`~.sharding.split` from the durations store's estimates and the
    tests' resources, and deselects the other shards' tests.  Workers make
    the same split from the same data, so their collection matches the
    controller's.  A job whose shard is empty exits 0 and says so.
    """

    def __init__(self, config: pytest.Config, settings: Settings, store: Durations) -> None:
        assert settings.shard is not None
        self._config = config
        self._settings = settings
        self._store = store
        self._k, self._n = settings.shard
        #: "K/N", for the lines this prints.
        self._label = f"{self._k}/{self._n}"
        #: The split, once made.
        self.shards: list[Shard] = []
        self._selected = self._total = 0

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        table = LockTable(self._settings.capacities)
        estimates = self._store.estimates(item.nodeid for item in items)
        tests = [
            # a test with a bad declaration runs (and fails) in one shard too
            ShardTest(item.nodeid, seconds, FREE if declaration_error(item, table) else requirement_of(item))
            for item, seconds in zip(items, estimates, strict=True)
        ]
        self.shards = split(tests, self._n, self._settings.shard_workers, self._settings.global_resources)
        keep = set(self.shards[self._k - 1].tests)
        selected = [item for index, item in enumerate(items) if index in keep]
        deselected = [item for index, item in enumerate(items) if index not in keep]
        self._total, self._selected = len(items), len(selected)
        if deselected:
            self._config.hook.pytest_deselected(items=deselected)
        items[:] = selected

    def pytest_report_collectionfinish(self) -> list[str]:
        workers = self._settings.shard_workers
        lines = [SHARD_LINE.format(shard=self._label, selected=self._selected, total=self._total, workers=workers)]
        if self._config.getoption("shard_plan"):
            lines.extend(self._plan())
        return lines

    def _plan(self) -> list[str]:
        lines = [SHARD_PLAN_HEADER.format(workers=self._settings.shard_workers)]
        for shard in self.shards:
            mark = "*" if shard.index == self._k else " "
            lines.append(
                SHARD_PLAN_ROW.format(
                    mark=mark,
                    shard=f"{shard.index}/{self._n}",
                    tests=len(shard.tests),
                    seconds=shard.seconds,
                    bound=shard.bound,
                    bottleneck=shard.bottleneck or "the workers",
                )
            )
        return lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        deselected = self._total - self._selected
        if deselected:
            terminalreporter.write_line(SHARD_DESELECTED.format(count=deselected, shard=self._label))
        if self._total and not self._selected:
            terminalreporter.write_line(SHARD_EMPTY.format(shard=self._label, total=self._total, n=self._n))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # a CI matrix wider than the suite must not fail: an empty shard is fine
        # (but a selection of nothing at all, a typo in -k, still exits 5)
        if self._total and not self._selected and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK
