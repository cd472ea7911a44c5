"""The run as a Chrome trace (``--timeline=FILE``), the JSON that Perfetto
(ui.perfetto.dev) and ``chrome://tracing`` open.

Made from a :class:`~.record.RunRecord`.  Times are microseconds from the
run's start (the record's first event; ``otherData.origin`` holds it in
seconds of the host's ``time.monotonic()``).  What it holds:

* process 1, "workers": a track per worker (``gw0`` ..., or ``master`` for an
  in-process run) with each test as a complete slice (``"ph": "X"``) from
  the start of its setup to the end of its teardown as its worker measured
  them; ``args``: outcome, resources (name, mode, slot numbers), worker.
  Instant events on the same track: the worker's start and each restart,
  and each crash and timeout (when the controller learnt of it);
* process 2, "resources": a ``waiting for R`` async slice (``"b"``/``"e"``,
  so that waits may overlap; one id per wait) for each test that something
  held back, from when it was ready until its slice began, on the track of
  what held it back longest (a resource, ``serial``); and a counter track per
  resource of how much of it is held: ``exclusive`` holders (0 or 1),
  ``shared`` holders, and counted ``slots``.

Pure: imports neither pytest nor execnet.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .events import ENDED_WORDS
from .record import WORKERS_WAIT, RunRecord
from .resources import Mode

__all__ = ["RESOURCES_PID", "WORKERS_PID", "trace", "write_trace"]

#: The trace's two processes.
WORKERS_PID: Final = 1
RESOURCES_PID: Final = 2
#: The series of a resource's counter, by the mode of its holders, and the modes as a slice names them.
SERIES: Final = {Mode.EXCLUSIVE: "exclusive", Mode.SHARED: "shared", Mode.COUNTED: "slots"}
MODES: Final = {Mode.EXCLUSIVE: "exclusive", Mode.SHARED: "shared", Mode.COUNTED: "counted"}
#: A test's outcome when the run ended before it did.
INTERRUPTED: Final = "interrupted"


def trace(record: RunRecord, outcome: Callable[[int], str]) -> dict[str, Any]:
    """Return the trace of a record; ``outcome`` gives a test's outcome by task id."""
    origin = record.began if record.began is not None else 0.0

    def us(time: float) -> float:
        return (time - origin) * 1e6

    workers = list(record.worker_names)
    events: list[dict[str, Any]] = [
        _meta(WORKERS_PID, None, "process_name", "workers"),
        _meta(RESOURCES_PID, None, "process_name", "resources"),
    ]
    slices = list(record.slices())
    for _, attempt, _, _ in slices:
        if attempt.worker not in workers:
            workers.append(attempt.worker)
    tids = {worker: index + 1 for index, worker in enumerate(workers)}
    events.extend(_meta(WORKERS_PID, tids[worker], "thread_name", worker) for worker in workers)
    for started in record.workers:
        events.append(_instant(tids[started.worker], f"worker {started.kind}", us(started.time), {}))
    # resources: (time, +1/-1 order, resource, series, amount)
    changes: list[tuple[float, int, str, str, int]] = []
    for task, attempt, start, end in slices:
        if attempt.reason in ENDED_WORDS:
            word = ENDED_WORDS[attempt.reason]
        elif attempt.end is None and attempt.reason is None:
            word = INTERRUPTED
        else:
            word = outcome(task.task_id)
        resources = []
        for request in attempt.grant.requirement.requests:
            slots = list(attempt.grant.slots.get(request.name, ()))
            resources.append({"name": request.name, "mode": MODES[request.mode], "slots": slots})
            amount = len(slots) if request.mode is Mode.COUNTED else 1
            changes.append((start, 1, request.name, SERIES[request.mode], amount))
            changes.append((end, 0, request.name, SERIES[request.mode], -amount))
        args: dict[str, Any] = {"outcome": word, "resources": resources, "worker": attempt.worker}
        if attempt.grant.requirement.serial:
            args["serial"] = True
        events.append(
            {
                "ph": "X",
                "name": task.name,
                "cat": "test",
                "pid": WORKERS_PID,
                "tid": tids[attempt.worker],
                "ts": us(start),
                "dur": (end - start) * 1e6,
                "args": args,
            }
        )
        if attempt.reason in ENDED_WORDS and attempt.ended is not None:
            events.append(_instant(tids[attempt.worker], f"{word}: {task.name}", us(attempt.ended), {}))
    wait_id = 0
    for task in record.tasks.values():
        for wait in task.waits:
            start = record.wait_end(task, wait)
            held = dict(record.shares(task, wait))
            held.pop(WORKERS_WAIT, None)
            if not held or start <= wait.since:
                continue
            resource = max(sorted(held), key=held.__getitem__)
            wait_id += 1
            common = {"name": f"waiting for {resource}", "cat": "waiting", "pid": RESOURCES_PID, "id": wait_id}
            events.append({**common, "ph": "b", "ts": us(wait.since), "args": {"test": task.name}})
            events.append({**common, "ph": "e", "ts": us(start)})
    events.extend(_counters(changes, us))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"origin": origin, "tool": "pytest-restask"},
    }


def write_trace(path: Path, data: Mapping[str, Any]) -> None:
    """Write a trace to ``path`` as any file is written (through a link, to a
    device such as /dev/null, with the usual permissions); raises OSError."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file)


# Implementation


def _meta(pid: int, tid: int | None, kind: str, name: str) -> dict[str, Any]:
    event: dict[str, Any] = {"ph": "M", "name": kind, "pid": pid, "args": {"name": name}}
    if tid is not None:
        event["tid"] = tid
    return event


def _instant(tid: int, name: str, ts: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "i", "s": "t", "name": name, "cat": "worker", "pid": WORKERS_PID, "tid": tid, "ts": ts, "args": args}


def _counters(changes: list[tuple[float, int, str, str, int]], us: Callable[[float], float]) -> list[dict[str, Any]]:
    """Return each resource's counter events: its holders in each series,
    after every change (an end before a start at the same time)."""
    series: dict[str, set[str]] = defaultdict(set)
    for _, _, name, kind, _ in changes:
        series[name].add(kind)
    held: dict[str, dict[str, int]] = {name: dict.fromkeys(sorted(kinds), 0) for name, kinds in series.items()}
    events = []
    for time, _, name, kind, amount in sorted(changes):
        held[name][kind] += amount
        events.append({"ph": "C", "name": name, "pid": RESOURCES_PID, "ts": us(time), "args": dict(held[name])})
    return events
