"""pytest-restask: resource-aware parallel pytest runs.

Tests declare what they share (``@pytest.mark.resource("db")``,
``@pytest.mark.resource("db", shared=True)``, ``@pytest.mark.resource("gpu",
slots=1)``, ``@pytest.mark.serial``); ``pytest -p restask -n 8`` runs the
suite on 8 worker processes and never lets two conflicting tests overlap.

PYTEST_DONT_REWRITE: this package holds no tests, and under an editable
install (whose import finder loads it before pytest's rewrite hook) pytest
would otherwise warn in every in-process run that it cannot rewrite it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .declarations import requires
from .once import once

__all__ = ["once", "requires"]
