"""How the end-to-end tests run pytest with restask: a real subprocess."""

from __future__ import annotations

import pytest

RUN = ("-p", "restask")
#: Seconds a whole generated run may take before the test fails.
TIMEOUT = 120


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run ``pytest -p restask ARGS`` in pytester's directory, in a subprocess."""
    return pytester.runpytest_subprocess(*RUN, *args, timeout=TIMEOUT)
