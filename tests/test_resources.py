"""The resource model: marker parsing, capacities, and the lock table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_restask.resources import (
    Grant,
    LockTable,
    Mode,
    Request,
    Requirement,
    ResourceError,
    merge_requests,
    parse_capacities,
    parse_resource_marker,
    parse_resources,
    parse_serial_marker,
    slot_env_name,
)


def req(*requests: Request, serial: bool = False) -> Requirement:
    return merge_requests(requests, serial)


EX = Mode.EXCLUSIVE
SH = Mode.SHARED
CO = Mode.COUNTED


class TestParseMarker:
    def test_modes(self) -> None:
        assert parse_resource_marker(("db",), {}) == [Request("db", EX)]
        assert parse_resource_marker(("db", "cache"), {"shared": True}) == [
            Request("db", SH),
            Request("cache", SH),
        ]
        assert parse_resource_marker(("gpu",), {"slots": 2}) == [Request("gpu", CO, 2)]

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            ((), {}, "needs at least one resource name"),
            ((42,), {}, "resource names must be strings, got 42 (int)"),
            (("",), {}, "must not be empty"),
            (("db",), {"exclusive": True}, "unknown keyword 'exclusive'"),
            (("db",), {"slots": 0}, "slots= must be a whole number of at least 1, got 0"),
            (("db",), {"slots": 1.5}, "got 1.5"),
            (("db",), {"slots": True}, "got True"),
            (("db",), {"shared": "yes"}, "shared= must be True or False"),
            (("db",), {"shared": True, "slots": 1}, "cannot be combined"),
        ],
    )
    def test_bad(self, args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ResourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_resource_marker(args, kwargs)

    def test_serial_takes_no_arguments(self) -> None:
        parse_serial_marker((), {})
        with pytest.raises(ResourceError, match="takes no arguments"):
            parse_serial_marker(("db",), {})


def test_strongest_wins() -> None:
    merged = merge_requests(
        [Request("db", SH), Request("gpu", CO, 1), Request("db", EX), Request("gpu", CO, 2), Request("a", SH)]
    )
    assert merged.requests == (Request("a", SH), Request("db", EX), Request("gpu", CO, 2))
    assert merge_requests([Request("x", SH), Request("x", CO, 1)]).requests == (Request("x", CO, 1),)


class TestCapacities:
    def test_parse(self) -> None:
        assert parse_capacities(["gpu: 2", "", "# comment", "port-pool :4"]) == {"gpu": 2, "port-pool": 4}

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("gpu 2", "line 'gpu 2' is not of the form 'name: capacity \\[global\\] \\[host\\]'"),
            ("gpu: two", "capacity must be a whole number of at least 1, got 'two'"),
            ("gpu: 0", "got '0'"),
            ("gpu: 2 3", "after the capacity only 'global' .* and 'host' .* may follow, got '3'"),
            ("gpu: 2 global now", "may follow, got 'now'"),
        ],
    )
    def test_bad(self, line: str, message: str) -> None:
        with pytest.raises(ResourceError, match=message):
            parse_capacities([line])

    def test_global(self) -> None:
        capacities, global_names, host_names = parse_resources(["staging: 1 global", "gpu: 2", "lab : 3  global"])
        assert capacities == {"staging": 1, "gpu": 2, "lab": 3}
        assert global_names == {"staging", "lab"}
        assert host_names == set()

    def test_host(self) -> None:
        lines = ["postgres: 1 host", "gpu: 2 host global", "lab: 1 global host", "cache: 1"]
        capacities, global_names, host_names = parse_resources(lines)
        assert capacities == {"postgres": 1, "gpu": 2, "lab": 1, "cache": 1}
        assert global_names == {"gpu", "lab"}
        assert host_names == {"postgres", "gpu", "lab"}

    def test_twice(self) -> None:
        with pytest.raises(ResourceError, match="'gpu' is declared twice"):
            parse_capacities(["gpu: 1", "gpu: 2"])


def test_slot_env_name() -> None:
    assert slot_env_name("gpu") == "RESTASK_SLOTS_GPU"
    assert slot_env_name("port-pool.v4") == "RESTASK_SLOTS_PORT_POOL_V4"


class TestLockTable:
    def test_exclusive_and_shared(self) -> None:
        table = LockTable()
        table.grant(1, req(Request("db", SH)))
        assert table.can_grant(req(Request("db", SH)))
        assert not table.can_grant(req(Request("db", EX)))
        assert table.can_grant(req(Request("other", EX)))

    def test_counted_lowest_slots_first(self) -> None:
        table = LockTable({"gpu": 3})
        assert table.grant(1, req(Request("gpu", CO, 1))).slots == {"gpu": (0,)}
        assert table.grant(2, req(Request("gpu", CO, 1))).slots == {"gpu": (1,)}
        table.release(1)
        assert table.grant(3, req(Request("gpu", CO, 2))).slots == {"gpu": (0, 2)}
        assert not table.can_grant(req(Request("gpu", CO, 1)))

    def test_counted_excludes_other_modes(self) -> None:
        table = LockTable({"gpu": 2})
        table.grant(1, req(Request("gpu", CO, 1)))
        assert not table.can_grant(req(Request("gpu", SH)))
        assert not table.can_grant(req(Request("gpu", EX)))

    def test_serial(self) -> None:
        table = LockTable()
        table.grant(1, req())
        assert not table.can_grant(req(serial=True))
        table.release(1)
        table.grant(2, req(serial=True))
        assert not table.can_grant(req())

    def test_grant_is_atomic(self) -> None:
        table = LockTable()
        table.grant(1, req(Request("b", EX)))
        with pytest.raises(RuntimeError, match="cannot grant"):
            table.grant(2, req(Request("a", EX), Request("b", EX)))
        assert table.can_grant(req(Request("a", EX)))

    def test_impossible(self) -> None:
        table = LockTable({"gpu": 2})
        assert table.impossible(req(Request("gpu", CO, 2))) is None
        message = table.impossible(req(Request("gpu", CO, 3)))
        assert message is not None
        assert "asks for 3 slots of 'gpu', but its capacity is 2" in message

    def test_hand_over(self) -> None:
        table = LockTable({"gpu": 1})
        table.grant("a", req(Request("gpu", CO, 1), Request("db", EX)))
        assert not table.can_grant(req(Request("db", EX)))
        grant = table.grant("b", req(Request("gpu", CO, 1), Request("db", EX)), replacing="a")
        assert grant.slots == {"gpu": (0,)}
        # both holds stand until "a" has released: nobody else gets in
        assert not table.can_grant(req(Request("db", SH)))
        table.release("a")
        assert not table.can_grant(req(Request("db", SH)))
        table.release("b")
        assert table.is_empty()

    def test_covers(self) -> None:
        db_ex = Grant(req(Request("db", EX)))
        db_sh = Grant(req(Request("db", SH)))
        gpu0 = Grant(req(Request("gpu", CO, 1)), {"gpu": (0,)})
        gpu1 = Grant(req(Request("gpu", CO, 1)), {"gpu": (1,)})
        free = Grant(req())
        assert db_ex.covers(db_sh)
        assert not db_sh.covers(db_ex)
        assert db_ex.covers(free)
        assert not free.covers(db_ex)
        assert gpu0.covers(gpu0)
        assert not gpu1.covers(gpu0)
        assert not free.covers(Grant(req(serial=True)))


names = st.sampled_from(["a", "b", "c"])
requests = st.one_of(
    st.builds(Request, names, st.sampled_from([EX, SH])),
    st.builds(lambda n, k: Request(n, CO, k), names, st.integers(1, 3)),
)
requirements = st.builds(merge_requests, st.lists(requests, max_size=3)) | st.just(Requirement(serial=True))


def _compatible_holds(requirements: list[Requirement], table: LockTable) -> bool:
    """The compatibility rule, judged from the outside over whole requirements."""
    if len(requirements) > 1 and any(r.serial for r in requirements):
        return False
    by_name: dict[str, list[Request]] = {}
    for requirement in requirements:
        for request in requirement.requests:
            by_name.setdefault(request.name, []).append(request)
    for name, users in by_name.items():
        modes = {r.mode for r in users}
        if len(users) > 1 and (EX in modes or len(modes) > 1):
            return False
        if modes == {CO} and sum(r.slots for r in users) > table.capacity(name):
            return False
    return True


def _holds_consistent(table: LockTable) -> None:
    """The compatibility rule, checked from the outside over all holders."""
    held = list(table.holders())
    assert _compatible_holds([g.requirement for _, g in held], table), held
    for name in {r.name for _, g in held for r in g.requirement.requests if r.mode is CO}:
        slots = [s for _, g in held for s in g.slots.get(name, ())]
        assert len(slots) == len(set(slots))
        assert all(0 <= s < table.capacity(name) for s in slots)


def _grantable(table: LockTable, requirement: Requirement, replacing: object = None) -> bool:
    """Whether the rule allows ``requirement`` beside every holder but ``replacing``."""
    others = [g.requirement for h, g in table.holders() if h != replacing]
    return _compatible_holds([*others, requirement], table)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), requirements), max_size=40))
def test_random_sequences_keep_the_rule(ops: list[tuple[bool, Requirement]]) -> None:
    table = LockTable({"a": 3, "b": 2})
    held: list[int] = []
    for key, (release, requirement) in enumerate(ops):
        # the table grants exactly what the rule allows, also on a hand-over
        assert table.can_grant(requirement) == _grantable(table, requirement)
        for holder in held:
            assert table.can_grant(requirement, replacing=holder) == _grantable(table, requirement, holder)
        if release and held:
            before = {h: g for h, g in table.holders()}
            victim = held.pop(0)
            granted = table.release(victim)
            assert granted is not None
            assert {h: g for h, g in table.holders()} == {h: g for h, g in before.items() if h != victim}
        elif table.impossible(requirement) is None and table.can_grant(requirement):
            snapshot = dict(table.holders())
            table.grant(key, requirement)
            held.append(key)
            _holds_consistent(table)
            # release restores the state exactly
            table.release(key)
            assert dict(table.holders()) == snapshot
            table.grant(key, requirement)
        else:
            snapshot = dict(table.holders())
            if table.impossible(requirement) is None:
                with pytest.raises(RuntimeError):
                    table.grant(key, requirement)
            assert dict(table.holders()) == snapshot
        _holds_consistent(table)
    for key in held:
        table.release(key)
    assert table.is_empty()


def test_conflict_names_the_resource_and_a_holder_in_the_way() -> None:
    table = LockTable({"gpu": 2})
    gpu = Requirement((Request("gpu", Mode.COUNTED, 1),))
    table.grant(1, gpu)
    assert table.conflict(gpu) is None  # a slot is left
    table.grant(2, gpu)
    assert table.conflict(gpu) == ("gpu", 1)  # every slot taken
    assert table.conflict(gpu, replacing=1) is None  # a hand-over frees its slot
    table.grant(3, Requirement((Request("db", Mode.SHARED),)))
    assert table.conflict(Requirement((Request("db", Mode.EXCLUSIVE),))) == ("db", 3)
    assert table.conflict(Requirement(serial=True)) == (None, 1)


def test_a_huge_capacity_costs_nothing_to_grant_from() -> None:
    """Slot numbers are found lazily: a capacity of 10**30 (from a hook or
    the ini file) must not build a list of every number."""
    table = LockTable({"gpu": 10**30})
    gpu = Requirement((Request("gpu", Mode.COUNTED, 2),))
    assert table.grant(1, gpu).slots == {"gpu": (0, 1)}
    assert table.grant(2, gpu).slots == {"gpu": (2, 3)}
