"""Whether processes that a test run started are still alive."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest


def alive(pid: int) -> bool:
    """Return whether ``pid`` runs; a zombie waiting for its reaper is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def survivors(pids: Iterable[int], within: float = 5.0) -> list[int]:
    """Return the pids still alive after waiting up to ``within`` seconds."""
    pending = list(pids)
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [pid for pid in pending if alive(pid)]
    return pending


def pids_in(directory: Path, pattern: str = "*.pid") -> list[int]:
    """Return the pids written, one per file, as ``pattern`` in ``directory``.

    A file the test has opened but not written yet is empty: it is not
    counted until it holds its pid (a wait for N pids sees it on its next look).
    """
    texts = [path.read_text() for path in sorted(directory.glob(pattern))]
    return [int(text) for text in texts if text]


def start_pytest(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m pytest args`` in the pytester directory, to be interrupted.

    Ctrl-C must reach it as a KeyboardInterrupt even where this suite itself
    was started with SIGINT ignored (a shell's background job): Python keeps
    an ignored SIGINT ignored, so the child gets the default back first.
    """

    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return pytester.popen([sys.executable, "-m", "pytest", *args], stdin=subprocess.DEVNULL, preexec_fn=default_sigint)
