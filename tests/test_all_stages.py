"""Tests accumulate: each stage still passes the checks of the stages
before it.  Each check here runs at every stage it applies to."""

import socket

import pytest

from conftest import needs_root


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_the_commands_options_are_the_commands(n, stage):
    # C26: everything after the command's name is the command's.
    if n >= 2 and not _root():
        pytest.skip("needs root: namespaces and mounts need CAP_SYS_ADMIN")
    assert stage(n, "sh", "-c", "echo hi").stdout == "hi\n"
    assert stage(n, "--", "sh", "-c", "echo hi").stdout == "hi\n"
    listing = stage(n, "ls", "-la", "/")
    assert listing.returncode == 0 and "proc" in listing.stdout
    shown = stage(n, "sh", "--help")
    assert "CMD [ARG...]" not in shown.stdout + shown.stderr
    if n >= 3:
        # busybox's sh answers for itself.
        assert "BusyBox" in shown.stdout + shown.stderr


def _root() -> bool:
    import os

    return os.geteuid() == 0


@needs_root
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("argv, code", [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["nosuchcmd"], 127),
    (["/etc"], 126),
])
def test_exit_codes(n, stage, argv, code):
    # C01, C02: docker's and runc's exit codes at every stage.  (PID 1
    # ignores its own SIGTERM from stage 02 on: the kill then goes
    # nowhere and the shell exits 0, so 143 is stage 01's alone.)
    if argv[-1] == "kill -TERM $$" and n >= 2:
        code = 0
    assert stage(n, *argv).returncode == code


@needs_root
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_pid_1_and_hostname(n, stage):
    # C05, C06.
    host = socket.gethostname()
    result = stage(n, "--hostname", "box", "sh", "-c", "echo $$; hostname")
    assert result.stdout == "1\nbox\n"
    assert socket.gethostname() == host


@needs_root
@pytest.mark.parametrize("n", [3, 4, 5])
def test_root_dev_and_pristine_image(n, stage, state_root):
    # C10, C12, C13 at every stage with a root of its own.
    result = stage(n, "sh", "-c",
                   "cat /proc/mounts | cut -d' ' -f2 | sort | head -3; "
                   "ls -a / | grep -c oldroot; "
                   "echo x > /dev/null && rm -rf /bin/ls && echo ok")
    lines = result.stdout.splitlines()
    assert lines[-1] == "ok"
    assert lines[-2] == "0"
    again = stage(n, "ls", "/bin/ls")
    assert again.stdout == "/bin/ls\n"
