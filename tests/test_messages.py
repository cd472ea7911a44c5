"""The wire format and the workers' journal, without processes."""

from __future__ import annotations

import enum
import marshal

import pytest
from execnet import gateway_base

from pytest_restask.messages import (
    JOURNAL_DONE,
    JOURNAL_TEARDOWN,
    Ahead,
    Done,
    Dones,
    ProtocolError,
    from_wire,
    journal_entry,
    read_journal,
    to_wire,
)

PLAIN = ["call", 0.00123, 1795481519.4601234, 1795481519.4613534]
FULL = {"when": "call", "outcome": "passed", "sections": [["Captured stdout call", "caf\u00e9\n"]], "duration": 0.5}


def test_messages_survive_the_wire() -> None:
    """Through execnet's own serializer, as a channel carries them."""
    dones = Dones([(3, [PLAIN], [1.5, 2.5]), (4, [FULL, PLAIN], [2.5, 3.0])])
    for message in (Ahead([(1, "t.py::a", 0), (2, "t.py::b[1]", 1)]), dones, Done(5, [FULL], [3.0, 4.0])):
        wire = gateway_base.loads_internal(gateway_base.dumps_internal(to_wire(message)))
        assert from_wire(wire) == message


class _Seconds(float):
    pass


class _Task(enum.IntEnum):
    FIRST = 5


def test_what_marshal_cannot_hold_crosses_as_builtins() -> None:
    """A subclass of a number or of text (a plugin's duration, an enum)."""
    message = Dones([(_Task.FIRST, [["call", _Seconds(0.5), 1.0, 2.0]], [1.0, 2.0])])
    (task_id, [[when, duration, *_]], _) = from_wire(to_wire(message)).done[0]
    assert (type(task_id), type(duration)) == (int, float)
    assert (task_id, when, duration) == (5, "call", 0.5)


def test_an_unreadable_field_is_a_protocol_error() -> None:
    name, fields = to_wire(Dones([(3, [PLAIN], [])]))
    with pytest.raises(ProtocolError, match="'dones' has an unreadable field"):
        from_wire((name, {"done": fields["done"][:-2]}))
    with pytest.raises(ProtocolError, match="done is a int, not a list"):
        from_wire((name, {"done": marshal.dumps(5)}))


def test_an_unknown_message_names_itself() -> None:
    with pytest.raises(ProtocolError, match="unknown message 'nonsense'"):
        from_wire(("nonsense", {}))


def test_the_journal_reads_back_what_was_written_in_order() -> None:
    written = [
        (JOURNAL_TEARDOWN, 7, [PLAIN, PLAIN], [10.0]),
        (JOURNAL_DONE, 7, [PLAIN, PLAIN, PLAIN], [10.0, 10.5]),
        (JOURNAL_DONE, 8, [FULL], [10.5, 11.0]),
    ]
    data = b"".join(journal_entry(*entry) for entry in written)
    assert read_journal(data) == written


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_a_torn_last_entry_ends_the_journal(cut: int) -> None:
    """A worker killed while writing leaves part of an entry: the entries
    before it count, the torn one does not."""
    first, second = journal_entry(JOURNAL_DONE, 1, [PLAIN]), journal_entry(JOURNAL_DONE, 2, [PLAIN])
    assert read_journal(first + second[:-cut]) == [(JOURNAL_DONE, 1, [PLAIN], [])]


def test_a_report_marshal_cannot_hold_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="unmarshallable"):
        journal_entry(JOURNAL_DONE, 1, [{"longrepr": object()}])
