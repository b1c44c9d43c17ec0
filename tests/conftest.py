"""Shared fixtures: run a stage as a user would, and prove the host unchanged.

Container tests run real containers on the real kernel and need root; they
say so when they skip.  Every test is checked afterwards: the host's mount
table and hostname must be exactly as before, and no container state may be
left under the test's own RUNBOX_ROOT.

The host checks see the whole machine: a container someone else starts or
ends on it while a test runs (another test run, a workshop shell) makes
that test fail its check, though nothing of the test's own was left.  Run
the suite on a machine of its own, as CI does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = {
    1: REPO / "stages/01_fork_exec",
    2: REPO / "stages/02_namespaces",
    3: REPO / "stages/03_pivot_root",
    4: REPO / "stages/04_cgroups",
    5: REPO / "stages/05_security",
}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: namespaces and mounts need CAP_SYS_ADMIN")


def mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def runbox_cgroups() -> set[str]:
    """Every cgroup under a runbox/ parent, in any hierarchy."""
    found = set()
    root = Path("/sys/fs/cgroup")
    for parent in [root / "runbox", *root.glob("*/runbox")]:
        if parent.is_dir():
            found |= {str(p) for p in parent.iterdir() if p.is_dir()}
    return found


@pytest.fixture(scope="session")
def image_root() -> Path:
    """The default busybox image, built once if this machine lacks it."""
    from runbox import images

    try:
        return images.resolve_rootfs(None)
    except Exception:
        if os.geteuid() != 0:
            pytest.skip("needs root to build the busybox image")
        return images.build_busybox()


@pytest.fixture
def state_root(tmp_path_factory, monkeypatch) -> Path:
    """A RUNBOX_ROOT of the test's own, for container state."""
    root = tmp_path_factory.mktemp("runbox-root")
    monkeypatch.setenv("RUNBOX_ROOT", str(root))
    return root


@pytest.fixture(autouse=True)
def host_unchanged(state_root):
    """Fail a test that changes the host's mounts or hostname, or leaves
    container state behind."""
    mounts_before = mountinfo()
    hostname_before = socket.gethostname()
    cgroups_before = runbox_cgroups()
    yield
    assert mountinfo() == mounts_before, "the host's mount table changed"
    assert runbox_cgroups() == cgroups_before, "a runbox cgroup was left"
    assert socket.gethostname() == hostname_before, "host hostname changed"
    containers = state_root / "containers"
    left = list(containers.iterdir()) if containers.exists() else []
    assert left == [], f"container state left behind: {left}"


@pytest.fixture
def stage(image_root, state_root):
    """Run stage N with args, on the default image unless --rootfs is given.

    Narration is off unless trace=True; it then comes back on stderr.
    """
    def run(n: int, *args: str, trace: bool = False, env=None,
            timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(STAGES[n])]
        if not trace:
            argv.append("--quiet")
        if n >= 3 and "--rootfs" not in args:
            argv += ["--rootfs", str(image_root)]
        full_env = dict(os.environ) if env is None else dict(env)
        full_env["RUNBOX_ROOT"] = str(state_root)
        return subprocess.run(argv + list(args), capture_output=True,
                              text=True, env=full_env, timeout=timeout,
                              **kwargs)
    return run


def runbox_lines(stderr: str) -> list[str]:
    """The error lines runbox itself printed."""
    return [line for line in stderr.splitlines()
            if line.startswith("runbox:")]


class Background:
    """A stage's container running in the background, in a session of its
    own so that the test can end all of it; ended for sure at exit, and
    whatever it left collected.  stdin and stdout are pipes."""

    def __init__(self, n: int, *args: str, state_root: Path,
                 image_root: Path) -> None:
        argv = [sys.executable, str(STAGES[n]), "-q"]
        if n >= 3:
            argv += ["--rootfs", str(image_root)]
        self.proc = subprocess.Popen(
            argv + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True,
            env={**os.environ, "RUNBOX_ROOT": str(state_root)})

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            # Only what this test started: runbox's own process group.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        from runbox import container

        container.gc()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


def container_pid(state_root: Path, command: bytes) -> int:
    """The host pid of the container's PID 1, once it runs command."""
    for _ in range(1000):
        for record in (state_root / "containers").glob("*/pid"):
            pid = int(record.read_text().split()[0])
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == command:
                    return pid
            except OSError:
                pass
        time.sleep(0.01)
    pytest.fail(f"no container runs {command!r}")


def status(text: str) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    return dict(line.split(":\t", 1) for line in text.splitlines()
                if ":\t" in line)


def cap_mask(names) -> str:
    """Capability names as /proc/PID/status shows the set."""
    from runbox import capabilities

    bits = 0
    for name in names:
        bits |= 1 << capabilities.NUMBERS[name]
    return f"{bits:016x}"


def press_until_it_ends(proc: subprocess.Popen, sig: int) -> int:
    """Send sig again and again until proc ends; return its exit code.

    Two signals sent at once may merge into one, and a container's PID 1
    ignores the first (runbox makes the second SIGKILL): a person pressing
    Ctrl-C until it stops.
    """
    for _ in range(100):
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait(timeout=30)


def assert_locked_down(status_text: str) -> dict[str, str]:
    """C20-C22: docker's 14 capabilities in bounding, permitted and
    effective, none inheritable or ambient, no_new_privs, a filter."""
    from runbox import capabilities

    st = status(status_text)
    default = cap_mask(capabilities.DEFAULT)
    for key in ("CapBnd", "CapPrm", "CapEff"):
        assert st[key] == default, key
    assert st["CapInh"] == st["CapAmb"] == "0" * 16
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    return st
