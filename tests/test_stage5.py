"""Stage 05: capabilities, no_new_privs, seccomp, masked paths, fds, users.

Each assertion reads what the kernel reports inside the container.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    STAGES, Background, assert_locked_down, cap_mask, container_pid, needs_root,
    press_until_it_ends, status,
)
from runbox import capabilities

pytestmark = needs_root




@pytest.fixture(scope="module")
def lab_rootfs(image_root, tmp_path_factory):
    from runbox import lab

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the probes: make test-deps")
    return lab.build_lab_rootfs(tmp_path_factory.mktemp("lab") / "rootfs")


def test_the_done_when_example(stage):
    # C20, C21, C22 in one: the default set, NoNewPrivs, Seccomp.
    result = stage(5, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert_locked_down(result.stdout)


def test_no_cap_sys_admin(stage):
    result = stage(5, "cat", "/proc/self/status")
    bnd = int(status(result.stdout)["CapBnd"], 16)
    assert not bnd & (1 << capabilities.NUMBERS["CAP_SYS_ADMIN"])


def test_cap_add_and_drop(stage):
    result = stage(5, "--cap-drop", "ALL", "--cap-add", "net_bind_service",
                   "cat", "/proc/self/status")
    st = status(result.stdout)
    assert st["CapEff"] == cap_mask(["CAP_NET_BIND_SERVICE"])
    assert st["CapBnd"] == st["CapEff"]


@pytest.mark.parametrize("opts, words", [
    (["--cap-add", "CAP_NOPE"], "unknown capability 'CAP_NOPE'"),
    (["--user", "nosuchuser"], "unable to find user nosuchuser"),
    (["--user", "1000:"], "bad user '1000:'"),
    # (uid_t)-1 is "no change" to setuid(2): not an id a user can have.
    (["--user", "4294967295"],
     "bad user '4294967295': id out of range: use 0 to 4294967294"),
    (["--user", "0:4294967295"], "bad user '0:4294967295': id out of"),
    (["--security-opt", "bogus"], "unknown security option 'bogus'"),
])
def test_bad_input_is_one_line(stage, opts, words):
    result = stage(5, *opts, "true")
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith(f"runbox: {words}")


def test_a_profile_refusing_execve_is_one_line(stage, tmp_path):
    # Not a crash of runbox's child that reads as the command's 139.
    profile = tmp_path / "deny-all.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ERRNO"}')
    result = stage(5, "--security-opt", f"seccomp={profile}", "true")
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        f"runbox: seccomp profile {profile}: it does not allow execve, "
        "which starts the command"]


def test_malformed_profile_is_one_line(stage, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text("{not json")
    result = stage(5, "--security-opt", f"seccomp={profile}", "true")
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith("runbox: ") and str(profile) in line


def test_user_switch_drops_capabilities(stage):
    result = stage(5, "--user", "65534:65534", "cat", "/proc/self/status")
    st = status(result.stdout)
    assert st["Uid"].split() == ["65534"] * 4
    assert st["Gid"].split() == ["65534"] * 4
    assert st["CapEff"] == st["CapPrm"] == "0" * 16
    assert st["CapBnd"] == cap_mask(capabilities.DEFAULT)


def test_user_by_name(stage):
    assert stage(5, "--user", "nobody", "id", "-u").stdout == "65534\n"


def test_setuid_binary_does_not_raise_privileges(stage, lab_rootfs):
    # C21: a setuid-root binary run as a non-root user stays that user
    # under no_new_privs; without it, it would become root.
    run = ["--rootfs", str(lab_rootfs), "--user", "1000:1000",
           "/lab/show_ids"]
    assert stage(5, *run).stdout == "uid=1000 euid=1000\n"
    unsafe = stage(5, "--security-opt", "no-new-privileges=false", *run)
    assert unsafe.stdout == "uid=1000 euid=0\n"


def test_threads_work_under_the_default_profile(stage, lab_rootfs):
    # C23: clone3 answers ENOSYS, so glibc falls back to clone.
    result = stage(5, "--rootfs", str(lab_rootfs), "/lab/thread")
    assert result.stdout == "thread ok\n"


def test_blocked_syscalls(stage):
    # mount and unshare: no capability for them, and the filter says EPERM.
    result = stage(5, "sh", "-c",
                   "mount -t tmpfs t /mnt 2>&1; unshare -U true 2>&1; "
                   "echo end")
    assert "end" in result.stdout
    assert "Operation not permitted" in result.stdout
    assert "mounted" not in result.stdout


def test_masked_and_readonly_paths(stage):
    # What exists on this host is covered inside: a mount on each masked
    # path (reading it gives nothing), read-only mounts on the others.
    from runbox import security

    result = stage(5, "sh", "-c", "cat /proc/self/mountinfo; "
                   "echo h > /proc/sysrq-trigger 2>/dev/null || echo refused")
    assert result.returncode == 0, result.stderr
    mounts = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) > 5:
            mounts[fields[4]] = fields[5].split(",")
    for path in security.MASKED_PATHS:
        if os.path.exists(path):
            assert path in mounts, path
    for path in security.READONLY_PATHS:
        if os.path.exists(path):
            assert "ro" in mounts[path], path
    assert result.stdout.splitlines()[-1] == "refused"
    empty = stage(5, "sh", "-c", "cat /proc/keys /proc/timer_list "
                  "2>/dev/null | wc -c")
    assert empty.stdout.strip() == "0"


@pytest.mark.parametrize("fd", range(3, 10))
def test_workdir_through_a_leaked_fd_is_refused(stage, fd):
    # C24: fds above 2 are closed before the chdir, so /proc/self/fd/N
    # leads nowhere, and a directory outside the root is refused.
    result = stage(5, "-w", f"/proc/self/fd/{fd}", "pwd")
    assert result.returncode == 125
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("runbox: ")


def test_workdir_inside_works(stage):
    assert stage(5, "-w", "/etc", "pwd").stdout == "/etc\n"


def test_a_missing_workdir_is_made(stage):
    # As docker does: made in the container's root (its overlay), by root.
    result = stage(5, "-u", "nobody", "-w", "/work/here", "sh", "-c",
                   "pwd; ls -ld /work/here")
    cwd, listing = result.stdout.splitlines()
    assert cwd == "/work/here"
    assert listing.split()[:4] == ["drwxr-xr-x", "2", "root", "root"]
    # A file in the way is still refused, in one line.
    refused = stage(5, "-w", "/etc/passwd/x", "pwd")
    assert refused.returncode == 125
    [line] = refused.stderr.splitlines()
    assert line.startswith("runbox: ")


def test_own_session(stage):
    # C25: the container is a session of its own, so the caller's terminal
    # is not its controlling terminal.  Seen from inside: PID 1 leads its
    # session and has no controlling terminal.
    result = stage(5, "sh", "-c", "cat /proc/self/stat")
    fields = result.stdout.rsplit(")", 1)[1].split()
    # After the name: state, ppid, pgrp, session, tty_nr.
    assert fields[3] == "1"
    assert fields[4] == "0"


def test_own_session_seen_from_the_host(state_root, image_root):
    # C25 from the host: the container's PID 1 leads a session that is
    # neither runbox's nor the caller's.  (The caller's own session id may be
    # 0 when its leader lives outside this PID namespace, as under some CI
    # runners; the test does not rely on it.)
    with Background(5, "sleep", "60", state_root=state_root,
                    image_root=image_root) as proc:
        pid = container_pid(state_root, b"sleep\x0060\x00")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(fields[3]) == pid
        assert int(fields[4]) == 0
        assert os.getsid(proc.pid) != pid
        assert os.getsid(0) != pid
        assert press_until_it_ends(proc, signal.SIGTERM) == 128 + signal.SIGKILL


@pytest.fixture
def host_block_device(tmp_path):
    """A block device of the host's holding a known secret: a loop device
    of the test's own over a file, detached at the end."""
    if shutil.which("losetup") is None:
        pytest.skip("needs losetup (util-linux)")
    image = tmp_path / "disk.img"
    image.write_bytes(b"HOST-SECRET-ON-A-DISK\n".ljust(1 << 20, b"\0"))
    made = subprocess.run(["losetup", "--find", "--show", str(image)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        rdev = os.stat(device).st_rdev
        yield os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


READ_DISK = ("mknod {at} b {major} {minor} && head -c 21 {at}; echo; "
             "echo status=$?")


@pytest.mark.parametrize("at", ["/disk", "/dev/disk", "/tmp/disk"])
def test_a_device_node_made_inside_opens_nothing(stage, host_block_device,
                                                 at):
    # CAP_MKNOD stays, as in docker; docker pairs it with a device cgroup.
    # Stage 04 shows the hole: a node of the host's disk reads the disk.
    major, minor = host_block_device
    script = READ_DISK.format(at=at, major=major, minor=minor)
    open_door = stage(4, "sh", "-c", script)
    assert "HOST-SECRET-ON-A-DISK" in open_door.stdout
    # Stage 05: the node can still be made, but not opened.
    closed = stage(5, "sh", "-c", script)
    assert "HOST-SECRET" not in closed.stdout
    assert "Permission denied" in closed.stderr, closed.stderr


@pytest.mark.parametrize("userns", [[], ["--userns"]])
def test_the_dev_nodes_are_no_door_to_the_host_s(stage, userns):
    # CAP_CHOWN and CAP_FOWNER stay: on a node bound from the host's /dev,
    # chmod would change the host's own.  Without a user namespace the
    # nodes are the container's, made inside; with one, the host's bound
    # nodes belong to an unmapped root.
    before = os.stat("/dev/full")
    result = stage(5, *userns, "sh", "-c",
                   "chmod 600 /dev/full; chown 1:1 /dev/full; ls -l /dev/full")
    after = os.stat("/dev/full")
    assert (after.st_mode, after.st_uid, after.st_ctime_ns) == \
        (before.st_mode, before.st_uid, before.st_ctime_ns)
    assert result.stdout.startswith("crw" if userns else "crw-------")


def test_dev_still_works_without_devices_of_its_own(stage):
    result = stage(5, "sh", "-c",
                   "echo x > /dev/null && head -c 4 /dev/zero | wc -c && "
                   "head -c 4 /dev/urandom | wc -c && ls -l /dev/null "
                   "/dev/zero /dev/full /dev/random /dev/urandom /dev/tty; "
                   "echo y > /dev/full; touch /dev/new && echo writable")
    assert result.stdout.splitlines()[:2] == ["4", "4"]
    modes = [line.split()[0] for line in result.stdout.splitlines()[2:8]]
    assert modes == ["crw-rw-rw-"] * 6
    assert "No space left on device" in result.stderr
    assert result.stdout.splitlines()[-1] == "writable"


@pytest.mark.parametrize("n", [4, 5])
def test_ctrl_c_during_setup_is_one_line_at_most(state_root, image_root, n):
    # A terminal's Ctrl-C reaches runbox's whole process group, the child
    # too while it is still runbox's Python, before its exec.  Whenever it
    # comes, runbox ends with 130 (or the command's 0), says so once at
    # most, and leaves nothing (the fixture checks).
    argv = [sys.executable, str(STAGES[n]), "-q", "--rootfs",
            str(image_root), "--pids-limit", "8", "true"]
    for i in range(24):
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
            env={**os.environ, "RUNBOX_ROOT": str(state_root)})
        # Once its container directory is there (Python's own start-up,
        # before that, is no place runbox can answer from), at steps of
        # 2 ms through the cgroup, the fork and the child's set-up.
        containers = state_root / "containers"
        for _ in range(5000):
            if proc.poll() is not None or (
                    containers.is_dir() and any(containers.iterdir())):
                break
            time.sleep(0.001)
        time.sleep(0.002 * i)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), err
        assert err.splitlines() in ([], ["runbox: interrupted by SIGINT"])
        assert not containers.exists() or list(containers.iterdir()) == []
