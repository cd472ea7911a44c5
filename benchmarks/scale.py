"""Scale check: many tests, many workers, and the controller's peak memory.

Issue 4's scale requirement: 20,000 trivial tests at ``-n 4`` and 200 tests
at ``-n 32`` complete with correct counts and bounded controller memory.

What is measured
----------------
Each suite is generated in a fresh temporary directory and run by three
contenders, each as a whole Python subprocess that calls ``pytest.main`` and
then prints its own ``getrusage(RUSAGE_SELF).ru_maxrss``: the peak resident
memory of the *controller* process alone (``RUSAGE_SELF`` excludes children,
so workers do not count). The same subprocess also reports its resident
memory right after collection and at session finish, and
``RUSAGE_CHILDREN.ru_maxrss``, the peak of the largest worker it reaped.
Wall time is the whole subprocess, start-up to exit. Contenders run
round-robin, ``--repeat`` rounds; the table shows the median wall time and
the largest controller peak of the rounds.

- ``serial``: ``pytest -p no:xdist -p no:restask`` (plain pytest);
- ``xdist``: ``pytest -p no:restask -n N`` (resource markers are ignored);
- ``restask``: ``pytest -p no:xdist -p restask -n N``.

Suites:

- ``trivial``: 20,000 trivial tests at ``-n 4``, in 20 modules spread over
  four directories, each module a mix of plain functions, a test class and
  parametrized functions (integer, string and stacked ids);
- ``trivial-small``: 2,000 tests in 2 modules of the same shape at ``-n 4``; with
  ``trivial`` it gives the controller's memory growth per test,
  ``(peak(20,000) - peak(2,000)) / 18,000``, printed as KB per test;
- ``resources``: 200 tests sleeping 10-50 ms at ``-n 32``, plain functions
  and ``pytest.param`` cases, some on "db" (exclusive or shared), "port",
  "cache" + "db", counted "gpu" slots (capacity 2) and two serial tests.
  Each test body logs its start and end; "conflicts" counts overlaps that the
  markers forbid (pairs where one side is exclusive or serial, and moments
  with more "gpu" slots in use than its capacity). restask must have none;
  for serial it is 0 by construction and for xdist it shows what the markers
  prevent.

A run fails if its exit code is not 0, if the outcome counts on pytest's
final line are not exactly "N passed" (warnings are shown, not counted), if
the controller did not collect N tests (restask and serial), or, for
restask, if a conflict was seen. A run that exceeds ``--timeout`` gets
SIGUSR1 first (the controller dumps its Python stacks to stderr, shown in the
output tail), then SIGTERM, then SIGKILL.

Run from the repository root, with the interpreter that has pytest,
pytest-xdist and pytest-restask installed::

    python benchmarks/scale.py [--repeat 1] [--only trivial,trivial-small,resources] [--quick]

``--quick`` divides every test count by 10 (worker counts stay). The script
uses only the standard library and the helpers of ``benchmarks/run.py``. It
exits with status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# run.py sits next to this script, so it is importable when the script runs
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import output_text, print_environment, print_table, print_tail, write

SEED = 20240604
TRIVIAL_TESTS = 20_000
SMALL_TESTS = 2_000
TRIVIAL_WORKERS = 4
RESOURCE_TESTS = 200
RESOURCE_WORKERS = 32
RESOURCE_MODULES = 8
GPU_CAPACITY = 2
SUITES = ("trivial", "trivial-small", "resources")
CONTENDERS = ("serial", "xdist", "restask")

# The controller: pytest.main in process, then its own peak RSS on the last line.
PROBE = r"""
import faulthandler, os, resource, signal, sys
import pytest

faulthandler.register(signal.SIGUSR1, all_threads=True)
SCALE = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KB on Linux


def rss_bytes():
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return -1


class Probe:
    collected = -1
    collect_rss = -1
    finish_rss = -1

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        self.collected = len(session.items)
        self.collect_rss = rss_bytes()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        self.finish_rss = rss_bytes()


probe = Probe()
code = int(pytest.main(sys.argv[1:], plugins=[probe]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * SCALE
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * SCALE
print("SCALE_PROBE", code, peak, probe.collect_rss, probe.finish_rss, workers, probe.collected, flush=True)
sys.exit(code)
"""
PROBE_RE = re.compile(r"^SCALE_PROBE (-?\d+) (-?\d+) (-?\d+) (-?\d+) (-?\d+) (-?\d+)$", re.MULTILINE)
OUTCOME_RE = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected|rerun)\b")
FINAL_RE = re.compile(r"\bin \d+(?:\.\d+)?s\b")
RESTASK_LINE_RE = re.compile(r"^restask: .*$", re.MULTILINE)


@dataclass(frozen=True)
class Contender:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    """One generated test of the resources suite and what it holds."""

    nodeid: str
    seconds: float
    exclusive: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    gpu: int = 0
    serial: bool = False

    def conflicts_with(self, other: Job) -> bool:
        """True if the two may not overlap (counted slots are checked separately)."""
        if self.serial or other.serial:
            return True
        mine = set(self.exclusive) | set(self.shared)
        theirs = set(other.exclusive) | set(other.shared)
        return bool(set(self.exclusive) & theirs or set(other.exclusive) & mine)


@dataclass
class Suite:
    name: str
    root: Path
    expected: int
    workers: int
    jobs: dict[str, Job] = field(default_factory=dict)  # resources suite only

    @property
    def contenders(self) -> list[Contender]:
        n = str(self.workers)
        return [
            Contender("serial", ("-p", "no:xdist", "-p", "no:restask")),
            Contender("xdist", ("-p", "no:restask", "-n", n)),
            Contender("restask", ("-p", "no:xdist", "-p", "restask", "-n", n)),
        ]


@dataclass
class Run:
    """The outcome of one subprocess run; memory in bytes, -1 if unknown."""

    seconds: float
    problem: str | None
    peak: int = -1
    collect_rss: int = -1
    finish_rss: int = -1
    worker_peak: int = -1
    warnings: int = 0
    conflicts: int | None = None
    summary: list[str] = field(default_factory=list)  # restask's own lines ("restask: ...")
    stray_summaries: int = 0  # lines like "5 passed in 1.2s" on stderr

    @property
    def ok(self) -> bool:
        return self.problem is None


# ---------------------------------------------------------------- suite files

PYTEST_INI = """\
[pytest]
markers =
    resource(*names, shared=False, slots=None): restask resource (registered here for runs without restask)
    serial: restask serial test (registered here for runs without restask)
filterwarnings =
    ignore:Unknown config option. restask_resources:pytest.PytestConfigWarning
"""


def trivial_module(index: int, unit: int) -> str:
    """A module of 10 * unit trivial tests: functions, a class and parametrized ids."""
    half = unit // 2
    parts = ["import pytest\n"]
    parts += [f"def test_plain_{index}_{k}():\n    assert {k} >= 0\n" for k in range(unit)]
    methods = "".join(f"    def test_method_{k}(self):\n        assert self.value == {index}\n\n" for k in range(unit))
    parts.append(f"class TestGroup{index}:\n    value = {index}\n\n{methods}")
    parts += [
        f'@pytest.mark.parametrize("case", range({unit}))\ndef test_number_{k}(case):\n    assert case < {unit}\n'
        for k in range(4)
    ]
    parts += [
        f'@pytest.mark.parametrize("name", [f"user-{{i:04d}}@example.org" for i in range({unit})])\n'
        f'def test_name_{k}(name):\n    assert "@" in name\n'
        for k in range(2)
    ]
    parts += [
        f'@pytest.mark.parametrize("size", range({half}))\n'
        f'@pytest.mark.parametrize("mode", ["fast", "slow"])\n'
        f"def test_stacked_{k}(mode, size):\n    assert mode and size >= 0\n"
        for k in range(2)
    ]
    return "\n\n".join(parts)


def build_trivial(root: Path, name: str, tests: int, modules: int, workers: int) -> Suite:
    """``tests`` trivial tests in ``modules`` modules of the same shape."""
    unit = tests // modules // 10
    if unit < 2 or unit % 2 or modules * unit * 10 != tests:
        raise ValueError(f"cannot shape {tests} trivial tests into modules")
    write(root / "pytest.ini", PYTEST_INI)
    for index in range(modules):
        path = root / f"area_{index % 4}" / f"test_area{index % 4}_module{index:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(trivial_module(index, unit), encoding="utf-8")
    return Suite(name, root, tests, workers)


WORK_CONFTEST = """
import json
import os
import time

import pytest


@pytest.fixture
def work(request):
    \"\"\"Sleep in the test body; log the body's start and end.\"\"\"

    def run(seconds):
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        entry = {"nodeid": request.node.nodeid, "start": start, "end": end}
        with open(os.environ["SCALE_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\\n")

    return run
"""

# (how many, exclusive names, shared names, gpu slots, serial)
RESOURCE_MIX: tuple[tuple[int, tuple[str, ...], tuple[str, ...], int, bool], ...] = (
    (108, (), (), 0, False),
    (20, ("db",), (), 0, False),
    (36, (), ("db",), 0, False),
    (12, ("port",), (), 0, False),
    (8, ("cache",), ("db",), 0, False),
    (14, (), (), 1, False),
    (2, (), (), 0, True),
)


def quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def marker_exprs(job: Job) -> list[str]:
    marks = [f"pytest.mark.resource({quoted(job.exclusive)})"] if job.exclusive else []
    if job.shared:
        marks.append(f"pytest.mark.resource({quoted(job.shared)}, shared=True)")
    if job.gpu:
        marks.append(f'pytest.mark.resource("gpu", slots={job.gpu})')
    if job.serial:
        marks.append("pytest.mark.serial")
    return marks


def make_jobs(total: int) -> list[tuple[str, str, Job]]:
    """(module, test function, job): the mix scaled to ``total``, shuffled, odd ones as pytest.param cases."""
    rng = random.Random(SEED)
    scale = total / sum(row[0] for row in RESOURCE_MIX)
    kinds = [row[1:] for row in RESOURCE_MIX for _ in range(max(1, round(row[0] * scale)))]
    rng.shuffle(kinds)
    kinds = kinds[:total] + [((), (), 0, False)] * (total - len(kinds))
    jobs = []
    for index, (exclusive, shared, gpu, serial) in enumerate(kinds):
        module = f"test_service_{index % RESOURCE_MODULES}.py"
        seconds = round(rng.uniform(0.010, 0.050), 3)
        if index % 2:
            function, nodeid = "test_case", f"{module}::test_case[c{index:03d}]"
        else:
            function = f"test_op_{index:03d}"
            nodeid = f"{module}::{function}"
        jobs.append((module, function, Job(nodeid, seconds, exclusive, shared, gpu, serial)))
    return jobs


def resource_module(jobs: list[tuple[str, Job]]) -> str:
    parts = ["import pytest\n"]
    params = []
    for function, job in jobs:
        marks = marker_exprs(job)
        if function == "test_case":
            case = job.nodeid.split("[")[1].rstrip("]")
            marks_arg = f", marks=[{', '.join(marks)}]" if marks else ""
            params.append(f'    pytest.param({job.seconds}{marks_arg}, id="{case}"),\n')
        else:
            decorators = "".join(f"@{mark}\n" for mark in marks)
            parts.append(f"{decorators}def {function}(work):\n    work({job.seconds})\n")
    if params:
        parts.append(f'@pytest.mark.parametrize("seconds", [\n{"".join(params)}])\ndef test_case(work, seconds):\n')
        parts[-1] += "    work(seconds)\n"
    return "\n\n".join(parts)


def build_resources(root: Path, tests: int, workers: int) -> Suite:
    jobs = make_jobs(tests)
    write(root / "pytest.ini", PYTEST_INI + f"restask_resources =\n    gpu: {GPU_CAPACITY}\n")
    write(root / "conftest.py", WORK_CONFTEST)
    modules: dict[str, list[tuple[str, Job]]] = {}
    for module, function, job in jobs:
        modules.setdefault(module, []).append((function, job))
    for module, entries in modules.items():
        (root / module).write_text(resource_module(entries), encoding="utf-8")
    return Suite("resources", root, tests, workers, {job.nodeid: job for _, _, job in jobs})


# -------------------------------------------------------------------- running


def clean_env(log: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "RESTASK_"))}
    env["SCALE_LOG"] = str(log)
    return env


def run_probe(cwd: Path, args: Sequence[str], log: Path, timeout: float) -> tuple[float, int | None, str, str]:
    """Run the probe (pytest.main) in cwd; wall seconds, exit code (None on timeout), stdout, stderr."""
    command = [sys.executable, "-c", PROBE, "-q", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    with subprocess.Popen(
        command, cwd=cwd, env=clean_env(log), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return time.perf_counter() - start, None, stop_hung(process, timeout), ""
    return time.perf_counter() - start, process.returncode, stdout, stderr


def stop_hung(process: subprocess.Popen[str], timeout: float) -> str:
    """Dump the controller's stacks (SIGUSR1), then SIGTERM, then SIGKILL; return what it printed."""
    pieces = []
    for sig, grace in ((signal.SIGUSR1, 3.0), (signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            out, err = process.communicate(timeout=grace)
            pieces += [out, err]
            break
        except subprocess.TimeoutExpired as partial:
            pieces += [output_text(partial.stdout), output_text(partial.stderr)]
    return "".join(pieces) + f"\n(timed out after {timeout:.0f} s: SIGUSR1 stack dump, then SIGTERM)"


def outcome_counts(output: str) -> dict[str, int] | None:
    """The counts on pytest's final summary line, e.g. {"passed": 20000, "warnings": 2}."""
    for line in reversed(output.splitlines()):
        if FINAL_RE.search(line) and OUTCOME_RE.search(line):
            counts: dict[str, int] = {}
            for number, word in OUTCOME_RE.findall(line):
                key = {"error": "errors", "warning": "warnings"}.get(word, word)
                counts[key] = int(number)
            return counts
    return None


def run_once(suite: Suite, contender: Contender, log: Path, timeout: float) -> tuple[Run, str]:
    log.unlink(missing_ok=True)
    seconds, code, stdout, stderr = run_probe(suite.root, contender.args, log, timeout)
    output = stdout + stderr
    run = Run(seconds, None)
    # pytest's own final line is on stdout; anything like it on stderr came from elsewhere (workers)
    run.stray_summaries = sum(bool(FINAL_RE.search(line) and OUTCOME_RE.search(line)) for line in stderr.splitlines())
    run.summary = RESTASK_LINE_RE.findall(stdout)
    probe = PROBE_RE.search(stdout)
    if probe:
        _, run.peak, run.collect_rss, run.finish_rss, run.worker_peak, collected = map(int, probe.groups())
    else:
        collected = -1
    counts = outcome_counts(stdout) or {}
    run.warnings = counts.pop("warnings", 0)
    if code is None:
        run.problem = "timed out"
    elif code != 0:
        run.problem = f"exit code {code}"
    elif counts != {"passed": suite.expected}:
        shown = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no summary line"
        run.problem = f"counts {shown}, expected {suite.expected} passed"
    elif probe is None:
        run.problem = "no SCALE_PROBE line"
    elif contender.name != "xdist" and collected != suite.expected:
        run.problem = f"controller collected {collected}, expected {suite.expected}"
    if suite.jobs and run.ok:
        run.conflicts, log_problem = count_conflicts(suite, log)
        run.problem = log_problem
        if run.ok and contender.name == "restask" and run.conflicts:
            run.problem = f"{run.conflicts} resource conflicts"
    return run, output


def count_conflicts(suite: Suite, log: Path) -> tuple[int, str | None]:
    """Forbidden overlaps in the log, or a problem if the log does not hold every test once."""
    entries = []
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            entries.append((record["nodeid"], record["start"], record["end"]))
    if sorted(nodeid for nodeid, _, _ in entries) != sorted(suite.jobs):
        return 0, f"the log has {len(entries)} entries for {len(suite.jobs)} tests"
    conflicts = 0
    for index, (first, start1, end1) in enumerate(entries):
        for second, start2, end2 in entries[index + 1 :]:
            if start1 < end2 and start2 < end1 and suite.jobs[first].conflicts_with(suite.jobs[second]):
                conflicts += 1
    events = sorted(
        (time_, delta * suite.jobs[nodeid].gpu)
        for nodeid, start, end in entries
        if suite.jobs[nodeid].gpu
        for time_, delta in ((start, 1), (end, -1))
    )
    in_use = 0
    for _, delta in events:  # ends sort before starts at the same instant (-n < +n)
        in_use += delta
        conflicts += in_use > GPU_CAPACITY and delta > 0
    return conflicts, None


def warm_up(suite: Suite, timeout: float) -> None:
    """Collect once, untimed, so every timed run finds the rewritten-module cache."""
    _, code, out, err = run_probe(suite.root, ["--collect-only", "-p", "no:xdist"], suite.root / "warm.jsonl", timeout)
    if code != 0:
        print_tail(f"warm-up collection of {suite.name} failed", out + err)


def mb(value: int) -> str:
    return "-" if value < 0 else f"{value / 2**20:.1f}"


def run_suite(suite: Suite, repeat: int, timeout: float) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {contender.name: [] for contender in suite.contenders}
    for round_index in range(repeat):
        for contender in suite.contenders:
            log = suite.root / f"log-{contender.name}-{round_index}.jsonl"
            run, output = run_once(suite, contender, log, timeout)
            runs[contender.name].append(run)
            status = "ok" if run.ok else f"FAILED ({run.problem})"
            print(
                f"  round {round_index + 1}/{repeat}  {contender.name:<8} {run.seconds:8.2f} s"
                f"  peak {mb(run.peak)} MB  {status}",
                flush=True,
            )
            for line in run.summary:
                print(f"      {line}")
            if run.stray_summaries:
                print(f"      note: {run.stray_summaries} pytest summary lines on stderr (worker terminal output?)")
            if not run.ok:
                print_tail(f"{contender.name} on {suite.name} FAILED ({run.problem})", output)
    return runs


# -------------------------------------------------------------------- reports


def largest(runs: list[Run], attribute: str) -> int:
    return max((getattr(run, attribute) for run in runs), default=-1)


def median_seconds(runs: list[Run]) -> float | None:
    if not runs or not all(run.ok for run in runs):
        return None
    return statistics.median(run.seconds for run in runs)


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or base is None or base <= 0 or value < 0 else f"{value / base:.2f}"


def main_table(suites: list[Suite], results: dict[str, dict[str, list[Run]]]) -> list[list[str]]:
    rows = [
        [
            "suite",
            "contender",
            "tests",
            "-n",
            "wall s",
            "ctrl peak MB",
            "after collect MB",
            "at finish MB",
            "worker peak MB",
            "warnings",
            "conflicts",
            "counts ok",
        ]
    ]
    for suite in suites:
        for contender in suite.contenders:
            runs = results[suite.name][contender.name]
            seconds = median_seconds(runs)
            failed = sum(not run.ok for run in runs)
            conflicts = [run.conflicts for run in runs if run.conflicts is not None]
            rows.append(
                [
                    suite.name,
                    contender.name,
                    str(suite.expected),
                    "-" if contender.name == "serial" else str(suite.workers),
                    f"{seconds:.2f}" if seconds is not None else "-",
                    mb(largest(runs, "peak")),
                    mb(largest(runs, "collect_rss")),
                    mb(largest(runs, "finish_rss")),
                    mb(largest(runs, "worker_peak")) if contender.name != "serial" else "-",
                    str(max(run.warnings for run in runs)),
                    str(max(conflicts)) if conflicts and suite.jobs else "-",
                    "yes" if not failed else f"NO ({failed}/{len(runs)})",
                ]
            )
    return rows


def ratio_table(suites: list[Suite], results: dict[str, dict[str, list[Run]]]) -> list[list[str]]:
    rows = [["suite", "wall restask/serial", "wall restask/xdist", "peak restask/serial", "peak restask/xdist"]]
    for suite in suites:
        runs = results[suite.name]
        walls = {name: median_seconds(runs[name]) for name in CONTENDERS}
        peaks = {name: float(largest(runs[name], "peak")) for name in CONTENDERS}
        rows.append(
            [
                suite.name,
                ratio(walls["restask"], walls["serial"]),
                ratio(walls["restask"], walls["xdist"]),
                ratio(peaks["restask"], peaks["serial"]),
                ratio(peaks["restask"], peaks["xdist"]),
            ]
        )
    return rows


def growth_table(small: Suite, big: Suite, results: dict[str, dict[str, list[Run]]]) -> list[list[str]]:
    rows = [
        [
            "contender",
            f"peak MB @{small.expected}",
            f"peak MB @{big.expected}",
            "peak KB/test",
            "after-collect KB/test",
            "at-finish KB/test",
        ]
    ]
    extra = big.expected - small.expected
    for name in CONTENDERS:
        row = [name]
        small_runs, big_runs = results[small.name][name], results[big.name][name]
        row += [mb(largest(small_runs, "peak")), mb(largest(big_runs, "peak"))]
        for attribute in ("peak", "collect_rss", "finish_rss"):
            low, high = largest(small_runs, attribute), largest(big_runs, attribute)
            row.append("-" if low < 0 or high < 0 else f"{(high - low) / 1024 / extra:.2f}")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all contenders (default 1)")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated, from {','.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="a tenth of the tests in every suite (smoke run)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it counts as hung")
    args = parser.parse_args(argv)
    args.suites = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if args.repeat < 1 or args.timeout <= 0:
        parser.error("--repeat must be at least 1 and --timeout positive")
    return args


def builders(quick: bool) -> dict[str, Callable[[Path], Suite]]:
    div = 10 if quick else 1
    return {
        "trivial": lambda root: build_trivial(root, "trivial", TRIVIAL_TESTS // div, 20, TRIVIAL_WORKERS),
        "trivial-small": lambda root: build_trivial(root, "trivial-small", SMALL_TESTS // div, 2, TRIVIAL_WORKERS),
        "resources": lambda root: build_resources(root, RESOURCE_TESTS // div, RESOURCE_WORKERS),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print_environment()
    suites: list[Suite] = []
    results: dict[str, dict[str, list[Run]]] = {}
    with tempfile.TemporaryDirectory(prefix="restask-scale-") as tmp:
        for name in args.suites:
            started = time.perf_counter()
            suite = builders(args.quick)[name](Path(tmp) / name)
            warm_up(suite, args.timeout)
            print(f"{name}: {suite.expected} tests in {suite.root}, built in {time.perf_counter() - started:.1f} s")
            suites.append(suite)
            results[name] = run_suite(suite, args.repeat, args.timeout)
    print(f"\nmedian wall time and largest controller peak RSS of {args.repeat} round(s)")
    print_table(main_table(suites, results))
    print("  (ctrl peak: the controller's ru_maxrss, workers excluded; after collect / at finish: its RSS then;")
    print("   worker peak: the largest worker's ru_maxrss; xdist's controller does not collect)\n")
    print_table(ratio_table(suites, results))
    print("  (below 1: restask faster / smaller)\n")
    by_name = {suite.name: suite for suite in suites}
    if "trivial" in by_name and "trivial-small" in by_name:
        print("controller memory growth with suite size (difference between the two trivial suites, per extra test)")
        print_table(growth_table(by_name["trivial-small"], by_name["trivial"], results))
        print()
    failed = [
        f"{suite}/{contender}: {run.problem}"
        for suite, by_contender in results.items()
        for contender, runs in by_contender.items()
        for run in runs
        if not run.ok
    ]
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
