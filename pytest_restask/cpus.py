"""How many CPUs this process may actually use: the number behind ``-n auto``.

``os.cpu_count()`` counts the CPUs of the machine, not the CPUs this process
may use, and on a CI runner the two differ:

* **CPU affinity.**  A runner started under ``taskset``, ``docker --cpuset-cpus``
  or a cgroup ``cpuset`` may run on fewer CPUs than the machine has;
  ``os.sched_getaffinity(0)`` says which.
* **cgroup CPU quota.**  ``docker --cpus=2``, a Kubernetes CPU limit or a
  systemd ``CPUQuota=`` leaves every CPU visible and in the affinity mask but
  grants only so much CPU time per period (``cpu.max`` in cgroup v2,
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in cgroup v1).  One worker per
  visible CPU then runs many workers at a fraction of a CPU each: slower, and
  timing-sensitive tests time out.

pytest-xdist's default ``-n auto`` counts CPUs through ``psutil`` when it is
installed (physical cores for ``auto``, ignoring affinity and quota) and falls
back to ``len(os.sched_getaffinity(0))`` (affinity, but no quota).  Here
``-n auto`` resolves, in this order:

1. ``PYTEST_XDIST_AUTO_NUM_WORKERS``, a whole number of at least 1
   (:func:`env_workers`; an empty value counts as unset, as in pytest-xdist);
2. the ``pytest_xdist_auto_num_workers`` hook (the caller's business);
3. :func:`usable_cpus`: the smaller of the CPU affinity and the cgroup quota,
   where the interpreter's own override replaces the affinity:
   ``PYTHON_CPU_COUNT`` and ``-X cpu_count`` on Python 3.13+ (through
   ``os.process_cpu_count()``), ``PYTHON_CPU_COUNT`` read here on older
   Pythons.  The quota still caps the override: it is a hard ceiling, and
   ``PYTEST_XDIST_AUTO_NUM_WORKERS`` is the way to ask for more workers.

Everything unreadable (no ``/proc`` on macOS, a missing or garbled file) is
ignored: it only means no limit is known.  The result is always at least 1.

This module reads a few small files under ``root`` (a fake tree in the tests)
and imports neither pytest nor execnet; the caller turns
:class:`AutoWorkersError` into ``pytest.UsageError``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, final

__all__ = [
    "AUTO_WORKERS_ENV",
    "BAD_AUTO_WORKERS",
    "PYTHON_CPU_COUNT_ENV",
    "AutoWorkersError",
    "affinity_cpus",
    "cgroup_cpu_limit",
    "env_workers",
    "python_cpu_count",
    "usable_cpus",
]

#: The environment variable that fixes the number of workers for ``-n auto``
#: (pytest-xdist's name, so CI configurations carry over).
AUTO_WORKERS_ENV: Final = "PYTEST_XDIST_AUTO_NUM_WORKERS"

#: The error for a bad :data:`AUTO_WORKERS_ENV` value.
BAD_AUTO_WORKERS: Final = "{name}={value!r}: expected a whole number of workers (0 runs the tests in process)"

#: The interpreter's CPU count override (Python 3.13+, read here on older ones).
PYTHON_CPU_COUNT_ENV: Final = "PYTHON_CPU_COUNT"

#: Whether ``os.process_cpu_count()`` exists and already honours
#: ``PYTHON_CPU_COUNT`` and ``-X cpu_count`` (read at interpreter start).
_INTERPRETER_READS_CPU_COUNT: Final = sys.version_info >= (3, 13)

#: Where cgroup v2 is mounted when ``/proc/self/mountinfo`` does not say.
_V2_DEFAULT_MOUNT: Final = "/sys/fs/cgroup"

#: Where the cgroup v1 ``cpu`` controller is mounted when mountinfo does not say.
_V1_DEFAULT_MOUNTS: Final = ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu")

#: ASCII digits only: ``int()`` would also take "+3", "1_0" and non-ASCII digits.
_WHOLE: Final = re.compile(r"[0-9]+")

#: An octal escape in mountinfo (a space in a path is written ``\\040``).
_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


class AutoWorkersError(ValueError):
    """:data:`AUTO_WORKERS_ENV` is set to something other than a whole number >= 1."""

    def __init__(self, value: str) -> None:
        self.value: Final = value
        super().__init__(BAD_AUTO_WORKERS.format(name=AUTO_WORKERS_ENV, value=value))


def env_workers(environ: Mapping[str, str]) -> int | None:
    """Return the number of workers :data:`AUTO_WORKERS_ENV` asks for, or None if unset.

    An empty value counts as unset, as in pytest-xdist: CI templates expand an
    unset input to an empty string.  0 means no workers (the run is in
    process), as in pytest-xdist.  Raise :class:`AutoWorkersError` for
    anything but a whole number (pytest-xdist warns and ignores a
    non-number, and takes -1 as it is).
    """
    value = environ.get(AUTO_WORKERS_ENV)
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise AutoWorkersError(value)
    return int(text)


def python_cpu_count(environ: Mapping[str, str]) -> int | None:
    """Return the CPU count ``PYTHON_CPU_COUNT`` sets, or None.

    None for unset, ``default`` or a value that is not a positive whole
    number: Python 3.13 refuses to start on such a value, older Pythons know
    no such variable, so ignoring it here is the tolerant reading.
    """
    text = environ.get(PYTHON_CPU_COUNT_ENV, "").strip()
    if not _WHOLE.fullmatch(text) or int(text) < 1:
        return None
    return int(text)


def affinity_cpus() -> int:
    """Return how many CPUs the interpreter says this process may run on.

    ``os.process_cpu_count()`` on Python 3.13+ (affinity, or the
    ``PYTHON_CPU_COUNT`` / ``-X cpu_count`` override); before that the size
    of the affinity mask where the platform has one, else ``os.cpu_count()``.
    """
    if sys.version_info >= (3, 13):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


def usable_cpus(
    *,
    root: str = "/",
    environ: Mapping[str, str] | None = None,
    affinity: Callable[[], int] | None = None,
) -> int:
    """Return how many CPUs this process may actually use; at least 1.

    The smaller of ``affinity()`` (default :func:`affinity_cpus`) and the
    cgroup CPU quota (:func:`cgroup_cpu_limit` under ``root``).  On Pythons
    before 3.13 a ``PYTHON_CPU_COUNT`` in ``environ`` (default
    ``os.environ``) replaces ``affinity()``; on 3.13+ the interpreter applied
    it already, through ``os.process_cpu_count()``, and ``environ`` is not read.
    """
    environ = os.environ if environ is None else environ
    override = None if _INTERPRETER_READS_CPU_COUNT else python_cpu_count(environ)
    cpus = override if override is not None else (affinity or affinity_cpus)()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, limit)
    return max(cpus, 1)


def cgroup_cpu_limit(root: str = "/") -> int | None:
    """Return the CPUs this process's cgroup CPU quota allows, or None for no known limit.

    The quota of this process's cgroup and of each ancestor visible under the
    mount, cgroup v2 and v1 alike, each rounded up to whole CPUs; the
    smallest wins.  ``/proc`` and ``/sys`` are read under ``root``.
    """
    cgroup = _read(_under(root, "/proc/self/cgroup"))
    if cgroup is None:
        return None
    v2_path, v1_path = _cgroup_paths(cgroup)
    v2_mounts, v1_mounts = _cgroup_mounts(_read(_under(root, "/proc/self/mountinfo")) or "")
    limits: list[int | None] = []
    if v2_path is not None:
        for mount in v2_mounts or [_Mount("/", _V2_DEFAULT_MOUNT)]:
            limits.extend(_v2_limit(directory) for directory in _cgroup_dirs(root, mount, v2_path))
    if v1_path is not None:
        for mount in v1_mounts or [_Mount("/", point) for point in _V1_DEFAULT_MOUNTS]:
            limits.extend(_v1_limit(directory) for directory in _cgroup_dirs(root, mount, v1_path))
    return min((limit for limit in limits if limit is not None), default=None)


# -- Implementation -----------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class _Mount:
    """A cgroup hierarchy mount: which cgroup it shows, and where."""

    #: The cgroup path shown at the mount point (not "/" in a container
    #: without a cgroup namespace, where only its own subtree is mounted).
    root: str
    #: The absolute path the hierarchy is mounted at.
    point: str


def _under(root: str, path: str) -> str:
    """Return absolute ``path`` as seen from ``root``."""
    return os.path.join(root, path.lstrip("/"))


def _read(path: str) -> str | None:
    """Return the text of a small file, or None if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_paths(text: str) -> tuple[str | None, str | None]:
    """Return this process's cgroup v2 path and its v1 ``cpu`` controller path.

    From ``/proc/self/cgroup``: ``0::/path`` is v2, ``4:cpu,cpuacct:/path``
    is v1.  Either is None when absent.
    """
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        hierarchy, sep, rest = line.partition(":")
        controllers, sep_path, path = rest.partition(":")
        if not (sep and sep_path and path.startswith("/")):
            continue
        if hierarchy == "0" and not controllers:
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _cgroup_mounts(text: str) -> tuple[list[_Mount], list[_Mount]]:
    """Return the cgroup v2 mounts and the cgroup v1 ``cpu`` controller mounts.

    From ``/proc/self/mountinfo``: ``ID PARENT MAJ:MIN ROOT POINT OPTIONS
    [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``.
    """
    v2: list[_Mount] = []
    v1: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 2:
            continue
        mount = _Mount(_unescape(fields[3]), _unescape(fields[4]))
        fstype = fields[dash + 1]
        super_options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        if fstype == "cgroup2":
            v2.append(mount)
        elif fstype == "cgroup" and "cpu" in super_options:
            v1.append(mount)
    return v2, v1


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _cgroup_dirs(root: str, mount: _Mount, path: str) -> Iterator[str]:
    """Yield the directory of cgroup ``path`` under ``mount``, then each ancestor up to the mount point.

    A quota set on an ancestor limits every cgroup below it, and a container
    often sees its limit only on the mount point itself.  A ``path`` outside
    what the mount shows (or climbing with ``..``) yields the mount point only.
    """
    if mount.root == "/":
        relative = path
    elif path == mount.root or path.startswith(mount.root + "/"):
        relative = path[len(mount.root) :]
    else:
        relative = ""
    parts = [part for part in relative.split("/") if part and part != "."]
    if ".." in parts:
        parts = []
    top = _under(root, mount.point)
    for depth in range(len(parts), -1, -1):
        yield os.path.join(top, *parts[:depth])


def _v2_limit(directory: str) -> int | None:
    """Return the CPUs ``cpu.max`` in a cgroup v2 directory allows, or None."""
    text = _read(os.path.join(directory, "cpu.max"))
    fields = text.split() if text is not None else []
    return _quota_cpus(fields[0], fields[1]) if len(fields) == 2 else None


def _v1_limit(directory: str) -> int | None:
    """Return the CPUs the CFS quota in a cgroup v1 ``cpu`` directory allows, or None."""
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if quota is None or period is None:
        return None
    return _quota_cpus(quota.strip(), period.strip())


def _quota_cpus(quota: str, period: str) -> int | None:
    """Return quota / period rounded up, at least 1; None for no limit.

    No limit is "max" (v2), "-1" (v1), or anything that is not two positive
    whole numbers.
    """
    if not (_WHOLE.fullmatch(quota) and _WHOLE.fullmatch(period)):
        return None
    quota_us, period_us = int(quota), int(period)
    if quota_us < 1 or period_us < 1:
        return None
    return max(-(-quota_us // period_us), 1)
