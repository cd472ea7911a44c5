"""Resources declared on fixtures (``requires``, ``restask_fixtures``), end to end.

The oracle is the tests' own log: a conftest hook wrapper notes when each
test's setup begins and its teardown ends (its hold lies around that), and
fixtures note when they are set up and torn down.  The checks below read
only that log: two tests that need the same resource must never overlap,
and a fixture that needs one is set up and torn down only inside a test
that holds it, on the same process.  Each check that could pass because
nothing ran in parallel has a negative control beside it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest

from .runs import RUN, run

#: A conftest that logs every test's span, from the start of its setup to
#: the end of its teardown, and offers ``note`` to fixtures.
ORACLE = """
import json, os, time
import pytest

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log.jsonl")

def note(event, name):
    with open(LOG, "a") as f:
        f.write(json.dumps({"ev": event, "id": name, "pid": os.getpid(), "t": time.time()}) + "\\n")

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    note("start", item.nodeid)
    return (yield)

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item):
    try:
        return (yield)
    finally:
        note("end", item.nodeid)
"""


@dataclass(frozen=True)
class Span:
    test: str
    pid: int
    start: float
    end: float

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    @property
    def name(self) -> str:
        """The test's name with its parameters, without the module."""
        return self.test.rsplit("::", 1)[-1]

    def contains(self, pid: int, moment: float) -> bool:
        return self.pid == pid and self.start <= moment <= self.end


def log(pytester: pytest.Pytester) -> list[dict[str, object]]:
    path = pytester.path / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spans(pytester: pytest.Pytester) -> list[Span]:
    """Each test's span (a test may log several, e.g. when it runs again)."""
    opened: dict[tuple[str, int], float] = {}
    found = []
    for record in log(pytester):
        key = (str(record["id"]), int(record["pid"]))  # type: ignore[call-overload]
        if record["ev"] == "start":
            opened[key] = float(record["t"])  # type: ignore[arg-type]
        elif record["ev"] == "end":
            found.append(Span(key[0], key[1], opened.pop(key), float(record["t"])))  # type: ignore[arg-type]
    return found


def overlaps(all_spans: list[Span], among: str, other: str | None = None) -> list[tuple[str, str]]:
    """Pairs of tests whose names start with ``among`` (or one each of
    ``among`` and ``other``) that ran at the same time."""
    left = [s for s in all_spans if s.name.startswith(among)]
    right = left if other is None else [s for s in all_spans if s.name.startswith(other)]
    pairs = itertools.combinations(left, 2) if other is None else itertools.product(left, right)
    return [(a.test, b.test) for a, b in pairs if a is not b and a.overlaps(b)]


def most_at_once(all_spans: list[Span]) -> int:
    """The largest number of tests that ran at one moment."""
    edges = sorted([(s.start, 1) for s in all_spans] + [(s.end, -1) for s in all_spans])
    return max(itertools.accumulate(change for _, change in edges))


def outside_holds(pytester: pytest.Pytester, fixture: str, holders: str) -> list[str]:
    """Every set-up or tear-down of ``fixture`` not inside a span of a test
    whose name starts with ``holders``, on the same process."""
    holding = [s for s in spans(pytester) if s.name.startswith(holders)]
    events = [r for r in log(pytester) if r["ev"] in ("up", "down") and r["id"] == fixture]
    assert events, f"{fixture} never logged: the check would pass for nothing"
    return [
        f"{r['ev']} at {r['t']} on {r['pid']}"
        for r in events
        if not any(s.contains(int(r["pid"]), float(r["t"])) for s in holding)  # type: ignore[call-overload,arg-type]
    ]


CHAIN = """
import pytest
from pytest_restask import requires
from conftest import note

@pytest.fixture(scope="session")
{requires}
def database():
    note("up", "database")
    yield "db"
    note("down", "database")

@pytest.fixture(scope="session")
def session(database):
    return database

@pytest.fixture
def repo(session):
    return session
"""

CHAIN_TESTS = """
import time
import pytest

@pytest.mark.parametrize("i", range(8))
def test_chain(repo, i):
    time.sleep(0.1)

@pytest.mark.parametrize("i", range(8))
def test_free(i):
    time.sleep(0.1)
"""


def write_chain(pytester: pytest.Pytester, requires: str) -> None:
    pytester.makeconftest(ORACLE + 'pytest_plugins = ["chainfixtures"]\n')
    pytester.makepyfile(chainfixtures=CHAIN.format(requires=requires), test_chain=CHAIN_TESTS)


def test_a_fixture_three_levels_down_serializes_every_test_that_reaches_it(pytester: pytest.Pytester) -> None:
    write_chain(pytester, '@requires("db")')
    run(pytester, "-n", "4").assert_outcomes(passed=16)
    found = spans(pytester)
    assert len(found) == 16
    assert overlaps(found, "test_chain") == []
    assert overlaps(found, "test_free") != []  # the run was parallel
    # the session fixture lives only inside holds of "db", on the worker that set it up
    assert outside_holds(pytester, "database", "test_chain") == []


def test_without_requires_the_same_chain_overlaps(pytester: pytest.Pytester) -> None:
    """The negative control of the test above: the oracle can fail."""
    write_chain(pytester, "")
    run(pytester, "-n", "4").assert_outcomes(passed=16)
    assert overlaps(spans(pytester), "test_chain") != []


def test_a_session_fixture_outlives_its_holds_when_only_the_tests_are_marked(pytester: pytest.Pytester) -> None:
    """The negative control of ``outside_holds``: with the tests marked and
    the session fixture not declared, the fixture outlives the last hold
    of "db" (one worker runs the db tests first, then the free ones)."""
    write_chain(pytester, "")
    pytester.makepyfile(test_chain=CHAIN_TESTS.replace("def test_chain", '@pytest.mark.resource("db")\ndef test_chain'))
    run(pytester, "-n", "1").assert_outcomes(passed=16)
    assert overlaps(spans(pytester), "test_chain") == []
    assert outside_holds(pytester, "database", "test_chain") != []


@pytest.mark.parametrize("workers", ["2", "0"])
def test_a_module_fixture_that_requires_a_resource_lives_only_inside_holds(
    pytester: pytest.Pytester, workers: str
) -> None:
    pytester.makeconftest(ORACLE)
    body = "\n".join(
        f"def test_db{i}(schema):\n    time.sleep(0.1)\n\ndef test_free{i}():\n    time.sleep(0.1)\n" for i in range(4)
    )
    pytester.makepyfile(
        test_module=f"""
import time
import pytest
from pytest_restask import requires
from conftest import note

@pytest.fixture(scope="module")
@requires("db")
def schema():
    note("up", "schema")
    yield
    note("down", "schema")

{body}
"""
    )
    run(pytester, "-n", workers).assert_outcomes(passed=8)
    assert overlaps(spans(pytester), "test_db") == []
    assert outside_holds(pytester, "schema", "test_db") == []


def test_an_override_that_uses_the_original_keeps_what_the_original_reaches(pytester: pytest.Pytester) -> None:
    """The original ``database`` needs nothing itself but requests ``engine``,
    which requires "db"; a closer override requests the original.  Its users
    need "db", though ``engine`` is reached only through the overridden one."""
    pytester.makeconftest(
        ORACLE
        + """
from pytest_restask import requires

@pytest.fixture
@requires("db")
def engine():
    return "engine"

@pytest.fixture
def database(engine):
    return engine
"""
    )
    pytester.mkpydir("sub")
    pytester.makepyfile(
        **{
            "sub/conftest.py": "import pytest\n\n@pytest.fixture\ndef database(database):\n    return database\n",
            "sub/test_sub.py": "import time, pytest\n\n"
            "@pytest.mark.parametrize('i', range(4))\ndef test_sub(database, i):\n"
            "    assert database == 'engine'\n    time.sleep(0.2)\n",
        }
    )
    run(pytester, "-n", "4").assert_outcomes(passed=4)
    assert overlaps(spans(pytester), "test_sub") == []


def test_without_workers_a_resource_fixture_ends_with_the_last_test_that_holds_it(pytester: pytest.Pytester) -> None:
    write_chain(pytester, '@requires("db")')
    pytester.makepyfile(
        test_chain="""
        def test_a(repo): pass
        def test_b(repo): pass
        def test_free(): pass
        def test_c(repo): pass
        """
    )
    pytester.runpytest(*RUN).assert_outcomes(passed=4)
    events = [(r["ev"], r["id"].rsplit("::", 1)[-1]) for r in log(pytester)]  # type: ignore[union-attr]
    assert events == [
        ("start", "test_a"),
        ("up", "database"),
        ("end", "test_a"),
        ("start", "test_b"),
        ("down", "database"),  # test_b hands over to a test that does not hold "db"
        ("end", "test_b"),
        ("start", "test_free"),
        ("end", "test_free"),
        ("start", "test_c"),
        ("up", "database"),
        ("down", "database"),
        ("end", "test_c"),
    ]
    assert outside_holds(pytester, "database", "test_") == []


@pytest.mark.parametrize("order", ["fixture-above", "requires-above"])
def test_both_decorator_orders_and_shared_readers_beside_a_marked_writer(pytester: pytest.Pytester, order: str) -> None:
    """Readers reach ``db`` through a shared fixture; a writer is marked
    exclusive.  Readers overlap each other, never the writer."""
    decorators = (
        '@pytest.fixture\n@requires("db", shared=True)'
        if order == "fixture-above"
        else '@requires("db", shared=True)\n@pytest.fixture'
    )
    pytester.makeconftest(ORACLE)
    pytester.makepyfile(
        test_rw=f"""
        import time
        import pytest
        from pytest_restask import requires

        {decorators.replace(chr(10), chr(10) + "        ")}
        def reader_db():
            return "db"

        @pytest.mark.parametrize("i", range(6))
        def test_read(reader_db, i):
            time.sleep(0.2)

        @pytest.mark.resource("db")
        @pytest.mark.parametrize("i", range(2))
        def test_write(i):
            time.sleep(0.2)
        """
    )
    run(pytester, "-n", "3").assert_outcomes(passed=8)
    found = spans(pytester)
    assert overlaps(found, "test_read") != []
    assert overlaps(found, "test_write") == []
    assert overlaps(found, "test_read", "test_write") == []


def test_slots_on_a_fixture_take_counted_slots(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ORACLE)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    pytester.makepyfile(
        """
        import os, time
        import pytest
        from pytest_restask import requires

        @requires("gpu", slots=1)
        @pytest.fixture
        def device(restask_slots):
            return restask_slots["gpu"][0]

        @pytest.mark.parametrize("i", range(6))
        def test_gpu(device, i):
            assert device in (0, 1)
            assert os.environ["RESTASK_SLOTS_GPU"] == str(device)
            time.sleep(0.2)
        """
    )
    run(pytester, "-n", "4").assert_outcomes(passed=6)
    found = spans(pytester)
    assert most_at_once(found) == 2  # two slots, both used


OVERRIDES = """
import pytest
from pytest_restask import requires

@pytest.fixture
@requires("db", slots=1)
def database():
    return "db"
"""


def test_an_override_without_requires_takes_nothing_and_one_that_uses_the_original_keeps_it(
    pytester: pytest.Pytester,
) -> None:
    """The original ``database`` takes the one slot of "db" (a counted
    resource, so that a test's ``restask_slots`` shows whether it holds it)."""
    pytester.makeconftest(ORACLE + OVERRIDES)
    pytester.makeini("[pytest]\nrestask_resources =\n    db: 1\n")
    pytester.mkpydir("plain")
    pytester.makepyfile(
        **{
            "plain/conftest.py": "import pytest\n\n@pytest.fixture\ndef database():\n    return 'fake'\n",
            "plain/test_plain.py": "import time, pytest\n\n"
            "@pytest.mark.parametrize('i', range(6))\ndef test_overridden(database, restask_slots, i):\n"
            "    assert database == 'fake'\n    assert restask_slots == {}\n    time.sleep(0.2)\n",
        }
    )
    pytester.mkpydir("wrapped")
    pytester.makepyfile(
        **{
            "wrapped/conftest.py": "import pytest\n\n@pytest.fixture\ndef database(database):\n"
            "    return database + '-wrapped'\n",
            "wrapped/test_wrapped.py": "import time, pytest\n\n"
            "@pytest.mark.parametrize('i', range(4))\ndef test_wrapper(database, restask_slots, i):\n"
            "    assert database == 'db-wrapped'\n    assert restask_slots == {'db': [0]}\n    time.sleep(0.2)\n",
        }
    )
    run(pytester, "-n", "4").assert_outcomes(passed=10)  # each test checked what it holds
    found = spans(pytester)
    assert overlaps(found, "test_wrapper") == []  # kept the original's "db"
    # took nothing, so ran beside the others
    assert overlaps(found, "test_overridden") + overlaps(found, "test_overridden", "test_wrapper") != []


PLUGIN = """
import pytest
from conftest import note

@pytest.fixture
def pg_db():
    return "db"

@pytest.fixture
def pg_readonly():
    return "db"
"""


def test_restask_fixtures_declares_a_plugins_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ORACLE + 'pytest_plugins = ["pgplugin"]\n')
    pytester.makeini(
        """
        [pytest]
        restask_fixtures =
            pg_db: database
            pg_readonly: database shared
            not_used_anywhere: database
        """
    )
    pytester.makepyfile(
        pgplugin=PLUGIN,
        test_pg="""
        import time, pytest

        @pytest.mark.parametrize("i", range(3))
        def test_write(pg_db, i):
            time.sleep(0.2)

        @pytest.mark.parametrize("i", range(4))
        def test_read(pg_readonly, i):
            time.sleep(0.2)
        """,
    )
    run(pytester, "-n", "3").assert_outcomes(passed=7)
    found = spans(pytester)
    assert overlaps(found, "test_write") == []
    assert overlaps(found, "test_write", "test_read") == []
    assert overlaps(found, "test_read") != []


@pytest.mark.parametrize("line", ["pg_db database", "pg_db: database slots=0", "pg_db: database exclusive"])
def test_a_malformed_restask_fixtures_line_is_a_usage_error(pytester: pytest.Pytester, line: str) -> None:
    pytester.makeini(f"[pytest]\nrestask_fixtures =\n    {line}\n")
    pytester.makepyfile("def test_one(): pass")
    for args in ((), ("-n", "2")):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*restask_fixtures line {line!r}*"])
        assert "Traceback" not in result.stderr.str()


BAD_REQUIRES = [
    ("requires()", "@pytest.mark.resource needs at least one resource name*"),
    ('requires("db", exclusive=True)', "unknown keyword 'exclusive' in @pytest.mark.resource*"),
    ("requires(42)", "resource names must be strings, got 42 (int)"),
    ('requires("db", slots=0)', "slots= must be a whole number of at least 1, got 0"),
    ('requires("db", shared=True, slots=1)', "shared=True and slots= cannot be combined*"),
    ("requires", "@requires is written without its parentheses; name the resources: @requires('db')"),
]


@pytest.mark.parametrize(("call", "message"), BAD_REQUIRES, ids=[call for call, _ in BAD_REQUIRES])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_requires_errors_each_test_that_uses_the_fixture(
    pytester: pytest.Pytester, call: str, message: str, workers: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest
        from pytest_restask import requires

        @pytest.fixture
        @{call}
        def database():
            return "db"

        @pytest.fixture
        def repo(database):
            return database

        def test_direct(database): pass
        def test_through(repo): pass
        def test_free(): pass
        """
    )
    result = run(pytester, "-n", workers, "-rE")
    result.assert_outcomes(passed=1, errors=2)
    for test in ("test_direct", "test_through"):
        prefix = f"invalid resource declaration on fixture 'database' (used by test_bad.py::{test}): "
        result.stdout.fnmatch_lines([f"*ERROR at setup of {test}*", f"{prefix}{message}"])
    assert "pytest_restask/" not in result.stdout.str()  # no traceback from restask


MARKED_BY_CONFTEST = """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        port = item.callspec.params.get("port") if hasattr(item, "callspec") else None
        if port is not None:
            item.add_marker(pytest.mark.resource(f"port-{port}"))
"""


@pytest.mark.parametrize("workers", ["0", "4"])
def test_markers_added_by_a_conftest_count_with_and_without_workers(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makeconftest(ORACLE + MARKED_BY_CONFTEST)
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.parametrize("port", [8000, 8000, 8000, 8001, 8001, 8001])
        def test_server(port, restask_slots):
            time.sleep(0.1)

        @pytest.mark.parametrize("i", range(4))
        def test_free(i):
            time.sleep(0.1)
        """
    )
    run(pytester, "-n", workers).assert_outcomes(passed=10)
    found = spans(pytester)
    for port in ("8000", "8001"):
        assert overlaps(found, f"test_server[{port}") == []
    if workers != "0":
        assert overlaps(found, "test_server[8000", "test_server[8001") != []  # different ports: in parallel
        assert overlaps(found, "test_free") != []


def test_a_fixture_reached_only_at_run_time_fails_the_test_that_does_not_hold_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_restask import requires

        @pytest.fixture
        @requires("db")
        def database(request):
            with open("ran.txt", "a") as f:
                f.write(request.node.name + "\\n")

        def test_dynamic(request):
            request.getfixturevalue("database")

        @pytest.mark.usefixtures("database")
        def test_declared(request):
            request.getfixturevalue("database")

        @pytest.mark.resource("db", shared=True)
        def test_too_weak(request):
            request.getfixturevalue("database")
        """
    )
    for args in (("-n", "2"), ()):
        (pytester.path / "ran.txt").unlink(missing_ok=True)
        result = run(pytester, *args)
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines(
            [
                "*test_too_weak uses fixture 'database', which needs resource('db'), "
                "but the test holds only resource('db', shared=True)*"
            ]
        )
        result.stdout.fnmatch_lines(
            [
                "*test_dynamic uses fixture 'database', which needs resource('db'), but the test does not hold it*"
                "@pytest.mark.usefixtures('database')*"
            ]
        )
        # the fixture's body ran only for the test that holds "db"
        assert (pytester.path / "ran.txt").read_text().split() == ["test_declared"]


def test_fixture_and_marker_requests_merge_strongest_wins(pytester: pytest.Pytester) -> None:
    """A fixture asks one gpu slot, the test's marker two: the test holds two."""
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 3\n")
    pytester.makepyfile(
        """
        import pytest
        from pytest_restask import requires

        @pytest.fixture
        @requires("gpu", slots=1)
        def device():
            pass

        # the slot numbers depend on whether the two ran at the same time
        @pytest.mark.resource("gpu", slots=2)
        def test_two(device, restask_slots):
            assert len(set(restask_slots["gpu"])) == 2

        def test_one(device, restask_slots):
            assert len(restask_slots["gpu"]) == 1
        """
    )
    for args in ((), ("-n", "2")):
        run(pytester, *args).assert_outcomes(passed=2)


def test_requires_on_a_test_is_an_error_that_says_to_use_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_misplaced="""
        import pytest
        from pytest_restask import requires

        @requires("db")
        def test_misplaced():
            pass

        def test_fine():
            pass
        """
    )
    for workers in ("0", "2"):
        result = run(pytester, "-n", workers)
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(
            [
                "invalid resource declaration on test_misplaced.py::test_misplaced: requires() declares what a "
                "fixture needs, and this is a test: use @pytest.mark.resource(...) on a test"
            ]
        )
