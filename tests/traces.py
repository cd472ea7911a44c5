"""An independent reading of a ``--timeline`` trace, and the checks the
timeline must pass.  Nothing here imports restask: the trace is read as any
Chrome trace reader would, and each test's own log of when it ran is the oracle.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The conftest of a suite whose tests log when they ran (time.monotonic(), the
#: host's one clock): a line when their setup begins, one when their teardown ends.
LOGGING_CONFTEST = """
import json, os, time
import pytest

LOG = os.path.join(os.path.dirname(__file__), "ran.log")

def _log(**entry):
    with open(LOG, "a") as file:
        file.write(json.dumps(entry) + "\\n")

@pytest.fixture(autouse=True)
def log_when_it_ran(request):
    _log(nodeid=request.node.nodeid, start=time.monotonic())
    yield
    _log(nodeid=request.node.nodeid, end=time.monotonic())
"""


@dataclass(frozen=True)
class Slice:
    name: str
    tid: int
    start: float
    end: float
    args: dict[str, Any]


def read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def slices(trace: dict[str, Any]) -> list[Slice]:
    return [
        Slice(e["name"], e["tid"], e["ts"], e["ts"] + e["dur"], e["args"])
        for e in trace["traceEvents"]
        if e["ph"] == "X"
    ]


def logged(directory: Path) -> dict[str, dict[str, float]]:
    """Return what each test logged of itself: its start, and its end if it got there."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    path = directory / "ran.log"
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        found[entry.pop("nodeid")].update(entry)
    return found


def problems(
    trace: dict[str, Any], nodeids: list[str], ran: dict[str, dict[str, float]], capacities: dict[str, int]
) -> list[str]:
    """Return every way the trace breaks what a timeline promises."""
    found: list[str] = []
    tests = slices(trace)
    events = trace["traceEvents"]
    origin = trace["otherData"]["origin"]
    # every test exactly once
    names = sorted(s.name for s in tests)
    if names != sorted(nodeids):
        found.append(f"slices {names} are not the tests {sorted(nodeids)}, each once")
    # one worker runs one test at a time
    by_worker: dict[int, list[Slice]] = defaultdict(list)
    for s in tests:
        by_worker[s.tid].append(s)
    for tid, on_worker in by_worker.items():
        on_worker.sort(key=lambda s: s.start)
        for first, second in itertools.pairwise(on_worker):
            if second.start < first.end:
                found.append(f"{first.name} and {second.name} overlap on track {tid}")
    # an exclusive holder overlaps no other holder of its resource, on any worker
    holders: dict[str, list[tuple[Slice, str]]] = defaultdict(list)
    for s in tests:
        for resource in s.args["resources"]:
            holders[resource["name"]].append((s, resource["mode"]))
    for name, held in holders.items():
        for index, (first, mode) in enumerate(held):
            for second, other in held[index + 1 :]:
                overlap = first.start < second.end and second.start < first.end
                if overlap and "exclusive" in (mode, other):
                    found.append(f"{first.name} ({mode}) and {second.name} ({other}) overlap on {name!r}")
    # counters never above capacity, and never exclusive beside anything
    for event in events:
        if event["ph"] != "C":
            continue
        args, name = event["args"], event["name"]
        if args.get("slots", 0) > capacities.get(name, 1) or args.get("exclusive", 0) > 1:
            found.append(f"counter {name!r} at {event['ts']}: {args} exceeds capacity {capacities.get(name, 1)}")
        if args.get("exclusive", 0) and (args.get("shared", 0) or args.get("slots", 0)):
            found.append(f"counter {name!r} at {event['ts']}: {args} holds exclusively beside others")
    # waits end where their test's slice begins
    starts = {s.name: s.start for s in tests}
    opened = {(e["name"], e["id"]): e for e in events if e["ph"] == "b"}
    for event in events:
        if event["ph"] == "e":
            test = opened[(event["name"], event["id"])]["args"]["test"]
            if event["ts"] != starts.get(test):
                found.append(f"the wait of {test} ends at {event['ts']}, its slice begins at {starts.get(test)}")
    # what a test logged of itself lies inside its slice
    by_name = {s.name: s for s in tests}
    for nodeid, times in ran.items():
        s = by_name.get(nodeid)
        for key, value in times.items():
            at = (value - origin) * 1e6
            if s is None or not s.start <= at <= s.end:
                found.append(f"{nodeid} logged its {key} at {at}, outside its slice {s}")
    return found
