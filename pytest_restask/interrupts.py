"""SIGTERM as Ctrl-C: a CI job that is cancelled ends like an interrupted run.

A CI runner cancels a job with SIGTERM, which ends a Python process at once:
no summary, no ``--timeline``, workers left behind.  While restask runs tests
(the controller's loop, or an in-process run that writes a timeline), SIGTERM
raises :class:`KeyboardInterrupt` instead, so the run ends as on Ctrl-C: its
workers ended, a summary, exit code 2.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["interrupt_on_sigterm"]


def interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt; return what puts the previous
    handler back.  Only the main thread may set handlers: elsewhere (pytest
    run in a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous = signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        # None: a handler not set from Python, which cannot be put back; the default is
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def _nothing() -> None:
    pass
