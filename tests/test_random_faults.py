"""Random fault runs (issue 4): generated suites of random outcomes, resource
requests, crashes and hangs, run on a random number of workers.

Each suite (4 to 14 tests in 1 to 3 modules, 1 to 4 workers) is planned by a
seeded generator.  Every test draws a resource request (none, exclusive,
shared, counted slots, two names, serial), a sleep of 0 to 30 ms and a
behaviour: pass, fail, skip, xfail, xpass, an error in setup or teardown, a
worker crash in setup, call or teardown (``os._exit``, SIGKILL, with or
without a child process), or a hang in call or teardown (plain, with a child
process, cleaning up for a while after SIGTERM, or ignoring SIGTERM).  The
suite is written out with ``pytester``, run as ``pytest -p restask -n W
--task-timeout=T --max-worker-restart=F`` (F: exactly the replacements its
crashes and hangs cost), and checked against what every planned test must
give, worked out from the plan alone:

* the outcome counts in pytest's summary, and the exit code;
* the phase reports the controller's hooks saw for each test (each phase
  once, in order), and the crash or timeout message of each test that never
  finished, naming the test and the worker it ran on;
* the holds the tests log themselves: each test logs exactly one, a test that
  dies logs it up to its last moment alive, and no two holds whose resources
  conflict overlap in time (the oracle of :mod:`.simulation`);
* no INTERNALERROR, no traceback through pytest_restask, nothing on stderr;
* no worker, and no process a test started, is alive after the run.

``RESTASK_FAULT_SEED`` (default 4) and ``RESTASK_FAULT_SUITES`` (default 50)
choose the suites; a failure prints the suite's plan and the command that
runs that suite again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_restask.resources import Mode, Request, Requirement, merge_requests

from .simulation import Interval, conflicts
from .suite import KINDS, marker_lines

SEED = int(os.environ.get("RESTASK_FAULT_SEED", "4"))
SUITES = int(os.environ.get("RESTASK_FAULT_SUITES", "50"))
#: Far above a normal test (at most 30 ms of sleep; under 1 s seen on this
#: 2-core machine with replacement workers booting and other jobs running),
#: so a slow machine does not time one out.  Each hang costs about this much.
TASK_TIMEOUT = 2.0
#: The durations file of a suite with ``short_estimates``.
DURATIONS_FILE = "durations.json"
#: Seconds one generated run may take before it counts as hung.
RUN_TIMEOUT = 90
#: Seconds a process of the run may take to disappear after it.
EXIT_GRACE = 5.0
CAPACITIES = {"gpu": 2}

# -- what a planned test does --------------------------------------------------

#: (phase, outcome) of each report, as the conftest records them: pytest's
#: outcome, but "xfailed" and "xpassed" for the reports that carry ``wasxfail``.
PASSES = (("setup", "passed"), ("call", "passed"), ("teardown", "passed"))


@dataclass(frozen=True)
class Behaviour:
    """One kind of generated test, and what pytest must say about it."""

    weight: float
    #: Fixtures the test asks for after ``hold``.
    fixtures: tuple[str, ...] = ()
    #: Decorators above the test.
    marks: tuple[str, ...] = ()
    #: Lines of the test's body after its sleep.
    body: tuple[str, ...] = ()
    #: What it adds to pytest's summary counts.
    counts: tuple[tuple[str, int], ...] = (("passed", 1),)
    #: The (phase, outcome) reports it gets, in order.
    phases: tuple[tuple[str, str], ...] = PASSES
    #: The failed phase and a regex its text must match ({nodeid}, {timeout} filled in).
    failure: tuple[str, str] | None = None
    #: Processes it starts (and leaves to the run to end).
    children: int = 0
    #: How it ends its worker, if it does: each costs a replacement.
    fault: Literal["crash", "hang"] | None = None


def _lost(code: str) -> str:
    """Return the pattern of the message for a test whose worker died of ``code``."""
    return rf"worker (gw\d+) crashed: {code} while running {{nodeid}}$"


TIMED_OUT = r"timed out after {timeout} s on (gw\d+) while running {nodeid}$"
CALL_FAILS = (("setup", "passed"), ("call", "failed"), ("teardown", "passed"))
#: A test whose worker is lost in setup or call: a passed setup's report waits
#: to go with the call's (fewer messages), so it is lost with the worker.
LOST_IN_CALL = (("call", "failed"), ("teardown", "passed"))
TEARDOWN_FAILS = (("setup", "passed"), ("call", "passed"), ("teardown", "failed"))

#: By name; the first field is the relative chance of being drawn.  Hangs are
#: rare: each costs the run about TASK_TIMEOUT.
BEHAVIOURS: dict[str, Behaviour] = {
    "pass": Behaviour(30),
    "fail": Behaviour(
        8,
        body=("assert False, 'planned failure'",),
        counts=(("failed", 1),),
        phases=CALL_FAILS,
        failure=("call", "AssertionError: planned failure"),
    ),
    "skip": Behaviour(
        5,
        body=("pytest.skip('planned skip')",),
        counts=(("skipped", 1),),
        phases=(("setup", "passed"), ("call", "skipped"), ("teardown", "passed")),
    ),
    "xfail": Behaviour(
        3,
        body=("pytest.xfail('planned xfail')",),
        counts=(("xfailed", 1),),
        phases=(("setup", "passed"), ("call", "xfailed"), ("teardown", "passed")),
    ),
    "xfail_mark": Behaviour(
        3,
        marks=("@pytest.mark.xfail(reason='planned')",),
        body=("assert False",),
        counts=(("xfailed", 1),),
        phases=(("setup", "passed"), ("call", "xfailed"), ("teardown", "passed")),
    ),
    "xpass": Behaviour(
        2,
        marks=("@pytest.mark.xfail(reason='planned')",),
        counts=(("xpassed", 1),),
        phases=(("setup", "passed"), ("call", "xpassed"), ("teardown", "passed")),
    ),
    "setup_error": Behaviour(
        5,
        fixtures=("broken_setup",),
        counts=(("errors", 1),),
        phases=(("setup", "failed"), ("teardown", "passed")),
        failure=("setup", "RuntimeError: planned setup error"),
    ),
    "teardown_error": Behaviour(
        4,
        fixtures=("broken_teardown",),
        counts=(("passed", 1), ("errors", 1)),
        phases=TEARDOWN_FAILS,
        failure=("teardown", "RuntimeError: planned teardown error"),
    ),
    # the crash of a worker before the test's setup reported: its call fails
    "crash_setup": Behaviour(
        2,
        fixtures=("crash_in_setup",),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", _lost("exit code 5")),
        fault="crash",
    ),
    "crash_call": Behaviour(
        3,
        body=("crash(hold, 3)",),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", _lost("exit code 3")),
        fault="crash",
    ),
    # after the worker asked for its next test: one may be handed over to it
    "crash_teardown": Behaviour(
        2,
        fixtures=("crash_in_teardown",),
        counts=(("passed", 1), ("errors", 1)),
        phases=TEARDOWN_FAILS,
        failure=("teardown", _lost("exit code 6")),
        fault="crash",
    ),
    "crash_with_child": Behaviour(
        2,
        body=("child(hold)", "crash(hold, 3)"),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", _lost("exit code 3")),
        children=1,
        fault="crash",
    ),
    "sigkill": Behaviour(
        2,
        body=("crash(hold, None)",),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", _lost(r"signal 9 \(SIGKILL\).*")),
        fault="crash",
    ),
    "hang": Behaviour(
        0.3,
        body=("hang(hold)",),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", TIMED_OUT),
        fault="hang",
    ),
    "hang_with_child": Behaviour(
        0.25,
        body=("child(hold)", "hang(hold)"),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", TIMED_OUT),
        children=1,
        fault="hang",
    ),
    "hang_teardown": Behaviour(
        0.2,
        fixtures=("hang_in_teardown",),
        counts=(("passed", 1), ("errors", 1)),
        phases=TEARDOWN_FAILS,
        failure=("teardown", TIMED_OUT),
        fault="hang",
    ),
    # goes on for 0.3 s after SIGTERM before it exits
    "hang_graceful": Behaviour(
        0.2,
        body=("hang(hold, graceful=True)",),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", TIMED_OUT),
        fault="hang",
    ),
    # ignores SIGTERM: only the SIGKILL after the grace period ends it
    "hang_stubborn": Behaviour(
        0.1,
        body=("signal.signal(signal.SIGTERM, signal.SIG_IGN)", "hang(hold)"),
        counts=(("failed", 1),),
        phases=LOST_IN_CALL,
        failure=("call", TIMED_OUT),
        fault="hang",
    ),
}

SERIAL_CHANCE = 0.04

CONFTEST = """
import json, os, signal, subprocess, time
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def append(name, record):
    with open(os.path.join(HERE, name), "a") as f:
        f.write(json.dumps(record) + "\\n")


def starttime(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:
        append("pids.jsonl", [os.getpid(), starttime(os.getpid()), "worker " + worker])


def pytest_runtest_logreport(report):
    # on the controller only: the reports pytest's own reporters see
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        text = report.longreprtext if report.failed else ""
        append("reports.jsonl", [report.nodeid, report.when, outcome, text[-600:]])


@pytest.fixture
def hold(request, restask_slots, worker_id):
    record = {"name": request.node.name, "worker": worker_id, "pid": os.getpid(),
              "start": time.time(), "end": None, "slots": restask_slots}
    yield record
    record["end"] = time.time()
    append("holds.jsonl", record)


def crash(record, code):
    # the hold lasts at least until now: log it, then die
    record["end"] = time.time()
    append("holds.jsonl", record)
    if code is None:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(code)


def child(record):
    process = subprocess.Popen(["sleep", "60"])
    append("pids.jsonl", [process.pid, starttime(process.pid), "child of " + record["name"]])


def hang(record, graceful=False):
    # the last beat is a moment the hold surely lasted to
    path = os.path.join(HERE, "beats", record["name"] + ".json")

    def beat():
        record["end"] = time.time()
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        time.sleep(0.05)

    def on_sigterm(signum, frame):
        # a test that cleans up for a while: its hold lasts until its worker is gone
        until = time.time() + 0.3
        while time.time() < until:
            beat()
        os._exit(0)

    if graceful:
        signal.signal(signal.SIGTERM, on_sigterm)
    while True:
        beat()


@pytest.fixture
def broken_setup(hold):
    raise RuntimeError("planned setup error")


@pytest.fixture
def broken_teardown(hold):
    yield
    raise RuntimeError("planned teardown error")


@pytest.fixture
def crash_in_setup(hold):
    crash(hold, 5)


@pytest.fixture
def crash_in_teardown(hold):
    yield
    crash(hold, 6)


@pytest.fixture
def hang_in_teardown(hold):
    yield
    hang(hold)
"""

INI = f"""[pytest]
xfail_strict = false
restask_resources =
    gpu: {CAPACITIES["gpu"]}
"""


@dataclass(frozen=True)
class Planned:
    """One generated test."""

    name: str
    module: str
    behaviour: str
    requests: tuple[Request, ...]
    serial: bool
    sleep: float

    @property
    def nodeid(self) -> str:
        return f"{self.module}.py::{self.name}"

    @property
    def does(self) -> Behaviour:
        return BEHAVIOURS[self.behaviour]

    @property
    def requirement(self) -> Requirement:
        return merge_requests(self.requests, self.serial)

    def source(self) -> str:
        marks = [*self.does.marks, *marker_lines(self.requests, self.serial)]
        arguments = ", ".join(("hold", *self.does.fixtures))
        body = [f"time.sleep({self.sleep})", *self.does.body]
        return "\n".join([*marks, f"def {self.name}({arguments}):", *(f"    {line}" for line in body), ""])

    def describe(self) -> str:
        resources = ", ".join(
            f"{r.name} slots={r.slots}" if r.mode is Mode.COUNTED else f"{r.name} {r.mode.name.lower()}"
            for r in self.requests
        )
        if self.serial:
            resources = "serial"
        return f"{self.nodeid:<40} {self.behaviour:<16} {resources or '-':<28} sleep {self.sleep}"


@dataclass(frozen=True)
class Suite:
    """One generated suite and the run that it gets."""

    seed: int
    index: int
    workers: int
    tests: tuple[Planned, ...]
    #: Run with a durations file that says every test takes a millisecond:
    #: free tests are then sent ahead, and their Done messages held back
    #: (a crash or hang after them must still cost only its own test).
    short_estimates: bool = False

    @property
    def faults(self) -> int:
        """Return how many tests end their worker: each costs one replacement."""
        return sum(t.does.fault is not None for t in self.tests)

    @property
    def args(self) -> tuple[str, ...]:
        # exactly the replacements the faults cost: one more would abort the run
        return (
            "-p",
            "restask",
            "-n",
            str(self.workers),
            f"--task-timeout={TASK_TIMEOUT:g}",
            f"--max-worker-restart={self.faults}",
            "-p",
            "no:cacheprovider",
            *(("--durations-file", DURATIONS_FILE) if self.short_estimates else ()),
        )

    def describe(self) -> str:
        rerun = (
            f"RESTASK_FAULT_SEED={self.seed} RESTASK_FAULT_SUITES={max(SUITES, self.index + 1)} "
            f"pytest 'tests/test_random_faults.py::test_random_suite[seed{self.seed}-suite{self.index}]'"
        )
        lines = [
            f"suite {self.index} of seed {self.seed}: {len(self.tests)} tests on {self.workers} workers, "
            f"run as: PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 pytest {' '.join(self.args)}",
            f"rerun it: {rerun}",
            *(f"  {t.describe()}" for t in self.tests),
        ]
        return "\n".join(lines)


def plan(seed: int, index: int) -> Suite:
    """Return suite ``index`` of ``seed``; the same on every machine."""
    rng = random.Random(f"restask-faults:{seed}:{index}")
    names = list(BEHAVIOURS)
    weights = [BEHAVIOURS[n].weight for n in names]
    count = rng.randint(4, 14)
    workers = rng.randint(1, 4)
    modules = rng.randint(1, 3)
    tests = []
    for number in range(count):
        behaviour = rng.choices(names, weights)[0]
        serial = rng.random() < SERIAL_CHANCE
        requests = () if serial else rng.choice(KINDS)
        module = f"test_gen{number % modules}"
        sleep = round(rng.uniform(0.0, 0.03), 3)
        tests.append(Planned(f"test_{number:02d}_{behaviour}", module, behaviour, requests, serial, sleep))
    return Suite(seed, index, workers, tuple(tests), short_estimates=rng.random() < 0.5)


def write(pytester: pytest.Pytester, suite: Suite) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    (pytester.path / "beats").mkdir()
    modules: dict[str, list[str]] = {}
    for test in suite.tests:
        modules.setdefault(test.module, []).append(test.source())
    header = "import os, signal, time\nimport pytest\nfrom conftest import child, crash, hang\n\n\n"
    for module, sources in modules.items():
        pytester.makepyfile(**{module: header + "\n\n".join(sources)})
    if suite.short_estimates:
        estimates = dict.fromkeys((t.nodeid for t in suite.tests), 0.001)
        (pytester.path / DURATIONS_FILE).write_text(json.dumps(estimates))


# -- checks ----------------------------------------------------------------------


def _lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_outcomes(suite: Suite, result: pytest.RunResult) -> list[str]:
    expected: Counter[str] = Counter()
    for test in suite.tests:
        expected.update(dict(test.does.counts))
    problems = []
    try:
        got = result.parseoutcomes()
    except ValueError:
        return ["no summary line in the output"]
    if got != dict(expected):
        problems.append(f"outcomes {got}, expected {dict(expected)}")
    code = pytest.ExitCode.TESTS_FAILED if expected["failed"] or expected["errors"] else pytest.ExitCode.OK
    if result.ret != code:
        problems.append(f"exit code {result.ret}, expected {int(code)}")
    summary = re.search(r"restask: (\d+) tests on (\d+) workers", result.stdout.str())
    workers = min(suite.workers, len(suite.tests))
    if summary is None or summary.groups() != (str(len(suite.tests)), str(workers)):
        problems.append(f"no line 'restask: {len(suite.tests)} tests on {workers} workers'")
    output = result.stdout.str() + result.stderr.str()
    if "INTERNALERROR" in output:
        problems.append("INTERNALERROR in the output")
    frames = sorted(set(re.findall(r"pytest_restask/\w+\.py:\d+", output)))
    if frames:
        problems.append(f"tracebacks through pytest_restask in the output: {', '.join(frames)}")
    if "outside a test" in output:
        problems.append("a worker failed or ended outside a test")
    if result.errlines:
        problems.append("the run wrote to stderr")
    return problems


def check_reports(suite: Suite, path: Path, records: list[dict[str, Any]]) -> list[str]:
    """Each test's phases are reported once each, in order, with the planned
    failure; a lost test's message names the worker it ran on."""
    workers = {r["name"]: r["worker"] for r in records}
    phases: dict[str, list[tuple[str, str, str]]] = {}
    for nodeid, when, outcome, text in _lines(path / "reports.jsonl"):
        phases.setdefault(nodeid, []).append((when, outcome, text))
    planned = {t.nodeid for t in suite.tests}
    problems = [f"reports for {nodeid}, which is not planned" for nodeid in sorted(set(phases) - planned)]
    for test in suite.tests:
        reports = phases.get(test.nodeid, [])
        got = tuple((when, outcome) for when, outcome, _ in reports)
        if got != test.does.phases:
            problems.append(f"{test.nodeid} reported {got}, expected {test.does.phases}")
            continue
        if test.does.failure is None:
            continue
        when, pattern = test.does.failure
        text = next(text for w, _, text in reports if w == when)
        found = re.search(pattern.format(nodeid=re.escape(test.nodeid), timeout=f"{TASK_TIMEOUT:g}"), text, re.M)
        if found is None:
            problems.append(f"{test.nodeid}: {when} report does not match {pattern!r}: {text[-300:]!r}")
        elif found.groups() and found.group(1) != workers.get(test.name):
            problems.append(f"{test.nodeid}: the message names {found.group(1)}, it ran on {workers.get(test.name)}")
    return problems


def holds(path: Path) -> list[dict[str, Any]]:
    """Return the holds logged: at their end, before a crash, or by a hang's last beat."""
    beats = [json.loads(beat.read_text()) for beat in sorted((path / "beats").glob("*.json"))]
    return _lines(path / "holds.jsonl") + beats


def check_holds(suite: Suite, records: list[dict[str, Any]]) -> list[str]:
    """Every test logged one hold, with its slots; no conflicting holds overlap."""
    index = {t.name: i for i, t in enumerate(suite.tests)}
    logged = Counter(r["name"] for r in records)
    problems = [f"{t.name} logged {logged[t.name]} holds" for t in suite.tests if logged[t.name] != 1]
    problems += [f"{name} logged, not planned" for name in logged if name not in index]
    intervals = []
    for record in records:
        name = record["name"]
        if name not in index or logged[name] != 1:
            continue
        test = suite.tests[index[name]]
        slots = {k: tuple(v) for k, v in record["slots"].items()}
        counted = {r.name: r.slots for r in test.requirement.requests if r.mode is Mode.COUNTED}
        if {k: len(v) for k, v in slots.items()} != counted:
            problems.append(f"{name} got slots {slots}, asked for {counted}")
        intervals.append(Interval(index[name], record["worker"], record["start"], record["end"], slots))
    return problems + conflicts(intervals, [t.requirement for t in suite.tests], CAPACITIES)


def _alive(pid: int, started: int) -> bool:
    """Return whether the process ``pid`` that started at ``started`` lives (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[0] != "Z" and int(stat[19]) == started


def check_processes(suite: Suite, path: Path, records: list[dict[str, Any]]) -> list[str]:
    """No worker and no child of a test is alive a few seconds after the run."""
    entries: list[tuple[int, int, str]] = [tuple(e) for e in _lines(path / "pids.jsonl")]
    problems = []
    workers = {pid for pid, _, what in entries if what.startswith("worker ")}
    # the pid log must be complete, or the check below would prove nothing
    unknown = {r["pid"] for r in records} - workers
    if unknown:
        problems.append(f"tests ran in processes not logged as workers: {sorted(unknown)}")
    children = sum(1 for _, _, what in entries if what.startswith("child "))
    planned = sum(t.does.children for t in suite.tests)
    if children != planned:
        problems.append(f"{children} child processes logged, {planned} planned")
    pending = list(entries)
    deadline = time.monotonic() + EXIT_GRACE
    while pending and time.monotonic() < deadline:
        pending = [(pid, started, what) for pid, started, what in pending if _alive(pid, started)]
        if pending:
            time.sleep(0.1)
    for pid, started, what in pending:
        command = "?"
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        problems.append(f"{what} (pid {pid}: {command}) still alive {EXIT_GRACE:g} s after the run")
        # leave nothing to the next suite: it is verifiably the process the run started
        if _alive(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return problems


# -- the test --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("index", range(SUITES), ids=lambda i: f"seed{SEED}-suite{i}")
def test_random_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    suite = plan(SEED, index)
    write(pytester, suite)
    # only restask (-p restask): each installed plugin would be imported by the
    # controller and every worker, hypothesis alone at about 1 s of CPU each
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    try:
        result = pytester.runpytest_subprocess(*suite.args, timeout=RUN_TIMEOUT)
    except pytester.TimeoutExpired:
        problems = [f"the run did not end within {RUN_TIMEOUT} s"]
        problems += check_processes(suite, pytester.path, holds(pytester.path))
        pytest.fail(f"{suite.describe()}\nproblems:\n" + "\n".join(f"- {p}" for p in problems), pytrace=False)
    records = holds(pytester.path)
    problems = check_outcomes(suite, result)
    problems += check_reports(suite, pytester.path, records)
    problems += check_holds(suite, records)
    problems += check_processes(suite, pytester.path, records)
    if problems:
        output = "\n".join(result.outlines[-80:] + result.errlines[-20:])
        pytest.fail(
            f"{suite.describe()}\nproblems:\n" + "\n".join(f"- {p}" for p in problems) + f"\noutput:\n{output}",
            pytrace=False,
        )
