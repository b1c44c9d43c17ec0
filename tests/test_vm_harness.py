"""The cgroup v2 VM is what it claims to be: pure cgroup v2, and containers run.

These checks run inside the VM of vm/run-tests (`vm/run-tests
tests/test_vm_harness.py`) and skip anywhere else that is not pure cgroup v2,
such as a host with the hybrid v1 layout.  They prove the harness, not
runbox: the kernel offers the controllers stage 04 needs, and stage 03's
overlay and namespaces work on the VM's disk and tmpfs.
"""

import ctypes
import os
from pathlib import Path

import pytest

from conftest import needs_root

CGROUP = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC = 0x63677270


def statfs_type(path: Path) -> int:
    """f_type of statfs(2), which os.statvfs does not report."""
    # struct statfs on 64-bit Linux opens with a long f_type; 120 bytes is
    # the whole struct, so the kernel never writes past the buffer.
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(120)
    if libc.statfs(str(path).encode(), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}", str(path))
    return ctypes.c_long.from_buffer(buf).value


def v1_hierarchies() -> list[str]:
    """Mount points of cgroup v1 hierarchies, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        # After the " - " separator comes the filesystem type.
        return [line.split()[4] for line in f
                if line.split(" - ", 1)[1].split()[0] == "cgroup"]


def pure_v2() -> bool:
    try:
        return (statfs_type(CGROUP) == CGROUP2_SUPER_MAGIC
                and not v1_hierarchies())
    except FileNotFoundError:
        return False


pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not pure_v2(),
        reason="needs a pure cgroup v2 system (this one has no cgroup2 on"
               " /sys/fs/cgroup, or has v1 hierarchies): run it in the VM"
               " with vm/run-tests tests/test_vm_harness.py"),
]


def test_cgroup_root_is_cgroup2():
    assert statfs_type(CGROUP) == CGROUP2_SUPER_MAGIC
    assert v1_hierarchies() == []


def test_root_offers_the_controllers_stage_04_needs():
    offered = (CGROUP / "cgroup.controllers").read_text().split()
    assert {"memory", "pids", "cpu"} <= set(offered)


def test_child_cgroup_gets_the_controllers_files():
    (CGROUP / "cgroup.subtree_control").write_text("+memory +pids +cpu")
    child = CGROUP / f"runbox-vm-test-{os.getpid()}"
    child.mkdir()
    try:
        for name in ("memory.max", "pids.max", "cpu.max"):
            assert (child / name).is_file(), name
        assert (child / "memory.max").read_text() == "max\n"
        assert (child / "pids.max").read_text() == "max\n"
    finally:
        # A cgroup with no processes in it goes with rmdir(2), files and all.
        child.rmdir()
    assert not child.exists()


def test_stage3_container_runs(stage):
    # Overlay lower on the VM's ext4 disk, upper and merged on its tmpfs,
    # pivot_root and new namespaces: stage 03 end to end.
    result = stage(3, "sh", "-c", "echo ok; echo $$")
    assert result.stdout == "ok\n1\n", result.stderr
    assert result.returncode == 0
