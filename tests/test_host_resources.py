"""Host-wide resources: two real pytest runs at once on one machine.

Each run is a real ``python -m pytest -p restask -n 3`` process over a suite
of its own, started together (a barrier in their conftests lets no run
start a test before both are configured).  The oracle is the tests' own log,
shared by both runs: an autouse fixture notes when each test starts and
ends, with its run, pid, resources and slot numbers; a test that is killed
notes a heartbeat every 20 ms instead of an end.  The checks read only that
log.  Each check that could pass because the runs did not overlap has a
negative control beside it: the same suites with the resources declared
without ``host`` do conflict.

Marked ``multirun``: .ci/run runs these modules as a step of their own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_restask.hostlocks import default_lock_dir

from .processes import pids_in, survivors

pytestmark = pytest.mark.multirun

CONFTEST = """
import json, os, time
import pytest

LOG = os.environ["HOSTRUN_LOG"]
RUN = os.environ["HOSTRUN_NAME"]
DIRECTORY = os.environ["HOSTRUN_DIR"]


def note(event, nodeid, **extra):
    record = {"ev": event, "run": RUN, "id": nodeid, "pid": os.getpid(), "t": time.time(), **extra}
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\\n")


def pytest_configure(config):
    with open(os.path.join(DIRECTORY, f"{RUN}-{os.getpid()}.pid"), "w") as f:
        f.write(str(os.getpid()))


def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        return
    # every run configured (its capacities registered) before any runs a test
    open(os.path.join(DIRECTORY, f"{RUN}.ready"), "w").close()
    deadline = time.time() + 60
    peers = os.environ["HOSTRUN_PEERS"].split(",")
    while not all(os.path.exists(os.path.join(DIRECTORY, f"{peer}.ready")) for peer in peers):
        assert time.time() < deadline, "the other run never started"
        time.sleep(0.01)


def _resources(item):
    found = []
    for marker in item.iter_markers("resource"):
        mode = "shared" if marker.kwargs.get("shared") else "counted" if marker.kwargs.get("slots") else "exclusive"
        found.extend([name, mode] for name in marker.args)
    return found


@pytest.fixture(autouse=True)
def _oracle(request):
    slots = os.environ.get("RESTASK_SLOTS_GPU", "")
    note("start", request.node.nodeid, res=_resources(request.node), slots=slots)
    yield
    note("end", request.node.nodeid)


@pytest.fixture
def heartbeat(request):
    def beat():
        note("tick", request.node.nodeid)
    return beat
"""


def suite(
    resource_lines: list[str], postgres: int, readers: int, writers: int, free: int, gpu: int = 0
) -> dict[str, str]:
    """Return the files of one run's suite: an ini with ``resource_lines``
    and tests of 0.3 s on postgres (exclusive), cache (shared readers,
    exclusive writers), gpu (one slot each) and nothing."""
    ini = "[pytest]\nrestask_resources =\n" + "".join(f"    {line}\n" for line in resource_lines)
    tests = f"""
import time
import pytest

@pytest.mark.resource("postgres")
@pytest.mark.parametrize("i", range({postgres}))
def test_postgres(i):
    time.sleep(0.3)

@pytest.mark.resource("cache", shared=True)
@pytest.mark.parametrize("i", range({readers}))
def test_cache_reader(i):
    time.sleep(0.3)

@pytest.mark.resource("cache")
@pytest.mark.parametrize("i", range({writers}))
def test_cache_writer(i):
    time.sleep(0.3)

@pytest.mark.resource("gpu", slots=1)
@pytest.mark.parametrize("i", range({gpu}))
def test_gpu(i):
    time.sleep(0.3)

@pytest.mark.parametrize("i", range({free}))
def test_free(i):
    time.sleep(0.3)
"""
    return {"pytest.ini": ini, "conftest.py": CONFTEST, "test_suite.py": tests}


@dataclass(frozen=True)
class Span:
    run: str
    test: str
    pid: int
    start: float
    end: float
    resources: tuple[tuple[str, str], ...]
    slots: str

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def conflicts(self, other: Span) -> str | None:
        """Return a resource the two use in conflicting ways, if any."""
        mine = dict(self.resources)
        for name, mode in other.resources:
            theirs = mine.get(name)
            if theirs is None or (theirs == mode == "shared") or (theirs == mode == "counted"):
                continue
            return name
        return None


class Runs:
    """Two (or more) runs over suites of their own, sharing one log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "log.jsonl"
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def write(self, name: str, files: dict[str, str]) -> Path:
        directory = self.root / name
        directory.mkdir()
        for filename, text in files.items():
            (directory / filename).write_text(text)
        return directory

    def start(self, names: list[str], *args: str, peers: list[str] | None = None) -> None:
        """Start a run in each named directory; each waits for ``peers`` (default: all of them)."""
        for name in names:
            env = dict(
                os.environ,
                HOSTRUN_LOG=str(self.log),
                HOSTRUN_NAME=name,
                HOSTRUN_DIR=str(self.root),
                HOSTRUN_PEERS=",".join(peers or names),
            )
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "restask", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
                cwd=self.root / name,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def finish(self, name: str, timeout: float = 120) -> tuple[int, str]:
        process = self.processes[name]
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output

    def wait_for(self, run: str, event: str, timeout: float = 60) -> None:
        """Wait until run ``run`` logged ``event`` (a test's "start", a "tick")."""
        deadline = time.monotonic() + timeout
        while not any(r["run"] == run and r["ev"] == event for r in self.records()):
            assert time.monotonic() < deadline, self.records()
            time.sleep(0.05)

    def records(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def spans(self) -> list[Span]:
        """Each test's span; a test that never ended lasts until its last heartbeat."""
        opened: dict[tuple[str, str, int], dict[str, object]] = {}
        last: dict[tuple[str, str, int], float] = {}
        found = []
        for record in self.records():
            key = (str(record["run"]), str(record["id"]), int(record["pid"]))  # type: ignore[call-overload]
            if record["ev"] == "start":
                opened[key] = record
                last[key] = float(record["t"])  # type: ignore[arg-type]
            elif record["ev"] == "tick":
                last[key] = float(record["t"])  # type: ignore[arg-type]
            elif record["ev"] == "end":
                found.append(_span(opened.pop(key), float(record["t"])))  # type: ignore[arg-type]
        found.extend(_span(start, last[key]) for key, start in opened.items())
        return found


def _span(start: dict[str, object], end: float) -> Span:
    resources = tuple((str(name), str(mode)) for name, mode in start["res"])  # type: ignore[attr-defined]
    return Span(
        str(start["run"]),
        str(start["id"]),
        int(start["pid"]),  # type: ignore[call-overload]
        float(start["t"]),  # type: ignore[arg-type]
        end,
        resources,
        str(start["slots"]),
    )


def conflicts(spans: list[Span]) -> list[tuple[str, Span, Span]]:
    """Return every pair of spans that overlap while using a resource in conflicting ways."""
    return [
        (resource, a, b)
        for a, b in itertools.combinations(spans, 2)
        if a.overlaps(b) and (resource := a.conflicts(b)) is not None
    ]


def cross_run_overlaps(spans: list[Span]) -> int:
    return sum(a.overlaps(b) for a, b in itertools.combinations(spans, 2) if a.run != b.run)


WAITED = re.compile(r"restask: \d+ test\(s\) waited (\d+\.\d+)s in all for host locks held by other runs")


def waited(output: str) -> float:
    """Return the seconds the summary says tests waited for other runs (0 when it says nothing)."""
    match = WAITED.search(output)
    return float(match.group(1)) if match else 0.0


def two_suites(runs: Runs, lines: list[str]) -> None:
    runs.write("one", suite(lines, postgres=4, readers=3, writers=2, free=4))
    runs.write("two", suite(lines, postgres=3, readers=4, writers=2, free=3))


HOST_LINES = ["postgres: 1 host", "cache: 1 host"]


@pytest.mark.parametrize("where", ["lock-dir", "default"])
def test_two_runs_never_use_a_host_resource_in_conflicting_ways(tmp_path: Path, where: str) -> None:
    """Must show 1 and 2: two runs at -n 3, one lock directory (given, or
    the per-user default): no conflict across both logs, the runs overlap,
    and a test of one run waited for a lock the other held."""
    runs = Runs(tmp_path)
    if where == "default":
        # names of this test's own: the default directory is every run's of this user
        tag = uuid.uuid4().hex[:8]
        lines = [f"postgres-{tag}: 1 host", f"cache-{tag}: 1 host"]
        files = [suite(lines, 4, 3, 2, 4), suite(lines, 3, 4, 2, 3)]
        for files_of_run in files:
            text = files_of_run["test_suite.py"]
            files_of_run["test_suite.py"] = text.replace('"postgres"', f'"postgres-{tag}"').replace(
                '"cache"', f'"cache-{tag}"'
            )
        runs.write("one", files[0])
        runs.write("two", files[1])
        args: tuple[str, ...] = ("-n", "3")
    else:
        two_suites(runs, HOST_LINES)
        args = ("-n", "3", f"--lock-dir={tmp_path / 'locks'}")
    runs.start(["one", "two"], *args)
    results = {name: runs.finish(name) for name in ("one", "two")}
    for code, output in results.values():
        assert code == 0, output
    spans = runs.spans()
    assert len(spans) == 13 + 12
    assert conflicts(spans) == []
    assert cross_run_overlaps(spans) > 0  # neither simply waited for the other
    assert max(waited(output) for _, output in results.values()) > 0, [o for _, o in results.values()]
    if where == "default":
        directory = default_lock_dir()
        made = sorted(path.name for path in directory.glob(f"*-{tag}.*"))
        assert f"postgres-{tag}.rw.db" in made
        for path in directory.glob(f"*-{tag}.*"):
            path.unlink()


def test_without_host_the_same_two_runs_conflict(tmp_path: Path) -> None:
    """The negative control: declared without ``host``, each run locks only
    its own tests, and the oracle sees conflicts across the runs."""
    runs = Runs(tmp_path)
    two_suites(runs, ["postgres: 1", "cache: 1"])
    runs.start(["one", "two"], "-n", "3", f"--lock-dir={tmp_path / 'locks'}")
    for name in ("one", "two"):
        code, output = runs.finish(name)
        assert code == 0, output
        assert waited(output) == 0
    found = conflicts(runs.spans())
    assert found
    assert all(a.run != b.run for _, a, b in found)  # within each run the lock table still holds


KILLED_SUITE = """
import time
import pytest

@pytest.mark.resource("postgres")
def test_holds_postgres_for_long(heartbeat):
    for _ in range(1500):  # 30 s, unless killed
        heartbeat()
        time.sleep(0.02)

@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.3)
"""


def test_a_killed_run_frees_its_host_locks_and_none_of_its_tests_outlives_them(tmp_path: Path) -> None:
    """Must show 3: run "one" is SIGKILLed while a test of it holds postgres;
    run "two" goes on at once, passes everything, and no test of "two"
    starts on postgres before the killed test's last heartbeat."""
    runs = Runs(tmp_path)
    one = suite(HOST_LINES, 0, 0, 0, 0)
    one["test_suite.py"] = KILLED_SUITE
    runs.write("one", one)
    runs.write("two", suite(HOST_LINES, postgres=3, readers=0, writers=0, free=3))
    runs.start(["one"], "-n", "3", f"--lock-dir={tmp_path / 'locks'}")
    runs.wait_for("one", "tick")
    # "one" holds postgres now: "two" starts, and its postgres tests wait
    runs.start(["two"], "-n", "3", f"--lock-dir={tmp_path / 'locks'}")
    runs.wait_for("two", "start")
    time.sleep(0.5)
    killed = runs.processes["one"]
    killed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    killed.wait(10)
    code, output = runs.finish("two")
    assert code == 0, output
    assert "6 passed" in output
    assert waited(output) > 0
    pids = [pid for pid in pids_in(tmp_path, "one-*.pid") if pid != killed.pid]
    assert len(pids) == 3  # its workers
    assert survivors(pids) == []
    spans = runs.spans()
    assert conflicts(spans) == []
    held = next(s for s in spans if s.run == "one" and s.test.endswith("test_holds_postgres_for_long"))
    assert held.end >= killed_at - 1.0  # it was still running when the run was killed
    later = [s for s in spans if s.run == "two" and s.resources]
    assert later
    assert all(s.start >= held.end for s in later)
    # taken over long before the killed test's 30 s were up
    assert min(s.start for s in later) < killed_at + 10


def gpu_suites(runs: Runs, lines: list[str]) -> None:
    for name in ("one", "two"):
        runs.write(name, suite(lines, postgres=0, readers=0, writers=0, free=0, gpu=6))


def most_at_once(spans: list[Span]) -> tuple[int, list[list[str]]]:
    """Return the most spans running at one instant, and the slot ids of
    the spans running at each instant where several do."""
    moments = sorted({s.start for s in spans})
    most, together = 0, []
    for moment in moments:
        running = [s for s in spans if s.start <= moment < s.end]
        most = max(most, len(running))
        together.append([s.slots for s in running])
    return most, together


def test_counted_host_slots_are_never_more_than_the_capacity_across_runs(tmp_path: Path) -> None:
    """Must show 4: ``gpu: 2 host``, 6 one-slot tests in each of two runs at
    -n 3: never more than two at once over both runs, and the slot ids of
    the tests running together are always distinct."""
    runs = Runs(tmp_path)
    gpu_suites(runs, ["gpu: 2 host"])
    runs.start(["one", "two"], "-n", "3", f"--lock-dir={tmp_path / 'locks'}")
    outputs = []
    for name in ("one", "two"):
        code, output = runs.finish(name)
        assert code == 0, output
        outputs.append(output)
    spans = runs.spans()
    assert len(spans) == 12
    assert {s.slots for s in spans} == {"0", "1"}
    most, together = most_at_once(spans)
    assert most == 2
    assert all(len(set(slots)) == len(slots) for slots in together)
    # the runs met: one waited for slots the other held (a run that keeps
    # handing its slots from test to test may run all its tests first)
    assert max(map(waited, outputs)) > 0


def test_without_host_counted_slots_add_up_across_runs(tmp_path: Path) -> None:
    """The negative control: ``gpu: 2`` per run lets both runs use two at once."""
    runs = Runs(tmp_path)
    gpu_suites(runs, ["gpu: 2"])
    runs.start(["one", "two"], "-n", "3")
    for name in ("one", "two"):
        code, output = runs.finish(name)
        assert code == 0, output
    most, together = most_at_once(runs.spans())
    assert most > 2
    assert any(len(set(slots)) < len(slots) for slots in together)


def test_two_runs_that_disagree_on_a_capacity_stop_the_second(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.write("one", suite(["gpu: 2 host"], 0, 0, 0, 0, gpu=4))
    runs.write("two", suite(["gpu: 4 host"], 0, 0, 0, 0, gpu=4))
    lock_dir = tmp_path / "locks"
    runs.start(["one"], "-n", "2", f"--lock-dir={lock_dir}", peers=["one", "gate"])  # it waits for "gate"
    deadline = time.monotonic() + 60
    while not (tmp_path / "one.ready").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code, output = _run_alone(runs, "two", "-n", "2", f"--lock-dir={lock_dir}")
    (tmp_path / "gate.ready").touch()
    assert code == pytest.ExitCode.USAGE_ERROR, output
    assert (
        f"ERROR: host-wide resource 'gpu' is declared with capacity 4 here, but another run using the lock "
        f"directory {lock_dir} declared it with capacity 2" in output
    )
    assert "Traceback" not in output
    assert not any(r["run"] == "two" for r in runs.records())  # it ran nothing
    code, output = runs.finish("one")
    assert code == 0, output


def _run_alone(runs: Runs, name: str, *args: str) -> tuple[int, str]:
    env = dict(
        os.environ,
        HOSTRUN_LOG=str(runs.log),
        HOSTRUN_NAME=name,
        HOSTRUN_DIR=str(runs.root),
        HOSTRUN_PEERS=name,
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "restask", "-p", "no:randomly", *args],
        cwd=runs.root / name,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_an_in_process_run_honours_host_locks_and_says_when_it_waits(tmp_path: Path) -> None:
    """Without -n a run takes its tests' host locks itself, waiting while
    another run holds one, and says so once it waited a second: run "one"
    holds postgres until run "two" has said it."""
    runs = Runs(tmp_path)
    one = suite(HOST_LINES, 0, 0, 0, 0)
    release = tmp_path / "release"
    one["test_suite.py"] = KILLED_SUITE.replace(
        "for _ in range(1500):  # 30 s, unless killed", f"while not os.path.exists({str(release)!r}):"
    ).replace("import time", "import os, time")
    runs.write("one", one)
    runs.write("two", suite(HOST_LINES, postgres=2, readers=2, writers=1, free=2))
    runs.start(["one"], "-n", "2", f"--lock-dir={tmp_path / 'locks'}")
    runs.wait_for("one", "tick")
    runs.start(["two"], "-v", f"--lock-dir={tmp_path / 'locks'}", "-k", "postgres")
    stdout = runs.processes["two"].stdout
    assert stdout is not None
    said = []
    for line in stdout:  # until it says that it waits
        said.append(line)
        if "waits for host lock 'postgres', held by another run" in line:
            break
    release.touch()
    code, rest = runs.finish("two")
    output = "".join(said) + rest
    assert code == 0, output
    assert "restask: test_suite.py::test_postgres[0] waits for host lock 'postgres', held by another run" in output
    assert waited(output) > 1.0
    assert "test_postgres[0]: waited" in output
    assert runs.finish("one")[0] == 0
    spans = runs.spans()
    assert conflicts(spans) == []
    held = next(s for s in spans if s.run == "one" and s.resources)
    assert all(s.start >= held.end for s in spans if s.run == "two" and s.resources)
