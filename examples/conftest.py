"""Shared fixtures of the example suite: a pretend database, a port pool
and a server configuration written once for the whole run."""

import json
import time

import pytest

from pytest_restask import once

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


@once
def server_config(tmp_path_factory):
    """Written once for the whole run, on the first worker that needs it, and
    removed after the last test that uses it: its path reaches every worker."""
    path = tmp_path_factory.mktemp("config") / "server.json"
    time.sleep(0.2)  # pretend to build it
    path.write_text(json.dumps({"backlog": 8}))
    yield str(path)
    path.unlink()
