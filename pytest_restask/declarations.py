"""What a test declares to the scheduler: its resources and its time limit.

A test needs what its markers (``@pytest.mark.resource``,
``@pytest.mark.serial``) ask for, merged (strongest wins) with what every
fixture that applies to it asks for: fixtures decorated with
:func:`requires`, and fixtures named in the ``restask_fixtures`` ini key.
Its time limit comes from ``@pytest.mark.timeout``.  This is read here,
once per item, into a :class:`Declaration`, or into the message that says
why the declaration is wrong.  The plugin (in process), the controller and
``--shard`` all ask this module, so a test's verdict is the same in every
mode.

Which fixtures apply is pytest's answer, not a second one: the fixture
closure pytest computed for the test (direct arguments, ``usefixtures``,
autouse, and what those request in turn), each name resolved to the
definition that is closest to the test; a definition that requests its own
name (an override that uses the fixture it overrides) brings the one it
overrides too.  pytest keeps this in the private ``item._fixtureinfo`` and
``session._fixturemanager``; :func:`applying_fixtures` is the one place
that reads them.

Imports pytest, :mod:`.resources` and :mod:`.settings` only: neither the
plugin nor the controller, which both import it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar, final

import pytest

from .resources import (
    LockTable,
    Request,
    Requirement,
    ResourceError,
    merge_requests,
    parse_resource_marker,
    parse_serial_marker,
)
from .settings import settings_of

__all__ = [
    "TIMEOUT_MARGIN",
    "Declaration",
    "applying_fixtures",
    "declaration_error",
    "declaration_of",
    "fixture_requests",
    "parse_timeout_marker",
    "requirement_of",
    "requires",
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
    #: The ``@once`` fixtures it uses (see :mod:`.once`), by key.
    once: tuple[str, ...] = ()


#: Where ``@once`` marks its fixture's function: the fixture's key, the same
#: in every process (module and qualified name of the decorated function).
ONCE_ATTRIBUTE: Final = "_restask_once"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class OnceDefinition:
    """An ``@once`` fixture as the scheduler sees it: its name, and what its
    setup and teardown need (a hold of their own, not the tests')."""

    name: str
    requirement: Requirement


def once_key(fixturedef: pytest.FixtureDef[Any]) -> str | None:
    """Return the key of an ``@once`` fixture, or None for any other."""
    key = getattr(fixturedef.func, ONCE_ATTRIBUTE, None)
    return key if isinstance(key, str) else None


_ONCE_KEY: Final = pytest.StashKey[dict[str, OnceDefinition]]()


def once_definitions(config: pytest.Config) -> Mapping[str, OnceDefinition]:
    """Return the ``@once`` fixtures the collected tests use, by key."""
    return config.stash.get(_ONCE_KEY, {})


#: Where :func:`requires` keeps its declarations: on the fixture's own
#: function, a list of ``(names, options)`` as they were written.
REQUIRES_ATTRIBUTE: Final = "_restask_requires"
INVALID_ON_FIXTURE: Final = "invalid resource declaration on fixture {fixture!r} (used by {nodeid}): {error}"
BARE_REQUIRES: Final = "@requires is written without its parentheses; name the resources: @requires('db')"
REQUIRES_ON_TEST: Final = (
    "requires() declares what a fixture needs, and this is a test: use @pytest.mark.resource(...) on a test"
)

_F = TypeVar("_F")


def requires(*names: object, **options: object) -> Callable[[_F], _F]:
    """Declare that a fixture needs resources: every test that uses it does.

    ``requires(*names, shared=False, slots=None)``: the arguments of
    ``@pytest.mark.resource``, with the same meaning.  Stack it on a fixture
    function, above or below ``@pytest.fixture``; it returns what it was
    given.  The arguments are checked when a test uses the fixture, not
    here: a mistake errors the tests that use it (with the marker's message,
    naming the fixture and the test), and the module still imports.
    """

    def declare(fixture: _F) -> _F:
        function = _innermost(fixture)
        declared = list(getattr(function, REQUIRES_ATTRIBUTE, ()))
        declared.append((names, dict(options)))
        setattr(function, REQUIRES_ATTRIBUTE, declared)
        return fixture

    if _bare(names, options):
        # ``@requires`` without its parentheses: the function would become
        # ``declare``; keep it, and its tests get the BARE_REQUIRES error
        return declare(names[0])  # type: ignore[return-value]  # the function, not a decorator
    return declare


def _bare(names: tuple[object, ...], options: Mapping[str, object]) -> bool:
    """Return whether :func:`requires` was applied without its parentheses
    (given the fixture function itself as its only name)."""
    return len(names) == 1 and not options and callable(names[0]) and not isinstance(names[0], str)


def _innermost(function: Any) -> Any:
    """Return the function a fixture definition wraps, all the way down:
    pytest >= 8.4's fixture definition object, pytest 8.0-8.3's wrapper,
    ``functools.wraps`` wrappers (pytest-asyncio's among them), methods."""
    seen: set[int] = set()
    while id(function) not in seen:
        seen.add(id(function))
        if callable(getattr(type(function), "_get_wrapped_function", None)):
            function = function._get_wrapped_function()
        elif getattr(function, "__pytest_wrapped__", None) is not None:
            function = function.__pytest_wrapped__.obj
        elif getattr(function, "__wrapped__", None) is not None:
            function = function.__wrapped__
        elif getattr(function, "__func__", None) is not None:
            function = function.__func__
        else:
            break
    return function


_FIXTURE_REQUESTS_KEY: Final = pytest.StashKey[dict[object, "tuple[Request, ...] | str"]]()


def fixture_requests(fixturedef: pytest.FixtureDef[Any], config: pytest.Config) -> tuple[Request, ...]:
    """Return what a fixture definition needs of the tests that use it
    (:func:`requires` and ``restask_fixtures``); raise :class:`ResourceError`
    for a bad :func:`requires`.  Nothing for an ``@once`` fixture: its setup
    and teardown hold what it needs by themselves (see :mod:`.once`)."""
    if once_key(fixturedef) is not None:
        return ()
    return declared_requests(fixturedef, config)


def declared_requests(fixturedef: pytest.FixtureDef[Any], config: pytest.Config) -> tuple[Request, ...]:
    """Return what a fixture definition declares it needs; raise :class:`ResourceError`."""
    known = config.stash.setdefault(_FIXTURE_REQUESTS_KEY, {})
    found = known.get(fixturedef)
    if found is None:
        try:
            requests = list(settings_of(config).fixture_resources.get(fixturedef.argname, ()))
            for names, options in getattr(_innermost(fixturedef.func), REQUIRES_ATTRIBUTE, ()):
                if _bare(names, options):
                    raise ResourceError(BARE_REQUIRES)
                requests.extend(parse_resource_marker(names, options))
            found = tuple(requests)
        except ResourceError as e:
            found = str(e)
        known[fixturedef] = found
    if isinstance(found, str):
        raise ResourceError(found)
    return found


def applying_fixtures(item: pytest.Item) -> Iterator[pytest.FixtureDef[Any]]:
    """Yield every fixture definition that applies to a test (see the module docstring)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a function (a plugin's own item type): no fixtures
        return
    definitions: Mapping[str, Sequence[pytest.FixtureDef[Any]]] = info.name2fixturedefs
    manager = getattr(item.session, "_fixturemanager")  # noqa: B009 - private, see the module docstring
    names = list(info.names_closure)
    closure = len(names)
    seen = set(names)
    for position, name in enumerate(names):  # grows as overridden definitions request more
        found = definitions.get(name)
        if found is None:  # pytest's closure lacks what overridden definitions request
            found = (_definitions(manager, name, item) if position >= closure else None) or ()
        index = len(found) - 1
        while index >= 0:
            fixturedef = found[index]
            yield fixturedef
            for argname in fixturedef.argnames:
                if argname not in seen:
                    seen.add(argname)
                    names.append(argname)
            # an override that requests its own name uses the one it overrides
            index = index - 1 if name in fixturedef.argnames else -1


@final
@dataclasses.dataclass(frozen=True, slots=True)
class _Closure:
    """What the fixtures of one fixture closure request, or the first bad one."""

    #: pytest's ``FuncFixtureInfo``, kept alive so that its id is not reused.
    info: object
    requests: tuple[Request, ...] = ()
    #: (fixture name, message) of the first fixture whose declaration is bad.
    error: tuple[str, str] | None = None
    #: The keys of the ``@once`` fixtures in the closure.
    once: tuple[str, ...] = ()


#: Closures by id: the parametrizations of one test function share one
#: ``FuncFixtureInfo``, and so the answer.
_CLOSURES_KEY: Final = pytest.StashKey[dict[int, _Closure]]()


def _definitions(manager: Any, name: str, item: pytest.Item) -> Sequence[pytest.FixtureDef[Any]] | None:
    """Return the definitions of a fixture name visible from ``item``, as
    pytest's fixture manager gives them (it takes the node from pytest 8.1 on,
    its node id before)."""
    if _takes_nodeid(manager.__class__):
        return manager.getfixturedefs(name, item.nodeid)  # type: ignore[no-any-return]
    return manager.getfixturedefs(name, item)  # type: ignore[no-any-return]


@functools.cache
def _takes_nodeid(manager: Any) -> bool:
    """Return whether a fixture manager class looks definitions up by node id
    (pytest 8.0); asked once, not at every lookup."""
    return "nodeid" in inspect.signature(manager.getfixturedefs).parameters


def _fixture_closure(item: pytest.Item) -> _Closure:
    """Return what the fixtures that apply to a test request, and its
    ``@once`` fixtures (noted in the config's table of them); raise
    :class:`ResourceError` naming the first fixture with a bad declaration."""
    info = getattr(item, "_fixtureinfo", None)
    closures = item.config.stash.setdefault(_CLOSURES_KEY, {})
    closure = closures.get(id(info))
    if closure is None or closure.info is not info:
        requests: list[Request] = []
        once: list[str] = []
        error = None
        for fixturedef in applying_fixtures(item):
            try:
                requests.extend(fixture_requests(fixturedef, item.config))
                key = once_key(fixturedef)
                if key is not None:
                    needs = merge_requests(declared_requests(fixturedef, item.config))
                    item.config.stash.setdefault(_ONCE_KEY, {})[key] = OnceDefinition(fixturedef.argname, needs)
                    once.append(key)
            except ResourceError as e:
                error = (fixturedef.argname, str(e))
                break
        closure = closures[id(info)] = _Closure(info, tuple(requests), error, tuple(once))
    if closure.error is not None:
        name, message = closure.error
        raise ResourceError(INVALID_ON_FIXTURE.format(fixture=name, nodeid=item.nodeid, error=message))
    return closure


def declaration_of(item: pytest.Item) -> Declaration:
    """Return what a test declares, from its markers and fixtures; raise :class:`ResourceError`."""
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
            if hasattr(_innermost(getattr(item, "obj", None)), REQUIRES_ATTRIBUTE):
                raise ResourceError(REQUIRES_ON_TEST)
        except ResourceError as e:
            cached = f"invalid resource declaration on {item.nodeid}: {e}"
        else:
            try:
                closure = _fixture_closure(item)
            except ResourceError as e:
                cached = str(e)
            else:
                requests.extend(closure.requests)
                cached = _with_timeout(item, merge_requests(requests, serial), closure.once)
        item.stash[_DECLARATION_KEY] = cached
    if isinstance(cached, str):
        raise ResourceError(cached)
    return cached


def _with_timeout(item: pytest.Item, requirement: Requirement, once: tuple[str, ...]) -> Declaration | str:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return Declaration(requirement, once=once)
    try:
        seconds = parse_timeout_marker(mark.args, mark.kwargs)
    except ResourceError as e:
        return f"invalid timeout marker on {item.nodeid}: {e}"
    if seconds and item.config.pluginmanager.has_plugin("timeout"):
        seconds += TIMEOUT_MARGIN
    return Declaration(requirement, seconds, once)


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
