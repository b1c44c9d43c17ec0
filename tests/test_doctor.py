"""`runbox doctor`: run for real on this machine, and each check shown the
cases this machine cannot show (cgroup v2, WSL, a shared folder) through
its parameters."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, needs_root
from runbox import doctor
from runbox.cgroups import Layout

MAGIC = {"vboxsf": 0x786F4256, "9p": 0x01021997, "overlayfs": 0x794C7630,
         "nfs": 0x6969}


def expected_cgroup_line() -> str:
    """The cgroup line doctor should print, worked out from /proc/mounts
    and stat(1), not from runbox's own detection."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"],
                          capture_output=True, text=True).stdout.strip()
    with open("/proc/self/mounts") as f:
        mounts = [line.split() for line in f]
    if kind == "cgroup2fs":
        have = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
        usable = [c for c in ("memory", "cpu", "pids") if c in have]
        return f"✔ cgroup v2: {', '.join(usable)} usable in v2"
    v1 = [c for c in ("memory", "cpu", "pids")
          if any(m[2] == "cgroup" and c in m[3].split(",") for m in mounts)]
    v2 = [m[1] for m in mounts if m[2] == "cgroup2"]
    mode = "hybrid" if v2 else "v1"
    line = f"✔ cgroup {mode}: {', '.join(v1)} usable in v1"
    return line + (f" (v2 mounted at {v2[0]})" if v2 else "")


def run_doctor(argv: list[str],
               image_root: Path) -> subprocess.CompletedProcess:
    # The state root that holds the default image: images/busybox/rootfs.
    env = {**os.environ, "RUNBOX_ROOT": str(image_root.parents[2])}
    env.pop("NO_COLOR", None)
    return subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=60)


@needs_root
@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "runbox.command", "doctor"],
    ["make", "--no-print-directory", "-C", str(REPO), "doctor"],
], ids=["runbox doctor", "make doctor"])
def test_doctor_on_this_machine(argv, image_root):
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    result = run_doctor(argv, image_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert expected_cgroup_line() in lines
    for want in ("✔ running as root",
                 "✔ namespaces: mount, UTS, IPC and PID",
                 f"✔ default rootfs: {image_root}"):
        assert want in lines
    assert lines[-1].startswith("Ready: every stage can run here")
    # A pipe gets plain text: marks, no colour.
    assert "\033[" not in result.stdout
    starts = ("✔ ", "✘ ", "  fix: ", "Ready: ")
    assert all(line.startswith(starts) for line in lines if line)


@needs_root
def test_doctor_leaves_nothing_behind(tmp_path):
    state = tmp_path / "not" / "made"
    check = doctor.overlay_fs(state)
    assert check.ok, check
    assert check.label.startswith(f"overlayfs works in {state} (")
    # The probe ran on the nearest existing parent, and left it empty.
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_cgroup_v2_magic_is_v2():
    # A hybrid host's /sys/fs/cgroup/unified is a real cgroup2 filesystem,
    # with none of runbox's controllers in it.
    if not os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        pytest.skip("needs a hybrid host, with cgroup2 at "
                    "/sys/fs/cgroup/unified")
    check = doctor.cgroup("/sys/fs/cgroup/unified")
    assert check == doctor.Check(
        False, "cgroup v2: no memory, cpu, pids",
        "stage 04 limits with it: boot with cgroup_enable=memory")


def test_no_cgroup_filesystem(tmp_path):
    check = doctor.cgroup(str(tmp_path))
    assert not check.ok
    assert check.label.startswith(f"cgroups: no cgroup filesystem at "
                                  f"{tmp_path}")
    assert check.fix == f"mount cgroup2 on {tmp_path} (or boot with systemd)"


@pytest.mark.parametrize("layout, check", [
    (Layout("v2", Path("/sys/fs/cgroup"), {"cpu", "io", "memory", "pids"}),
     doctor.Check(True, "cgroup v2: memory, cpu, pids usable in v2")),
    (Layout("v2", Path("/sys/fs/cgroup"), {"cpu", "io"}),
     doctor.Check(False, "cgroup v2: cpu usable in v2; no memory, pids",
                  "stage 04 limits with it: boot with cgroup_enable=memory")),
    (Layout("hybrid", Path("/sys/fs/cgroup/unified"), {"pids"},
            {"memory": Path("/sys/fs/cgroup/memory"),
             "cpu": Path("/sys/fs/cgroup/cpu,cpuacct")}),
     doctor.Check(True, "cgroup hybrid: pids usable in v2; memory, cpu "
                        "usable in v1 (v2 mounted at "
                        "/sys/fs/cgroup/unified)")),
    (Layout("v1", None, set(), {"cpu": Path("/sys/fs/cgroup/cpu")}),
     doctor.Check(False, "cgroup v1: cpu usable in v1; no memory, pids",
                  "stage 04 limits with it: mount its v1 hierarchy under "
                  "/sys/fs/cgroup, or boot with cgroup_enable=memory")),
])
def test_describe_cgroups(layout, check):
    assert doctor.describe_cgroups(layout) == check


@pytest.mark.parametrize("fs", sorted(MAGIC))
def test_state_dir_on_a_shared_or_overlay_fs(fs, tmp_path):
    check = doctor.overlay_fs(tmp_path, statfs=lambda path: MAGIC[fs])
    assert check == doctor.Check(
        False, f"{tmp_path} is on {fs}, where an overlay cannot keep its "
               "upper layer",
        "set RUNBOX_ROOT to a directory on a local disk (the default "
        "/var/lib/runbox usually is)")


@pytest.mark.parametrize("euid, ok", [(0, True), (1000, False)])
def test_root(euid, ok):
    check = doctor.root(euid)
    assert check.ok is ok
    assert check.fix == ("" if ok else "run it with sudo: namespaces and "
                         "mounts need CAP_SYS_ADMIN")


@pytest.mark.parametrize("release, ok", [
    ("6.1.0-13-amd64", True),
    ("5.15.153.1-microsoft-standard-WSL2", True),
    ("4.14.0", True),
    ("4.9.0-8-amd64", False),
    ("weird", False),
])
def test_kernel(release, ok):
    assert doctor.kernel(release).ok is ok


def test_python():
    assert doctor.python((3, 11, 2)) == doctor.Check(True, "Python 3.11.2")
    old = doctor.python((3, 9, 18))
    assert old.label == "Python 3.9.18, older than 3.11"


ROOT_LINE = "22 1 8:1 / / rw,relatime {} - ext4 /dev/sda1 rw\n"
PROC_LINE = "23 22 0:5 / /proc rw - proc proc rw\n"


@pytest.mark.parametrize("fields, kind", [
    ("shared:1", "shared"), ("master:3", "slave"), ("", "private"),
    ("unbindable", "unbindable"),
])
def test_propagation(fields, kind):
    check = doctor.propagation(ROOT_LINE.format(fields) + PROC_LINE)
    assert check == doctor.Check(
        True, f"/ propagation: {kind} (each container makes its own copy "
              "private)")


def test_propagation_in_a_chroot():
    check = doctor.propagation(PROC_LINE)
    assert not check.ok
    assert check.label == "/ is not a mount point (a chroot?)"


def test_seccomp_for_real_and_without():
    assert doctor.seccomp().ok

    def refuse(action: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "seccomp: Operation not supported")

    check = doctor.seccomp(refuse)
    assert check.label == ("seccomp: no kill_process action: seccomp: "
                           "Operation not supported")


@pytest.mark.parametrize("sysctls, label, fix", [
    ({"user.max_user_namespaces": "0"},
     "unprivileged user namespaces: user.max_user_namespaces is 0",
     "sysctl -w user.max_user_namespaces=15000"),
    ({"kernel.unprivileged_userns_clone": "0"},
     "unprivileged user namespaces: refused by "
     "kernel.unprivileged_userns_clone",
     "sysctl -w kernel.unprivileged_userns_clone=1"),
    ({"kernel.apparmor_restrict_unprivileged_userns": "1"},
     "unprivileged user namespaces: restricted by AppArmor (Ubuntu 23.10 "
     "and later)",
     "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give the "
     "program an AppArmor profile that allows userns"),
])
def test_userns_refused(sysctls, label, fix):
    check = doctor.userns(sysctls.get, probe=lambda: None)
    assert check == doctor.Check(False, label, fix)


def test_userns_allowed_or_refused_by_the_kernel():
    ubuntu = {"kernel.apparmor_restrict_unprivileged_userns": "0"}
    assert doctor.userns(ubuntu.get, probe=lambda: None).ok
    denied = doctor.userns({}.get, probe=lambda: "unshare: Operation not "
                                                 "permitted")
    assert denied.label == ("unprivileged user namespaces: unshare failed: "
                            "unshare: Operation not permitted")


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


OSRELEASE = "proc/sys/kernel/osrelease"


@pytest.mark.parametrize("files, label", [
    ({OSRELEASE: "6.1.0-13-amd64\n", "proc/1/cgroup": "0::/init.scope\n"},
     None),
    ({OSRELEASE: "5.15.153.1-microsoft-standard-WSL2\n"},
     "WSL 2 (5.15.153.1-microsoft-standard-WSL2)"),
    ({OSRELEASE: "4.4.0-19041-Microsoft\n"},
     "WSL 1 (4.4.0-19041-Microsoft): no namespaces"),
    ({".dockerenv": ""}, "inside a container? /.dockerenv exists"),
    ({"run/.containerenv": ""},
     "inside a container? /run/.containerenv exists"),
    ({"proc/1/cgroup": "12:memory:/docker/0123abcd\n"},
     "inside a container? PID 1's cgroup names docker"),
    ({"proc/1/environ": "PATH=/bin\0container=lxc\0"},
     "inside a container? PID 1 has container=lxc"),
])
def test_container_or_wsl(tmp_path, files, label):
    check = doctor.container_or_wsl(fake_root(tmp_path, files))
    if label is None:
        assert check == doctor.Check(True, "not inside a container or WSL")
    else:
        assert not check.ok
        assert check.label == label


def test_render_is_plain_text():
    needed = [doctor.Check(True, "running as root"),
              doctor.Check(False, "Linux 4.9.0, older than 4.14",
                           "boot a newer kernel")]
    optional = [doctor.Check(False, "WSL 2", "keep files in WSL")]
    assert doctor.render(needed, optional) == (
        "✔ running as root\n"
        "✘ Linux 4.9.0, older than 4.14\n"
        "  fix: boot a newer kernel\n"
        "✘ WSL 2 (optional)\n"
        "  fix: keep files in WSL\n"
        "\n"
        "Not ready: 1 needed check failed.\n")
    assert doctor.render(needed[:1], optional, encoding="ascii") == (
        "ok running as root\n"
        "NO WSL 2 (optional)\n"
        "  fix: keep files in WSL\n"
        "\n"
        "Ready: every stage can run here (1 optional check failed).\n")
    coloured = doctor.render(needed[:1], [], color=True)
    assert coloured == ("\033[32m✔\033[0m running as root\n\n"
                        "Ready: every stage can run here.\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color():
    assert doctor.use_color(Terminal(), {})
    assert not doctor.use_color(Terminal(), {"NO_COLOR": "1"})
    assert not doctor.use_color(io.StringIO(), {})


def test_exit_status_counts_only_needed_checks():
    def good() -> doctor.Check:
        return doctor.Check(True, "fine")

    def bad() -> doctor.Check:
        return doctor.Check(False, "broken", "mend it")

    def crashes() -> doctor.Check:
        raise OSError(errno.EACCES, "open: Permission denied", "/proc/x")

    assert doctor.main(io.StringIO(), needed=[good], optional=[bad]) == 0
    assert doctor.main(io.StringIO(), needed=[bad], optional=[good]) == 1
    out = io.StringIO()
    assert doctor.main(out, needed=[crashes], optional=[]) == 1
    assert out.getvalue().splitlines()[0] == (
        "✘ crashes: open: Permission denied: /proc/x")
