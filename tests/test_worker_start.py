"""A worker that cannot start, and what a user sees of it: the error once,
its real exit code, and a run that stops instead of replacing in a loop."""

from __future__ import annotations

import pytest

from pytest_restask.statemachine import EVERY_WORKER_FAILED

from .runs import run

FAILING_SESSIONSTART = """
import os
def pytest_sessionstart(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise RuntimeError("no database on workers")
"""

FAILING_CONFIGURE = """
import os
def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise ValueError("a plugin that breaks on workers")
"""


def _replaced(result: pytest.RunResult) -> int:
    return sum("; it was replaced" in line for line in result.stdout.lines)


@pytest.mark.parametrize(
    ("conftest", "error"),
    [(FAILING_SESSIONSTART, "RuntimeError: no database on workers"), (FAILING_CONFIGURE, "ValueError: a plugin*")],
    ids=["sessionstart", "configure"],
)
@pytest.mark.parametrize("limit", [0, 1, 8])
def test_a_boot_failure_is_shown_once_and_stops_the_run(
    pytester: pytest.Pytester, conftest: str, error: str, limit: int
) -> None:
    pytester.makeconftest(conftest)
    pytester.makepyfile("import pytest\n@pytest.mark.parametrize('i', range(4))\ndef test_x(i): pass\n")
    result = run(pytester, "-n", "2", f"--max-worker-restart={limit}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes()  # nothing ran
    text = result.stdout.str() + result.stderr.str()
    # the traceback once, in the summary, whatever the number of workers and replacements
    assert len(pytester_matches(text, error)) == 1
    result.stdout.fnmatch_lines(["*workers gw0, gw1 failed outside a test*", "*exit code 3*"])
    result.stdout.fnmatch_lines(["*worker gw? failed to start: exit code 3*"])
    assert _replaced(result) <= min(limit, 1)  # the second failure stops the run: every worker failed
    if limit:
        result.stdout.fnmatch_lines([f"*{EVERY_WORKER_FAILED}*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR>*")


def pytester_matches(text: str, pattern: str) -> list[str]:
    """The lines of ``text`` that match the glob ``pattern``."""
    import fnmatch

    return [line for line in text.splitlines() if fnmatch.fnmatch(line, pattern)]


@pytest.mark.parametrize("limit", [0, 2])
def test_replacements_never_exceed_the_limit(pytester: pytest.Pytester, limit: int) -> None:
    """A worker that dies while collecting (a crash, not an error of pytest's)
    is replaced, at most ``--max-worker-restart`` times."""
    pytester.makeconftest(
        """
        import os
        def pytest_collection_finish(session):
            if os.environ.get("PYTEST_XDIST_WORKER"):
                os._exit(5)
        """
    )
    pytester.makepyfile("def test_x(): pass\n")
    result = run(pytester, "-n", "1", f"--max-worker-restart={limit}")
    assert _replaced(result) == limit
    lines = [line for line in result.stdout.lines if "ended outside a test: exit code 5" in line]
    assert len(lines) == limit + 1
    assert lines[-1].endswith("; not replaced")
    result.stdout.fnmatch_lines([f"*worker restart limit reached ({limit}, see --max-worker-restart)*"])


def test_one_worker_that_cannot_start_fails_the_run(pytester: pytest.Pytester) -> None:
    """The other worker runs every test; the run still fails (exit code 3,
    as pytest-xdist's), so a conftest that breaks on a worker cannot pass
    CI unseen.  The failing worker is replaced only once the other started."""
    pytester.makeconftest(
        """
        import os
        def pytest_sessionstart(session):
            if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
                with open("gw1.pid", "a") as f:
                    f.write(f"{os.getpid()}\\n")
                raise RuntimeError("gw1 has no port")
        """
    )
    # the tests wait until gw1's first process has ended (it sent its failure
    # before): else gw0 may run them all while gw1 still starts, and gw1 is
    # ended unused before it could fail
    pytester.makepyfile(
        """
        import os, time, pytest

        def ended(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        @pytest.mark.parametrize('i', range(6))
        def test_x(i):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if os.path.exists("gw1.pid") and ended(int(open("gw1.pid").readline())):
                    break
                time.sleep(0.05)
        """
    )
    result = run(pytester, "-n", "2", "--max-worker-restart=2")
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["*worker gw1* failed outside a test*"])
    assert len(pytester_matches(result.stdout.str(), "RuntimeError: gw1 has no port")) == 1
