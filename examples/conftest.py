"""Shared fixtures of the example suite: a pretend database and a port pool."""

import time

import pytest

BASE_PORT = 47000


@pytest.fixture(scope="module")
def schema():
    """A module-scoped schema: created once per worker per module visit and
    dropped inside the hold of the last "db" test that used it."""
    time.sleep(0.1)  # pretend to create tables
    yield {"tables": ["users", "orders"]}
    time.sleep(0.05)  # pretend to drop them


@pytest.fixture
def port(restask_slots):
    """A port nobody else uses while this test runs: derived from the slot."""
    return BASE_PORT + restask_slots["port-pool"][0]
