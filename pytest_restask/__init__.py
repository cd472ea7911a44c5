"""pytest-restask: resource-aware parallel pytest runs.

Tests declare what they share (``@pytest.mark.resource("db")``,
``@pytest.mark.resource("db", shared=True)``, ``@pytest.mark.resource("gpu",
slots=1)``, ``@pytest.mark.serial``); ``pytest -p restask -n 8`` runs the
suite on 8 worker processes and never lets two conflicting tests overlap.
"""

from __future__ import annotations

__version__ = "0.1.0"
