"""pytest-xdist's plugin surface: plugins written for xdist see the same
hooks and objects under restask, with and without pytest-xdist installed
(``-p no:xdist`` stands for a machine without it)."""

from __future__ import annotations

import json

import pytest

from pytest_restask.compat import CRASH_NOT_RERUN

from .runs import run

SURFACE_CONFTEST = """
import json, os, pytest

def log(**entry):
    with open(os.path.join(os.path.dirname(__file__), "nodes.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\\n")

def pytest_configure_node(node):
    node.workerinput["greeting"] = "hello " + node.gateway.id

def pytest_testnodeready(node):
    log(event="ready", worker=node.gateway.id)

def pytest_testnodedown(node, error):
    info = node.gateway._rinfo()
    log(
        event="down",
        worker=node.gateway.id,
        error=None if error is None else str(error),
        output=getattr(node, "workeroutput", None),
        python=list(info.version_info[:2]),
        roots=list(node.nodemanager.roots),
    )

def pytest_configure(config):
    if hasattr(config, "workerinput"):
        config.workeroutput["echo"] = config.workerinput["greeting"]
"""


def _entries(pytester: pytest.Pytester) -> list[dict[str, object]]:
    path = pytester.path / "nodes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(params=["with xdist", "without xdist"])
def xdist_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return () if request.param == "with xdist" else ("-p", "no:xdist")


def test_workerinput_and_workeroutput_travel_through_xdists_hooks(
    pytester: pytest.Pytester, xdist_args: tuple[str, ...]
) -> None:
    pytester.makeconftest(SURFACE_CONFTEST)
    pytester.makepyfile(
        """
        import time, pytest
        @pytest.mark.parametrize("i", range(4))
        def test_greeting(i, request, worker_id):
            assert request.config.workerinput["greeting"] == "hello " + worker_id
            time.sleep(0.2)
        """
    )
    result = run(pytester, "-n", "2", *xdist_args)
    result.assert_outcomes(passed=4)
    entries = _entries(pytester)
    assert sorted(e["worker"] for e in entries if e["event"] == "ready") == ["gw0", "gw1"]
    downs = sorted((e for e in entries if e["event"] == "down"), key=lambda e: str(e["worker"]))
    assert [e["worker"] for e in downs] == ["gw0", "gw1"]  # once each
    for entry in downs:
        assert entry["error"] is None
        assert entry["output"] == {"echo": f"hello {entry['worker']}", "exitstatus": 0}
        assert entry["roots"] == []
        assert len(entry["python"]) == 2


CRASH_CONFTEST = """
def pytest_handlecrashitem(crashitem, report, sched):
    try:
        sched.mark_test_pending(crashitem)
    except NotImplementedError as e:
        log(event="crashitem", item=crashitem, refused=str(e))
    else:
        log(event="crashitem", item=crashitem, refused=None)
"""

CRASH_ONCE = """
import os
def test_a_crash():
    if not os.path.exists("crashed"):
        open("crashed", "w").close()
        os._exit(3)
def test_b_fine():
    pass
"""


def test_a_crashed_worker_goes_down_with_its_cause_and_no_output(
    pytester: pytest.Pytester, xdist_args: tuple[str, ...]
) -> None:
    """And a plugin may have the crashed test run again, as under xdist."""
    pytester.makeconftest(SURFACE_CONFTEST + CRASH_CONFTEST)
    pytester.makepyfile(CRASH_ONCE)
    result = run(pytester, "-n", "1", *xdist_args)
    # the crashed attempt, then the test again on the replacement worker
    result.assert_outcomes(passed=2, failed=1)
    entries = _entries(pytester)
    downs = [e for e in entries if e["event"] == "down"]
    assert [(e["worker"], e["error"], e["output"]) for e in downs] == [
        ("gw0", "exit code 3", None),  # no workeroutput: it did not end cleanly
        ("gw0", None, {"echo": "hello gw0", "exitstatus": 0}),  # its replacement
    ]
    crash = [(str(e["item"]).rpartition("::")[2], e["refused"]) for e in entries if e["event"] == "crashitem"]
    assert crash == [("test_a_crash", None)]


def test_a_crashed_test_is_not_run_again_once_the_run_stops(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SURFACE_CONFTEST + CRASH_CONFTEST)
    pytester.makepyfile(CRASH_ONCE)
    result = run(pytester, "-n", "1", "--max-worker-restart=0")
    result.assert_outcomes(failed=1)
    crash = [e for e in _entries(pytester) if e["event"] == "crashitem"]
    assert [e["refused"] for e in crash] == [CRASH_NOT_RERUN]
