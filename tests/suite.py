"""Generated suites whose tests log their own holds: the overlap oracle.

Each generated test appends ``{"id", "worker", "start", "end", "slots"}`` to
a JSON-lines log from inside its own body; :func:`check` reads the log back
and looks for two tests that overlapped in time while their declared
resources conflict.  It shares nothing with the scheduler but the
declarations, so it is an independent check of it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from pytest_restask.resources import Mode, Request, Requirement, merge_requests

from .simulation import Interval, conflicts

CONFTEST = """
import json, os, time
import pytest

LOG = os.path.join(os.path.dirname(__file__), "holds.jsonl")
REPORTS = os.path.join(os.path.dirname(__file__), "reports.jsonl")

def pytest_runtest_logreport(report):
    # on the controller only: the reports pytest's own reporters see
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        with open(REPORTS, "a") as f:
            f.write(json.dumps([report.nodeid, report.when]) + "\\n")

@pytest.fixture
def hold(request, restask_slots, worker_id):
    start = time.time()
    yield
    with open(LOG, "a") as f:
        f.write(json.dumps({"id": request.node.nodeid, "worker": worker_id, "start": start,
                            "end": time.time(), "slots": restask_slots}) + "\\n")
"""


@dataclass
class Spec:
    """One generated test."""

    name: str
    requests: tuple[Request, ...] = ()
    serial: bool = False
    sleep: float = 0.0
    body: str = "pass"

    @property
    def requirement(self) -> Requirement:
        return merge_requests(self.requests, self.serial)

    def source(self) -> str:
        marks = marker_lines(self.requests, self.serial)
        lines = [*marks, f"def {self.name}(hold):", f"    time.sleep({self.sleep})", f"    {self.body}", ""]
        return "\n".join(lines)


def marker_lines(requests: Sequence[Request], serial: bool) -> list[str]:
    """Return the decorators that declare ``requests`` (and ``serial``)."""
    marks = []
    for request in requests:
        if request.mode is Mode.SHARED:
            marks.append(f"@pytest.mark.resource({request.name!r}, shared=True)")
        elif request.mode is Mode.COUNTED:
            marks.append(f"@pytest.mark.resource({request.name!r}, slots={request.slots})")
        else:
            marks.append(f"@pytest.mark.resource({request.name!r})")
    if serial:
        marks.append("@pytest.mark.serial")
    return marks


#: Resource requests to draw from: exclusive, shared, counted (capacity 2),
#: two names at once, and free tests (a third of the draws).
KINDS: tuple[tuple[Request, ...], ...] = (
    (Request("db", Mode.EXCLUSIVE),),
    (Request("db", Mode.SHARED),),
    (Request("db", Mode.SHARED),),
    (Request("gpu", Mode.COUNTED, 1),),
    (Request("gpu", Mode.COUNTED, 2),),
    (Request("port", Mode.EXCLUSIVE), Request("db", Mode.SHARED)),
    (),
    (),
    (),
)


def mixed(count: int, seed: int, sleep: tuple[float, float] = (0.0, 0.02)) -> list[Spec]:
    """A shuffled mix of exclusive, shared, counted, serial and free tests."""
    rng = random.Random(seed)
    specs = []
    for index in range(count):
        serial = rng.random() < 0.01
        requests = () if serial else rng.choice(KINDS)
        specs.append(Spec(f"test_{index:04d}", requests, serial, round(rng.uniform(*sleep), 3)))
    return specs


def write(pytester: pytest.Pytester, specs: Sequence[Spec], files: int = 3, ini: str = "") -> None:
    """Write the specs as ``files`` test modules plus the logging conftest."""
    pytester.makeconftest(CONFTEST)
    if ini:
        pytester.makeini(ini)
    for index in range(files):
        body = "\n".join(s.source() for s in specs[index::files])
        pytester.makepyfile(**{f"test_gen{index}": "import time\nimport pytest\n\n" + body})


def check(pytester: pytest.Pytester, specs: Sequence[Spec], capacities: dict[str, int]) -> list[str]:
    """Return every conflict in the log, and every test not logged exactly once."""
    records = [json.loads(line) for line in (pytester.path / "holds.jsonl").read_text().splitlines()]
    index = {s.name: i for i, s in enumerate(specs)}
    problems = []
    seen = [r["id"].rsplit("::", 1)[1] for r in records]
    for spec in specs:
        if seen.count(spec.name) != 1:
            problems.append(f"{spec.name} logged {seen.count(spec.name)} times")
    intervals = [
        Interval(index[name], r["worker"], r["start"], r["end"], {k: tuple(v) for k, v in r["slots"].items()})
        for name, r in zip(seen, records, strict=True)
    ]
    phases = [tuple(json.loads(line)) for line in (pytester.path / "reports.jsonl").read_text().splitlines()]
    for spec in specs:
        mine = sorted(when for nodeid, when in phases if nodeid.endswith("::" + spec.name))
        if mine != ["call", "setup", "teardown"]:
            problems.append(f"{spec.name} reported {mine}")
    return problems + conflicts(intervals, [s.requirement for s in specs], capacities)
