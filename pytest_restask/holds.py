"""What a running test holds, and the fixtures that live under holds.

The same in every mode: the in-process plugin and the worker each register
one :class:`Holds` and call :meth:`Holds.enter` before a test's setup and
:meth:`Holds.leave` after its teardown, with what the test was granted.

* Its counted slot numbers go to ``item.stash`` (read by the
  ``restask_slots`` fixture) and to ``RESTASK_SLOTS_<NAME>`` environment
  variables.
* A fixture that requires a resource (:func:`~.declarations.requires`,
  ``restask_fixtures``) is set up only under a hold of it: one reached at
  run time (``request.getfixturevalue``) by a test that does not hold it
  fails that test before the fixture's body runs.
* Such a fixture, of any scope, ends when the hold it lives under ends
  without a hand-over to a next test that keeps it: the caller says, at
  the end of each teardown, what the next test on this process holds
  (:meth:`Holds.end_unheld`).  pytest alone would keep a session fixture
  until the process ends, outside any hold.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Final, NoReturn, final

import pytest

from .declarations import INVALID_ON_FIXTURE, fixture_requests
from .resources import NOTHING, Grant, Request, Requirement, ResourceError, merge_requests, slot_env_name

__all__ = ["NOT_HELD", "SLOTS_KEY", "Holds"]

#: The slot numbers of the counted resources an item holds, by name.
SLOTS_KEY: Final = pytest.StashKey[dict[str, list[int]]]()

NOT_HELD: Final = (
    "{nodeid} uses fixture {fixture!r}, which needs {needs}, but the test {holds}: it reaches the "
    "fixture only while it runs (request.getfixturevalue), after its resources were granted; declare it on the "
    "test with @pytest.mark.usefixtures({fixture!r}) or @pytest.mark.resource(...)"
)


@final
class Holds:
    """The current test's hold, and the live fixtures that need resources.

    A pytest plugin (its hooks watch fixtures being set up and finished);
    one per session, in the process that runs the tests.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        #: The test running now, and what it holds.
        self._item: pytest.Item | None = None
        self._held = NOTHING
        #: Live fixtures that need resources, in setup order, each with what
        #: it needs and the slots held when it was set up.
        self._live: list[tuple[pytest.FixtureDef[Any], pytest.FixtureRequest, Grant]] = []

    def enter(self, item: pytest.Item, grant: Grant) -> None:
        """A test's hold begins: record it, and its slots, before its setup."""
        self._item, self._held = item, grant
        slots = {name: list(numbers) for name, numbers in grant.slots.items()}
        item.stash[SLOTS_KEY] = slots
        for name, numbers in slots.items():
            os.environ[slot_env_name(name)] = ",".join(map(str, numbers))

    def leave(self, item: pytest.Item) -> None:
        """A test's hold ends: forget its slots after its teardown."""
        for name in item.stash.get(SLOTS_KEY, {}):
            os.environ.pop(slot_env_name(name), None)
        item.stash[SLOTS_KEY] = {}
        if self._item is item:
            self._item, self._held = None, NOTHING

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
        __tracebackhide__ = True
        item = self._item
        if item is None:
            return  # outside a test (a plugin's own use): nothing is held, nothing to check
        try:
            requests = fixture_requests(fixturedef, self._config)
        except ResourceError as e:  # reached at run time only: not in the test's declaration
            _refuse(
                item,
                fixturedef,
                request,
                INVALID_ON_FIXTURE.format(fixture=fixturedef.argname, nodeid=item.nodeid, error=e),
            )
        if not requests:
            return
        missing = [request for request in requests if not _holds(self._held.requirement, request)]
        if missing:
            needs = ", ".join(request.describe() for request in missing)
            names = {request.name for request in missing}
            weaker = [held.describe() for held in self._held.requirement.requests if held.name in names]
            holds = f"holds only {', '.join(weaker)}" if weaker else "does not hold it"
            message = NOT_HELD.format(nodeid=item.nodeid, fixture=fixturedef.argname, needs=needs, holds=holds)
            _refuse(item, fixturedef, request, message)
        names = {request.name for request in requests}
        slots = {name: numbers for name, numbers in self._held.slots.items() if name in names}
        self._live.append((fixturedef, request, Grant(merge_requests(requests), slots)))

    @property
    def live(self) -> bool:
        """Return whether a fixture that needs resources is live (most of
        the time none is, and :meth:`end_unheld` need not be asked)."""
        return bool(self._live)

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        self._forget(fixturedef)

    def end_unheld(self, following: Grant | None) -> None:
        """End every live fixture that needs what the next test on this
        process will not keep holding (``following``: its grant, handed
        over; None: no next test).  Called at the end of a teardown, inside
        the hold: an error is that test's teardown error."""
        __tracebackhide__ = True
        errors: list[BaseException] = []
        for fixturedef, request, needs in reversed(list(self._live)):
            if following is not None and following.covers(needs):
                continue
            try:
                fixturedef.finish(request)
            except BaseException as e:  # every fixture ends; the first error is reported
                errors.append(e)
            finally:
                self._forget(fixturedef)
        if errors:
            raise errors[0]

    def _forget(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        self._live = [live for live in self._live if live[0] is not fixturedef]


def _refuse(
    item: pytest.Item, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest, message: str
) -> NoReturn:
    """Fail a fixture's setup before its body runs, as pytest fails one whose body raised.

    pytest's own ``pytest_fixture_setup`` caches a failure in
    ``cached_result`` (its finalizers rely on that) and re-raises it to every
    later user in the fixture's scope; this failure is the test's own, so
    the fixture is finished with the test and set up afresh for the next.
    """
    __tracebackhide__ = True
    try:
        pytest.fail(message, pytrace=False)
    except pytest.fail.Exception as e:
        fixturedef.cached_result = (None, fixturedef.cache_key(request), (e, e.__traceback__))  # type: ignore[arg-type]
        item.addfinalizer(functools.partial(fixturedef.finish, request=request))  # type: ignore[arg-type]
        raise


def _holds(requirement: Requirement, request: Request) -> bool:
    """Return whether holding ``requirement`` covers ``request`` (as strong a
    mode; as many counted slots)."""
    held = next((mine for mine in requirement.requests if mine.name == request.name), None)
    return held is not None and held.stronger(request) is held
