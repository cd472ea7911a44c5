"""Writers need the database alone; readers share it with each other."""

import time

import pytest


@pytest.mark.resource("db")
@pytest.mark.parametrize("table", ["users", "orders", "audit"])
def test_migrate(schema, table):
    time.sleep(0.3)


@pytest.mark.resource("db", shared=True)
@pytest.mark.parametrize("query", range(6))
def test_report(schema, query):
    time.sleep(0.3)
