"""Run one generated suite serially and on restask workers, and compare the runs.

A module of the plugin compatibility suite writes a small suite into
pytester's directory and calls :func:`compare`: the suite runs twice, in real
subprocesses, as ``pytest -p restask`` (in process) and as
``pytest -p restask -n 2`` (on worker processes), each with a JUnit XML file
of its own and ``-rA``.  A plugin works with restask when the two runs agree:
the same exit code and outcome counts, the same test cases with the same
verdicts, and no INTERNALERROR (:func:`assert_same`).  The module then checks
on the two :class:`Run` objects what its plugin adds: a report file, a
database per worker, a failure text.

Subprocesses rather than ``runpytest`` in process: the workers are
subprocesses anyway, and plugins such as pytest-django and hypothesis keep
module state that an in-process run would carry into the next one.

This module imports none of the plugins under test: it is imported wherever
the suite is collected, also where the ``compat`` tests are only deselected.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Final, Literal, final

import pytest

__all__ = [
    "DISABLED",
    "PARALLEL",
    "RUN_NAME",
    "SERIAL",
    "TIMEOUT",
    "WORKERS",
    "Comparison",
    "Run",
    "TestCase",
    "assert_same",
    "compare",
    "installed",
    "junit_testcases",
    "needs",
    "run",
]

#: Workers of the parallel run: the machines that run this suite have two cores.
WORKERS: Final = 2
#: Seconds a whole run of a generated suite may take before the test fails.
TIMEOUT: Final = 120.0
#: The name of the run without ``-n``; its files are named after it.
SERIAL: Final = "serial"
#: The name of the run with ``-n WORKERS``.
PARALLEL: Final = "parallel"
#: Plugins each run leaves out (``-p no:NAME``) unless its test asks for
#: them (``disabled=()``): pytest-randomly shuffles each run its own way.
DISABLED: Final = ("randomly",)
#: Replaced, in the extra arguments of :func:`compare`, by the run's name,
#: so that each run writes a report file of its own: ``--html={run}.html``.
RUN_NAME: Final = "{run}"

#: The verdict of a JUnit test case: its result child, or ``passed`` without one.
Verdict = Literal["passed", "failed", "error", "skipped"]
#: One JUnit test case: (classname, name, verdict).  A test that fails and
#: then errors in teardown has both children: its verdict is ``failed+error``.
TestCase = tuple[str, str, str]

#: JUnit's result elements and the verdicts they stand for.
_VERDICTS: Final[dict[str, Verdict]] = {"failure": "failed", "error": "error", "skipped": "skipped"}
#: The line the controller ends a distributed run with (fnmatch pattern).
_DISTRIBUTED_LINE: Final = "restask: * tests on {workers} workers in *"
#: The line that opens a test's section under FAILURES, ERRORS or PASSES: ``____ test_x ____``.
_SECTION_HEADER: Final = re.compile(r"^_{3,} (.+?) _{3,}$")
#: Lines of each output shown when two runs differ.
_TAIL_LINES: Final = 30


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One run of a generated suite, and what it reported."""

    #: :data:`SERIAL` or :data:`PARALLEL`; the run's files are named after it.
    name: str
    #: The subprocess's exit code and output.
    result: pytest.RunResult
    #: The counts of the summary line, as ``RunResult.parseoutcomes()`` reads them.
    outcomes: dict[str, int]
    #: The test cases of the run's JUnit XML file, sorted.
    testcases: list[TestCase]

    def named(self, template: str) -> str:
        """Return ``template`` with :data:`RUN_NAME` replaced by this run's name."""
        return template.replace(RUN_NAME, self.name)

    def output(self) -> str:
        """Return the run's stdout and stderr, to search for a plugin's text."""
        return f"{self.result.stdout.str()}\n{self.result.stderr.str()}"

    def failure(self, title: str) -> str:
        """Return the section that ``-rA`` output gives a failed test, by its title, or "".

        The title is what pytest puts between the underscores: the test's
        name (``test_x[1]``), or ``ERROR at setup of test_x``.  Sections are
        printed in the order the tests ended, which differs between runs, so
        a check on one test's section reads it whole.
        """
        section: list[str] | None = None
        for line in self.result.stdout.lines:
            header = _SECTION_HEADER.match(line)
            if header is not None or line.startswith("="):
                if section is not None:
                    break
                if header is not None and header.group(1) == title:
                    section = []
            elif section is not None:
                section.append(line)
        return "\n".join(section or [])

    def tail(self) -> str:
        """Return the end of the run's output, headed by its name, for an assertion message."""
        lines = self.result.stdout.lines[-_TAIL_LINES:] + self.result.stderr.lines[-_TAIL_LINES:]
        return "\n".join([f"--- {self.name} run (exit code {self.result.ret}) ---", *lines])


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """The same suite run serially and on restask workers."""

    serial: Run
    parallel: Run

    def runs(self) -> tuple[Run, Run]:
        """Return both runs, serial first, for checks that hold for each."""
        return (self.serial, self.parallel)

    def tails(self) -> str:
        """Return the end of both outputs, for an assertion message."""
        return f"{self.serial.tail()}\n{self.parallel.tail()}"


def run(
    pytester: pytest.Pytester, name: str, *args: str, workers: int | None, disabled: Sequence[str] = DISABLED
) -> Run:
    """Run the suite in pytester's directory once, in a subprocess, and read what it reported.

    ``workers`` is the ``-n`` value, or None for a run in process;
    ``disabled`` names the plugins left out (``-p no:NAME``).  Arguments may
    contain :data:`RUN_NAME`.
    """
    junit = pytester.path / f"{name}.junit.xml"
    argv = ["-p", "restask", "-rA", f"--junitxml={junit}"]
    if workers is not None:
        argv += ["-n", str(workers)]
    for plugin in disabled:
        argv += ["-p", f"no:{plugin}"]
    argv += [arg.replace(RUN_NAME, name) for arg in args]
    result = pytester.runpytest_subprocess(*argv, timeout=TIMEOUT)
    try:
        outcomes = result.parseoutcomes()
    except ValueError:
        pytest.fail(f"the {name} run printed no summary line:\n{result.stdout.str()}\n{result.stderr.str()}")
    if not junit.exists():
        pytest.fail(f"the {name} run wrote no {junit.name}:\n{result.stdout.str()}\n{result.stderr.str()}")
    return Run(name=name, result=result, outcomes=outcomes, testcases=junit_testcases(junit.read_text()))


def compare(
    pytester: pytest.Pytester, *extra_args: str, workers: int = WORKERS, disabled: Sequence[str] = DISABLED
) -> Comparison:
    """Run the suite serially, then with ``-n workers``, with the same extra arguments.

    The serial run goes first: its durations, kept in the cache, are what a
    user's second run would schedule by.
    """
    serial = run(pytester, SERIAL, *extra_args, workers=None, disabled=disabled)
    parallel = run(pytester, PARALLEL, *extra_args, workers=workers, disabled=disabled)
    return Comparison(serial=serial, parallel=parallel)


def assert_same(comparison: Comparison, *, workers: int = WORKERS) -> None:
    """Assert that both runs reported the same, and that the parallel one ran on workers.

    The same exit code, the same outcome counts, the same JUnit test cases
    and verdicts, no INTERNALERROR in either output, and the controller's
    closing line in the parallel one (so a run that fell back to running in
    process cannot pass for a parallel one).
    """
    serial, parallel = comparison.runs()
    tails = comparison.tails()
    for each in comparison.runs():
        assert "INTERNALERROR" not in each.output(), tails
    parallel.result.stdout.fnmatch_lines([_DISTRIBUTED_LINE.format(workers=workers)])
    assert parallel.outcomes == serial.outcomes, tails
    assert parallel.testcases == serial.testcases, tails
    assert parallel.result.ret == serial.result.ret, tails


def junit_testcases(xml: str) -> list[TestCase]:
    """Return the sorted (classname, name, verdict) of each test case in a JUnit XML text."""
    cases = []
    for case in ET.fromstring(xml).iter("testcase"):
        verdicts = [_VERDICTS[child.tag] for child in case if child.tag in _VERDICTS]
        cases.append((case.get("classname", ""), case.get("name", ""), "+".join(verdicts) or "passed"))
    return sorted(cases)


def installed(distribution: str) -> str | None:
    """Return the installed version of ``distribution``, or None; imports nothing of it."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def needs(distribution: str) -> pytest.MarkDecorator:
    """Return a mark that skips a module's tests where ``distribution`` is not installed.

    For ``pytestmark``: the plugin is looked up in the installed metadata,
    not imported, so collecting the module stays cheap where it is absent.
    """
    return pytest.mark.skipif(installed(distribution) is None, reason=f"{distribution} is not installed")
