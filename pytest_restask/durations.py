"""The durations store: how long each test took in earlier runs.

Every run, also one that stopped early, records each test's setup, call and
teardown time (added up, from the reports pytest's own hooks see) and
merges them into pytest's cache under :data:`CACHE_KEY`; tests that did not
run keep their earlier figure.  The scheduler reads the figures back as
estimates: long tests and tests on the busiest resource start first, and
``--shard`` balances the CI jobs with them.  A test never seen gets the mean
of the known ones, or :data:`DEFAULT_ESTIMATE` seconds when nothing is known.

With ``--durations-file FILE`` the store is that JSON file instead of the
cache, in pytest-split's ``.test_durations`` form (``{node id: seconds}``),
so it can be committed and shared by CI jobs, and a team that used
pytest-split can keep its file.  A ``--shard`` job reads the store but does
not write it: every job of a split must see the same figures, whichever job
ran first on the same machine; runs without ``--shard`` keep it current.

:class:`Durations` is plain data; :class:`DurationsRecorder` is the plugin
that fills and saves it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, final

import pytest

__all__ = ["CACHE_KEY", "DEFAULT_ESTIMATE", "Durations", "DurationsRecorder", "durations_file", "load"]

#: Where the figures live in pytest's cache (``.pytest_cache``).
CACHE_KEY: Final = "restask/durations"
#: Seconds assumed for a test when no test's duration is known.
DEFAULT_ESTIMATE: Final = 1.0
#: A ``--durations-file`` that is not a durations file.
FILE_NOT_JSON: Final = (
    "--durations-file {path}: not a durations file ({error}); "
    "it should hold a JSON object of node ids to seconds: fix it, or delete it to start afresh"
)
#: Entries of a durations file that are not a node id with seconds.
BAD_ENTRIES: Final = "--durations-file {path}: {count} entries are not a node id with a number of seconds; left out"


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

    def __init__(self, config: pytest.Config, save: bool = True) -> None:
        self._config = config
        self.durations = load(config)
        #: Seconds measured in this run, by node id.
        self._measured: dict[str, float] = {}
        #: Whether the figures are written back at the end (not for a
        #: ``--shard`` job: its siblings must split from the same figures,
        #: whichever ran first).
        self._save = save

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._measured[report.nodeid] = self._measured.get(report.nodeid, 0.0) + report.duration

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        # pytest-xdist's workers (where xdist owns -n) leave saving to their controller
        if not self._measured or not self._save or hasattr(self._config, "workerinput"):
            return
        self.durations.update(self._measured)
        path = durations_file(self._config)
        if path is not None:
            write_file(path, self.durations)
            return
        cache = getattr(self._config, "cache", None)
        if cache is not None:
            cache.set(CACHE_KEY, self.durations.to_data())


def _cache_get(config: pytest.Config) -> object:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    return None if cache is None else cache.get(CACHE_KEY, None)


def durations_file(config: pytest.Config) -> Path | None:
    """Return the ``--durations-file`` path (relative to where pytest was
    started), or None when the figures live in pytest's cache."""
    value = config.getoption("durations_file", None)
    return None if not value else config.invocation_params.dir / value


def load(config: pytest.Config) -> Durations:
    """Read the store: the ``--durations-file`` when given, else the cache."""
    path = durations_file(config)
    if path is None:
        return Durations.from_data(_cache_get(config))
    durations, dropped = read_file(path)
    if dropped:
        warning = pytest.PytestConfigWarning(BAD_ENTRIES.format(path=path, count=dropped))
        config.issue_config_time_warning(warning, stacklevel=2)
    return durations


def read_file(path: Path) -> tuple[Durations, int]:
    """Read a durations file: ``{node id: seconds}`` as restask and pytest-split
    write it, or the older ``[[node id, seconds], ...]`` of pytest-split.

    A missing file is an empty store (the first run writes it).  A file that
    is not such JSON is a usage error naming it.  Also returns how many
    entries were left out as malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Durations(), 0
    except OSError as e:
        raise pytest.UsageError(f"--durations-file {path}: cannot read it: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise pytest.UsageError(FILE_NOT_JSON.format(path=path, error=e)) from None
    if isinstance(data, list) and all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in data
    ):
        data = dict(data)
    if not isinstance(data, dict):
        raise pytest.UsageError(FILE_NOT_JSON.format(path=path, error="expected an object of node ids to seconds"))
    durations = Durations.from_data(data)
    return durations, len(data) - len(durations.known)


def write_file(path: Path, durations: Durations) -> None:
    """Write the store as pytest-split does: a sorted JSON object, one test a line."""
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps(durations.to_data(), indent=4) + "\n")
    os.replace(temporary, path)  # a reader never sees half a file
