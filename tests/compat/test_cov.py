"""pytest-cov (5 and later) on restask workers.

pytest-cov measures on each worker and combines on the controller through
pytest-xdist's hooks: ``pytest_configure_node`` puts the controller's host
and directory in ``workerinput``, each worker saves its data and says so in
``workeroutput``, and ``pytest_testnodedown`` collects it.  Compared with the
serial run: the terminal report line by line (``term-missing``), the XML
report file by file, ``--cov-fail-under``'s verdict; and a worker that
crashed is named in pytest-cov's note rather than lost without one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from . import runs

pytestmark = runs.needs("pytest-cov")

PACKAGE = {
    "__init__.py": "",
    "shapes.py": """
def kind(n):
    if n < 0:
        return "negative"
    if n == 0:
        return "zero"
    return "positive"


def never_called():
    return 1
""",
    "text.py": """
def shout(s):
    return s.upper() + "!"


def whisper(s):
    if not s:
        raise ValueError("nothing to whisper")
    return s.lower()
""",
}

SUITE = """
import pytest
from pkg.shapes import kind
from pkg.text import shout, whisper


@pytest.mark.parametrize("n", [-1, 1])
def test_kind(n):
    assert kind(n) in ("negative", "positive")


def test_shout():
    assert shout("a") == "A!"


def test_whisper():
    assert whisper("A") == "a"


def test_fails():
    assert kind(5) == "zero"
"""


def _write(pytester: pytest.Pytester) -> None:
    package = pytester.mkpydir("pkg")
    for name, text in PACKAGE.items():
        (package / name).write_text(text)
    pytester.makepyfile(test_pkg=SUITE)


def _report_lines(run: runs.Run) -> list[str]:
    """The lines of pytest-cov's terminal table (Name ... Missing, files, TOTAL)."""
    lines = run.result.stdout.lines
    start = next(i for i, line in enumerate(lines) if line.startswith("Name "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("TOTAL"))
    return [" ".join(line.split()) for line in lines[start : end + 1] if not line.startswith("---")]


def _xml_files(path: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each file of a coverage XML report: its line rate and (line, hits)."""
    files = {}
    for cls in ET.parse(path).getroot().iter("class"):
        hits = [(line.get("number", ""), line.get("hits", "")) for line in cls.iter("line")]
        files[cls.get("filename", "")] = (cls.get("line-rate", ""), hits)
    return files


def test_coverage_figures_match_the_serial_run(pytester: pytest.Pytester) -> None:
    _write(pytester)
    comparison = runs.compare(
        pytester, "--cov=pkg", "--cov-report=term-missing", f"--cov-report=xml:{runs.RUN_NAME}.cov.xml", disabled=()
    )
    runs.assert_same(comparison)
    serial, parallel = comparison.runs()
    table = _report_lines(serial)
    assert table[-1].split()[2] != "0", table  # lines never run: a real figure, not 100%
    assert _report_lines(parallel) == table
    assert _xml_files(str(pytester.path / "parallel.cov.xml")) == _xml_files(str(pytester.path / "serial.cov.xml"))
    for run in comparison.runs():
        assert "failed to return coverage data" not in run.output(), run.tail()


def _total(run: runs.Run) -> float:
    """The total coverage pytest-cov printed, in percent."""
    return float(_report_lines(run)[-1].split()[-1].rstrip("%"))


def test_fail_under_fails_both_runs_alike(pytester: pytest.Pytester) -> None:
    _write(pytester)
    measured = _total(runs.run(pytester, "measure", "--cov=pkg", workers=None, disabled=()))
    above, below = f"--cov-fail-under={measured + 5:.0f}", f"--cov-fail-under={measured - 5:.0f}"
    failing = runs.compare(pytester, "--cov=pkg", above, disabled=())
    runs.assert_same(failing)
    for run in failing.runs():
        assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.tail()
        run.result.stdout.fnmatch_lines([f"*FAIL Required test coverage of {measured + 5:.0f}% not reached*"])
    (pytester.path / "test_pkg.py").write_text(SUITE.replace("def test_fails", "def _not_a_test"))
    passing = runs.compare(pytester, "--cov=pkg", below, disabled=())
    runs.assert_same(passing)
    assert passing.parallel.result.ret == pytest.ExitCode.OK, passing.tails()
    passing.parallel.result.stdout.fnmatch_lines([f"*Required test coverage of {measured - 5:.0f}% reached*"])


def test_a_crashed_worker_is_named_not_lost_silently(pytester: pytest.Pytester) -> None:
    """Its measurements died with it: pytest-cov says which worker's are
    missing; the replacement's and the other worker's are combined."""
    _write(pytester)
    pytester.makepyfile(test_crash="import os\n\ndef test_crash():\n    os._exit(3)\n")
    parallel = runs.run(pytester, runs.PARALLEL, "--cov=pkg", "--cov-report=term-missing", workers=2, disabled=())
    parallel.result.assert_outcomes(passed=4, failed=2)
    parallel.result.stdout.fnmatch_lines(
        ["*coverage: failed workers*", "*The following workers failed to return coverage data*", "gw?"]
    )
    assert _report_lines(parallel)[-1].startswith("TOTAL"), parallel.tail()
