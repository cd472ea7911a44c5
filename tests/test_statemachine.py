"""The state machine, with a fake spawner and a fake clock: no processes."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_restask.events import Blocker, TaskChanged, TaskState, TaskWaiting, WorkerChanged
from pytest_restask.resources import Grant, LockTable, Mode, Request, Requirement, merge_requests
from pytest_restask.statemachine import AHEAD_TASKS, EVERY_WORKER_FAILED, Reason, StateMachine, Task, WorkerPhase

from .simulation import Plan, SimSpawner, conflicts, make_machine

EX, SH, CO = Mode.EXCLUSIVE, Mode.SHARED, Mode.COUNTED
SimSpawnerStartup = SimSpawner.startup


def needs(*requests: Request, serial: bool = False) -> Requirement:
    return merge_requests(requests, serial)


def test_conflicting_tasks_run_one_after_another() -> None:
    reqs = [needs(Request("db", EX))] * 3 + [needs()] * 3
    sm, sim = make_machine(reqs, [Plan(body=1.0)] * 6, workers=3)
    sim.run(sm)
    assert sm.done
    assert sm.table.is_empty()
    assert [t.reason for t in sm.finished].count(Reason.COMPLETED) == 6
    assert conflicts(sim.intervals, reqs) == []
    db = sorted(i.start for i in sim.intervals if reqs[i.task].requests)
    assert db[1] - db[0] >= 1.0
    assert db[2] - db[1] >= 1.0


def test_hand_over_keeps_fixtures_only_when_covered() -> None:
    reqs = [needs(Request("db", EX)), needs(Request("db", EX)), needs()]
    sm, sim = make_machine(reqs, [Plan(body=1.0, teardown=0.5)] * 3, workers=1)
    sim.run(sm)
    # gw0: t0, then t1 handed over with db (covers t0), then t2 (free: does not cover)
    assert sim.answers == [
        ("gw0", 0, False, False),
        ("gw0", 1, True, False),
        ("gw0", 2, False, False),
        ("gw0", None, False, True),
    ]
    assert conflicts(sim.intervals, reqs) == []


def test_triage_finishes_invalid_and_impossible() -> None:
    reqs = [needs(Request("gpu", CO, 3)), needs()]
    sm, sim = make_machine(reqs, [Plan()] * 2, workers=1, capacities={"gpu": 2})
    sm.queues.requested[1].error = "bad marker"
    sim.run(sm)
    reasons = {t.id: (t.reason, t.detail) for t in sm.finished}
    assert reasons[0][0] is Reason.IMPOSSIBLE
    assert "capacity is 2" in reasons[0][1]
    assert reasons[1] == (Reason.INVALID, "bad marker")
    assert sim.intervals == []


def test_nothing_to_run_starts_no_worker() -> None:
    sm, sim = make_machine([], [], workers=4)
    sim.run(sm)
    assert sim.starts == 0
    assert sm.done


def test_waiting_exclusive_task_is_not_starved_by_shared_readers() -> None:
    """A writer that waits for "db" reserves it: the readers queued after it
    (twelve, enough to keep "db" shared for ever on four workers) wait."""
    holder = needs(Request("db", SH), Request("gpu", EX))
    writer = needs(Request("db", EX), Request("port", EX))
    reqs = (
        [holder, writer]
        + [needs(Request("gpu", EX))] * 8  # make gpu the busiest resource: the holder goes first
        + [needs(Request("port", EX))] * 5  # then port, with the writer: before the readers
        + [needs(Request("db", SH))] * 12
    )
    plans = [Plan(body=2.0)] + [Plan(body=1.0)] * 14 + [Plan(body=1.0)] * 12
    sm, sim = make_machine(reqs, plans, workers=4)
    sim.run(sm)
    assert conflicts(sim.intervals, reqs) == []
    start = {i.task: i for i in sim.intervals}
    # the writer starts as soon as the holder is done, before any reader after it
    assert start[1].start == start[0].end == SimSpawnerStartup + 2.0
    readers = [start[i] for i in range(15, 27)]
    assert all(reader.start >= start[1].end for reader in readers)


def test_serial_task_runs_alone_and_first() -> None:
    reqs = [needs(), needs(serial=True)] + [needs()] * 6
    sm, sim = make_machine(reqs, [Plan(body=1.0)] * 8, workers=3)
    sim.run(sm)
    assert conflicts(sim.intervals, reqs) == []
    serial = next(i for i in sim.intervals if i.task == 1)
    assert serial.start == SimSpawnerStartup
    assert all(i.start >= serial.end for i in sim.intervals if i.task != 1)


def test_crash_costs_one_task_and_the_worker_is_replaced() -> None:
    reqs = [needs(Request("db", EX))] * 4
    plans = [Plan(), Plan(crash=True), Plan(), Plan()]
    sm, sim = make_machine(reqs, plans, workers=2, max_restarts=8)
    sim.run(sm)
    reasons = {t.id: t.reason for t in sm.finished}
    assert reasons == {0: Reason.COMPLETED, 1: Reason.CRASHED, 2: Reason.COMPLETED, 3: Reason.COMPLETED}
    assert sm.restarts == 1
    assert sm.table.is_empty()
    crashed = next(t for t in sm.finished if t.id == 1)
    assert "crashed: exit code 1" in crashed.detail


def test_timeout_kills_and_replaces() -> None:
    reqs = [needs(Request("db", EX))] * 3
    plans = [Plan(), Plan(hang=True), Plan()]
    sm, sim = make_machine(reqs, plans, workers=1, task_timeout=5.0, max_restarts=4)
    sim.run(sm)
    hung = next(t for t in sm.finished if t.id == 1)
    assert hung.reason is Reason.TIMEOUT
    assert hung.detail == "timed out after 5 s on gw0"
    assert hung.finished_at is not None
    assert hung.started_at is not None
    assert hung.finished_at - hung.started_at == 5.0
    assert [t.reason for t in sm.finished].count(Reason.COMPLETED) == 2
    assert sim.kills == 1
    assert sm.table.is_empty()


def test_a_task_timeout_overrides_the_run_limit_and_zero_means_none() -> None:
    reqs = [needs()] * 3
    plans = [Plan(hang=True), Plan(body=20.0), Plan(body=3.0)]
    sm, sim = make_machine(reqs, plans, workers=3, task_timeout=5.0, max_restarts=4)
    sm.queues.requested[0].timeout = 2.0  # @pytest.mark.timeout(2)
    sm.queues.requested[1].timeout = 0.0  # @pytest.mark.timeout(0)
    sim.run(sm)
    finished = {t.id: t for t in sm.finished}
    assert finished[0].reason is Reason.TIMEOUT
    assert finished[0].detail == "timed out after 2 s on gw0"
    assert finished[1].reason is Reason.COMPLETED  # ran 20 s, past the run's 5 s
    assert finished[2].reason is Reason.COMPLETED
    assert sm.lost_outside_tests == []  # the killed worker was ours to kill


def test_a_worker_lost_outside_a_test_is_recorded_and_replaced() -> None:
    reqs = [needs()] * 2
    sm, sim = make_machine(reqs, [Plan(body=1.0)] * 2, workers=1, max_restarts=2)
    sm.step(0.0)
    sm.worker_died("gw0", "exit code 5", 0.1)  # while it was collecting
    assert sm.phase("gw0") is WorkerPhase.STARTING
    assert sm.lost_outside_tests == ["worker gw0 ended outside a test: exit code 5; it was replaced"]
    sim.run(sm)
    assert [t.reason for t in sm.finished] == [Reason.COMPLETED] * 2
    assert sm.restarts == 1


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_replacements_stop_at_the_limit_and_say_so(limit: int) -> None:
    sm, _ = make_machine([needs()], [Plan()], workers=1, max_restarts=limit)
    sm.step(0.0)
    for when in range(limit + 1):  # each replacement dies too, while collecting
        sm.worker_died("gw0", "exit code 5", 0.1 * (when + 1))
    assert sm.restarts == limit
    replaced = [line for line in sm.lost_outside_tests if line.endswith("; it was replaced")]
    assert len(replaced) == limit
    assert sm.lost_outside_tests[-1].endswith("; not replaced")
    assert sm.aborted is not None
    assert "worker restart limit reached" in sm.aborted[1]
    assert sm.done  # the task was finished as not run


def test_a_start_failure_on_every_worker_stops_the_run_at_once() -> None:
    sm, _ = make_machine([needs()] * 4, [Plan()] * 4, workers=2, max_restarts=8)
    sm.step(0.0)
    sm.worker_died("gw0", "exit code 3", 0.1, start_failed=True)
    assert sm.aborted is None  # gw1 may still start
    assert sm.phase("gw0") is WorkerPhase.GONE  # not replaced before another worker started
    sm.worker_died("gw1", "exit code 3", 0.2, start_failed=True)
    assert sm.aborted == (Reason.ABORTED, EVERY_WORKER_FAILED)
    assert sm.restarts == 0
    assert sm.lost_outside_tests == [
        "worker gw0 failed to start: exit code 3; not replaced",
        "worker gw1 failed to start: exit code 3; not replaced",
    ]


def test_a_start_failure_after_a_worker_was_ready_is_replaced() -> None:
    """One worker's failure to start, once another has run tests, is that
    worker's trouble (a port taken, say): it is replaced as a crash is."""
    sm, _ = make_machine([needs()] * 4, [Plan()] * 4, workers=2, max_restarts=8)
    sm.step(0.0)
    sm.worker_died("gw1", "exit code 3", 0.2, start_failed=True)
    assert sm.phase("gw1") is WorkerPhase.GONE  # held back while no worker started
    sm.worker_ready("gw0", 0.5)
    assert sm.phase("gw1") is WorkerPhase.STARTING  # replaced once gw0 started
    sm.worker_died("gw1", "exit code 3", 0.7, start_failed=True)
    assert sm.aborted is None
    assert sm.restarts == 2
    assert sm.lost_outside_tests == ["worker gw1 failed to start: exit code 3; it was replaced"] * 2


def test_a_crashed_task_runs_again_when_a_plugin_asks() -> None:
    reqs = [needs(Request("db", EX))] * 3
    sm, sim = make_machine(reqs, [Plan(), Plan(crash=True), Plan()], workers=2, max_restarts=8)
    sim.run(sm, until=3.0)
    crashed = next(t for t in sm.finished if t.reason is Reason.CRASHED)
    sim.plans[crashed.id] = Plan()  # the second attempt passes
    assert sm.retry(crashed.id, sim.now)
    sim.run(sm)
    attempts = [(t.id, t.reason) for t in sm.finished if t.id == crashed.id]
    assert attempts == [(crashed.id, Reason.CRASHED), (crashed.id, Reason.COMPLETED)]
    assert sm.table.is_empty()
    assert conflicts(sim.intervals, reqs) == []


def test_no_task_runs_again_once_the_run_was_aborted() -> None:
    sm, sim = make_machine([needs()] * 2, [Plan(crash=True), Plan()], workers=1, max_restarts=0)
    sim.run(sm)
    crashed = next(t for t in sm.finished if t.reason is Reason.CRASHED)
    assert not sm.retry(crashed.id, sim.now)
    assert sm.done


def test_shutdown_ends_a_worker_still_starting() -> None:
    killed: list[str] = []
    stopped: list[str] = []

    class Recorder(SimSpawner):
        def kill_worker(self, worker: str) -> None:
            killed.append(worker)

        def stop_worker(self, worker: str) -> None:
            stopped.append(worker)

    tasks = [Task(0, "t0")]
    spawner = Recorder({0: Plan()})
    sm = StateMachine(tasks, LockTable(), spawner, ["gw0", "gw1"])
    spawner.sm = sm
    sm.step(0.0)
    sm.worker_ready("gw0", 0.5)  # gw0 takes the task; gw1 is still starting
    sm.reached_teardown("gw0", 0, 1.0)
    sm.task_done("gw0", 0, 1.0)
    assert sm.done
    sm.shutdown()
    assert stopped == ["gw0"]
    assert killed == ["gw1"]
    assert sm.live_workers() == []


def test_abort_then_death_of_a_worker_with_a_handed_over_task_ends_the_run() -> None:
    """Regression (review): the handed-over task went back to ready after the
    abort, where nothing would ever pick it, and the run never ended."""
    reqs = [needs(Request("db", EX))] * 2
    plans = [Plan(body=1.0, teardown=1.0, crash=False), Plan(body=1.0)]
    sm, sim = make_machine(reqs, plans, workers=1, max_restarts=4)
    sim.run(sm, until=1.6)  # t0 is in its teardown and t1 is handed over
    sm.abort(Reason.ABORTED, "failfast", 1.6)
    sm.worker_died("gw0", "exit code 6", 1.7)
    assert sm.done
    assert {t.id: t.reason for t in sm.finished} == {0: Reason.CRASHED, 1: Reason.ABORTED}
    assert sm.table.is_empty()


def test_timeout_blames_only_the_task_that_ran_too_long() -> None:
    """Regression (review): the killed task finished during the grace period,
    its handed-over successor started, and the timeout was reported on it."""
    reqs = [needs(Request("db", EX))] * 2
    sm, sim = make_machine(reqs, [Plan(body=0.5, teardown=2.0), Plan(body=5.0)], workers=1, task_timeout=1.0)
    sim.run(sm, until=1.4)  # t0 is in its teardown, t1 handed over
    sm.tick(1.5)  # t0 times out: the kill is on its way
    assert sm.phase("gw0") is WorkerPhase.KILLING
    sm.task_done("gw0", 0, 1.6)  # ... but t0 ended first, and the worker began t1
    sm.worker_died("gw0", "signal 15 (SIGTERM)", 1.7)
    reasons = {t.id: (t.reason, t.detail) for t in sm.finished}
    assert reasons[0] == (Reason.COMPLETED, "")
    assert reasons[1] == (Reason.CRASHED, "worker gw0 was ended because t0 ran too long")


def test_restart_limit_aborts_the_rest() -> None:
    reqs = [needs()] * 6
    plans = [Plan(crash=True)] * 6
    sm, sim = make_machine(reqs, plans, workers=1, max_restarts=2)
    sim.run(sm)
    reasons = [t.reason for t in sm.finished]
    assert reasons.count(Reason.CRASHED) == 3
    assert reasons.count(Reason.ABORTED) == 3
    assert "restart limit reached (2" in sm.finished[-1].detail
    assert sm.phase("gw0") is WorkerPhase.GONE


def test_abort_lets_running_tasks_finish() -> None:
    reqs = [needs()] * 10
    sm, sim = make_machine(reqs, [Plan(body=1.0)] * 10, workers=2)
    sim.run(sm, until=0.6)  # both workers started one task each
    sm.abort(Reason.ABORTED, "failfast", 0.6)
    sim.run(sm)
    reasons = [t.reason for t in sm.finished]
    assert reasons.count(Reason.COMPLETED) == 2
    assert reasons.count(Reason.ABORTED) == 8
    assert sm.table.is_empty()


def test_a_worker_on_free_tasks_gets_its_next_one_ahead() -> None:
    reqs = [needs(), needs(), needs(Request("db", EX)), needs()]
    sm, sim = make_machine(reqs, [Plan(body=0.01, teardown=0.005)] * 4, workers=1, prefetch=True)
    for task in sm.queues.requested:
        task.estimate = 0.015  # short, as measured in an earlier run
    sim.run(sm)
    assert [t.reason for t in sm.finished] == [Reason.COMPLETED] * 4
    # db first (the only resource); then the free ones, each sent while the one
    # before runs: the worker never asks at their teardown, except after the last
    assert sim.answers == [
        ("gw0", 2, False, False),
        ("gw0", 0, False, False),
        ("gw0", 1, True, False),
        ("gw0", 3, True, False),
        ("gw0", None, False, True),
    ]
    assert sim.asked == [2, 3]  # the db task's teardown, and the last one's


def test_tiny_free_tasks_are_sent_ahead_in_batches() -> None:
    """A worker on tests of a millisecond gets many at a time, refilled
    once half are used, so it never waits and messages are few; near the
    end each worker gets no more than its share, so both finish together."""
    count = 2000
    sm, sim = make_machine([needs()] * count, [Plan(body=0.001, teardown=0.0)] * count, workers=2, prefetch=True)
    for task in sm.queues.requested:
        task.estimate = 0.0005
    sim.run(sm)
    assert [t.reason for t in sm.finished] == [Reason.COMPLETED] * count
    assert len(sim.batches) <= count // (AHEAD_TASKS // 2) + 16  # one per half window, then a shrinking tail
    assert max(sim.batches) == AHEAD_TASKS
    assert len(sim.asked) == 2  # only each worker's last task asks what follows
    per_worker = collections.Counter(t.worker for t in sm.finished)
    assert abs(per_worker["gw0"] - per_worker["gw1"]) <= 2, per_worker
    assert sm.table.is_empty()


@pytest.mark.parametrize(("db", "prefetch"), [(True, False), (False, True)])
def test_a_worker_finishes_its_module_before_the_next_ones_first_test(db: bool, prefetch: bool) -> None:
    """The first test of each module carries the module's fixtures in its
    estimate; longest-first alone would run every module's first test, then
    come back to each module, setting its fixtures up again every time.  On
    an exclusive resource every visit lies on the chain of its holds."""
    modules, per_module = 4, 6
    names = [f"test_m{m}.py::test_{k}" for m in range(modules) for k in range(per_module)]
    estimates = [0.3 if name.endswith("::test_0") else 0.01 for name in names]
    requirement = needs(Request("db", EX)) if db else needs()
    sm, sim = make_machine(
        [requirement] * len(names),
        [Plan(body=seconds) for seconds in estimates],
        workers=2,
        names=names,
        estimates=estimates,
        prefetch=prefetch,
    )
    sim.run(sm)
    assert [t.reason for t in sm.finished] == [Reason.COMPLETED] * len(names)
    visits = []  # each is one set-up of a module's fixtures
    for worker in ("gw0", "gw1"):
        held = sorted((i for i in sim.intervals if i.worker == worker), key=lambda i: i.start)
        ran = [names[i.task].partition("::")[0] for i in held]
        visits.extend(module for k, module in enumerate(ran) if k == 0 or module != ran[k - 1])
    # each module set up once, but for one that the other worker joins at
    # the end, when no module is left to itself (longest-first alone: 8)
    assert len(visits) <= modules + 1, visits


@pytest.mark.parametrize("prefetch", [False, True])
def test_keeping_to_modules_never_holds_back_the_longest_tests(prefetch: bool) -> None:
    """Two tests of a minute in one module, and 30 modules of short tests:
    longest first, each long test on its own worker, is 90 s; a worker that
    took a module of short tests instead would leave both long tests to the
    other worker, one after the other (120 s)."""
    names = ["test_slow.py::test_a", "test_slow.py::test_b"]
    names += [f"test_m{m}.py::test_{k}" for m in range(30) for k in range(20)]
    estimates = [60.0, 60.0] + [0.1] * 600
    plans = [Plan(body=seconds) for seconds in estimates]
    requirements = [needs()] * len(names)
    sm, sim = make_machine(requirements, plans, workers=2, names=names, estimates=estimates, prefetch=prefetch)
    sim.run(sm)
    assert [t.reason for t in sm.finished] == [Reason.COMPLETED] * len(names)
    slow = [t for t in sm.finished if t.name.startswith("test_slow.py")]
    assert {t.worker for t in slow} == {"gw0", "gw1"}
    assert max(t.finished_at or 0.0 for t in sm.finished) <= 90 + SimSpawner.startup + 1


def test_a_task_sent_ahead_goes_back_to_the_queue_when_its_worker_dies() -> None:
    reqs = [needs()] * 3
    plans = [Plan(body=0.01, crash=True), Plan(body=0.01), Plan(body=0.01)]
    sm, sim = make_machine(reqs, plans, workers=1, prefetch=True, max_restarts=2)
    for task in sm.queues.requested:
        task.estimate = 0.01
    sim.run(sm)
    assert sim.answers[1] == ("gw0", 1, True, False)  # sent ahead, then lost with the worker
    reasons = {t.id: t.reason for t in sm.finished}
    assert reasons == {0: Reason.CRASHED, 1: Reason.COMPLETED, 2: Reason.COMPLETED}
    assert sm.table.is_empty()


# -- the property test ---------------------------------------------------------

names = st.sampled_from(["db", "gpu", "port"])
requests = st.one_of(
    st.builds(Request, names, st.sampled_from([EX, SH])),
    st.builds(lambda n, k: Request(n, CO, k), names, st.integers(1, 3)),
)
requirement = st.one_of(
    st.just(needs()),
    st.just(needs(serial=True)),
    st.builds(merge_requests, st.lists(requests, min_size=1, max_size=3)),
)
plan = st.builds(
    Plan,
    body=st.floats(0.1, 5.0),
    teardown=st.floats(0.0, 1.0),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(requirement, plan, st.integers(0, 9)), max_size=40),
    st.integers(1, 6),
    st.none() | st.floats(1.0, 4.0),
    st.booleans(),
)
def test_random_runs_finish_every_task_once_without_conflicts(
    spec: list[tuple[Requirement, Plan, int]], workers: int, timeout: float | None, prefetch: bool
) -> None:
    reqs = [r for r, _, _ in spec]
    plans = []
    for _, p, roll in spec:
        # a tenth of the tasks crash, a tenth hang (when there is a timeout)
        plans.append(Plan(p.body, p.teardown, crash=roll == 0, hang=roll == 1 and timeout is not None))
    capacities = {"gpu": 2, "port": 3}
    sm, sim = make_machine(reqs, plans, workers, capacities, task_timeout=timeout, max_restarts=1000, prefetch=prefetch)
    if prefetch:  # estimated short: free tasks are sent ahead (the estimate is not checked)
        for task in sm.queues.requested:
            task.estimate = 0.01
    sim.run(sm)
    assert sm.done
    finished = [t.id for t in sm.finished]
    assert sorted(finished) == list(range(len(spec)))  # every task exactly once
    assert conflicts(sim.intervals, reqs, capacities) == []
    assert sm.table.is_empty()
    ran = sorted(i.task for i in sim.intervals)
    assert len(ran) == len(set(ran))
    for task in sm.finished:
        assert task.reason in expected_reasons(plans[task.id], timeout, sm.table.impossible(reqs[task.id])), task


def expected_reasons(plan: Plan, timeout: float | None, impossible: str | None) -> set[Reason]:
    """What a task's reason must be, computed from its plan alone."""
    if impossible:
        return {Reason.IMPOSSIBLE}
    if plan.hang:
        return {Reason.TIMEOUT}
    ends = plan.body / 2 if plan.crash else plan.body + plan.teardown
    natural = Reason.CRASHED if plan.crash else Reason.COMPLETED
    if timeout is None or ends < timeout:
        return {natural}
    return {Reason.TIMEOUT} if ends > timeout else {natural, Reason.TIMEOUT}


class _Recorder:
    """A spawner that only records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def start_worker(self, worker: str) -> None:
        self.calls.append(("start", worker))

    def send_next(self, worker: str, task: Task | None, keep_fixtures: bool, final: bool) -> None:
        self.calls.append(("next", worker, str(None if task is None else task.id)))

    def send_ahead(self, worker: str, tasks: list[Task]) -> None:
        self.calls.append(("ahead", worker, *(str(t.id) for t in tasks)))

    def kill_worker(self, worker: str) -> None:
        self.calls.append(("kill", worker))

    def stop_worker(self, worker: str) -> None:
        self.calls.append(("stop", worker))


def test_a_late_done_dates_the_next_task_from_when_the_last_one_ended() -> None:
    """A worker holds back the done messages of tasks sent ahead; the task
    queued behind one started when that one ended, so its time limit counts
    from then, not from when the message arrived."""
    tasks = [Task(i, f"t{i}", needs(), estimate=0.001) for i in range(2)]
    spawner = _Recorder()
    sm = StateMachine(tasks, LockTable(), spawner, ["gw0"], task_timeout=1.0, prefetch=True)
    sm.step(0.0)
    sm.worker_ready("gw0", 0.0)
    assert ("ahead", "gw0", "1") in spawner.calls
    sm.task_done("gw0", 0, now=0.9, ended=0.1)  # arrives 0.8 s after the task ended
    assert sm.next_deadline() == pytest.approx(1.1)
    assert sm.overdue(1.05) == []
    assert sm.overdue(1.1) == ["gw0"]
    sm.task_done("gw0", 1, now=1.2, ended=5.0)  # a clock ahead of now counts as now
    assert [t.finished_at for t in sm.finished] == [pytest.approx(0.1), pytest.approx(1.2)]


class Recorder:
    """An observer that keeps every event, as the hooks and reports will see them."""

    def __init__(self) -> None:
        self.tasks: list[TaskChanged] = []
        self.waits: list[TaskWaiting] = []
        self.workers: list[WorkerChanged] = []
        self.order: list[float] = []

    def task_changed(self, event: TaskChanged) -> None:
        self.tasks.append(event)
        self.order.append(event.time)

    def task_waiting(self, event: TaskWaiting) -> None:
        self.waits.append(event)
        self.order.append(event.time)

    def worker_changed(self, event: WorkerChanged) -> None:
        self.workers.append(event)
        self.order.append(event.time)

    def states(self, task_id: int) -> list[tuple[float, str, str | None, str]]:
        return [
            (e.time, e.state.value, e.worker, e.reason.value if e.reason else e.cause or "")
            for e in self.tasks
            if e.task_id == task_id
        ]


def test_the_observer_is_told_every_transition_of_a_run_with_a_crash_a_timeout_and_an_abort() -> None:
    """Two workers (0.5 s to start).  t0 and t1 both need "db"; t2 crashes
    its worker half-way (the worker is replaced); t3 hangs and times out
    after 2 s; at 2.0 the run is aborted (failfast), so t4 and t5 never
    start.  Every event comes with the fake clock's time, in order."""
    db = needs(Request("db", EX))
    reqs = [db, db, needs(), needs(), needs(), needs()]
    plans = [Plan(body=1.0), Plan(body=1.0), Plan(crash=True), Plan(hang=True), Plan(), Plan()]
    recorder = Recorder()
    sm, sim = make_machine(reqs, plans, workers=2, task_timeout=2.0, max_restarts=4, observer=recorder)
    sim.run(sm, until=2.0)
    sm.abort(Reason.ABORTED, "stopping after the first failure (--failfast)", 2.0)
    sim.run(sm)

    queued = [(0.0, "requested", None, ""), (0.0, "triaging", None, ""), (0.0, "ready", None, "")]
    assert recorder.states(0) == [*queued, (0.5, "started", "gw0", ""), (1.5, "finished", "gw0", "completed")]
    # handed over at t0's teardown, on gw0
    assert recorder.states(1) == [*queued, (1.5, "started", "gw0", ""), (2.5, "finished", "gw0", "completed")]
    assert recorder.states(2) == [*queued, (0.5, "started", "gw1", ""), (1.0, "finished", "gw1", "worker crashed")]
    assert recorder.states(3) == [*queued, (1.5, "started", "gw1", ""), (3.5, "finished", "gw1", "timed out")]
    for never in (4, 5):
        assert recorder.states(never) == [*queued, (2.0, "finished", None, "not run")]
        aborted = [e for e in recorder.tasks if e.task_id == never][-1]
        assert aborted.detail == "stopping after the first failure (--failfast)"
    # the grant comes with "started": resources, modes and slots
    started = next(e for e in recorder.tasks if e.task_id == 0 and e.state is TaskState.STARTED)
    assert started.grant is not None
    assert started.grant.requirement == db
    # t1 waited for "db", which t0 held, from the first time it could not start
    assert [(e.time, e.task_id, e.blocker) for e in recorder.waits] == [(0.5, 1, Blocker("db", 0))]
    # gw1: crashed and replaced; killed for the timeout, and not replaced after the abort
    phases = [(e.time, e.phase.value) for e in recorder.workers if e.worker == "gw1"]
    assert phases == [
        (0.0, "starting"),
        (0.5, "idle"),
        (0.5, "busy"),
        (1.0, "gone"),
        (1.0, "starting"),
        (1.5, "idle"),
        (1.5, "busy"),
        (3.5, "killing"),
        (3.5, "gone"),
    ]
    assert [(e.time, e.phase.value) for e in recorder.workers if e.worker == "gw0"][-2:] == [
        (2.5, "idle"),
        (3.5, "gone"),  # shut down at the end
    ]
    assert recorder.order == sorted(recorder.order)


def test_a_task_given_back_by_a_dying_worker_is_ready_again_as_requeued() -> None:
    """t1 is handed over to gw0 at t0's teardown; gw0 dies in that teardown,
    before t1 began: t1 goes back to ready with the cause "requeued" and the
    worker it was on, then runs on a replacement."""
    db = needs(Request("db", EX))
    recorder = Recorder()
    sm, sim = make_machine(
        [db, db], [Plan(body=1.0, teardown=1.0), Plan()], workers=1, max_restarts=4, observer=recorder
    )
    sim.run(sm, until=1.6)  # t0 in its teardown, t1 handed over
    sim.now = 1.7
    sim.kill_worker("gw0")  # dies as a process does: the simulation knows
    sim.run(sm)
    states = [(time, state, worker, why) for time, state, worker, why in recorder.states(1)[3:]]
    assert states[:2] == [(1.5, "started", "gw0", ""), (1.7, "ready", "gw0", "requeued")]
    assert [state for _, state, _, _ in states[2:]] == ["started", "finished"]
    assert states[-1][3] == "completed"


class Calls:
    """A spawner that only records which task each worker was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    def start_worker(self, worker: str) -> None:
        pass

    def send_next(self, worker: str, task: Task | None, keep_fixtures: bool, final: bool) -> None:
        self.sent.append((worker, None if task is None else task.id))

    def send_ahead(self, worker: str, tasks: object) -> None:
        raise AssertionError("nothing is sent ahead here")

    def kill_worker(self, worker: str) -> None:
        pass

    def stop_worker(self, worker: str) -> None:
        pass

    def end_once(self, worker: str, key: str) -> None:
        self.sent.append((worker, f"end {key}"))  # type: ignore[arg-type]


def test_a_task_handed_back_for_a_host_lock_waits_keeps_its_claim_and_is_tried_again_later() -> None:
    """t0 and t1 need "postgres" exclusively, t2 is free.  gw0's
    worker finds postgres held by another run and hands t0 back: t0 waits
    (it is not sent again before its retry time, which doubles up to a
    quarter second), t1 may not pass it, gw0 takes other work."""
    tasks = [
        Task(0, "t0", needs(Request("postgres", EX)), estimate=3.0),
        Task(1, "t1", needs(Request("postgres", EX)), estimate=2.0),
        Task(2, "t2", needs(), estimate=1.0),
    ]
    calls, recorder = Calls(), Recorder()
    sm = StateMachine(tasks, LockTable(), calls, ["gw0", "gw1"], observer=recorder)
    sm.step(0.0)
    sm.worker_ready("gw0", 0.0)
    sm.worker_ready("gw1", 0.0)
    assert calls.sent == [("gw0", 0), ("gw1", 2)]
    sm.hand_back("gw0", 0, "postgres", 0.1)
    assert sm.phase("gw0") is WorkerPhase.IDLE
    assert sm.table.is_empty() is False  # t2 still holds its (empty) grant
    assert sm.table.grant_of(0) is None
    assert calls.sent == [("gw0", 0), ("gw1", 2)]  # t1 does not pass t0's claim
    assert sm.next_deadline() == pytest.approx(0.12)
    sm.tick(0.11)
    assert calls.sent[-1] == ("gw1", 2)
    retries = []
    now = sm.next_deadline()
    for _ in range(6):
        sm.tick(now)
        assert calls.sent[-1] == ("gw0", 0)
        sm.hand_back("gw0", 0, "postgres", now)
        deadline = sm.next_deadline()
        assert deadline is not None
        retries.append(round(deadline - now, 3))
        now = deadline
    assert retries == [0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    sm.tick(now)
    assert calls.sent[-1] == ("gw0", 0)
    sm.reached_teardown("gw0", 0, now + 1)
    assert calls.sent[-1] == ("gw0", 1)  # t1 once t0 is done: handed over
    sm.task_done("gw0", 0, now + 1)
    ready = [(e.time, e.cause, e.resource) for e in recorder.tasks if e.task_id == 0 and e.state is TaskState.READY]
    assert ready[0] == (0.0, None, None)
    assert ready[1] == (0.1, "host busy", "postgres")
    assert len(ready) == 8
    waits = {(e.task_id, e.blocker) for e in recorder.waits}
    assert (0, Blocker("postgres", -1, other_run=True)) in waits
    assert (1, Blocker("postgres", 0, claim=True)) in waits
    assert Blocker("postgres", -1, other_run=True).describe() == "'postgres' held by another run"


def test_an_once_fixture_is_set_up_by_one_task_while_the_others_wait_and_torn_down_after_the_last() -> None:
    """t0..t2 use the @once fixture "k", whose setup and teardown need "db";
    t3 is free.  t0 sets it up (holding db as well), t1 and t2 wait in the
    scheduler until its value is reported, then run without db; once the
    last of them is done, the owner tears it down in a hold of db of its own."""
    uses = dict(once=("k",))
    tasks = [Task(i, f"t{i}", needs(), estimate=2.0, **uses) for i in range(3)]  # type: ignore[arg-type]
    tasks.append(Task(3, "t3", needs(), estimate=1.0))
    calls, recorder = Calls(), Recorder()
    sm = StateMachine(
        tasks, LockTable(), calls, ["gw0", "gw1"], observer=recorder, once={"k": needs(Request("db", EX))}
    )
    sm.step(0.0)
    sm.worker_ready("gw0", 0.0)
    sm.worker_ready("gw1", 0.0)
    assert calls.sent == [("gw0", 0), ("gw1", 3)]  # t1, t2 wait for the setup
    grant = sm.table.grant_of(0)
    assert grant is not None
    assert grant.requirement.names() == {"db"}
    assert sm.once["k"].owner == "gw0"
    assert (1, Blocker("@once k", 0)) in {(e.task_id, e.blocker) for e in recorder.waits}
    sm.once_ready("k", 0, 0.5)
    sm.reached_teardown("gw1", 3, 1.0)
    assert calls.sent[-1] == ("gw1", 1)
    assert sm.table.grant_of(1) == Grant(needs())  # the value is used without db
    sm.task_done("gw1", 3, 1.0)
    sm.reached_teardown("gw0", 0, 1.0)
    assert calls.sent[-1] == ("gw0", 2)
    sm.task_done("gw0", 0, 1.0)
    for worker, task in (("gw1", 1), ("gw0", 2)):
        sm.reached_teardown(worker, task, 2.0)
        sm.task_done(worker, task, 2.0)
    assert calls.sent[-1] == ("gw0", "end k")
    assert not sm.done  # the teardown is part of the run
    held = sm.table.grant_of(("once", "k"))
    assert held is not None
    assert held.requirement.names() == {"db"}
    sm.once_ended("gw0", "k", 2.5)
    assert sm.done
    assert sm.table.is_empty()


def test_an_once_fixture_whose_worker_died_is_set_up_again_for_the_tests_still_to_come() -> None:
    x = needs(Request("x", EX))
    tasks = [Task(0, "t0", needs(), estimate=2.0, once=("k",))]
    tasks += [Task(i, f"t{i}", x, estimate=2.0, once=("k",)) for i in (1, 2)]  # one after the other
    calls = Calls()
    sm = StateMachine(tasks, LockTable(), calls, ["gw0", "gw1"], once={"k": needs()}, max_restarts=2)
    sm.step(0.0)
    sm.worker_ready("gw0", 0.0)
    sm.worker_ready("gw1", 0.0)
    assert calls.sent == [("gw0", 1)]  # t1 (longer: it uses "x") sets it up; the others wait
    sm.once_ready("k", 0, 0.1)
    assert calls.sent == [("gw0", 1), ("gw1", 0)]
    sm.reached_teardown("gw1", 0, 1.0)
    sm.task_done("gw1", 0, 1.0)
    assert sm.phase("gw1") is WorkerPhase.IDLE  # t2 waits for t1's "x"
    sm.worker_died("gw0", "killed", 1.5)  # t1 is lost with it, and the fixture
    fixture = sm.once["k"]
    assert (fixture.state.name, fixture.generation, fixture.left) == ("NONE", 1, 1)
    assert any(
        "where it was set up, ended; it is set up again for the 1 test(s)" in line for line in sm.lost_outside_tests
    )
    sm.worker_ready("gw0", 2.0)  # its replacement
    assert calls.sent[-1] == ("gw0", 2)  # t2 sets it up again, in the new process
    assert (fixture.state.name, fixture.owner, fixture.setter) == ("SETTING", "gw0", 2)
