"""``-n auto``: the workers env variable, and the CPUs this process may actually use.

The cgroup tests build a fake ``/proc`` and ``/sys`` under ``tmp_path`` and
pass it as ``root``; one test runs a child Python under a real CPU affinity.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_restask.cpus import (
    AUTO_WORKERS_ENV,
    BAD_AUTO_WORKERS,
    PYTHON_CPU_COUNT_ENV,
    AutoWorkersError,
    cgroup_cpu_limit,
    env_workers,
    python_cpu_count,
    usable_cpus,
)

INTERPRETER_READS_CPU_COUNT = sys.version_info >= (3, 13)

#: /proc/self/mountinfo of a host with only cgroup v2 (the mount shows the root cgroup).
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"

#: /proc/self/mountinfo of a cgroup v1 host: "cpu" and "cpuacct" share a mount; "cpuset" is not "cpu".
V1_MOUNTINFO = (
    "25 23 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n"
    "32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
    "34 25 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:11 - cgroup cgroup rw,cpuset\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, cpu_max: str | None, *, path: str = "/ci/job", mountinfo: str | None = V2_MOUNTINFO) -> Path:
    """Make a cgroup v2 host under ``root``; this process sits in ``path``, limited by ``cpu_max``."""
    write(root / "proc/self/cgroup", f"0::{path}\n")
    if mountinfo is not None:
        write(root / "proc/self/mountinfo", mountinfo)
    if cpu_max is not None:
        write(root / "sys/fs/cgroup" / path.lstrip("/") / "cpu.max", cpu_max + "\n")
    return root


def v1_tree(
    root: Path,
    quota: str | None,
    period: str | None = "100000",
    *,
    mount: str = "/sys/fs/cgroup/cpu,cpuacct",
    mountinfo: str | None = V1_MOUNTINFO,
) -> Path:
    """Make a cgroup v1 host under ``root``; this process sits in ``/ci``, limited by ``quota``/``period``."""
    write(root / "proc/self/cgroup", "5:cpuset:/ci\n4:cpu,cpuacct:/ci\n3:memory:/ci\n1:name=systemd:/ci\n")
    if mountinfo is not None:
        write(root / "proc/self/mountinfo", mountinfo)
    directory = root / mount.lstrip("/") / "ci"
    directory.mkdir(parents=True, exist_ok=True)
    if quota is not None:
        write(directory / "cpu.cfs_quota_us", quota + "\n")
    if period is not None:
        write(directory / "cpu.cfs_period_us", period + "\n")
    return root


def cpus(root: Path, affinity: int) -> int:
    return usable_cpus(root=str(root), environ={}, affinity=lambda: affinity)


class TestCgroupV2:
    def test_quota_rounds_up(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, "150000 100000")
        assert cgroup_cpu_limit(str(root)) == 2
        assert cpus(root, affinity=4) == 2

    def test_max_means_affinity_wins(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, "max 100000")
        assert cgroup_cpu_limit(str(root)) is None
        assert cpus(root, affinity=4) == 4

    def test_quota_smaller_than_affinity_wins(self, tmp_path: Path) -> None:
        assert cpus(v2_tree(tmp_path, "100000 100000"), affinity=2) == 1

    def test_affinity_smaller_than_quota_wins(self, tmp_path: Path) -> None:
        assert cpus(v2_tree(tmp_path, "800000 100000"), affinity=2) == 2

    def test_a_sliver_of_a_cpu_is_one(self, tmp_path: Path) -> None:
        assert cgroup_cpu_limit(str(v2_tree(tmp_path, "1000 100000"))) == 1

    def test_an_ancestors_quota_limits(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, "max 100000", path="/ci/job")
        write(root / "sys/fs/cgroup/ci/cpu.max", "300000 100000\n")
        assert cgroup_cpu_limit(str(root)) == 3

    def test_the_smallest_quota_on_the_way_up_wins(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, "300000 100000", path="/ci/job")
        write(root / "sys/fs/cgroup/ci/cpu.max", "200000 100000\n")
        assert cgroup_cpu_limit(str(root)) == 2

    def test_conventional_mount_without_mountinfo(self, tmp_path: Path) -> None:
        assert cgroup_cpu_limit(str(v2_tree(tmp_path, "150000 100000", mountinfo=None))) == 2

    def test_container_without_cgroup_namespace(self, tmp_path: Path) -> None:
        """/proc/self/cgroup names the host path; the mount shows only the container's subtree."""
        scope = "/system.slice/docker-0123.scope"
        write(tmp_path / "proc/self/cgroup", f"0::{scope}\n")
        write(tmp_path / "proc/self/mountinfo", f"30 23 0:26 {scope} /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
        write(tmp_path / "sys/fs/cgroup/cpu.max", "200000 100000\n")
        assert cgroup_cpu_limit(str(tmp_path)) == 2

    def test_a_path_outside_the_mount_reads_the_mount_point(self, tmp_path: Path) -> None:
        write(tmp_path / "proc/self/cgroup", "0::/../../elsewhere\n")
        write(tmp_path / "proc/self/mountinfo", V2_MOUNTINFO)
        write(tmp_path / "sys/fs/cgroup/cpu.max", "200000 100000\n")
        assert cgroup_cpu_limit(str(tmp_path)) == 2

    def test_an_escaped_mount_point(self, tmp_path: Path) -> None:
        write(tmp_path / "proc/self/cgroup", "0::/\n")
        write(tmp_path / "proc/self/mountinfo", "30 23 0:26 / /my\\040cgroups rw - cgroup2 cgroup2 rw\n")
        write(tmp_path / "my cgroups/cpu.max", "200000 100000\n")
        assert cgroup_cpu_limit(str(tmp_path)) == 2

    @pytest.mark.parametrize("cpu_max", ["", "max", "150000", "abc 100000", "0 100000", "150000 0", "-1 100000"])
    def test_garbled_cpu_max_is_no_limit(self, tmp_path: Path, cpu_max: str) -> None:
        root = v2_tree(tmp_path, cpu_max)
        assert cgroup_cpu_limit(str(root)) is None
        assert cpus(root, affinity=3) == 3


class TestCgroupV1:
    def test_quota_rounds_up(self, tmp_path: Path) -> None:
        root = v1_tree(tmp_path, "150000")
        assert cgroup_cpu_limit(str(root)) == 2
        assert cpus(root, affinity=4) == 2

    def test_no_quota_means_affinity_wins(self, tmp_path: Path) -> None:
        root = v1_tree(tmp_path, "-1")
        assert cgroup_cpu_limit(str(root)) is None
        assert cpus(root, affinity=4) == 4

    def test_quota_smaller_than_affinity_wins(self, tmp_path: Path) -> None:
        assert cpus(v1_tree(tmp_path, "50000"), affinity=2) == 1

    def test_affinity_smaller_than_quota_wins(self, tmp_path: Path) -> None:
        assert cpus(v1_tree(tmp_path, "400000"), affinity=2) == 2

    @pytest.mark.parametrize("mount", ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"])
    def test_conventional_mounts_without_mountinfo(self, tmp_path: Path, mount: str) -> None:
        assert cgroup_cpu_limit(str(v1_tree(tmp_path, "150000", mount=mount, mountinfo=None))) == 2

    def test_cpuset_and_cpuacct_mounts_are_not_the_cpu_controller(self, tmp_path: Path) -> None:
        mountinfo = (
            "33 25 0:29 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
            "34 25 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
            "35 25 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        )
        root = v1_tree(tmp_path, "150000", mount="/sys/fs/cgroup/cpu", mountinfo=mountinfo)
        for wrong in ("cpuacct", "cpuset"):
            write(root / "sys/fs/cgroup" / wrong / "ci/cpu.cfs_quota_us", "50000\n")
            write(root / "sys/fs/cgroup" / wrong / "ci/cpu.cfs_period_us", "100000\n")
        assert cgroup_cpu_limit(str(root)) == 2

    def test_quota_without_period_is_no_limit(self, tmp_path: Path) -> None:
        assert cgroup_cpu_limit(str(v1_tree(tmp_path, "150000", period=None))) is None

    def test_hybrid_host_reads_v1_when_v2_has_no_cpu_controller(self, tmp_path: Path) -> None:
        """systemd's hybrid layout: cgroup2 at /sys/fs/cgroup/unified, without cpu.max."""
        write(tmp_path / "proc/self/cgroup", "1:cpu:/\n0::/\n")
        write(
            tmp_path / "proc/self/mountinfo",
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
        (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
        write(tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "50000\n")
        write(tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
        assert cgroup_cpu_limit(str(tmp_path)) == 1

    def test_v1_and_v2_both_limit(self, tmp_path: Path) -> None:
        root = v1_tree(tmp_path, "300000")
        with (root / "proc/self/cgroup").open("a") as file:
            file.write("0::/ci\n")
        with (root / "proc/self/mountinfo").open("a") as file:
            file.write("41 25 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
        write(root / "sys/fs/cgroup/unified/ci/cpu.max", "200000 100000\n")
        assert cgroup_cpu_limit(str(root)) == 2


class TestUnreadable:
    def test_no_proc_is_no_limit(self, tmp_path: Path) -> None:
        assert cgroup_cpu_limit(str(tmp_path)) is None
        assert cpus(tmp_path, affinity=3) == 3

    def test_a_directory_where_a_file_should_be(self, tmp_path: Path) -> None:
        (tmp_path / "proc/self/cgroup").mkdir(parents=True)
        assert cgroup_cpu_limit(str(tmp_path)) is None

    def test_bytes_that_are_not_text(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, None)
        (root / "sys/fs/cgroup/ci/job").mkdir(parents=True)
        (root / "sys/fs/cgroup/ci/job/cpu.max").write_bytes(b"\xff\xfe 100000")
        assert cgroup_cpu_limit(str(root)) is None

    def test_garbled_proc_files(self, tmp_path: Path) -> None:
        write(tmp_path / "proc/self/cgroup", "nonsense\n0:\n::\n4:cpu:relative\n")
        write(tmp_path / "proc/self/mountinfo", "nonsense\n1 2 - cgroup2\n")
        assert cgroup_cpu_limit(str(tmp_path)) is None

    def test_at_least_one(self, tmp_path: Path) -> None:
        assert cpus(tmp_path, affinity=0) == 1


class TestEnvWorkers:
    @pytest.mark.parametrize(("value", "workers"), [("0", 0), ("1", 1), ("4", 4), (" 8\n", 8), ("012", 12)])
    def test_a_whole_number(self, value: str, workers: int) -> None:
        assert env_workers({AUTO_WORKERS_ENV: value}) == workers

    @pytest.mark.parametrize("environ", [{}, {AUTO_WORKERS_ENV: ""}, {AUTO_WORKERS_ENV: "  "}])
    def test_unset_or_empty(self, environ: dict[str, str]) -> None:
        """Empty counts as unset, as in pytest-xdist: CI templates expand an unset input to ''."""
        assert env_workers(environ) is None

    @pytest.mark.parametrize("value", ["abc", "-1", "2.5", "+3", "1_0", "\u0663", "4 workers"])
    def test_anything_else_is_an_error_naming_the_variable_and_value(self, value: str) -> None:
        with pytest.raises(AutoWorkersError) as info:
            env_workers({AUTO_WORKERS_ENV: value})
        assert str(info.value) == BAD_AUTO_WORKERS.format(name=AUTO_WORKERS_ENV, value=value)
        assert info.value.value == value

    def test_is_a_value_error_that_starts_with_the_variable_and_value(self) -> None:
        with pytest.raises(ValueError, match=r"^PYTEST_XDIST_AUTO_NUM_WORKERS='abc': "):
            env_workers({AUTO_WORKERS_ENV: "abc"})


class TestPythonCpuCount:
    @pytest.mark.parametrize(
        ("value", "count"),
        [("3", 3), (" 1 ", 1), ("default", None), ("0", None), ("-2", None), ("many", None), ("", None)],
    )
    def test_parse(self, value: str, count: int | None) -> None:
        assert python_cpu_count({PYTHON_CPU_COUNT_ENV: value}) == count

    def test_unset(self) -> None:
        assert python_cpu_count({}) is None

    @pytest.mark.skipif(INTERPRETER_READS_CPU_COUNT, reason="Python 3.13+ applies it in os.process_cpu_count()")
    def test_overrides_affinity_before_313(self, tmp_path: Path) -> None:
        environ = {PYTHON_CPU_COUNT_ENV: "3"}
        assert usable_cpus(root=str(tmp_path), environ=environ, affinity=lambda: 2) == 3
        assert usable_cpus(root=str(tmp_path), environ=environ, affinity=lambda: 8) == 3

    @pytest.mark.skipif(INTERPRETER_READS_CPU_COUNT, reason="Python 3.13+ applies it in os.process_cpu_count()")
    def test_the_quota_caps_the_override_before_313(self, tmp_path: Path) -> None:
        root = v2_tree(tmp_path, "100000 100000")
        assert usable_cpus(root=str(root), environ={PYTHON_CPU_COUNT_ENV: "3"}, affinity=lambda: 2) == 1

    def test_default_means_affinity(self, tmp_path: Path) -> None:
        assert usable_cpus(root=str(tmp_path), environ={PYTHON_CPU_COUNT_ENV: "default"}, affinity=lambda: 2) == 2

    @pytest.mark.skipif(not INTERPRETER_READS_CPU_COUNT, reason="before 3.13 restask reads the variable itself")
    def test_left_to_the_interpreter_from_313(self, tmp_path: Path) -> None:
        """The interpreter read it at start; ``affinity`` (os.process_cpu_count() by default) reflects it."""
        assert usable_cpus(root=str(tmp_path), environ={PYTHON_CPU_COUNT_ENV: "3"}, affinity=lambda: 2) == 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_real_affinity_restriction_is_honoured() -> None:
    """A child restricted to one CPU uses 1; unrestricted, it uses what this process may use.

    The unrestricted run is the negative control: where this process may use
    2 or more CPUs (the project's 2-core CI machine), it prints that number,
    so the 1 comes from the affinity, not from the machine.
    """
    one_cpu = {min(os.sched_getaffinity(0))}
    environ = {name: value for name, value in os.environ.items() if name != PYTHON_CPU_COUNT_ENV}

    def run(restrict: bool) -> str:
        result = subprocess.run(
            [sys.executable, "-c", "from pytest_restask.cpus import usable_cpus; print(usable_cpus())"],
            preexec_fn=(lambda: os.sched_setaffinity(0, one_cpu)) if restrict else None,
            env=environ,
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    assert run(restrict=True) == "1"
    affinity = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    assert run(restrict=False) == str(affinity if limit is None else min(affinity, limit))
