"""pytest-json-report (1.5 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite of
passing, failing, erroring and skipped tests, some printing, logging or
adding metadata (the plugin's ``json_metadata`` fixture), each run writing
its own ``--json-report --json-report-file=<run>.json``.  Beyond equal counts
and JUnit verdicts it checks that the two reports agree: the same summary
counts, the same (nodeid, outcome) pairs in ``tests``, and per test and
stage what the plugin gathered in the test's process: captured output, log
messages, metadata, the crash and the long report.  The plugin attaches
those to each phase's report (``report._json_report_extra``), passed phases
included, so they must cross from the workers with the reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from . import runs

pytestmark = runs.needs("pytest-json-report")

SUITE = """
    import logging

    import pytest


    @pytest.fixture
    def broken():
        raise RuntimeError("setup broke")


    @pytest.mark.parametrize("i", range(3))
    def test_passes(i):
        assert i >= 0


    def test_prints_and_logs(capsys):
        print("to stdout")
        logging.getLogger("suite").warning("a warning record")


    def test_metadata(json_metadata):
        json_metadata["answer"] = 42


    def test_fails_with_metadata(json_metadata):
        json_metadata["tried"] = True
        print("before failing")
        assert 1 == 2


    def test_error(broken):
        pass


    def test_skipped():
        pytest.skip("not today")


    @pytest.mark.xfail(reason="known")
    def test_xfail():
        assert False
"""

#: What a stage's JSON keeps from the test's process; its duration differs run to run.
STAGE_KEYS = ("outcome", "stdout", "stderr", "crash", "traceback", "longrepr")


def load(path: Path) -> dict[str, Any]:
    """Return the JSON report at ``path``."""
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def stages(test: dict[str, Any]) -> dict[str, Any]:
    """Return one test's entry without what differs between runs (durations, log record fields)."""
    view: dict[str, Any] = {"outcome": test["outcome"], "metadata": test.get("metadata")}
    for when in ("setup", "call", "teardown"):
        if when in test:
            stage = test[when]
            view[when] = {key: stage.get(key) for key in STAGE_KEYS}
            view[when]["log"] = [record["msg"] for record in stage.get("log", [])]
    return view


def test_json_reports_agree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    comparison = runs.compare(pytester, "--json-report", f"--json-report-file={runs.RUN_NAME}.json")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 5, "failed": 1, "errors": 1, "skipped": 1, "xfailed": 1}
    serial, parallel = (load(pytester.path / run.named(f"{runs.RUN_NAME}.json")) for run in comparison.runs())

    assert serial["summary"] == {
        "passed": 5,
        "failed": 1,
        "error": 1,
        "skipped": 1,
        "xfailed": 1,
        "total": 9,
        "collected": 9,
    }
    assert parallel["summary"] == serial["summary"]
    outcomes = {(test["nodeid"], test["outcome"]) for test in serial["tests"]}
    assert {(test["nodeid"], test["outcome"]) for test in parallel["tests"]} == outcomes

    by_id = {test["nodeid"]: stages(test) for test in serial["tests"]}
    assert by_id["test_suite.py::test_metadata"]["metadata"] == {"answer": 42}
    assert by_id["test_suite.py::test_prints_and_logs"]["call"]["stdout"] == "to stdout\n"
    assert by_id["test_suite.py::test_prints_and_logs"]["call"]["log"] == ["a warning record"]
    assert {test["nodeid"]: stages(test) for test in parallel["tests"]} == by_id
