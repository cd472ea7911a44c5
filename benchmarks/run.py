"""Benchmark pytest-restask against a serial run and pytest-xdist recipes.

What is measured
----------------
Each suite is generated in a fresh temporary directory and run by several
contenders, each as a whole ``python -m pytest`` subprocess timed by the wall
clock (interpreter start-up, collection, worker start-up and shut-down all
count). Contenders run round-robin, one run each per round, ``--repeat``
rounds, and the table shows the median:

- ``serial``: ``pytest -p no:xdist`` (restask is autoloaded and runs in-process);
- ``xdist``: ``pytest -n N`` (pytest-xdist owns ``-n``; resource markers are ignored);
- ``xdist-loadgroup`` (resources suite): ``@pytest.mark.xdist_group`` instead of
  resource markers and ``--dist loadgroup``;
- ``xdist-filelock`` (resources suite): a ``filelock.FileLock`` per resource name
  taken in an autouse fixture, plain ``-n N``;
- ``restask``: ``pytest -p restask -n N``.

Suites:

- ``tiny``: 2,000 trivial tests at ``-n --workers`` (per-test overhead);
- ``startup``: one trivial test at ``-n 8`` (start-up and shut-down cost);
- ``resources``: 300 tests sleeping 40-150 ms, shuffled with a fixed seed, on
  "db", "port", "gpu" and "cache" (exclusive and shared) at ``-n 8``;
- ``fixtures``: 10 modules of 10 tests with expensive module- and
  session-scoped fixtures, half of the modules on "db", at ``-n 4``;
- ``imports`` and ``imports-8``: 400 trivial tests over 40 modules whose
  conftest imports a generated package that does real work as it is imported
  (tables computed, classes made: about half a second of CPU, bytecode
  cached), at ``-n --workers`` and at ``-n 8``: the cost every worker pays
  to import and collect what the controller already has (issue 17's baseline);
- ``large`` (only when named: it takes minutes): 60,000 trivial
  parametrized tests at ``-n --workers``, where the controller's cost per
  test decides whether 2 workers on 2 cores beat a serial run.

The child processes run without ``PYTHONDONTWRITEBYTECODE``, as in daily use,
so that bytecode and pytest's rewritten test modules are cached.

For the resources suite every test body appends its node id and start/end
wall times to a JSON-lines log. From it the script computes ``span / bound``,
where span is the time from the first test start to the last test end and
bound is a lower limit on any schedule with the suite's 8 workers: the
largest of total work / workers and, per resource, its exclusive work plus
its shared work / workers (1.00 would be a perfect schedule; for the serial
contender this is naturally far above 1). It also counts "conflicts": pairs of
tests that overlapped in time although one of them held a resource
exclusively that the other also used (the largest count seen in one run);
anything above 0 means that contender did not keep the resources apart.

Run from the repository root, with the interpreter that has pytest,
pytest-xdist, filelock and pytest-restask installed::

    python benchmarks/run.py [--repeat 3] [--workers 2] [--fresh] [--suite tiny,startup,...]

(suites: tiny, startup, resources, fixtures, imports, imports-8, large).

``--fresh`` runs every contender with ``-p no:cacheprovider``, as in a fresh
CI checkout where pytest's cache is empty (restask then remembers no
durations and no worker count, so its workers start after collection).

The script uses only the standard library; the child processes it starts use
``sys.executable``. It exits with status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

RUN_TIMEOUT = 900.0  # seconds; a run that takes longer counts as failed
TAIL_LINES = 25
SEED = 20240601
STARTUP_WORKERS = 8
RESOURCES_WORKERS = 8
FIXTURES_WORKERS = 4
LARGE_TESTS = 60_000
#: The imports suite: test modules, tests in each, and modules of the package its conftest imports.
IMPORT_TEST_MODULES = 40
IMPORT_TESTS_PER_MODULE = 10
IMPORT_PACKAGE_MODULES = 20
IMPORTS_WIDE_WORKERS = 8
# pytest's cache stays on, as in daily use: restask keeps its durations there
PYTEST = (sys.executable, "-m", "pytest", "-q")

# Variants: subdirectories of a suite, each a complete pytest rootdir.
MARKED = "marked"  # resource markers (restask's declarations)
LOADGROUP = "loadgroup"  # xdist_group markers
FILELOCK = "filelock"  # file locks taken in an autouse fixture

# The resources suite: (how many tests, exclusive resource names, shared resource names).
RESOURCE_MIX: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = (
    (120, (), ()),
    (40, ("db",), ()),
    (60, (), ("db",)),
    (24, ("port",), ()),
    (16, ("gpu",), ()),
    (20, ("cache",), ("db",)),
    (20, (), ("cache",)),
)
RESOURCE_MODULES = 6


@dataclass(frozen=True)
class Job:
    """One generated test of the resources suite."""

    nodeid: str
    seconds: float
    exclusive: tuple[str, ...]
    shared: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.exclusive + self.shared

    def conflicts_with(self, other: Job) -> bool:
        """True if the two may not overlap: one holds exclusively a name the other uses."""
        return bool(set(self.exclusive) & set(other.names) or set(other.exclusive) & set(self.names))


@dataclass(frozen=True)
class Contender:
    name: str
    variant: str
    args: tuple[str, ...]


@dataclass
class Suite:
    name: str
    root: Path
    expected: int
    workers: int
    contenders: list[Contender]
    jobs: dict[str, Job] = field(default_factory=dict)  # by node id; resources suite only


@dataclass
class Run:
    """The outcome of one subprocess run."""

    seconds: float
    ok: bool
    span_ratio: float | None = None
    conflicts: int | None = None
    #: span / the tighter bound (see ``lower_bound``'s ``chains``).
    tight_ratio: float | None = None


@dataclass(frozen=True)
class LogEntry:
    nodeid: str
    start: float
    end: float


# ---------------------------------------------------------------- suite files


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def write_ini(variant_dir: Path, extra: str = "") -> None:
    """A pytest.ini makes the variant directory the rootdir, away from any project config."""
    write(variant_dir / "pytest.ini", "[pytest]\n" + extra)


def basic_contenders(workers: int) -> list[Contender]:
    n = str(workers)
    return [
        Contender("serial", MARKED, ("-p", "no:xdist")),
        Contender("xdist", MARKED, ("-n", n)),
        Contender("restask", MARKED, ("-p", "restask", "-n", n)),
    ]


def trivial_suite(name: str, count: int) -> Callable[[Path, int], Suite]:
    """A builder of ``count`` trivial parametrized tests in one module."""

    def build(root: Path, workers: int) -> Suite:
        write_ini(root / MARKED)
        write(
            root / MARKED / f"test_{name}.py",
            f"""
            import pytest


            @pytest.mark.parametrize("case", range({count}))
            def test_{name}(case):
                assert case >= 0
            """,
        )
        return Suite(name, root, count, workers, basic_contenders(workers))

    return build


build_tiny = trivial_suite("tiny", 2000)
build_large = trivial_suite("large", LARGE_TESTS)


def build_startup(root: Path, workers: int) -> Suite:
    write_ini(root / MARKED)
    write(root / MARKED / "test_startup.py", "def test_startup():\n    pass\n")
    return Suite("startup", root, 1, STARTUP_WORKERS, basic_contenders(STARTUP_WORKERS))


def build_fixtures(root: Path, workers: int) -> Suite:
    base = root / MARKED
    write_ini(base)
    write(
        base / "conftest.py",
        """
        import time

        import pytest


        @pytest.fixture(scope="session")
        def session_resource():
            time.sleep(0.5)
            return "session"
        """,
    )
    for index in range(10):
        marker = 'pytestmark = pytest.mark.resource("db")\n\n\n' if index % 2 == 0 else ""
        write(base / f"test_module_{index}.py", fixture_module(marker))
    return Suite("fixtures", root, 100, FIXTURES_WORKERS, basic_contenders(FIXTURES_WORKERS))


def fixture_module(marker: str) -> str:
    return (
        "import time\n\nimport pytest\n\n"
        + marker
        + textwrap.dedent(
            """
            @pytest.fixture(scope="module")
            def module_resource(session_resource):
                time.sleep(0.2)
                return session_resource


            @pytest.mark.parametrize("case", range(10))
            def test_case(module_resource, case):
                time.sleep(0.01)
            """
        )
    )


HEAVY_MODULE = """
\"\"\"Generated: work done at import, as a large code base does (tables, classes).\"\"\"

import hashlib

TABLE = [hashlib.sha256(f"{INDEX}-{i}".encode()).hexdigest() for i in range(6000)]
SQUARES = {i: sum(j * j for j in range(i % 60)) for i in range(6000)}
CLASSES = [type(f"Model{INDEX}_{i}", (), {"field": i, "name": TABLE[i]}) for i in range(400)]


def lookup(i):
    return CLASSES[i % len(CLASSES)].field + SQUARES[i % len(SQUARES)]
"""


def build_imports(root: Path, workers: int) -> Suite:
    """The imports suite at ``-n workers`` (see the module docstring)."""
    base = root / MARKED
    write_ini(base)
    modules = [f"heavy_{index:02d}" for index in range(IMPORT_PACKAGE_MODULES)]
    write(base / "heavy" / "__init__.py", "".join(f"from . import {module}\n" for module in modules))
    for index, module in enumerate(modules):
        write(
            base / "heavy" / f"{module}.py",
            HEAVY_MODULE.replace("{INDEX}", str(index)).replace("{{", "{").replace("}}", "}"),
        )
    write(base / "conftest.py", "import heavy  # the suite's code under test, imported by every process\n")
    for index in range(IMPORT_TEST_MODULES):
        write(
            base / f"test_imports_{index:02d}.py",
            f"""
            import pytest

            import heavy


            @pytest.mark.parametrize("case", range({IMPORT_TESTS_PER_MODULE}))
            def test_lookup(case):
                assert heavy.heavy_{index % IMPORT_PACKAGE_MODULES:02d}.lookup(case) >= 0
            """,
        )
    count = IMPORT_TEST_MODULES * IMPORT_TESTS_PER_MODULE
    return Suite("imports", root, count, workers, basic_contenders(workers))


def build_imports_wide(root: Path, workers: int) -> Suite:
    suite = build_imports(root, IMPORTS_WIDE_WORKERS)
    suite.name = "imports-8"
    return suite


# ------------------------------------------------------------ resources suite

WORK_FIXTURE = """

@pytest.fixture
def work(request):
    \"\"\"Sleep inside the test body and log the test's own start and end.\"\"\"

    def run(seconds):
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        entry = json.dumps({"nodeid": request.node.nodeid, "start": start, "end": end})
        with open(os.environ["BENCH_LOG"], "a", encoding="utf-8") as log:
            log.write(entry + "\\n")

    return run
"""

FILELOCK_FIXTURE = """

LOCK_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def resource_locks(request):
    \"\"\"The usual recipe: one file lock per resource name, held around the test.

    Shared users take the same lock as exclusive ones, so this recipe serializes
    readers too. Locks are taken in sorted order, so two tests cannot deadlock.
    A worker that waits here keeps its slot, idle.
    \"\"\"
    marker = request.node.get_closest_marker("uses")
    names = sorted(marker.args) if marker else []
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(FileLock(os.path.join(LOCK_DIR, name + ".lock")))
        yield
"""


def conftest_source(variant: str) -> str:
    """The `work` fixture, plus the file-lock fixture for the filelock variant."""
    if variant != FILELOCK:
        return "import json\nimport os\nimport time\n\nimport pytest\n" + WORK_FIXTURE
    imports = (
        "import json\nimport os\nimport time\nfrom contextlib import ExitStack\n\n"
        "import pytest\nfrom filelock import FileLock\n"
    )
    return imports + WORK_FIXTURE + FILELOCK_FIXTURE


def make_jobs() -> list[Job]:
    """The resource mix, shuffled with a fixed seed, spread over a few modules."""
    rng = random.Random(SEED)
    kinds = [(exclusive, shared) for count, exclusive, shared in RESOURCE_MIX for _ in range(count)]
    rng.shuffle(kinds)
    per_module = -(-len(kinds) // RESOURCE_MODULES)
    return [
        Job(
            nodeid=f"test_resources_{index // per_module}.py::test_{index:03d}",
            seconds=round(rng.uniform(0.040, 0.150), 3),
            exclusive=exclusive,
            shared=shared,
        )
        for index, (exclusive, shared) in enumerate(kinds)
    ]


def loadgroups(jobs: Iterable[Job]) -> dict[str, str]:
    """Map resource names to xdist groups.

    A test belongs to at most one group, so names used together by one test
    ("db" and "cache") must share a group; shared users get no concurrency either.
    """
    groups: list[set[str]] = []
    for job in jobs:
        merged = set(job.names)
        for group in [group for group in groups if group & merged]:
            merged |= group
            groups.remove(group)
        if merged:
            groups.append(merged)
    return {name: "+".join(sorted(group)) for group in groups for name in group}


def quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def markers(job: Job, variant: str, groups: dict[str, str]) -> list[str]:
    if not job.names:
        return []
    if variant == LOADGROUP:
        return [f'@pytest.mark.xdist_group("{groups[job.names[0]]}")']
    if variant == FILELOCK:
        return [f"@pytest.mark.uses({quoted(job.names)})"]
    lines = [f"@pytest.mark.resource({quoted(job.exclusive)})"] if job.exclusive else []
    if job.shared:
        lines.append(f"@pytest.mark.resource({quoted(job.shared)}, shared=True)")
    return lines


def render_test(job: Job, variant: str, groups: dict[str, str]) -> str:
    name = job.nodeid.split("::")[1]
    lines = [*markers(job, variant, groups), f"def {name}(work):", f"    work({job.seconds})"]
    return "\n".join(lines) + "\n"


def write_resource_variant(base: Path, jobs: list[Job], variant: str) -> None:
    groups = loadgroups(jobs)
    extra = "markers =\n    uses(*names): resources this test takes file locks for\n" if variant == FILELOCK else ""
    write_ini(base, extra)
    write(base / "conftest.py", conftest_source(variant))
    modules: dict[str, list[str]] = {}
    for job in jobs:
        modules.setdefault(job.nodeid.split("::")[0], []).append(render_test(job, variant, groups))
    for module, tests in modules.items():
        write(base / module, "import pytest\n\n\n" + "\n\n".join(tests))


def build_resources(root: Path, workers: int) -> Suite:
    jobs = make_jobs()
    for variant in (MARKED, LOADGROUP, FILELOCK):
        write_resource_variant(root / variant, jobs, variant)
    n = str(RESOURCES_WORKERS)
    contenders = [
        Contender("serial", MARKED, ("-p", "no:xdist")),
        Contender("xdist", MARKED, ("-n", n)),
        Contender("xdist-loadgroup", LOADGROUP, ("-n", n, "--dist", "loadgroup")),
        Contender("xdist-filelock", FILELOCK, ("-n", n)),
        Contender("restask", MARKED, ("-p", "restask", "-n", n)),
    ]
    return Suite("resources", root, len(jobs), RESOURCES_WORKERS, contenders, {job.nodeid: job for job in jobs})


BUILDERS: dict[str, Callable[[Path, int], Suite]] = {
    "tiny": build_tiny,
    "startup": build_startup,
    "resources": build_resources,
    "fixtures": build_fixtures,
    "imports": build_imports,
    "imports-8": build_imports_wide,
    "large": build_large,
}
#: Suites left out unless named: they take minutes, or are the baseline of work to come.
OPT_IN = ("large", "imports", "imports-8")


# -------------------------------------------------------------------- running


def output_text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def run_pytest(cwd: Path, args: Sequence[str], log: Path) -> tuple[float, int | None, str]:
    """Run pytest in cwd; return wall seconds, exit code (None on timeout) and combined output."""
    # as in daily use: Python caches bytecode, and pytest its rewritten test
    # modules (a sandbox's PYTHONDONTWRITEBYTECODE would make every process
    # of every contender compile them again)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_LOG"] = str(log)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*PYTEST, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as timeout:
        text = output_text(timeout.stdout) + output_text(timeout.stderr)
        return time.perf_counter() - start, None, text + f"\n(timed out after {RUN_TIMEOUT:.0f} s)"
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr


def passed_count(output: str) -> int | None:
    counts = re.findall(r"\b(\d+) passed\b", output)
    return int(counts[-1]) if counts else None


def print_tail(title: str, output: str) -> None:
    print(f"    {title}; last {TAIL_LINES} lines of output:")
    for line in output.rstrip().splitlines()[-TAIL_LINES:]:
        print(f"    | {line}")


def check(suite: Suite, code: int | None, output: str) -> str | None:
    """None if the run passed with the expected number of tests, else why not."""
    passed = passed_count(output)
    if code != 0:
        return f"exit code {code}"
    if passed != suite.expected:
        return f"{passed} passed, expected {suite.expected}"
    return None


def warm_up(suite: Suite) -> None:
    """Collect each variant once, untimed, so every timed run finds the rewritten-module cache;
    and run restask once, so that it has durations from an earlier run, as in daily use."""
    for variant in sorted({contender.variant for contender in suite.contenders}):
        _, code, output = run_pytest(suite.root / variant, ["--collect-only"], suite.root / "warm-up.jsonl")
        if code != 0:
            print_tail(f"warm-up collection of {suite.name}/{variant} failed", output)
    for contender in suite.contenders:
        if contender.name == "restask":
            _, code, output = run_pytest(suite.root / contender.variant, contender.args, suite.root / "warm-up.jsonl")
            if code != 0:
                print_tail(f"warm-up run of {suite.name}/{contender.name} failed", output)


def run_once(suite: Suite, contender: Contender, log: Path) -> Run:
    seconds, code, output = run_pytest(suite.root / contender.variant, contender.args, log)
    problem = check(suite, code, output)
    if problem is None and suite.jobs:
        return measure_log(suite, seconds, log, output)
    if problem is not None:
        print_tail(f"{contender.name} FAILED ({problem})", output)
    return Run(seconds, problem is None)


def measure_log(suite: Suite, seconds: float, log: Path, output: str) -> Run:
    entries = read_log(log)
    if sorted(entry.nodeid for entry in entries) != sorted(suite.jobs):
        print_tail(f"FAILED: the log has {len(entries)} entries for {len(suite.jobs)} tests", output)
        return Run(seconds, ok=False)
    return Run(
        seconds,
        True,
        span_ratio(suite, entries),
        count_conflicts(suite.jobs, entries),
        span_ratio(suite, entries, chains=True),
    )


def run_suite(suite: Suite, repeat: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {contender.name: [] for contender in suite.contenders}
    for round_index in range(repeat):
        for contender in suite.contenders:
            log = suite.root / f"log-{contender.name}-{round_index}.jsonl"
            run = run_once(suite, contender, log)
            runs[contender.name].append(run)
            status = "ok" if run.ok else "FAILED"
            print(f"  round {round_index + 1}/{repeat}  {contender.name:<16} {run.seconds:8.2f} s  {status}")
    return runs


# ------------------------------------------------------------------- analysis


def read_log(log: Path) -> list[LogEntry]:
    """The log's entries; a garbled line is skipped, which the caller sees as a missing entry."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            entries.append(LogEntry(record["nodeid"], float(record["start"]), float(record["end"])))
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def lower_bound(jobs: dict[str, Job], entries: list[LogEntry], workers: int, chains: bool = False) -> float:
    """No schedule on `workers` workers can finish the logged work faster than this.

    The issue's bound: the work over the workers, and for each resource its
    exclusive work plus its shared work over the workers.  With ``chains``,
    a resource's shared time is also at least the work of its shared users
    that take another resource exclusively: those run one after another, and
    never while it is held exclusively.  (In this suite the 20 tests that read
    "db" holding "cache" make that term larger than the issue's.)
    """
    total = sum(entry.end - entry.start for entry in entries)
    bound = total / workers
    names = {name for job in jobs.values() for name in job.names}
    for name in names:
        exclusive = sum(e.end - e.start for e in entries if name in jobs[e.nodeid].exclusive)
        shared = sum(e.end - e.start for e in entries if name in jobs[e.nodeid].shared)
        chain = 0.0
        if chains:
            for other in names - {name}:
                chain = max(
                    chain,
                    sum(
                        e.end - e.start
                        for e in entries
                        if name in jobs[e.nodeid].shared and other in jobs[e.nodeid].exclusive
                    ),
                )
        bound = max(bound, exclusive + max(shared / workers, chain))
    return bound


def span_ratio(suite: Suite, entries: list[LogEntry], chains: bool = False) -> float:
    span = max(entry.end for entry in entries) - min(entry.start for entry in entries)
    return span / lower_bound(suite.jobs, entries, suite.workers, chains)


def count_conflicts(jobs: dict[str, Job], entries: list[LogEntry]) -> int:
    """Pairs of tests that ran at the same time although their resources conflict."""
    count = 0
    for index, first in enumerate(entries):
        for second in entries[index + 1 :]:
            overlap = first.start < second.end and second.start < first.end
            if overlap and jobs[first.nodeid].conflicts_with(jobs[second.nodeid]):
                count += 1
    return count


# -------------------------------------------------------------------- reports


def median_seconds(runs: list[Run]) -> float | None:
    """The median wall time, or None if any run failed."""
    if not runs or not all(run.ok for run in runs):
        return None
    return statistics.median(run.seconds for run in runs)


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or base is None or base == 0 else f"{value / base:.2f}"


def table_row(suite: Suite, name: str, runs: dict[str, list[Run]]) -> list[str]:
    median = median_seconds(runs[name])
    failed = sum(not run.ok for run in runs[name])
    shown = f"{median:.2f}" if median is not None else f"FAILED ({failed}/{len(runs[name])})"
    row = [name, shown, ratio(median, median_seconds(runs["serial"])), ratio(median, median_seconds(runs["xdist"]))]
    if suite.jobs:
        ratios = [run.span_ratio for run in runs[name] if run.span_ratio is not None]
        tight = [run.tight_ratio for run in runs[name] if run.tight_ratio is not None]
        conflicts = [run.conflicts for run in runs[name] if run.conflicts is not None]
        row.append(f"{statistics.median(ratios):.2f}" if median is not None and ratios else "-")
        row.append(f"{statistics.median(tight):.2f}" if median is not None and tight else "-")
        row.append(str(max(conflicts)) if median is not None and conflicts else "-")
    return row


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip())
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def report(suite: Suite, runs: dict[str, list[Run]], repeat: int) -> None:
    header = ["contender", "median s", "vs serial", "vs xdist"]
    if suite.jobs:
        header += ["span/bound", "span/bound*", "conflicts"]
    print(f"\n{suite.name}: {suite.expected} tests, {suite.workers} workers, median of {repeat} run(s)")
    print_table([header] + [table_row(suite, contender.name, runs) for contender in suite.contenders])
    print("  (vs serial / vs xdist: median time divided by theirs, below 1 is faster)")
    if suite.jobs:
        print("  (span/bound: 1.00 is a perfect schedule; conflicts: most conflicting overlaps in one run)")
        print("  (bound*: the bound with chains of shared users holding another resource; see lower_bound)")
    print()


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_environment() -> None:
    print(f"python {platform.python_version()} ({sys.executable})")
    packages = ("pytest", "pytest-xdist", "filelock", "pytest-restask")
    print(", ".join(f"{package} {version(package)}" for package in packages))
    print(f"os.cpu_count() = {os.cpu_count()}, {platform.platform()}\n")


# ----------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all contenders (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="workers for the tiny suite (default 2)")
    parser.add_argument(
        "--fresh", action="store_true", help="run every contender with -p no:cacheprovider (a fresh CI checkout)"
    )
    default = ",".join(name for name in BUILDERS if name not in OPT_IN)
    parser.add_argument(
        "--suite", default=default, help=f"comma-separated, from {','.join(BUILDERS)} (default {default})"
    )
    args = parser.parse_args(argv)
    args.suites = [name.strip() for name in args.suite.split(",") if name.strip()]
    unknown = [name for name in args.suites if name not in BUILDERS]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    return args


def benchmark(name: str, repeat: int, workers: int, fresh: bool = False) -> bool:
    """Build, run and report one suite; True if every run passed."""
    with tempfile.TemporaryDirectory(prefix=f"restask-bench-{name}-") as tmp:
        suite = BUILDERS[name](Path(tmp), workers)
        if fresh:
            suite.contenders = [
                Contender(c.name, c.variant, (*c.args, "-p", "no:cacheprovider")) for c in suite.contenders
            ]
            suite.name += " (fresh: -p no:cacheprovider)"
        print(f"{name}: built in {tmp}")
        warm_up(suite)
        runs = run_suite(suite, repeat)
        report(suite, runs, repeat)
    return all(run.ok for contender_runs in runs.values() for run in contender_runs)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print_environment()
    results = [benchmark(name, args.repeat, args.workers, args.fresh) for name in args.suites]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
