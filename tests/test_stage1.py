"""Stage 01: fork, exec, wait; exit codes as docker and runc give them."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import STAGES, runbox_lines


def test_exit_status_passes_through(stage):
    result = stage(1, "sh", "-c", "exit 7")
    assert result.returncode == 7
    assert result.stderr == ""


def test_command_arguments_are_the_commands(stage):
    # C26: everything after the command's name belongs to the command.
    assert stage(1, "sh", "-c", "echo hi").stdout == "hi\n"
    assert stage(1, "--", "sh", "-c", "echo hi").stdout == "hi\n"
    listing = stage(1, "ls", "-la", "/")
    assert listing.returncode == 0 and " proc\n" in listing.stdout
    # The host's sh is dash here: its own complaint, not runbox's help.
    shown = stage(1, "sh", "--help")
    assert "CMD [ARG...]" not in shown.stdout + shown.stderr


def test_signal_death_is_128_plus_n(stage):
    # C01: a command that kills itself with SIGTERM reports 143.
    result = stage(1, "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM
    assert "256" not in result.stderr


def test_sigkill_from_the_host_is_137(image_root, state_root):
    # C01: killed from outside with SIGKILL, it reports 137.
    proc = subprocess.Popen(
        [sys.executable, str(STAGES[1]), "-q", "sh", "-c",
         "echo $$; exec sleep 60"],
        stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv, code, words", [
    (["nosuchcmd"], 127, "nosuchcmd: command not found"),
    (["/nonexistent"], 127, "/nonexistent: no such file or directory"),
    (["/etc"], 126, "/etc: cannot execute: is a directory"),
])
def test_command_problems_are_one_line(stage, argv, code, words):
    # C02 for the plain fork/exec: the child's failure, reported once.
    result = stage(1, *argv)
    assert result.returncode == code
    assert runbox_lines(result.stderr) == [f"runbox: {words}"]
    assert result.stderr.count("\n") == 1


def test_empty_environment_still_finds_commands(stage):
    # C03: with no PATH at all, the default PATH applies.
    result = stage(1, "sh", "-c", "echo ok", env={})
    assert result.stdout == "ok\n"


@pytest.mark.parametrize("argv, words", [
    ([], "runbox: no command given: try 'sh'"),
    (["--bogus", "sh"], "runbox: No such option: --bogus (see --help)"),
])
def test_bad_command_lines_are_125(stage, argv, words):
    result = stage(1, *argv)
    assert result.returncode == 125
    assert result.stderr.splitlines() == [words]


def test_signals_reach_the_command(stage, state_root):
    # Ctrl-C or a TERM sent to runbox is meant for the container.
    proc = subprocess.Popen(
        [sys.executable, str(STAGES[1]), "-q", "sh", "-c",
         "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_starts_with_default_signal_dispositions(stage):
    # Python ignores SIGPIPE; a command must not inherit that, or a
    # pipeline like `yes | head` complains instead of ending quietly.
    result = stage(1, "grep", "SigIgn", "/proc/self/status")
    assert result.stdout.split() == ["SigIgn:", "0000000000000000"]


SIGNAL_BEFORE_EXEC = """
import os, signal, sys, time
from runbox import process
from runbox.errors import RunboxError

print(os.getpid(), flush=True)
with process.SignalForwarder() as signals:
    try:
        def child():
            process.exec_command(["true"], {"PATH": "/bin"})

        def place(pid):
            # While the child waits to be let go, as a Ctrl-C to the
            # whole process group would find it (given straight after the
            # fork, Python's after-fork code in the child may drop it).
            time.sleep(0.2)
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)

        try:
            pid = process.spawn(child, signals, place=place)
            print(process.wait(pid, signals))
        except RunboxError as exc:
            print(exc.exit_code, exc)
    finally:
        # runbox's cleanup: only the parent may ever come here.
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.getpid()}\\n")
"""


def test_a_signal_before_exec_ends_only_the_child(tmp_path):
    # The child inherits runbox's handler.  A signal it gets before its
    # exec must end it there, not unwind it through runbox's cleanup (its
    # cgroup removed from inside, the bundle deleted, two error lines).
    marker = tmp_path / "cleanup-ran-in"
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_BEFORE_EXEC, str(marker)],
        capture_output=True, text=True, timeout=30)
    parent, said = result.stdout.split("\n", 1)
    assert said == "143 interrupted by SIGTERM\n", result.stderr
    assert result.stderr == ""
    assert marker.read_text().split() == [parent]
