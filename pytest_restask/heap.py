"""The controller's heap, kept out of the garbage collector's sight.

The controller runs no test but those whose declaration is wrong.  What it
holds when its loop starts (modules, collected items, tasks) and when the
loop ends (the reports the terminal reporter keeps) lives until pytest ends,
yet Python's collector looked through all of it again and again: during the
loop, in pytest's check for unraisable exceptions at the end (at unconfigure
and at clean-up on pytest >= 9.1, at clean-up on 8.4 to 9.0), and once more
at the interpreter's exit.  With 2,000 trivial tests that was 0.2 s of the
controller's time plus 0.2-0.35 s for the exit, nearly all of it after the
last test.

So at both points the controller collects what is garbage already (its
finalizers run, and what they raise reaches pytest's check as in a serial
run), then freezes the rest (``gc.freeze()``): the collector no longer
looks at it.  At the loop's start that collection takes 25 ms on 2,000
tests; at its end it sees only what the loop made.

pytest may run inside a longer-lived program (``pytest.main`` from an IDE,
or pytester's in-process runs), which must get back a heap whose cycles are
collected.  So the heap is thawed by a clean-up added before any plugin's
``pytest_configure``: it runs after all the clean-ups added from there on,
pytest's check for unraisable exceptions included.  When pytest is the
program (``pytest`` or ``python -m pytest``), the heap is frozen again at the
interpreter's exit, which then skips its last collection: as Python's
documentation allows, ``__del__`` of a cycle that was still alive when the
loop ended is not called at exit.  Nothing is frozen when restask was loaded
too late to add that clean-up, when the program running pytest froze objects
itself (they are its to thaw), or where ``gc.freeze`` does not exist (PyPy).

While frozen, ``gc.get_objects()`` and ``gc.get_referrers()`` do not see
the frozen objects.  Tests' own garbage is on the workers, where nothing is
frozen before pytest has ended.
"""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Final

import _pytest.config
import pytest

#: In the config's stash: whether this session froze the heap (absent: it may not).
_FROZEN_KEY: Final = pytest.StashKey[bool]()


def allow_freezing(config: pytest.Config) -> None:
    """Add the thaw; call before any ``pytest_configure``."""
    if not hasattr(gc, "freeze"):
        return
    config.stash[_FROZEN_KEY] = False
    config.add_cleanup(lambda: _thaw(config))


def freeze(config: pytest.Config) -> None:
    """Collect the controller's garbage, then freeze what it holds now (if allowed)."""
    if _FROZEN_KEY not in config.stash:
        return
    if not config.stash[_FROZEN_KEY] and gc.get_freeze_count():
        del config.stash[_FROZEN_KEY]  # frozen by the program that runs pytest
        return
    config.stash[_FROZEN_KEY] = True
    gc.collect()
    gc.freeze()


def _thaw(config: pytest.Config) -> None:
    if not config.stash.get(_FROZEN_KEY, False):
        return
    gc.unfreeze()
    if pytest_is_the_program():
        atexit.unregister(gc.freeze)  # once, however many sessions ran
        atexit.register(gc.freeze)


def pytest_is_the_program() -> bool:
    """Return whether this process is ``pytest`` or ``python -m pytest``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "pytest.__main__":
        return True
    # the console script imports the entry point and calls it: pytest 9.2
    # names ``_pytest.config:_console_main``, earlier ones ``pytest:console_main``
    entry_points = {pytest.console_main, getattr(_pytest.config, "_console_main", None)} - {None}
    return any(getattr(main, name, None) in entry_points for name in ("console_main", "_console_main"))
