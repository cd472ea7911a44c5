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
