"""Tests that need nothing run beside anything."""

import time

import pytest


@pytest.mark.parametrize("n", range(10))
def test_pure(n):
    time.sleep(0.2)
    assert n * n >= 0
