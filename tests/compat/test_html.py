"""pytest-html (4.1 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite with
passing, failing, erroring, skipped and xfailed tests, two of which add
extras (pytest-html's ``extras`` fixture), each run writing its own
``--html=<run>.html --self-contained-html``.  Beyond equal counts and JUnit
verdicts it checks that both reports were written and agree: the counts in
the summary, and the rows of the results table (test id, result, the names
of its extras), which pytest-html keeps as JSON in the page's
``data-jsonblob`` attribute.  The extras ride on the reports
(``report.extras``), so they cross from the workers with them.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from . import runs

pytestmark = runs.needs("pytest-html")

SUITE = """
    import pytest
    import pytest_html


    @pytest.fixture
    def broken():
        raise RuntimeError("setup broke")


    @pytest.mark.parametrize("i", range(4))
    def test_passes(i):
        assert i >= 0


    def test_with_extras(extras):
        extras.append(pytest_html.extras.text("some text", name="note"))
        extras.append(pytest_html.extras.url("https://example.com/", name="link"))


    def test_fails_with_extras(extras):
        extras.append(pytest_html.extras.json({"a": 1}, name="data"))
        assert False


    def test_fails():
        assert 1 == 2


    def test_error(broken):
        pass


    def test_skipped():
        pytest.skip("not today")


    @pytest.mark.xfail(reason="known")
    def test_xfail():
        assert False
"""

#: The report's summary: ``<span class="passed">5 Passed,</span>`` per outcome.
SUMMARY = re.compile(r'<span class="(\w+)">(\d+) [^<]*</span>')
#: The results table's data: JSON in an HTML-escaped attribute.
JSONBLOB = re.compile(r'data-jsonblob="([^"]*)"')

#: A row of the results table: (test id, result, names of its extras).
Row = tuple[str, str, tuple[str, ...]]


def summary(report: Path) -> dict[str, int]:
    """Return the counts of the report's summary, by outcome."""
    return {outcome: int(count) for outcome, count in SUMMARY.findall(report.read_text())}


def rows(report: Path) -> list[Row]:
    """Return the rows of the report's results table, sorted."""
    match = JSONBLOB.search(report.read_text())
    assert match is not None, f"{report.name} has no data-jsonblob"
    data = json.loads(html.unescape(match.group(1)))
    return sorted(
        (row["testId"], row["result"], tuple(extra["name"] for extra in row["extras"]))
        for entries in data["tests"].values()
        for row in entries
    )


def test_html_reports_agree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    comparison = runs.compare(pytester, f"--html={runs.RUN_NAME}.html", "--self-contained-html")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 5, "failed": 2, "errors": 1, "skipped": 1, "xfailed": 1}
    serial, parallel = (pytester.path / run.named(f"{runs.RUN_NAME}.html") for run in comparison.runs())
    assert summary(serial) == {
        "failed": 2,
        "passed": 5,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 0,
        "error": 1,
        "rerun": 0,
        "retried": 0,
    }
    assert summary(parallel) == summary(serial)
    assert ("test_suite.py::test_with_extras", "Passed", ("note", "link")) in rows(serial)
    assert ("test_suite.py::test_fails_with_extras", "Failed", ("data",)) in rows(serial)
    assert rows(parallel) == rows(serial)
