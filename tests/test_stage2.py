"""Stage 02: UTS, IPC, PID and mount namespaces, checked from inside."""

import os
import socket
import subprocess
import sys

import pytest

from conftest import STAGES, needs_root, runbox_lines
from runbox import spec
from runbox.errors import RunboxError

pytestmark = needs_root


def test_first_child_is_pid_1(stage):
    # C05: unshare(CLONE_NEWPID) before the fork makes the child PID 1.
    result = stage(2, "sh", "-c", "echo $$")
    assert result.stdout == "1\n"


def test_processes_can_fork_inside(stage):
    # C05: if PID 1 were not the first child, this fork would hit ENOMEM.
    result = stage(2, "sh", "-c", "sh -c 'echo $$'; echo done")
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "done"


def test_hostname_is_the_containers_only(stage):
    # C06: the name is set inside, and the host keeps its own.
    host = socket.gethostname()
    result = stage(2, "--hostname", "box-1", "hostname")
    assert result.stdout == "box-1\n"
    assert socket.gethostname() == host


def test_hostname_without_uts_namespace_is_refused():
    # C06: a hostname with no UTS namespace would rename the host.
    config = spec.Spec(spec.Process(["sh"]), spec.Root("/"),
                       hostname="box",
                       linux=spec.Linux(spec.namespaces("pid")))
    with pytest.raises(RunboxError) as caught:
        spec.validate(config)
    assert caught.value.exit_code == 125
    assert "UTS namespace" in str(caught.value)


def test_bad_hostname_is_125(stage):
    result = stage(2, "--hostname", "not a name", "true")
    assert result.returncode == 125
    assert runbox_lines(result.stderr) == [
        "runbox: bad hostname 'not a name': use letters, digits, '-' and "
        "'.', at most 64 characters"]


def test_proc_shows_only_the_container(stage):
    # C07: a fresh /proc of the new PID namespace.
    result = stage(2, "sh", "-c",
                   "ls /proc | grep -E '^[0-9]+$'; readlink /proc/1/exe")
    *pids, exe = result.stdout.split()
    assert pids[0] == "1" and len(pids) <= 4
    assert os.path.realpath(exe) == os.path.realpath("/bin/sh")
    # The host's /proc is untouched: it still shows this test's process.
    assert os.path.exists(f"/proc/{os.getpid()}")


def test_namespaces_differ_from_the_hosts(stage):
    kinds = ["pid", "mnt", "uts", "ipc"]
    script = "; ".join(f"readlink /proc/self/ns/{k}" for k in kinds)
    inside = stage(2, "sh", "-c", script).stdout.split()
    host = [os.readlink(f"/proc/self/ns/{k}") for k in kinds]
    assert len(inside) == 4
    for mine, theirs in zip(inside, host):
        assert mine != theirs
    # The network namespace is still the host's at this stage.
    net = stage(2, "readlink", "/proc/self/ns/net").stdout.strip()
    assert net == os.readlink("/proc/self/ns/net")


def test_ipc_objects_are_private(stage):
    result = stage(2, "sh", "-c", "wc -l < /proc/sysvipc/shm")
    assert result.stdout.strip() == "1"  # the header line alone


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_not_root_is_one_line(state_root, n):
    # Bad input: no root.  One line, 125, and nothing tried.  A user
    # namespace with no mapping makes runbox uid 65534 with no capability
    # on the host, and still able to read the venv under /root.
    result = subprocess.run(
        ["unshare", "--user", sys.executable, str(STAGES[n]), "-q", "true"],
        capture_output=True, text=True,
        env={"RUNBOX_ROOT": str(state_root), "PATH": os.environ["PATH"]})
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        f"runbox: stage 0{n} needs root: namespaces and mounts need "
        "CAP_SYS_ADMIN (run it with sudo)"]
