"""The host locks themselves, against a second real process holding some."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_restask.hostlocks import HostLockError, HostLocks, prepare_lock_dir, register_capacities
from pytest_restask.resources import Mode, Request

EX, SH, CO = Mode.EXCLUSIVE, Mode.SHARED, Mode.COUNTED

HOLDER = """
import sys
from pathlib import Path
from pytest_restask.hostlocks import HostLocks, WriterIntents
from pytest_restask.resources import Mode, Request

directory, what, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if what == "intent":
    intents = WriterIntents(directory)
    intents.want(name, "writer")
else:
    locks = HostLocks(directory, {name: 2}, {name})
    taken = locks.take([Request(name, Mode[what], 1 if what == "COUNTED" else 0)])
    assert taken.busy is None, taken
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[object]:
    """Start a process that holds a lock until the test ends."""
    processes: list[subprocess.Popen[str]] = []

    def start(what: str, name: str) -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOLDER), str(tmp_path), what, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "held"
        processes.append(process)

    yield start
    for process in processes:
        process.communicate("\n", timeout=30)


def test_a_busy_lock_releases_what_was_taken_before_it(tmp_path: Path, hold) -> None:  # type: ignore[no-untyped-def]
    hold("EXCLUSIVE", "postgres")
    locks = HostLocks(tmp_path, {}, {"cache", "postgres"})
    taken = locks.take([Request("cache", SH), Request("postgres", EX), Request("db", EX)])
    assert taken.busy == "postgres"
    assert locks.held() == {}  # cache, taken first, was let go: all or none
    assert locks.take([Request("cache", EX)]).busy is None  # so another user can take it
    assert locks.held() == {"cache": ()}


def test_a_waiting_writers_intent_keeps_readers_out_but_not_writers(tmp_path: Path, hold) -> None:  # type: ignore[no-untyped-def]
    hold("intent", "cache")
    locks = HostLocks(tmp_path, {"cache": 2}, {"cache"})
    assert locks.take([Request("cache", SH)]).busy == "cache"
    assert locks.take([Request("cache", CO, 1)]).busy == "cache"
    assert locks.take([Request("cache", EX)]).busy is None


def test_a_reader_that_keeps_its_lock_lets_go_when_a_writer_of_another_run_waits(tmp_path: Path, hold) -> None:  # type: ignore[no-untyped-def]
    locks = HostLocks(tmp_path, {}, {"cache"})
    assert locks.take([Request("cache", SH)]).busy is None
    assert locks.take([Request("cache", SH)]).busy is None  # kept for the next reader
    hold("intent", "cache")
    assert locks.take([Request("cache", SH)]).busy == "cache"  # the next reader does not pass the writer


@pytest.mark.parametrize("next_mode", [EX, CO])
def test_a_lock_in_use_is_never_let_go_to_be_taken_in_another_mode(tmp_path: Path, hold, next_mode: Mode) -> None:  # type: ignore[no-untyped-def]
    """A worker tries its next test's locks while the test before is in its
    teardown: a reader followed by a writer (or a counted user) of "cache"
    must keep its read lock until that teardown ends, else another run's
    writer could take "cache" in between."""
    locks = HostLocks(tmp_path, {"cache": 2}, {"cache"})
    assert locks.take([Request("cache", SH)]).busy is None
    slots = 1 if next_mode is CO else 0
    assert locks.take([Request("cache", next_mode, slots)], running=True).busy == "cache"
    assert locks.held() == {"cache": ()}  # still held as it was
    other = HostLocks(tmp_path, {"cache": 2}, {"cache"})
    assert other.take([Request("cache", EX)]).busy == "cache"  # so no writer of another run gets in
    assert locks.take([Request("cache", next_mode, slots)]).busy is None  # once the teardown is over: taken again


def test_counted_slots_skip_those_another_process_holds(tmp_path: Path, hold) -> None:  # type: ignore[no-untyped-def]
    hold("COUNTED", "gpu")  # it takes slot 0
    locks = HostLocks(tmp_path, {"gpu": 2}, {"gpu"})
    taken = locks.take([Request("gpu", CO, 1)], {"gpu": [0]})
    assert taken.busy is None
    assert taken.slots == {"gpu": (1,)}
    locks.release_all()
    assert locks.take([Request("gpu", CO, 2)]).busy == "gpu"  # only one slot is free


def test_names_become_safe_file_names(tmp_path: Path) -> None:
    locks = HostLocks(tmp_path, {}, {"a/b c"})
    assert locks.take([Request("a/b c", EX)]).busy is None
    assert (tmp_path / "a%2Fb%20c.rw.db").exists()


def test_capacities_must_agree_between_live_runs(tmp_path: Path) -> None:
    held = register_capacities(tmp_path, {"gpu": 2})
    assert register_capacities(tmp_path, {"gpu": 2})  # the same: fine
    with pytest.raises(HostLockError, match=r"capacity 4 here, .* declared it with capacity 2"):
        register_capacities(tmp_path, {"gpu": 4})
    for lock in held:
        lock.release()


def test_an_unusable_lock_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HostLockError, match=f"lock directory {tmp_path / 'file'} .* is not usable: it is a file"):
        prepare_lock_dir(tmp_path / "file")
    assert prepare_lock_dir(tmp_path / "new" / "dir").is_dir()
