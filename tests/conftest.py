"""Fixtures for the whole test suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester, with hypothesis's plugin left out of the runs it makes.

    That plugin imports all of hypothesis in its terminal summary: about
    0.6 s for every pytest process and every in-process run (pytester
    unloads the modules a run imported), hundreds of times in this suite.
    The runs here test restask, not hypothesis.  (pytester clears
    PYTEST_ADDOPTS as it starts, so it is set after.)
    """
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    return pytester
