"""pytest-asyncio (0.23 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite of
coroutine tests in pytest-asyncio's strict mode: async tests, async fixtures
(a value, a generator with a teardown, a module-scoped one on a module-scoped
loop), a failing test and a fixture whose setup raises.  Beyond equal counts
and JUnit verdicts it checks that every async generator fixture's teardown
ran, once per test, in both runs, and that the fixture error is reported as
an error with its message.
"""

from __future__ import annotations

import itertools
import json

import pytest

from . import runs

pytestmark = runs.needs("pytest-asyncio")

INI = """
    [pytest]
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
"""

SUITE = """
    import asyncio
    import os

    import pytest
    import pytest_asyncio


    @pytest_asyncio.fixture
    async def number():
        await asyncio.sleep(0)
        return 42


    @pytest_asyncio.fixture
    async def resource(request, tmp_path_factory):
        await asyncio.sleep(0)
        yield "open"
        await asyncio.sleep(0)
        folder = request.config.rootpath / "teardowns"
        folder.mkdir(exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
        (folder / f"{worker}-{request.node.name}").write_text("closed")


    @pytest_asyncio.fixture(loop_scope="module", scope="module")
    async def shared_queue():
        return asyncio.Queue()


    @pytest_asyncio.fixture
    async def broken():
        await asyncio.sleep(0)
        raise RuntimeError("fixture setup broke")


    @pytest.mark.asyncio
    async def test_sleep():
        await asyncio.sleep(0.01)


    @pytest.mark.asyncio
    async def test_fixture_value(number):
        assert number == 42


    @pytest.mark.asyncio
    @pytest.mark.parametrize("i", range(3))
    async def test_generator_fixture(resource, i):
        assert resource == "open"


    @pytest.mark.asyncio(loop_scope="module")
    async def test_module_loop(shared_queue):
        await shared_queue.put(1)
        assert shared_queue.qsize() >= 1


    @pytest.mark.asyncio
    async def test_gather():
        results = await asyncio.gather(*(asyncio.sleep(0.01, result=i) for i in range(5)))
        assert results == list(range(5))


    @pytest.mark.asyncio
    async def test_fails(resource):
        await asyncio.sleep(0)
        assert resource == "closed"


    @pytest.mark.asyncio
    async def test_fixture_error(broken):
        pass


    @pytest.mark.asyncio
    async def test_wait_for_times_out():
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.01)
"""


def test_coroutine_tests_and_async_fixtures_report_the_same_on_workers(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    comparison = runs.compare(pytester)
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 7, "failed": 2, "errors": 1}
    for run in comparison.runs():
        run.result.stdout.fnmatch_lines(["ERROR test_suite.py::test_fixture_error - RuntimeError: fixture setup broke"])
        run.result.stdout.fnmatch_lines(["FAILED test_suite.py::test_wait_for_times_out - TimeoutError*"])
    teardowns = sorted(path.name for path in (pytester.path / "teardowns").iterdir())
    serial = [name for name in teardowns if name.startswith("master-")]
    parallel = [name.split("-", 1)[1] for name in teardowns if not name.startswith("master-")]
    expected = [f"test_generator_fixture[{i}]" for i in range(3)] + ["test_fails"]
    assert sorted(name.split("-", 1)[1] for name in serial) == sorted(expected)
    assert sorted(parallel) == sorted(expected)


ASYNC_RESOURCE = """
    import asyncio
    import json
    import os
    import time

    import pytest
    import pytest_asyncio
    from pytest_restask import requires


    def note(request, start):
        with open(request.config.rootpath / "spans.jsonl", "a") as f:
            f.write(json.dumps([request.node.name, start, time.time()]) + "\\n")


    @requires("db")
    @pytest_asyncio.fixture
    async def connection(request):
        start = time.time()
        await asyncio.sleep(0.2)
        yield "conn"
        note(request, start)


    @pytest_asyncio.fixture
    @requires("db")
    async def other_connection(request):
        start = time.time()
        await asyncio.sleep(0.2)
        yield "conn"
        note(request, start)


    @pytest.mark.asyncio
    @pytest.mark.parametrize("i", range(3))
    async def test_db(connection, i):
        assert connection == "conn"


    @pytest.mark.asyncio
    @pytest.mark.parametrize("i", range(3))
    async def test_other_db(other_connection, i):
        assert other_connection == "conn"


    @pytest.mark.asyncio
    @pytest.mark.parametrize("i", range(4))
    async def test_free(request, i):
        start = time.time()
        await asyncio.sleep(0.2)
        note(request, start)
"""


def test_requires_on_an_async_fixture_serializes_its_users(pytester: pytest.Pytester) -> None:
    """pytest-asyncio wraps an async fixture's function; ``requires`` above
    or below its decorator still reaches the test that uses it."""
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=ASYNC_RESOURCE)
    parallel = runs.run(pytester, runs.PARALLEL, workers=runs.WORKERS)
    assert parallel.outcomes == {"passed": 10}, parallel.tail()
    spans = [json.loads(line) for line in (pytester.path / "spans.jsonl").read_text().splitlines()]
    db = [(start, end) for name, start, end in spans if "db" in name]
    free = [(start, end) for name, start, end in spans if name.startswith("test_free")]
    assert len(db) == 6
    assert not [(a, b) for a, b in itertools.combinations(db, 2) if a[0] < b[1] and b[0] < a[1]]
    assert [(a, b) for a, b in itertools.product(db, free) if a[0] < b[1] and b[0] < a[1]]  # in parallel
