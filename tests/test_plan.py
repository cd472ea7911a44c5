"""``--plan`` and ``--plan-json``: what the tests ask of each resource, and
the run's lower bound, before anything runs.

Every expected bound here is worked out by hand, term by term, from the
durations the test writes; none calls the code under test to get it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_restask.plan import bound_terms
from pytest_restask.resources import Mode, Request, Requirement
from pytest_restask.views import PLAN_TITLE, PLAN_XDIST_N

from .runs import RUN

EXAMPLES = Path(__file__).parent.parent / "examples"

#: The example suite's tests, each with the seconds its durations file gives it
#: (what it sleeps in its body).
EXAMPLE_SECONDS = {
    **{f"test_database.py::test_migrate[{t}]": 0.3 for t in ("users", "orders", "audit")},
    **{f"test_database.py::test_report[{q}]": 0.3 for q in range(6)},
    **{f"test_gpu.py::test_train[{m}]": 0.4 for m in ("small", "medium", "large", "huge")},
    "test_gpu.py::test_train_on_both": 0.4,
    **{f"test_network.py::test_server[{c}]": 0.2 for c in range(4)},
    "test_network.py::test_restart_everything": 0.3,
    **{f"test_pure.py::test_pure[{n}]": 0.2 for n in range(10)},
}


def plan_json(pytester: pytest.Pytester, *args: str) -> dict[str, Any]:
    """Run ``--plan-json`` in process and return the document it printed."""
    result = pytester.runpytest(*RUN, "--plan-json", *args)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    return json.loads(result.stdout.str())


@pytest.fixture
def example(pytester: pytest.Pytester) -> pytest.Pytester:
    """The bundled example suite, with a durations file of the seconds above."""
    for path in EXAMPLES.iterdir():
        if path.is_file() and path.suffix in (".py", ".ini"):
            shutil.copy(path, pytester.path / path.name)
    (pytester.path / "durations.json").write_text(json.dumps(EXAMPLE_SECONDS))
    return pytester


# The example suite's figures (seconds):
#   all work: 3 migrations x 0.3 + 6 reports x 0.3 + 5 trainings x 0.4
#             + 4 servers x 0.2 + 1 restart x 0.3 + 10 pure x 0.2 = 7.8
#   serial: the restart, 0.3; the rest 7.5
#   db: exclusive 0.9 (the migrations), shared 1.8 (the reports)
#   gpu (capacity 2): slots x seconds = 4 x 1 x 0.4 + 1 x 2 x 0.4 = 2.4
#   port-pool (capacity 4): 4 x 1 x 0.2 = 0.8
#   the longest test: 0.4
@pytest.mark.parametrize(
    ("workers", "bound", "bottleneck"),
    [
        # workers 7.8 / 1 = 7.8; serial 0.3 + 7.5 / 1 = 7.8 (a tie: workers come first)
        (1, 7.8, "workers"),
        # serial 0.3 + 7.5 / 4 = 2.175 > workers 1.95 > gpu 1.2 > db 0.9 + 1.8 / 4 = 1.35
        (4, 2.175, "serial"),
        # gpu 2.4 / 2 = 1.2 > db 0.9 + 1.8 / 16 = 1.0125 > serial 0.3 + 7.5 / 16 = 0.76875
        (16, 1.2, "gpu slots"),
    ],
)
def test_the_plan_of_the_example_suite(example: pytest.Pytester, workers: int, bound: float, bottleneck: str) -> None:
    data = plan_json(example, "-n", str(workers), "--durations-file=durations.json")
    assert data["bound"] == pytest.approx(bound)
    assert data["bottleneck"] == bottleneck
    assert (data["tests"], data["estimated"], data["work"]) == (29, 0, pytest.approx(7.8))
    terms = {term["name"]: term["seconds"] for term in data["terms"]}
    assert terms == pytest.approx(
        {
            "workers": 7.8 / workers,
            "serial": 0.3 + 7.5 / workers,
            "longest test": 0.4,
            "db": 0.9 + 1.8 / workers,
            "gpu slots": 2.4 / 2,
            "port-pool slots": 0.8 / 4,
        }
    )
    resources = {use["name"]: use for use in data["resources"]}
    assert resources["db"]["exclusive"] == {"tests": 3, "seconds": pytest.approx(0.9)}
    assert resources["db"]["shared"] == {"tests": 6, "seconds": pytest.approx(1.8)}
    assert resources["gpu"]["counted"] == {"tests": 5, "seconds": pytest.approx(2.0)}
    assert (resources["gpu"]["capacity"], resources["port-pool"]["scope"]) == (2, "host")


def test_the_terminal_plan_says_the_same(example: pytest.Pytester) -> None:
    result = example.runpytest(*RUN, "-n", "4", "--plan", "--durations-file=durations.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            f"*{PLAN_TITLE}*",
            "29 tests, 7.80 s of work on 4 worker(s)",
            "resource * capacity * scope * exclusive * shared * counted",
            "db * 1 * run * 3 tests, 0.90 s * 6 tests, 1.80 s * -",
            "gpu * 2 * run * - * - * 5 tests, 2.00 s",
            "port-pool * 4 * host * - * - * 4 tests, 0.80 s",
            "serial: 1 test, 0.30 s",
            "lower bound: 2.18 s with 4 worker(s); bottleneck: serial",
            "terms: serial 2.18 s, workers 1.95 s, db 1.35 s, gpu slots 1.20 s, longest test 0.40 s"
            " (and 1 smaller; -v shows all)",
        ]
    )
    result.stdout.no_fnmatch_line("*passed*")  # nothing ran


# The generated suite: 300 tests, with recorded durations (seconds):
#   170 free tests x 0.5 = 85
#   5 serial tests x 4 = 20
#   20 tests with db exclusive x 3 = 60
#   80 tests with db shared x 4 = 320
#   5 tests with cache exclusive and db shared x 8 = 40
#   20 tests with gpu slots=1 (capacity 2) x 1.5 = 30
# all work 85 + 20 + 60 + 320 + 40 + 30 = 555; serial 20, the rest 535
# db: exclusive 60; shared 320 + 40 = 360
# gpu: 20 x 1 x 1.5 = 30 slot-seconds
# cache then db: db's exclusive 60 + the cache holders' 40 = 100 at any -n
# the longest test: 8
GENERATED = """
import pytest

@pytest.mark.parametrize("i", range(170))
def test_free(i): pass

@pytest.mark.serial
@pytest.mark.parametrize("i", range(5))
def test_serial(i): pass

@pytest.mark.resource("db")
@pytest.mark.parametrize("i", range(20))
def test_write(i): pass

@pytest.mark.resource("db", shared=True)
@pytest.mark.parametrize("i", range(80))
def test_read(i): pass

@pytest.mark.resource("cache")
@pytest.mark.resource("db", shared=True)
@pytest.mark.parametrize("i", range(5))
def test_warm(i): pass

@pytest.mark.resource("gpu", slots=1)
@pytest.mark.parametrize("i", range(20))
def test_train(i): pass
"""
GENERATED_SECONDS = {"free": (170, 0.5), "serial": (5, 4.0), "write": (20, 3.0), "read": (80, 4.0)}
GENERATED_SECONDS |= {"warm": (5, 8.0), "train": (20, 1.5)}


@pytest.fixture
def generated(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_generated=GENERATED)
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    durations = {
        f"test_generated.py::test_{kind}[{i}]": seconds
        for kind, (count, seconds) in GENERATED_SECONDS.items()
        for i in range(count)
    }
    assert len(durations) == 300
    (pytester.path / ".test_durations").write_text(json.dumps(durations))
    return pytester


@pytest.mark.parametrize(
    ("workers", "bound", "bottleneck"),
    [
        # serial 20 + 535 / 2 = 287.5 > workers 555 / 2 = 277.5 > db 60 + 360 / 2 = 240 > cache then db 100
        (2, 287.5, "serial"),
        # db 60 + 360 / 6 = 120 > serial 20 + 535 / 6 = 109.17 > cache then db 100 > workers 92.5
        (6, 120.0, "db"),
        # cache then db 100 > db 60 + 360 / 16 = 82.5 > serial 20 + 535 / 16 = 53.44 > cache 40 > workers 34.69
        (16, 100.0, "cache then db"),
    ],
)
def test_the_plan_of_a_generated_suite(generated: pytest.Pytester, workers: int, bound: float, bottleneck: str) -> None:
    data = plan_json(generated, "-n", str(workers), "--durations-file=.test_durations")
    assert (data["bound"], data["bottleneck"]) == (pytest.approx(bound), bottleneck)
    assert (data["tests"], data["estimated"], data["work"]) == (300, 0, pytest.approx(555))
    terms = {term["name"]: term["seconds"] for term in data["terms"]}
    assert terms == pytest.approx(
        {
            "workers": 555 / workers,
            "serial": 20 + 535 / workers,
            "longest test": 8.0,
            "db": 60 + 360 / workers,
            "cache": 40,
            "gpu slots": 30 / 2,
            "cache then db": 100,
        }
    )
    # the terminal form shows the same bound
    text = generated.runpytest(*RUN, "-n", str(workers), "--plan", "--durations-file=.test_durations")
    text.stdout.fnmatch_lines([f"lower bound: {bound:.2f} s with {workers} worker(s); bottleneck: {bottleneck}"])


def test_a_shard_plans_its_own_tests(generated: pytest.Pytester) -> None:
    whole = plan_json(generated, "-n", "4", "--durations-file=.test_durations")
    parts = [plan_json(generated, "-n", "4", f"--shard={k}/2", "--durations-file=.test_durations") for k in (1, 2)]
    assert [part["shard"] for part in parts] == ["1/2", "2/2"]
    assert sum(part["tests"] for part in parts) == whole["tests"] == 300
    assert sum(part["work"] for part in parts) == pytest.approx(whole["work"])
    assert all(part["bound"] < whole["bound"] for part in parts)


def test_tests_without_a_recorded_duration_are_estimated_and_counted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\ndef test_two(): pass\ndef test_new(): pass\n")
    durations = {"test_a.py::test_one": 1.0, "test_a.py::test_two": 3.0}
    (pytester.path / "d.json").write_text(json.dumps(durations))
    data = plan_json(pytester, "-n", "2", "--durations-file=d.json")
    # the new test gets the mean of the known ones, (1 + 3) / 2 = 2
    assert (data["estimated"], data["estimate"], data["work"]) == (1, 2.0, 6.0)
    result = pytester.runpytest(*RUN, "-n", "2", "--plan", "--durations-file=d.json")
    result.stdout.fnmatch_lines(["3 tests, 6.00 s of work on 2 worker(s); 1 without a recorded duration, *2.00 s each"])


def test_requests_that_can_never_be_granted_are_listed_as_the_run_would_fail_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest

        @pytest.mark.resource("gpu", slots=3)
        def test_too_big(): pass

        @pytest.mark.resource("db", shared="yes")
        def test_bad_marker(): pass

        def test_fine(): pass
        """
    )
    pytester.makeini("[pytest]\nrestask_resources =\n    gpu: 2\n")
    data = plan_json(pytester, "-n", "2")
    assert data["tests"] == 1
    messages = {entry["nodeid"]: entry["message"] for entry in data["never_granted"]}
    assert sorted(messages) == ["test_a.py::test_bad_marker", "test_a.py::test_too_big"]
    run = pytester.runpytest_subprocess(*RUN, "-n", "2")
    run.assert_outcomes(passed=1, errors=2)
    for nodeid, message in messages.items():
        assert message.split(": ", 1)[-1] in run.stdout.str(), nodeid


def test_the_plan_json_is_alone_on_stdout_and_the_terminal_on_stderr(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*RUN, "-n", "2", "--plan-json")
    assert result.ret == pytest.ExitCode.OK
    assert json.loads(result.stdout.str())["tests"] == 1
    result.stderr.fnmatch_lines(["*1 test collected*"])


def test_the_plan_json_needs_no_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\n")
    result = pytester.runpytest_subprocess(*RUN, "-n", "2", "--plan-json", "-p", "no:terminal")
    assert result.ret == pytest.ExitCode.OK
    assert json.loads(result.stdout.str())["tests"] == 1


def test_where_pytest_xdist_owns_n_the_plan_says_it_is_for_one_worker(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_a="def test_one(): pass\n")
    result = pytester.runpytest("-n", "2", "--plan")  # restask not named: -n is xdist's
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["1 test, * on 1 worker(s)*", PLAN_XDIST_N])


def test_the_plan_runs_nothing_and_starts_no_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="import os\ndef test_one():\n    open('ran', 'w').close()\n")
    result = pytester.runpytest_subprocess(*RUN, "-n", "2", "--plan")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "ran").exists()
    result.stdout.no_fnmatch_line("*gw0*")


def test_the_bound_terms_of_a_test_holding_two_resources_exclusively_and_shared() -> None:
    """The pair term counts only tests that hold the first exclusively and the second shared."""
    db_shared, cache = Request("db", Mode.SHARED), Request("cache", Mode.EXCLUSIVE)
    tests = [
        (2.0, Requirement((cache, db_shared))),  # cache then db
        (3.0, Requirement((Request("db", Mode.EXCLUSIVE),))),  # db's exclusive work
        (5.0, Requirement((db_shared,))),  # shared, not in the pair
    ]
    terms = {term.name: term.seconds for term in bound_terms(tests, 4)}
    # workers 10 / 4; the longest test 5; cache 2; db 3 + 7 / 4; cache then db 3 + 2
    assert terms == pytest.approx({"workers": 2.5, "longest test": 5.0, "cache": 2.0, "db": 4.75, "cache then db": 5.0})
