"""The controller's heap, kept out of the garbage collector's sight.

The controller runs no test.  What it holds when its loop starts (modules,
collected items, tasks) and when the loop ends (the reports the terminal
reporter keeps) lives until pytest ends, yet Python's collector looks
through all of it again and again: during the loop, twice at pytest's
unconfigure and clean-up (its check for unraisable exceptions) and once more
at the interpreter's exit.  With 2,000 trivial tests that was 0.2 s of the
controller's time, more than half of it after the last test; with
``gc.freeze()`` at both points it is 0.06 s.

pytest may run inside a longer-lived process (``pytest.main`` from an IDE,
or pytester's in-process runs), where a frozen heap would keep every cycle
of this session -- items point to their parents and back -- for good.  So
the heap is thawed by the last of pytest's clean-ups, and frozen again only
when the interpreter exits.  Without that clean-up (restask loaded too late
to add it first), or when the program running pytest froze objects
itself, nothing is frozen here.

What is frozen is not looked at until the thaw: a ``__del__`` on a cycle
that became garbage in the controller before a freeze runs only then, after
pytest's check for unraisable exceptions.  Tests' garbage is on the workers,
where nothing is frozen before pytest has ended.
"""

from __future__ import annotations

import atexit
import gc
from typing import Final

import pytest

_THAWS_KEY: Final = pytest.StashKey[bool]()


def allow_freezing(config: pytest.Config) -> None:
    """Add the thaw as the clean-up pytest runs last; call before any configure."""
    config.stash[_THAWS_KEY] = False
    config.add_cleanup(lambda: _thaw(config))


def freeze(config: pytest.Config) -> None:
    """Freeze what the controller holds now, if it will be thawed when pytest ends."""
    if _THAWS_KEY not in config.stash:
        return
    if not config.stash[_THAWS_KEY]:
        if gc.get_freeze_count():  # frozen by the program that runs pytest: its to thaw, not ours
            del config.stash[_THAWS_KEY]
            return
        config.stash[_THAWS_KEY] = True
        atexit.unregister(gc.freeze)  # one registration however many sessions
        atexit.register(gc.freeze)
    gc.freeze()


def _thaw(config: pytest.Config) -> None:
    if config.stash.get(_THAWS_KEY, False):
        gc.unfreeze()
