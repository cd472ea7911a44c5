"""What a test declares to the scheduler: its resources and its time limit.

The markers (``@pytest.mark.resource``, ``@pytest.mark.serial``,
``@pytest.mark.timeout``) are read here, once per item, into a
:class:`Declaration`, or into the message that says why the declaration is
wrong.  The plugin (in process), the controller and ``--shard`` all ask
this module, so a test's verdict is the same in every mode.  Declarations
on fixtures, from the ini file and from other plugins' hooks join here.

Imports pytest and :mod:`.resources` only: neither the plugin nor the
controller, which both import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final, final

import pytest

from .resources import LockTable, Requirement, ResourceError, merge_requests, parse_resource_marker, parse_serial_marker

__all__ = [
    "TIMEOUT_MARGIN",
    "Declaration",
    "declaration_error",
    "declaration_of",
    "parse_timeout_marker",
    "requirement_of",
]

#: Extra seconds before restask ends a test marked ``timeout(S)`` where
#: pytest-timeout is installed: that plugin fails the test first, with a
#: stack dump, and restask's kill is only the backstop.
TIMEOUT_MARGIN: Final = 5.0

_DECLARATION_KEY: Final = pytest.StashKey["Declaration | str"]()


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Declaration:
    """What a test's markers declare to the scheduler."""

    requirement: Requirement
    #: Seconds from ``@pytest.mark.timeout`` (0: no limit), or None without one.
    timeout: float | None = None


def declaration_of(item: pytest.Item) -> Declaration:
    """Return what a test declares, from its markers; raise :class:`ResourceError`."""
    cached = item.stash.get(_DECLARATION_KEY, None)
    if cached is None:
        try:
            requests = []
            for mark in item.iter_markers("resource"):
                requests.extend(parse_resource_marker(mark.args, mark.kwargs))
            serial = False
            for mark in item.iter_markers("serial"):
                parse_serial_marker(mark.args, mark.kwargs)
                serial = True
            requirement = merge_requests(requests, serial)
        except ResourceError as e:
            cached = f"invalid resource declaration on {item.nodeid}: {e}"
        else:
            cached = _with_timeout(item, requirement)
        item.stash[_DECLARATION_KEY] = cached
    if isinstance(cached, str):
        raise ResourceError(cached)
    return cached


def _with_timeout(item: pytest.Item, requirement: Requirement) -> Declaration | str:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return Declaration(requirement)
    try:
        seconds = parse_timeout_marker(mark.args, mark.kwargs)
    except ResourceError as e:
        return f"invalid timeout marker on {item.nodeid}: {e}"
    if seconds and item.config.pluginmanager.has_plugin("timeout"):
        seconds += TIMEOUT_MARGIN
    return Declaration(requirement, seconds)


def parse_timeout_marker(args: Sequence[object], kwargs: Mapping[str, object]) -> float:
    """Parse ``timeout(seconds)`` as pytest-timeout spells it; its ``method``
    and ``func_only`` are accepted and left to pytest-timeout."""
    unknown = sorted(set(kwargs) - {"timeout", "method", "func_only"})
    if unknown:
        raise ResourceError(f"unexpected keyword argument {unknown[0]!r}; use timeout(seconds)")
    if len(args) > 3 or (args and "timeout" in kwargs):
        raise ResourceError("give the seconds once: timeout(seconds)")
    if not args and "timeout" not in kwargs:
        raise ResourceError("the number of seconds is missing: timeout(seconds)")
    value = args[0] if args else kwargs["timeout"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ResourceError(f"expected a number of seconds (0 for no limit), got {value!r}")
    return float(value)


def requirement_of(item: pytest.Item) -> Requirement:
    """Return what a test needs, from its markers; raise :class:`ResourceError`."""
    return declaration_of(item).requirement


def declaration_error(item: pytest.Item, table: LockTable) -> str | None:
    """Return why a test can never run (a bad marker, an impossible request)."""
    try:
        requirement = requirement_of(item)
    except ResourceError as e:
        return str(e)
    impossible = table.impossible(requirement)
    return None if impossible is None else f"cannot run {item.nodeid}: {impossible}"
