"""The durations store: how long each test took in earlier runs.

Every run, also one that stopped early, records each test's setup, call and
teardown time (added up, from the reports pytest's own hooks see) and
merges them into pytest's cache under :data:`CACHE_KEY`; tests that did not
run keep their earlier figure.  The scheduler reads the figures back as
estimates: long tests and tests on the busiest resource start first.  A test
never seen gets the mean of the known ones, or :data:`DEFAULT_ESTIMATE`
seconds when nothing is known.

:class:`Durations` is plain data; :class:`DurationsRecorder` is the plugin
that fills and saves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final, final

import pytest

__all__ = ["CACHE_KEY", "DEFAULT_ESTIMATE", "Durations", "DurationsRecorder"]

#: Where the figures live in pytest's cache (``.pytest_cache``).
CACHE_KEY: Final = "restask/durations"
#: Seconds assumed for a test when no test's duration is known.
DEFAULT_ESTIMATE: Final = 1.0


@final
class Durations:
    """Seconds per node id, and estimates for the tests not among them."""

    def __init__(self, known: Mapping[str, float] | None = None) -> None:
        self.known: dict[str, float] = dict(known or {})

    @classmethod
    def from_data(cls, data: object) -> Durations:
        """Read what :meth:`to_data` wrote; anything malformed is left out."""
        if not isinstance(data, dict):
            return cls()
        return cls(
            {
                nodeid: float(seconds)
                for nodeid, seconds in data.items()
                if isinstance(nodeid, str)
                and isinstance(seconds, (int, float))
                and not isinstance(seconds, bool)
                and math.isfinite(seconds)
                and seconds >= 0
            }
        )

    def to_data(self) -> dict[str, float]:
        """Return the figures as JSON-ready data, sorted for stable files."""
        return {nodeid: round(self.known[nodeid], 6) for nodeid in sorted(self.known)}

    def update(self, measured: Mapping[str, float]) -> None:
        """Replace the figures of the tests measured now."""
        self.known.update(measured)

    def fallback(self) -> float:
        """Return the estimate for a test never seen."""
        if not self.known:
            return DEFAULT_ESTIMATE
        return sum(self.known.values()) / len(self.known)

    def estimates(self, nodeids: Iterable[str]) -> list[float]:
        """Return an estimate for each node id, in order."""
        fallback = self.fallback()
        return [self.known.get(nodeid, fallback) for nodeid in nodeids]


@final
class DurationsRecorder:
    """Adds up each test's phases as reported, and saves them at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self.durations = Durations.from_data(_cache_get(config))
        #: Seconds measured in this run, by node id.
        self._measured: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._measured[report.nodeid] = self._measured.get(report.nodeid, 0.0) + report.duration

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        cache = getattr(self._config, "cache", None)
        if cache is None or not self._measured:
            return
        self.durations.update(self._measured)
        cache.set(CACHE_KEY, self.durations.to_data())


def _cache_get(config: pytest.Config) -> object:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    return None if cache is None else cache.get(CACHE_KEY, None)
