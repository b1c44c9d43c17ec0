"""The libc wrappers: errors that name the syscall, flags that print as
names, and narration as exact text."""

import errno
import io
import os

import pytest

from conftest import needs_root
from runbox import libc, trace
from runbox.libc import (
    CLONE_NEWNS, CLONE_NEWPID, MS_PRIVATE, MS_REC, CloneFlag, MountFlag,
)


@pytest.fixture
def narration(monkeypatch):
    """Narration into a string, plain, with a fixed pid."""
    out = io.StringIO()
    monkeypatch.setattr(os, "getpid", lambda: 42)
    trace.enable(file=out, color=False)
    trace.set_role("parent")
    yield out
    trace.disable()


def test_flags_print_as_kernel_names():
    assert libc.flag_names(CLONE_NEWNS | CLONE_NEWPID) == \
        "CLONE_NEWNS|CLONE_NEWPID"
    assert libc.flag_names(MS_REC | MS_PRIVATE) == "MS_REC|MS_PRIVATE"
    assert libc.flag_names(MountFlag(0)) == "0"
    # Bits the kernel headers name nothing for stay visible, as hex.
    assert libc.flag_names(CloneFlag(0x1 | CLONE_NEWNS)) == "CLONE_NEWNS|0x1"


@needs_root
def test_mount_on_a_missing_directory_is_enoent(tmp_path):
    # C04: errno from ctypes arrives intact, never 0 ("Success").
    target = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as caught:
        libc.mount("tmpfs", str(target), "tmpfs")
    err = caught.value
    assert err.errno == errno.ENOENT
    assert err.strerror == "mount: No such file or directory"
    assert err.filename == str(target)
    assert str(target) in str(err) and "mount" in str(err)
    assert err.hint == "the mount point (or the source) does not exist"


def test_unshare_with_an_invalid_flag_is_einval():
    # C04: the same for a flag no kernel knows.
    with pytest.raises(OSError) as caught:
        libc.unshare(0x1)
    assert caught.value.errno == errno.EINVAL
    assert caught.value.strerror == "unshare: Invalid argument"


def test_narration_of_a_call_and_a_failure(narration, tmp_path):
    libc.chdir(str(tmp_path), why="a reason")
    with pytest.raises(OSError):
        libc.rmdir(str(tmp_path / "nope"))
    assert narration.getvalue() == (
        f'parent 42    chdir("{tmp_path}") = 0\n'
        "             why: a reason\n"
        f'parent 42    rmdir("{tmp_path}/nope") = -1 ENOENT '
        "(No such file or directory)\n"
    )


def test_failure_narration_gives_the_likely_cause(narration):
    with pytest.raises(OSError):
        libc.unshare(0x1, why="to fail")
    assert narration.getvalue() == (
        "parent 42    unshare(0x1) = -1 EINVAL (Invalid argument)\n"
        "             likely: a flag this kernel does not know, or one it "
        "refuses here\n"
        "             why: to fail\n"
    )


def test_quiet_means_no_narration(capsys, tmp_path):
    trace.disable()
    libc.chdir(str(tmp_path))
    assert capsys.readouterr().err == ""


def test_wait_status_in_words():
    assert libc.describe_status(0) == "exited with 0"
    assert libc.describe_status(7 << 8) == "exited with 7"
    assert libc.describe_status(9) == "killed by SIGKILL"
