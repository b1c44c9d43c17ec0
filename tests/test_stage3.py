"""Stage 03: an overlay root, pivot_root, /proc, /sys and /dev inside."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    STAGES, Background, needs_root, press_until_it_ends, runbox_lines,
)

pytestmark = needs_root

CONTAINER_MOUNTS = {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm",
                    "/dev/mqueue"}


def snapshot(root: Path) -> dict:
    """Every path under root with its type, mode, size and mtime."""
    found = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        found[str(path.relative_to(root))] = (
            st.st_mode, st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def rootfs_copy(image_root, tmp_path_factory) -> Path:
    """A plain directory holding a copy of the default image (C09)."""
    dest = tmp_path_factory.mktemp("plain") / "rootfs"
    shutil.copytree(image_root, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def lab_rootfs(image_root, tmp_path_factory) -> Path:
    """The default image plus the escape probes in /lab."""
    from runbox import lab

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the probes: make test-deps")
    return lab.build_lab_rootfs(tmp_path_factory.mktemp("lab") / "rootfs")


def test_the_readme_example(stage):
    # Hostname, PID 1, the busybox root and only the container's mounts.
    result = stage(3, "--hostname", "box", "sh", "-c",
                   "hostname; echo $$; ls /; cat /proc/mounts")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["box", "1"]
    assert {"bin", "etc", "proc", "dev"} <= set(lines)
    assert result.returncode == 0


def test_exit_status_passes_through(stage):
    assert stage(3, "sh", "-c", "exit 7").returncode == 7


def test_only_container_mounts_and_no_old_root(stage, state_root):
    # C10: the host's tree is detached and put_old is gone.
    result = stage(3, "sh", "-c",
                   f"cat /proc/mounts; ls -a /; test -e {state_root} "
                   "&& echo host-visible")
    points = {line.split()[1] for line in result.stdout.splitlines()
              if len(line.split()) == 6}
    assert points == CONTAINER_MOUNTS
    names = result.stdout.split()
    assert ".oldroot" not in names
    assert "host-visible" not in names


@pytest.mark.parametrize("argv, code, words", [
    (["/nonexistent"], 127, "/nonexistent: no such file or directory"),
    (["/etc"], 126, "/etc: cannot execute: is a directory"),
    (["nosuchcmd"], 127, "nosuchcmd: command not found"),
])
def test_command_problems(stage, argv, code, words):
    # C02: each a single line naming the command; nothing left behind.
    result = stage(3, *argv)
    assert result.returncode == code
    assert result.stderr.splitlines() == [f"runbox: {words}"]


@pytest.mark.parametrize("rootfs, words", [
    ("/nonexistent/rootfs", "rootfs /nonexistent/rootfs does not exist"),
    ("nosuchimage", "rootfs 'nosuchimage' not found in"),
])
def test_missing_rootfs_is_125(stage, rootfs, words):
    result = stage(3, "--rootfs", rootfs, "true")
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith(f"runbox: {words}")


def test_lookup_happens_inside_the_new_root(stage):
    # C03: an empty environment still gets the default PATH, and a
    # command only the host has is not found.
    assert stage(3, "sh", "-c", "echo ok", env={}).stdout == "ok\n"
    assert shutil.which("python3")
    result = stage(3, "python3", "-c", "pass", env={})
    assert result.returncode == 127
    assert runbox_lines(result.stderr) == [
        "runbox: python3: command not found"]


def test_environment_is_the_containers(stage):
    result = stage(3, "--hostname", "box", "-e", "GREETING=hi", "env")
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["GREETING"] == "hi" and env["HOSTNAME"] == "box"
    assert env["PATH"].startswith("/usr/local/sbin:")
    assert "RUNBOX_ROOT" not in env


def test_etc_files_name_the_container(stage):
    result = stage(3, "--hostname", "box", "sh", "-c",
                   "cat /etc/hostname; grep box /etc/hosts")
    assert result.stdout.splitlines() == ["box", "127.0.1.1\tbox"]


def test_dev_works(stage):
    # C12: the nodes exist, are character devices, and world-writable.
    result = stage(3, "sh", "-c",
                   "echo x >/dev/null && ls -l /dev/null /dev/zero "
                   "/dev/urandom /dev/tty && ls -d /dev/pts /dev/shm "
                   "/dev/ptmx && head -c 4 /dev/zero | wc -c")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for line in lines[:4]:
        assert line.startswith("crw-rw-rw-"), line
    assert sorted(lines[4:7]) == ["/dev/ptmx", "/dev/pts", "/dev/shm"]
    assert lines[7].strip() == "4"


def test_plain_directory_rootfs(stage, rootfs_copy):
    # C09: a directory that is no mount point works as a rootfs.
    result = stage(3, "--rootfs", str(rootfs_copy), "true")
    assert result.returncode == 0


def test_image_stays_pristine(stage, rootfs_copy):
    # C13: destroying the root inside changes nothing on disk.
    before = snapshot(rootfs_copy)
    result = stage(3, "--rootfs", str(rootfs_copy), "sh", "-c",
                   "rm -rf /bin; touch /new; ls /bin 2>/dev/null; echo gone")
    assert result.stdout == "gone\n"
    assert snapshot(rootfs_copy) == before
    again = stage(3, "--rootfs", str(rootfs_copy), "sh", "-c",
                  "ls /bin/sh; ls /new 2>&1 || true")
    assert again.stdout.startswith("/bin/sh\n")
    assert "No such file" in again.stdout


def test_shared_parent_mount(image_root, tmp_path):
    # C08: rootfs and state under a tmpfs with shared propagation.
    # pivot_root refuses a shared parent mount unless / is made private.
    base = tmp_path / "shared"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(base)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(base)], check=True)
        shutil.copytree(image_root, base / "rootfs", symlinks=True)
        with open("/proc/self/mountinfo") as f:
            before = f.read()
        result = subprocess.run(
            [sys.executable, str(STAGES[3]), "-q", "--rootfs",
             str(base / "rootfs"), "sh", "-c", "cat /proc/mounts"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "RUNBOX_ROOT": str(base / "state")})
        with open("/proc/self/mountinfo") as f:
            assert f.read() == before
        assert result.returncode == 0, result.stderr
        assert os.listdir(base / "state/containers") == []
    finally:
        subprocess.run(["umount", str(base)], check=True)


def test_chroot_escape_and_pivot_root(stage, lab_rootfs, tmp_path):
    # C11: chroot alone lets a root process climb out; pivot_root does
    # not.  The probe only reads a marker file the test made on the host.
    marker = tmp_path / "marker"
    marker.write_text("host-only\n")
    weak = stage(3, "--chroot", "--rootfs", str(lab_rootfs),
                 "/lab/chroot_escape", str(marker))
    assert weak.stdout == f"ESCAPED: {marker}: host-only\n"
    strong = stage(3, "--rootfs", str(lab_rootfs),
                   "/lab/chroot_escape", str(marker))
    assert strong.stdout.startswith(f"contained: {marker}: No such file")


def test_term_is_forwarded_and_cleanup_runs(state_root, image_root):
    with Background(3, "sh", "-c", "trap 'exit 3' TERM; echo ready; "
                 "while :; do sleep 0.1; done",
                 state_root=state_root, image_root=image_root) as proc:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 3


def test_second_signal_kills_a_deaf_pid_1(state_root, image_root):
    # PID 1 ignores signals it has no handler for: a second one kills.
    # Signals sent at once may merge into one, so keep pressing Ctrl-C.
    # sleep is PID 1 itself (a shell might catch SIGINT), and only once its
    # exec is done does the test start.
    with Background(3, "sleep", "60", state_root=state_root,
                 image_root=image_root) as proc:
        cmdline = None
        for _ in range(1000):
            bundles = list((state_root / "containers").glob("*/pid"))
            if bundles:
                pid = bundles[0].read_text().split()[0]
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    pass
                if cmdline == b"sleep\x0060\x00":
                    break
            time.sleep(0.01)
        assert cmdline == b"sleep\x0060\x00"
        code = press_until_it_ends(proc, signal.SIGINT)
        assert code == 128 + signal.SIGKILL


def test_a_failed_setup_step_is_one_line(stage, tmp_path, image_root):
    # A syscall failing in the child reaches the user once, naming the
    # call and the path, and the container's directory is still removed.
    rootfs = tmp_path / "rootfs"
    shutil.copytree(image_root, rootfs, symlinks=True)
    (rootfs / "proc").rmdir()
    (rootfs / "proc").write_text("not a directory\n")
    result = stage(3, "--rootfs", str(rootfs), "true")
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        "runbox: mount: Not a directory: /proc"]


def test_etc_symlinks_in_the_image_are_not_followed(stage, tmp_path,
                                                    image_root):
    # An image whose /etc/hosts points at a host path: runbox writes the
    # container's own file instead, and the image keeps its link.
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    rootfs = tmp_path / "rootfs"
    shutil.copytree(image_root, rootfs, symlinks=True)
    (rootfs / "etc/hosts").unlink()
    (rootfs / "etc/hosts").symlink_to("../../../../../.." + str(victim))
    result = stage(3, "--rootfs", str(rootfs), "--hostname", "box",
                   "cat", "/etc/hosts")
    assert "box" in result.stdout
    assert victim.read_text() == "untouched\n"
    assert os.readlink(rootfs / "etc/hosts").endswith(str(victim))


def test_orphan_of_a_killed_runbox_is_collected(state_root, image_root):
    # Stage 03 has no parent-death signal: SIGKILL runbox and the
    # container runs on, its directory with it.  gc ends that container
    # (by its recorded pid and start time) and then removes its directory.
    with Background(3, "sh", "-c", "echo $$; echo ready; exec sleep 60",
                 state_root=state_root, image_root=image_root) as proc:
        assert proc.stdout.readline() == "1\n"
        assert proc.stdout.readline() == "ready\n"
        [bundle] = (state_root / "containers").iterdir()
        pid = int((bundle / "pid").read_text().split()[0])
        os.kill(proc.pid, signal.SIGKILL)  # runbox only
        proc.wait()
        assert Path(f"/proc/{pid}").exists()
        result = subprocess.run(
            [sys.executable, "-m", "runbox.container", "gc"],
            capture_output=True, text=True,
            env={**os.environ, "RUNBOX_ROOT": str(state_root)})
        assert result.stdout == f"removed {bundle.name}\n"
        assert not bundle.exists()
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"
