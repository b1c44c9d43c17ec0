"""Stage 05 with --userns: root inside, an unprivileged uid on the host.

Each assertion reads what the kernel reports: the maps and the status
inside, and the container's process from the host while it runs.  The
non-root tests run runbox as nobody, with Debian's own python3 (the venv's
lives under /root, which nobody cannot read) and the venv's pure-Python
packages on its path.
"""

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (
    REPO, STAGES, Background, assert_locked_down, cap_mask, container_pid,
    needs_root,
    press_until_it_ends, runbox_cgroups, status,
)
from runbox import capabilities, images, userns
from runbox.errors import RunboxError

pytestmark = needs_root




def expected_range() -> tuple[userns.IdMap, userns.IdMap]:
    """What runbox as root maps on this host: root's subuid line or the
    default."""
    default = userns.IdMap(userns.DEFAULT_FIRST, userns.DEFAULT_COUNT)
    return (userns._subid(userns.SUBUID) or default,
            userns._subid(userns.SUBGID) or default)


# --- Root inside, not on the host ----------------------------------------

def test_maps_and_root_inside(stage):
    uids, gids = expected_range()
    result = stage(5, "--userns", "sh", "-c",
                   "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [["0", str(uids.first), str(uids.count)],
                     ["0", str(gids.first), str(gids.count)],
                     ["0"], ["0"]]


def test_capabilities_with_a_user_namespace(stage):
    # C20 with a user namespace too; C21 and C22 as without one.
    result = stage(5, "--userns", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    st = assert_locked_down(result.stdout)
    # Host root's groups were dropped, not merely unmapped.
    assert st["Groups"].strip() == ""


def test_the_host_sees_an_unprivileged_uid(state_root, image_root):
    uids, gids = expected_range()
    with Background(5, "--userns", "sleep", "60", state_root=state_root,
                    image_root=image_root) as proc:
        pid = container_pid(state_root, b"sleep\x0060\x00")
        st = status(Path(f"/proc/{pid}/status").read_text())
        assert st["Uid"].split() == [str(uids.first)] * 4
        assert st["Gid"].split() == [str(gids.first)] * 4
        assert st["Groups"].strip() == ""
        # The user namespace is its own, not the host's.
        assert os.readlink(f"/proc/{pid}/ns/user") != \
            os.readlink("/proc/self/ns/user")
        # sleep as PID 1 ignores TERM; the second one runbox turns into
        # SIGKILL.
        code = press_until_it_ends(proc, signal.SIGTERM)
        assert code == 128 + signal.SIGKILL


def test_host_roots_files_are_nobodys(stage):
    # The device nodes are the host's, bound: their owner is not mapped.
    result = stage(5, "--userns", "sh", "-c",
                   "stat -c '%u %g' /dev/null; echo x > /dev/null && echo ok")
    assert result.stdout == "65534 65534\nok\n"


def test_user_inside_a_user_namespace(stage):
    result = stage(5, "--userns", "--user", "65534:65534", "cat",
                   "/proc/self/status")
    st = status(result.stdout)
    assert st["Uid"].split() == ["65534"] * 4
    assert st["CapEff"] == st["CapPrm"] == "0" * 16
    assert st["CapBnd"] == cap_mask(capabilities.DEFAULT)


def test_mounts_are_the_containers(stage):
    # /proc is the container's own, /sys the host's bound read-only with
    # its cgroup trees covered, and no old root is left.
    result = stage(5, "--userns", "sh", "-c",
                   "cat /proc/self/mountinfo; echo --; ps -o pid; echo --; "
                   "ls /sys/fs/cgroup; touch /sys/x 2>&1")
    info, ps, rest = result.stdout.split("--\n")
    points = {line.split()[4]: line for line in info.splitlines()}
    assert "/.oldroot" not in result.stdout
    assert " - proc " in points["/proc"]
    assert points["/sys"].split()[5].startswith("ro,")
    # Only the container's processes: sh as PID 1, and ps.
    assert ps.split()[1] == "1" and len(ps.split()) == 3
    # The host's cgroup trees are under a cover, empty.
    assert rest == "touch: /sys/x: Read-only file system\n"


# --- The image, shifted --------------------------------------------------

def test_copy_up_leaves_the_image_unchanged(stage, image_root):
    passwd = image_root / "etc/passwd"
    before = passwd.read_bytes(), passwd.stat()
    result = stage(5, "--userns", "sh", "-c",
                   "echo added >> /etc/passwd && tail -1 /etc/passwd; "
                   "stat -c '%u %g' /etc/passwd; rm /bin/ls && echo gone")
    assert result.stdout == "added\n0 0\ngone\n", result.stderr
    after = passwd.read_bytes(), passwd.stat()
    assert after[0] == before[0]
    assert (after[1].st_uid, after[1].st_gid) == (0, 0)
    # lexists: the link points at /bin/busybox, which the host may lack.
    assert os.path.lexists(image_root / "bin/ls")


@pytest.fixture
def named_image(state_root, image_root) -> str:
    """The busybox image as images/bb in the test's own state root."""
    image = state_root / "images" / "bb"
    image.mkdir(parents=True)
    image.chmod(0o700)
    shutil.copytree(image_root, image / "rootfs", symlinks=True)
    return "bb"


def test_shifted_copy_is_made_once_and_removed_with_the_image(
        stage, state_root, named_image):
    uids, gids = expected_range()
    suffix = f"{uids.first}-{uids.count}"
    if gids != uids:
        suffix += f"-{gids.first}-{gids.count}"
    image = state_root / "images" / named_image
    first = stage(5, "--userns", "--rootfs", named_image, "sh", "-c",
                  "echo x >> /etc/hosts && stat -c '%u' /etc/hosts /bin")
    assert first.stdout == "0\n0\n", first.stderr
    copy = image / f"rootfs-{suffix}"
    made = copy.stat()
    assert (made.st_uid, made.st_gid) == (uids.first, gids.first)
    assert (copy / "etc/hosts").stat().st_uid == uids.first
    assert b"x\n" not in (copy / "etc/hosts").read_bytes()
    assert (image / "rootfs/etc/hosts").stat().st_uid == 0
    # No work directory is left, and the next run uses the same copy.
    assert sorted(p.name for p in image.iterdir()) == \
        ["rootfs", f"rootfs-{suffix}"]
    again = stage(5, "--userns", "--rootfs", named_image, "true")
    assert again.returncode == 0
    assert copy.stat().st_ino == made.st_ino
    assert [n for n, _ in images.list_images()] == [named_image]

    images.remove_image(named_image)
    assert not image.exists()


def test_shift_copy_keeps_links_modes_and_specials(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    tool = src / "bin/tool"
    tool.write_text("#!/bin/sh\n")
    os.chown(tool, 0, 7)
    tool.chmod(0o4755)
    os.link(tool, src / "bin/same")
    os.symlink("/etc/shadow", src / "link")
    os.mkfifo(src / "fifo")
    (src / "closed").mkdir(mode=0o500)

    dest = tmp_path / "dest"
    images.shift_copy(src, dest, (200000, 1000), (300000, 1000))
    st = (dest / "bin/tool").stat()
    assert (st.st_uid, st.st_gid) == (200000, 300007)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # chown cleared it; set again
    assert st.st_ino == (dest / "bin/same").stat().st_ino
    assert os.readlink(dest / "link") == "/etc/shadow"
    assert os.lstat(dest / "link").st_uid == 200000
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)
    assert stat.S_IMODE((dest / "closed").stat().st_mode) == 0o500


def test_shift_copy_refuses_an_unmappable_owner(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").touch()
    os.chown(src / "f", 70000, 0)
    with pytest.raises(RunboxError, match="owner 70000:0 lies outside"):
        images.shift_copy(src, tmp_path / "dest", (100000, 65536),
                          (100000, 65536))


def test_reimport_drops_the_stale_copy(state_root, image_root, tmp_path):
    tarball = tmp_path / "bb.tar"
    subprocess.run(["tar", "-C", str(image_root), "-cf", str(tarball), "."],
                   check=True)
    images.import_tarball(tarball, "bb")
    copy = images.shifted_rootfs("bb", (100000, 65536), (100000, 65536))
    assert copy.is_dir()
    images.import_tarball(tarball, "bb", force=True)
    assert not copy.exists()
    assert images.image_rootfs("bb").is_dir()


# --- Signals, cgroups, OOM, gc -------------------------------------------

def test_out_of_memory_is_reported(stage):
    result = stage(5, "--userns", "--memory", "32m", "dd", "if=/dev/zero",
                   "of=/dev/null", "bs=100M", "count=1")
    assert result.returncode == 137
    assert result.stderr.splitlines()[-1] == \
        "runbox: killed: out of memory, limit 32M"


def test_runbox_killed_then_gc(state_root, image_root):
    # The parent-death signal, cleared by setuid inside, was set again:
    # the container dies with runbox, and gc removes what is left.
    before = runbox_cgroups()
    with Background(5, "--userns", "sleep", "60", state_root=state_root,
                    image_root=image_root) as proc:
        pid = container_pid(state_root, b"sleep\x0060\x00")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for _ in range(500):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(
                    ")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":
                break
            time.sleep(0.01)
        else:
            pytest.fail("the container outlived its runbox")
        from runbox import container
        assert len(container.gc()) == 1
    assert runbox_cgroups() == before
    assert list((state_root / "containers").iterdir()) == []


# --- Refusals, in one line -----------------------------------------------

def test_clone_failure_names_the_call(monkeypatch):
    # CLONE_FS with CLONE_NEWUSER is refused before any process is made.
    import io

    from runbox import libc, trace

    out = io.StringIO()
    monkeypatch.setattr(os, "getpid", lambda: 42)
    trace.enable(file=out, color=False)
    trace.set_role("parent")
    try:
        with pytest.raises(OSError) as caught:
            libc.clone(libc.CLONE_NEWUSER | 0x200, why="to fail")
    finally:
        trace.disable()
    assert caught.value.errno == errno.EINVAL
    assert caught.value.strerror == "clone: Invalid argument"
    assert out.getvalue() == (
        "parent 42    clone(CLONE_NEWUSER|0x200|SIGCHLD) = -1 EINVAL "
        "(Invalid argument)\n"
        "             likely: a flag this kernel does not know, or one it "
        "refuses here\n"
        "             why: to fail\n")


@pytest.mark.parametrize("knob, value, rootless, words", [
    ("user/max_user_namespaces", "0", False,
     "user namespaces are disabled on this host "
     "(user.max_user_namespaces=0)"),
    ("kernel/unprivileged_userns_clone", "0", True,
     "this host allows user namespaces to root only "
     "(kernel.unprivileged_userns_clone=0)"),
    ("kernel/apparmor_restrict_unprivileged_userns", "1", True,
     "AppArmor denies user namespaces to programs without a profile"),
])
def test_host_settings_that_forbid(tmp_path, knob, value, rootless, words):
    (tmp_path / knob).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / knob).write_text(value + "\n")
    with pytest.raises(RunboxError) as caught:
        userns.check_host(rootless=rootless, proc_sys=str(tmp_path))
    assert str(caught.value).startswith(f"--userns: {words}")
    if rootless:
        # Root is not bound by these two.
        userns.check_host(rootless=False, proc_sys=str(tmp_path))


def test_subuid_line_for_root(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nroot:200000:1000\n")
    subgid = tmp_path / "subgid"
    subgid.write_text("0:300000:5000\n")
    ids = userns.mapping(subuid=str(subuid), subgid=str(subgid))
    assert ids == userns.Mapping(userns.IdMap(200000, 1000),
                                 userns.IdMap(300000, 5000), rootless=False)
    ids = userns.mapping(subuid=str(tmp_path / "none"), subgid=str(subgid))
    assert ids.uids == userns.IdMap(100000, 65536)


def test_user_namespaces_disabled_is_one_line(state_root, image_root):
    # A real kernel setting: in a user namespace of its own, root may
    # lower user.max_user_namespaces, and runbox there sees 0.
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c",
         'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
         sys.executable, str(STAGES[5]), "-q", "--userns", "--rootfs",
         str(image_root), "true"],
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        "runbox: --userns: user namespaces are disabled on this host "
        "(user.max_user_namespaces=0)"]


def test_unmappable_range_is_one_line(state_root, image_root):
    # Root of a user namespace that maps only itself (runbox in a
    # container) cannot map a range its own namespace lacks.
    uids, _ = expected_range()
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable,
         str(STAGES[5]), "-q", "--userns", "--rootfs", str(image_root),
         "true"],
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        f"runbox: --userns: host uids {uids.shown()} are not mapped in the "
        "user namespace runbox runs in: give root a range there in "
        "/etc/subuid"]


def test_unmapped_caller_is_one_line(state_root, image_root):
    # unshare --user with no map: runbox is uid 65534 there, unmapped,
    # and the kernel would refuse a user namespace below.
    result = subprocess.run(
        ["unshare", "--user", sys.executable, str(STAGES[5]), "-q",
         "--userns", "--rootfs", str(image_root), "true"],
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith("runbox: --userns: runbox runs in a user "
                           "namespace that does not map its own uid")


# --- Run by a user other than root ---------------------------------------

NOBODY = 65534


@pytest.fixture
def as_nobody(image_root):
    """Run stage 05 as uid and gid 65534, on an image and a state root
    that user owns, with a python it can read."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs the system's python3, readable by nobody")
    # Outside pytest's own temporary directories, which nobody cannot
    # enter.
    base = Path(tempfile.mkdtemp(prefix="runbox-rootless-", dir="/tmp"))
    try:
        base.chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "RUNBOX_ROOT": str(base / "state"),
               "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
        setpriv = ["setpriv", "--reuid", str(NOBODY), "--regid",
                   str(NOBODY), "--clear-groups"]
        check = subprocess.run(setpriv + [python, "-c", "import typer, rich"],
                               capture_output=True, env=env)
        if check.returncode != 0:
            pytest.skip(f"{python} cannot import typer and rich as nobody")
        image = base / "state/images/bb"
        image.mkdir(parents=True)
        shutil.copytree(image_root, image / "rootfs", symlinks=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)],
                       check=True)
        image.chmod(0o700)

        def run(*args, timeout=60):
            return subprocess.run(
                setpriv + [python, str(STAGES[5]), "-q", *args],
                capture_output=True, text=True, env=env, timeout=timeout)

        run.state = base / "state"
        yield run
    finally:
        shutil.rmtree(base)


def test_non_root_runbox_with_userns(as_nobody):
    result = as_nobody(
        "--userns", "--rootfs", "bb", "sh", "-c",
        "cat /proc/self/uid_map /proc/self/setgroups; id -u; "
        "cat /proc/self/status; echo added >> /etc/passwd && "
        "tail -1 /etc/passwd; mkdir -m 0 /closed")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["0", str(NOBODY), "1"]
    assert lines[1:3] == ["deny", "0"]
    st = status(result.stdout)
    for key in ("CapBnd", "CapPrm", "CapEff"):
        assert st[key] == cap_mask(capabilities.DEFAULT), key
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert lines[-1] == "added"
    # Nothing left, though overlay made work/work with mode 0 and the
    # container a directory closed to all.
    assert list((as_nobody.state / "containers").iterdir()) == []
    image_passwd = as_nobody.state / "images/bb/rootfs/etc/passwd"
    assert b"added" not in image_passwd.read_bytes()


@pytest.mark.parametrize("args, line", [
    (["--memory", "64m"], "--memory, --cpus and --pids-limit need a cgroup, "
                          "and a non-root runbox makes none: run runbox as "
                          "root"),
    (["--user", "1000"], "--user: a non-root runbox maps its own uid alone, "
                         "as root, so no other user exists inside"),
])
def test_non_root_refusals_are_one_line(as_nobody, args, line):
    result = as_nobody("--userns", "--rootfs", "bb", *args, "true")
    assert result.returncode == 125
    assert result.stderr.splitlines() == [f"runbox: {line}"]


def test_non_root_needs_a_rootfs_of_its_own(as_nobody, image_root,
                                            tmp_path):
    # root's images are closed to other users (images/NAME is 0700).
    closed = as_nobody("--userns", "--rootfs", str(image_root), "true")
    assert closed.returncode == 125
    assert closed.stderr.splitlines() == [
        f"runbox: rootfs {image_root}: permission denied: a non-root "
        "runbox needs a rootfs of its own, --rootfs DIR"]
    # One it may read but does not own: it could not shift its owners,
    # and root inside could not write even /etc/hostname.
    readable = as_nobody.state.parent / "root-owned"
    shutil.copytree(image_root, readable, symlinks=True)
    result = as_nobody("--userns", "--rootfs", str(readable), "true")
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        f"runbox: rootfs {readable} belongs to uid 0: a non-root runbox "
        "runs only on a rootfs its user owns (copy one: "
        "stages/05_security/README.md says how)"]
    assert list((as_nobody.state / "containers").iterdir()) == []


def test_non_root_without_userns_is_one_line(as_nobody):
    result = as_nobody("--rootfs", "bb", "true")
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith("runbox: stage 05 needs root")


# --- The narration tells the truth ---------------------------------------

@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="needs strace: make test-deps installs it")
def test_every_narrated_syscall_is_real(state_root, image_root, tmp_path,
                                        monkeypatch):
    import test_strace

    for name, kernel in {"open": {"open", "openat"},
                         "chown": {"chown", "fchownat"},
                         "clone": {"clone"}}.items():
        monkeypatch.setitem(test_strace.KERNEL_NAMES, name, kernel)
    log = tmp_path / "strace.log"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-s", "4096", "-o", str(log),
         sys.executable, str(STAGES[5]), "--userns", "--rootfs",
         str(image_root), "--memory", "32m", "sh", "-c", "exit 0"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1",
             "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 0, result.stderr

    claimed = test_strace.narrated_calls(result.stderr)
    seen = test_strace.straced_calls(str(log))
    parent = int(re.search(r"^parent +(\d+) ", result.stderr,
                           re.M).group(1))
    child = int(re.search(r"^parent +\d+ +clone\(.*\) = (\d+)$",
                          result.stderr, re.M).group(1))
    assert claimed["child"][0][0] == "clone"
    assert claimed["child"][-1][0] == "execve"
    test_strace.assert_in_order(claimed["parent"], seen[parent], "parent")
    test_strace.assert_in_order(claimed["child"][1:], seen[child], "child")
    names = {name for name, _ in claimed["child"]}
    assert {"mount_setattr", "setuid", "pivot_root"} <= names
