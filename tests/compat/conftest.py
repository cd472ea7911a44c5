"""Marks every test in the plugin compatibility suite ``compat``.

The suite needs the plugins of the ``compat`` extra, installed in a virtual
environment of its own, so the project's ``addopts`` leave it out and
``-m compat`` selects it.  The marker is added here, once, rather than as a
``pytestmark`` in each module, so a new module cannot forget it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests under this directory ``compat``, before ``-m`` deselects."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.compat)
