"""pytest-randomly (3.15 and later) on restask workers.

pytest-randomly switches itself on wherever it is installed: it shuffles
the collected tests and reseeds ``random`` before each test from one seed.
Under restask it must pass its seed to the workers (through
``pytest_configure_node``, as it does for pytest-xdist, also where xdist is
not installed), so that every test sees the same random values as in the
serial run with that seed; the seed is shown once; and its shuffled order,
which differs from the controller's sort only in order, never trips the
check that workers collected the same tests.
"""

from __future__ import annotations

import json
import re

import pytest

from . import runs

pytestmark = runs.needs("pytest-randomly")

SUITE = """
import json, os, random, pytest

def record(request):
    with open(os.environ["VALUES_FILE"], "a") as f:
        f.write(json.dumps([request.node.nodeid, random.random()]) + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_values(request, i):
    record(request)

class TestInAClass:
    def test_one(self, request):
        record(request)

    def test_two(self, request):
        record(request)
"""

#: Two modules, so that the shuffle has modules and classes to reorder.
OTHER = SUITE.replace("TestInAClass", "TestOther")


def _values(pytester: pytest.Pytester, name: str) -> dict[str, float]:
    lines = (pytester.path / f"{name}.values").read_text().splitlines()
    return dict(json.loads(line) for line in lines)


def _seeds(run: runs.Run) -> list[str]:
    return re.findall(r"Using --randomly-seed=(\d+)", run.output())


@pytest.mark.parametrize("xdist", ["with xdist", "without xdist"])
def test_workers_use_the_seed_and_give_the_serial_values(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: str
) -> None:
    pytester.makepyfile(test_a=SUITE, test_b=OTHER)
    extra = ("-p", "no:xdist") if xdist == "without xdist" else ()
    values = {}
    comparison = []
    for name, workers in ((runs.SERIAL, None), (runs.PARALLEL, runs.WORKERS)):
        monkeypatch.setenv("VALUES_FILE", str(pytester.path / f"{name}.values"))
        run = runs.run(pytester, name, "--randomly-seed=1234", *extra, workers=workers, disabled=())
        comparison.append(run)
        values[name] = _values(pytester, name)
    serial, parallel = comparison
    runs.assert_same(runs.Comparison(serial, parallel))
    assert len(values[runs.SERIAL]) == 16
    assert values[runs.PARALLEL] == values[runs.SERIAL]
    assert _seeds(parallel) == ["1234"]  # shown once: by the controller
    assert "collected different tests" not in parallel.output(), parallel.tail()


def test_a_seed_randomly_chose_reaches_every_worker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --randomly-seed, pytest-randomly picks one on the controller:
    the serial run with that seed gives the same values."""
    pytester.makepyfile(test_a=SUITE, test_b=OTHER)
    monkeypatch.setenv("VALUES_FILE", str(pytester.path / "parallel.values"))
    parallel = runs.run(pytester, runs.PARALLEL, workers=runs.WORKERS, disabled=())
    (seed,) = _seeds(parallel)
    monkeypatch.setenv("VALUES_FILE", str(pytester.path / "serial.values"))
    serial = runs.run(pytester, runs.SERIAL, f"--randomly-seed={seed}", workers=None, disabled=())
    runs.assert_same(runs.Comparison(serial, parallel))
    assert _values(pytester, "parallel") == _values(pytester, "serial")


def test_negative_control_other_seeds_give_other_values(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above can fail: two seeds give different values."""
    pytester.makepyfile(test_a=SUITE)
    for seed in (1, 2):
        monkeypatch.setenv("VALUES_FILE", str(pytester.path / f"seed{seed}.values"))
        runs.run(pytester, f"seed{seed}", f"--randomly-seed={seed}", workers=runs.WORKERS, disabled=())
    assert _values(pytester, "seed1") != _values(pytester, "seed2")
