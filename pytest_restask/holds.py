"""What a running test learns of its hold: its counted slot numbers.

The same in every mode: the in-process plugin and the worker both call
:func:`enter` before a test's setup and :func:`leave` after its teardown.
The numbers are kept in ``item.stash`` (read by the ``restask_slots``
fixture) and in ``RESTASK_SLOTS_<NAME>`` environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Final

import pytest

from .resources import slot_env_name

__all__ = ["SLOTS_KEY", "enter", "leave"]

#: The slot numbers of the counted resources an item holds, by name.
SLOTS_KEY: Final = pytest.StashKey[dict[str, list[int]]]()


def enter(item: pytest.Item, slots: Mapping[str, Sequence[int]]) -> None:
    """Record an item's slots before its setup."""
    item.stash[SLOTS_KEY] = {name: list(numbers) for name, numbers in slots.items()}
    for name, numbers in slots.items():
        os.environ[slot_env_name(name)] = ",".join(map(str, numbers))


def leave(item: pytest.Item) -> None:
    """Forget an item's slots after its teardown."""
    for name in item.stash.get(SLOTS_KEY, {}):
        os.environ.pop(slot_env_name(name), None)
    item.stash[SLOTS_KEY] = {}
