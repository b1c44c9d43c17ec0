"""The escape lab: probes/escape.c at each stage, against the real kernel.

The probe prints one line per classic escape (blocked, POSSIBLE or
skipped) and exits with the number of POSSIBLE lines.  Stages 02 to 04 run
it as root with every capability and no seccomp, so most doors are open;
stage 05 must close all of them.  What a probe finds also depends on the
kernel (a kernel without SysRq has nothing to write to), so the tables
below are adjusted to this kernel before they are compared.

Each run gets a pty of the test's own as its controlling terminal, like a
person at a terminal (C25), so that the tiocsti probe has something to
push its one space into.  The probe refuses to run outside a PID and a
mount namespace; the last tests run it on the host to prove that.
"""

import contextlib
import fcntl
import os
import re
import select
import shutil
import subprocess
import termios
from pathlib import Path

import pytest

from conftest import REPO, STAGES, needs_root

pytestmark = needs_root

STAGE5 = REPO / "stages/05_security"
needs_stage5 = pytest.mark.skipif(
    not (STAGE5 / "__main__.py").exists(), reason="stage 05 not written yet")

PROBES = ("sysrq", "mount", "userns", "kcore", "keys", "open_by_handle_at",
          "ptrace", "tiocsti", "module", "hostname", "fd")
LINE = re.compile(r"([a-z_]+): (blocked|POSSIBLE|skipped) \((.+)\)")

# The kernel's fixed inode for its first PID namespace (proc_ns.h).
PID_NS_INIT_INO = 0xEFFFFFFC

# Stages 02 to 04: root with every capability, no seccomp.  A value is
# the start of what follows "NAME: ".
OPEN = {
    # /proc is mounted read-only from stage 02 on: no write reaches it.
    "sysrq": "blocked (EROFS)",
    # CAP_SYS_ADMIN: any filesystem, in the container's mount namespace.
    "mount": "POSSIBLE",
    # Root may always make a user namespace (outside a chroot).
    "userns": "POSSIBLE",
    # CAP_SYS_RAWIO reads kernel memory.
    "kcore": "POSSIBLE",
    # Keyrings are not namespaced: the container's root is the host's.
    "keys": "POSSIBLE",
    # CAP_DAC_READ_SEARCH.  At stage 02 "/" is the host's own filesystem
    # and opens by handle; an overlay root gives no handle, and a made-up
    # one gets past the capability check before failing with ESTALE.
    "open_by_handle_at": "POSSIBLE",
    # A child may trace its parent: same user, same capabilities.
    "ptrace": "POSSIBLE",
    # CAP_SYS_ADMIN, and the container shares the caller's terminal.
    "tiocsti": "POSSIBLE",
    # CAP_SYS_MODULE: the kernel reads the file it was given.
    "module": "POSSIBLE",
    # CAP_SYS_ADMIN, in the container's own UTS namespace.
    "hostname": "POSSIBLE",
    # runbox leaks no directory fd, and the working directory is inside.
    # At stage 02 nothing could lead out anyway: "/" is the host's.
    "fd": "blocked (no fd or working directory leads outside /)",
}

# Stage 05: every door shut.
SHUT = dict.fromkeys(PROBES, "blocked")

Expected = dict[str, str | tuple[str, ...]]


def on_this_kernel(expected: Expected) -> Expected:
    """expected, with what this kernel has no part for as skipped.

    Where a door is to be shut, a seccomp filter may also refuse the call
    before the kernel finds it has nothing behind it: blocked will do too.
    """
    lacks = {
        "sysrq": "/proc/sysrq-trigger",    # CONFIG_MAGIC_SYSRQ
        "kcore": "/proc/kcore",            # CONFIG_PROC_KCORE
        "keys": "/proc/keys",              # CONFIG_KEYS
        "module": "/proc/modules",         # CONFIG_MODULES
    }
    adjusted = dict(expected)
    for name, path in lacks.items():
        if not os.path.exists(path):
            adjusted[name] = ("skipped" if expected[name] != "blocked"
                              else ("skipped", "blocked"))
    # The kernel itself can shut a door for every process, root or not.
    if adjusted["kcore"] == "POSSIBLE" and "[confidentiality]" in read(
            "/sys/kernel/security/lockdown"):
        adjusted["kcore"] = "blocked (EPERM)"
    if adjusted["module"] == "POSSIBLE" and read(
            "/proc/sys/kernel/modules_disabled").strip() == "1":
        adjusted["module"] = "blocked (EPERM)"
    return adjusted


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def lab_root(image_root, tmp_path_factory) -> Path:
    """The default image plus the probes in /lab, built once."""
    from runbox import lab

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the probes: make test-deps")
    return lab.build_lab_rootfs(tmp_path_factory.mktemp("lab") / "rootfs")


@contextlib.contextmanager
def terminal():
    """A pty of the test's own: (master, slave), both closed at the end."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def take_terminal() -> None:
    """In the child, after setsid: fd 0 becomes the controlling terminal,
    as a shell's terminal is for the commands it starts."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def probe(stage, n: int, lab_root: Path, *, pass_fds=()):
    """Run the probe at stage n with --tty; return the result, the parsed
    lines and whatever reached the terminal."""
    if n == 2:
        # Stage 02 has no root of its own: it runs the host's file.
        args = [str(lab_root / "lab/escape")]
    else:
        args = ["--rootfs", str(lab_root), "/lab/escape"]
    with terminal() as (master, slave):
        result = stage(n, *args, "--tty", stdin=slave, pass_fds=pass_fds,
                       start_new_session=True, preexec_fn=take_terminal)
        # A pushed byte is echoed back to the master, like a typed one.
        ready, _, _ = select.select([master], [], [], 0.5)
        typed = os.read(master, 64) if ready else b""
    return result, verdicts(result), typed


def verdicts(result: subprocess.CompletedProcess) -> dict[str, str]:
    """NAME -> "verdict (detail)", checking every line and the order."""
    found = {}
    for line in result.stdout.splitlines():
        match = LINE.fullmatch(line)
        assert match, f"not a probe line: {line!r}"
        found[match[1]] = f"{match[2]} ({match[3]})"
    assert tuple(found) == PROBES, result.stderr
    return found


def assert_table(found: dict[str, str], expected: Expected) -> None:
    wrong = {name: found[name] for name in PROBES
             if not found[name].startswith(expected[name])}
    assert wrong == {}, f"expected {({n: expected[n] for n in wrong})}"


@pytest.mark.parametrize("n", [2, 3, 4])
def test_stages_2_to_4_leave_the_doors_open(stage, lab_root, n):
    result, found, typed = probe(stage, n, lab_root)
    expected = on_this_kernel(OPEN)
    assert_table(found, expected)
    possible = sum(v.startswith("POSSIBLE") for v in found.values())
    assert result.returncode == possible
    # The one space really went into the terminal.
    assert typed == b" "


@pytest.mark.parametrize("n", [3, 4])
def test_a_leaked_directory_fd_leads_out(stage, lab_root, tmp_path, n):
    # C24, the way runc's CVE-2024-21626 went: a directory fd of the host
    # left open across exec.  pivot_root hides the host's tree, but the
    # fd still points into it, and ".." from there climbs to its top.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _, found, _ = probe(stage, n, lab_root, pass_fds=[fd])
    finally:
        os.close(fd)
    assert found["fd"] == f"POSSIBLE (fd {fd})"


@pytest.fixture
def stage5(stage, monkeypatch):
    """The stage fixture, sure to know stage 05."""
    monkeypatch.setitem(STAGES, 5, STAGE5)
    return stage


@needs_stage5
def test_stage_5_shuts_every_door(stage5, lab_root):
    result, found, typed = probe(stage5, 5, lab_root)
    assert_table(found, on_this_kernel(SHUT))
    assert result.returncode == 0
    assert typed == b""


@needs_stage5
def test_stage_5_closes_leaked_fds(stage5, lab_root, tmp_path):
    # C24: every fd above 2 is closed before the command runs.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _, found, _ = probe(stage5, 5, lab_root, pass_fds=[fd])
    finally:
        os.close(fd)
    assert found["fd"].startswith("blocked")


def on_the_host() -> bool:
    with contextlib.suppress(OSError):
        return os.stat("/proc/self/ns/pid").st_ino == PID_NS_INIT_INO
    return False


def run_on_host(argv: list[str]):
    """Run argv with a pty as stdin; return the result and what reached
    the terminal."""
    with terminal() as (master, slave):
        result = subprocess.run(argv, stdin=slave, capture_output=True,
                                text=True, timeout=30)
        ready, _, _ = select.select([master], [], [], 0.5)
        typed = os.read(master, 64) if ready else b""
    return result, typed


# The calls by which a probe acts.  On refusal, the one write of its line
# must be all of them: glibc's start-up makes none of these.
PROBE_CALLS = ("openat,open,write,mkdir,rmdir,mount,umount2,unshare,"
               "clone,clone3,fork,vfork,ptrace,ioctl,finit_module,"
               "name_to_handle_at,open_by_handle_at,sethostname,fchdir,chdir")


@pytest.mark.skipif(not on_the_host(),
                    reason="this machine is itself in a PID namespace: "
                           "the probe would not see it as the host")
def test_the_probe_refuses_the_host(lab_root, tmp_path):
    # The namespace check comes before any probe: one line, exit 125, and
    # nothing done.  The autouse fixture checks the hostname and mounts.
    result, typed = run_on_host([str(lab_root / "lab/escape"), "--tty"])
    assert result.stdout == (
        "escape: refusing to run: not in a PID namespace of its own\n")
    assert result.returncode == 125
    assert typed == b""

    if shutil.which("strace") is None:
        pytest.skip("needs strace to see every call: make test-deps")
    log = tmp_path / "strace.log"
    run_on_host(["strace", "-o", str(log), "-e", f"trace={PROBE_CALLS}",
                 str(lab_root / "lab/escape"), "--tty"])
    # stdio asks whether stdout is a terminal (TCGETS): that is no probe.
    calls = [line for line in log.read_text().splitlines()
             if not line.startswith(("+++", "ioctl(1, TCGETS"))]
    assert len(calls) == 1 and calls[0].startswith("write(1, "), calls


@pytest.mark.skipif(not on_the_host() or shutil.which("unshare") is None,
                    reason="needs util-linux's unshare, on the host")
def test_the_probe_refuses_a_pid_namespace_alone(lab_root):
    # A PID namespace with the host's mounts is not a container either.
    result, typed = run_on_host(["unshare", "--pid", "--fork",
                                 str(lab_root / "lab/escape"), "--tty"])
    assert result.stdout == (
        "escape: refusing to run: not in a mount namespace of its own\n")
    assert result.returncode == 125
    assert typed == b""


@needs_stage5
def test_under_t_the_terminal_is_the_container_s_own(stage5, lab_root):
    # With -t the container's terminal is its own: pushing a byte into it
    # types to the container's shell, which is no escape, and the probe
    # says so rather than reporting a door open.
    result = stage5(5, "-t", "--rootfs", str(lab_root), "/lab/escape",
                    "--tty", input="")
    found = verdicts(result)
    assert found["tiocsti"] == \
        "skipped (fd 0 is the container's own terminal (-t))"
    assert result.returncode == 0, result.stdout
