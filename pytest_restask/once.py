"""Fixtures set up once per run: ``@once``.

``@once`` makes a session-scoped fixture whose setup runs once for the
whole run, on whichever worker first needs it, and whose value reaches every
test that requests it, on any worker::

    from pytest_restask import once

    @once
    def schema(tmp_path_factory):
        url = migrate_a_fresh_schema()
        yield {"url": url}
        drop(url)

Without ``-n`` it is an ordinary session-scoped fixture.  On workers the
controller decides, task by task, what each ``@once`` fixture does there
(:class:`Instruction`, sent with the task, see :class:`~.messages.Next`):

* ``setup`` -- this worker runs the setup (in the first test that needs it;
  the other tests that need it wait in the scheduler meanwhile), sends the
  value to the controller, and runs the teardown when the controller says
  the last test that uses it has finished (:class:`~.messages.EndOnce`,
  between this worker's tests);
* ``value`` -- the value the setup made: the fixture returns it, and has
  nothing to tear down here;
* ``failed`` -- the setup failed (its error is shown in full where it ran):
  the test errors with a reference to it.

The value must be something execnet carries (builtins: dicts, lists,
strings, numbers ...); a value that is not is an error of every test that
depends on the fixture.  The state of each fixture in the run is the state
machine's (see :class:`~.statemachine.StateMachine`); this module is the
worker's side and the decorator.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final, NoReturn, TypeVar, final, overload

import pytest

from .declarations import ONCE_ATTRIBUTE, once_key

__all__ = ["OnceRunner", "once"]

_F = TypeVar("_F", bound=Callable[..., Any])

SETUP: Final = "setup"
VALUE: Final = "value"
FAILED: Final = "failed"

FAILED_ELSEWHERE: Final = "@once fixture {name!r} failed to set up: {cause}"
NOT_CARRIED: Final = (
    "@once fixture {name!r} made a value of type {type} that cannot be sent to the other workers ({why}); "
    "return what JSON or execnet can carry (dict, list, str, int, float, bool, None, bytes), "
    "e.g. a URL or a path as a string"
)
NOT_ONE_YIELD: Final = "@once fixture {name!r} must yield exactly once"


@overload
def once(function: _F) -> _F: ...


@overload
def once(*, name: str | None = None) -> Callable[[_F], _F]: ...


def once(function: Any = None, *, name: str | None = None) -> Any:
    """Make a session fixture that is set up once for the whole run (see the
    module docstring); ``@once`` or ``@once(name="...")``."""
    if function is None:
        return functools.partial(once, name=name)
    key = f"{function.__module__}:{function.__qualname__}"
    fixture_name = name or function.__name__

    @functools.wraps(function)
    def fixture(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        __tracebackhide__ = True  # an error shows the user's fixture, as a plain fixture's would
        runner = _RUNNER
        if runner is None:  # not on a restask worker: an ordinary session fixture
            return (yield from _plain(fixture_name, function, args, kwargs))
        return (yield from runner.provide(key, fixture_name, function, args, kwargs))

    setattr(fixture, ONCE_ATTRIBUTE, key)
    return pytest.fixture(scope="session", name=name)(fixture)


def _plain(name: str, function: Any, args: Any, kwargs: Any) -> Generator[Any, None, None]:
    """Run a fixture function as pytest would: a generator's one yield, or a return."""
    __tracebackhide__ = True
    if not inspect.isgeneratorfunction(function):
        yield function(*args, **kwargs)
        return
    generator = function(*args, **kwargs)
    try:
        value = next(generator)
    except StopIteration:
        raise ValueError(NOT_ONE_YIELD.format(name=name)) from None
    yield value
    _finish(name, generator)


def _finish(name: str, generator: Generator[Any, None, None]) -> None:
    __tracebackhide__ = True
    try:
        next(generator)
    except StopIteration:
        return
    raise ValueError(NOT_ONE_YIELD.format(name=name))


def _fail(message: str) -> NoReturn:
    """Fail the fixture with ``message`` alone (this frame is left visible:
    with every frame hidden, pytest adds a note that they are)."""
    pytest.fail(message, pytrace=False)


#: The worker's runner, while a worker session runs (None elsewhere).
_RUNNER: OnceRunner | None = None

#: What the controller says a worker does with one ``@once`` fixture:
#: ``[kind, generation, payload]`` (see the module docstring).
Instruction = list[Any]


@final
class OnceRunner:
    """A worker's side of ``@once`` fixtures (a pytest plugin, for its
    ``pytest_fixture_setup``): what the controller said of each, the setups
    made here, and their teardowns.

    ``tell(kind, key, generation, payload)`` sends the controller a setup's
    outcome (``value`` or ``failed``); ``carried(value)`` says why a value
    cannot be sent (None if it can).
    """

    def __init__(
        self,
        tell: Callable[[str, str, int, object], None],
        carried: Callable[[object], str | None],
    ) -> None:
        self._tell = tell
        self._carried = carried
        #: The controller's instructions for the current task, by key.
        self._instructions: dict[str, Instruction] = {}
        #: Every ``@once`` fixture cached here: its definition, the request
        #: that set it up, and the generation it holds.
        self._cached: dict[str, tuple[pytest.FixtureDef[Any], pytest.FixtureRequest, int]] = {}
        #: The fixtures set up here and not torn down yet.
        self._owned: set[str] = set()
        #: Where the current task runs: its node id and this worker's id, for messages.
        self.where = ""

    def install(self) -> None:
        global _RUNNER
        _RUNNER = self

    def uninstall(self) -> None:
        global _RUNNER
        _RUNNER = None

    def told(self, instructions: Mapping[str, Instruction]) -> None:
        """Take the instructions that came with the next task; a fixture
        cached here from an older generation (set up again elsewhere) is
        finished first, so that the task gets the new value."""
        self._instructions = dict(instructions)
        for key, instruction in instructions.items():
            cached = self._cached.get(key)
            # a failure is cached too: ended, the next test shows the short reference, not the traceback again
            if cached is not None and (cached[2] != instruction[1] or instruction[0] == FAILED):
                self.end(key)

    def owns(self) -> bool:
        """Return whether an ``@once`` fixture was set up here and not torn down."""
        return bool(self._owned)

    def end(self, key: str) -> None:
        """Finish an ``@once`` fixture here: its teardown where it was set up
        (an error is raised), nothing more elsewhere."""
        cached = self._cached.pop(key, None)
        self._owned.discard(key)
        if cached is not None:
            fixturedef, request, _ = cached
            fixturedef.finish(request)  # type: ignore[arg-type]

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        __tracebackhide__ = True
        key = once_key(fixturedef)
        if key is not None and key in self._instructions:
            self._cached[key] = (fixturedef, request, int(self._instructions[key][1]))
        return (yield)

    def provide(self, key: str, name: str, function: Any, args: Any, kwargs: Any) -> Generator[Any, None, None]:
        """The body of an ``@once`` fixture on a worker."""
        __tracebackhide__ = True
        instruction = self._instructions.get(key)
        if instruction is None:  # run here for a reason of its own (a plugin): as serially
            return (yield from _plain(name, function, args, kwargs))
        kind, generation, payload = instruction
        if kind == VALUE:
            yield payload
            return
        if kind == FAILED:
            _fail(str(payload))
        generator = None
        try:
            if inspect.isgeneratorfunction(function):
                generator = function(*args, **kwargs)
                try:
                    value = next(generator)
                except StopIteration:
                    raise ValueError(NOT_ONE_YIELD.format(name=name)) from None
            else:
                value = function(*args, **kwargs)
        except BaseException as e:
            cause = f"{type(e).__name__}: {e} (in {self.where}, where its error is shown in full)"
            self._tell(FAILED, key, generation, FAILED_ELSEWHERE.format(name=name, cause=cause))
            raise
        why = self._carried(value)
        if why is not None:
            message = NOT_CARRIED.format(name=name, type=type(value).__name__, why=why)
            self._tell(FAILED, key, generation, message)
            if generator is not None:
                _finish(name, generator)
            _fail(message)
        self._tell(VALUE, key, generation, value)
        self._owned.add(key)
        yield value
        if generator is not None:
            _finish(name, generator)
