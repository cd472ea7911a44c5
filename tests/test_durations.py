"""The durations store: what earlier runs took, for the scheduler."""

from __future__ import annotations

import json

import pytest

from pytest_restask.durations import CACHE_KEY, DEFAULT_ESTIMATE, Durations

from .runs import run


def test_estimates_use_the_mean_of_the_known_for_unknown_tests() -> None:
    durations = Durations({"a": 1.0, "b": 3.0})
    assert durations.estimates(["a", "c", "b"]) == [1.0, 2.0, 3.0]
    assert Durations().estimates(["x"]) == [DEFAULT_ESTIMATE]


def test_malformed_data_is_left_out() -> None:
    data = {"a": 1.5, "b": "slow", "c": -1, "d": True, "e": float("nan"), 7: 1.0}
    assert Durations.from_data(data).known == {"a": 1.5}
    assert Durations.from_data(["not", "a", "dict"]).known == {}


def _stored(pytester: pytest.Pytester) -> dict[str, float]:
    path = pytester.path / ".pytest_cache" / "v" / CACHE_KEY
    stored: dict[str, float] = json.loads(path.read_text())
    return stored


@pytest.mark.parametrize("workers", [None, "2"])
def test_every_run_records_setup_call_and_teardown(pytester: pytest.Pytester, workers: str | None) -> None:
    pytester.makepyfile(
        test_d="""
        import time, pytest

        @pytest.fixture
        def slow_teardown():
            yield
            time.sleep(0.2)

        def test_slow(slow_teardown):
            time.sleep(0.3)

        def test_fails():
            assert False

        def test_later():
            pass
        """
    )
    run(pytester, *(("-n", workers) if workers else ())).assert_outcomes(passed=2, failed=1)
    stored = _stored(pytester)
    assert sorted(stored) == [f"test_d.py::test_{n}" for n in ("fails", "later", "slow")]
    assert stored["test_d.py::test_slow"] >= 0.5
    # a partial run updates what ran and keeps the rest
    pytester.makepyfile(
        test_d="""
        import time

        def test_slow():
            time.sleep(0.05)

        def test_fails():
            assert False

        def test_later():
            time.sleep(1)
        """
    )
    run(pytester, "-x", "-p", "no:randomly", *(("-n", "1") if workers else ())).assert_outcomes(passed=1, failed=1)
    again = _stored(pytester)
    assert again["test_d.py::test_slow"] < 0.3
    assert again["test_d.py::test_later"] == stored["test_d.py::test_later"]
