"""pytest-metadata (3.0 and later; pytest-html installs it) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a small suite
whose conftest adds to the run's metadata through the plugin's
``pytest_metadata`` hook and prints the controller's metadata at the end.
Beyond equal counts and JUnit verdicts it checks pytest-metadata's xdist
support: its ``pytest_configure`` (``tryfirst``) puts each worker's metadata
into ``config.workeroutput["metadata"]``, and its ``pytest_testnodedown``
reads that key on the controller, so ``config.workeroutput`` must exist
before any plugin's configure on a worker (a restask whose worker set it in
its own ``tryfirst`` configure ended every ``-n`` run with an INTERNALERROR,
``KeyError: 'metadata'``).  As with pytest-xdist, the controller's metadata
ends as updated by the last worker to stop.
"""

from __future__ import annotations

import pytest

from . import runs

pytestmark = runs.needs("pytest-metadata")

CONFTEST = """
    import os

    from pytest_metadata.plugin import metadata_key


    def pytest_metadata(metadata, config):
        metadata["Process"] = os.environ.get("PYTEST_XDIST_WORKER", "controller")


    def pytest_terminal_summary(terminalreporter, config):
        metadata = config.stash[metadata_key]
        terminalreporter.write_line(f"metadata: Process={metadata['Process']} Build={metadata.get('Build')}")
"""

SUITE = """
    import pytest


    @pytest.mark.parametrize("i", range(5))
    def test_passes(i):
        pass


    def test_fails():
        assert False
"""


def test_worker_metadata_reaches_the_controller(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(conftest=CONFTEST, test_suite=SUITE)
    comparison = runs.compare(pytester, "--metadata", "Build", "7")
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 5, "failed": 1}
    comparison.serial.result.stdout.fnmatch_lines(["metadata: Process=controller Build=7"])
    comparison.parallel.result.stdout.re_match_lines([r"metadata: Process=gw[01] Build=7"])
