"""-t: a terminal of the container's own, with job control inside.

Run under a pseudo-terminal of the test's own, as a person at a terminal
would run it: Ctrl-C must reach the container's foreground job only.
"""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from conftest import STAGES, needs_root

pytestmark = needs_root


def read_until(fd: int, token: bytes, limit: float = 30) -> bytes:
    """Read until token shows up; give up (and return) after limit s."""
    buf = b""
    end = time.monotonic() + limit
    while token not in buf and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    return buf


def descendant_running(ancestor: int, cmdline: bytes) -> bool:
    """Whether a descendant of ancestor runs with this exact cmdline."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1]
                                              .split()[1])
            except (OSError, ValueError):
                continue
    for pid in parents:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() != cmdline:
                    continue
        except OSError:
            continue
        up = pid
        while up in parents and up > 1:
            up = parents[up]
            if up == ancestor:
                return True
    return False


@pytest.mark.parametrize("how", [
    # The issue's own words: `runbox run --memory 64m --pids-limit 64 -t
    # sh` gives a working shell (-t brings stdin along).
    ["-m", "runbox.command", "run"],
    [str(STAGES[5]), "-q"],
])
def test_interactive_shell_with_job_control(image_root, state_root, how):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["RUNBOX_ROOT"] = str(state_root)
        os.execv(sys.executable, [
            sys.executable, *how, "--rootfs", str(image_root),
            "--memory", "64m", "--pids-limit", "64", "-t", "sh"])
    try:
        assert b"# " in read_until(fd, b"# ")
        os.write(fd, b"tty; echo pid=$$; sleep 100\n")
        seen = read_until(fd, b"pid=1")
        assert b"/dev/pts/0" in seen
        # Ctrl-C only once sleep runs, or it would reach the shell instead.
        for _ in range(3000):
            if descendant_running(pid, b"sleep\x00100\x00"):
                break
            time.sleep(0.01)
        # Ctrl-C as a byte: the container's terminal makes it SIGINT for
        # its foreground job, sleep, and the shell lives on.
        os.write(fd, b"\x03")
        assert b"^C" in read_until(fd, b"^C")
        # The answer, 42, is not in the echoed command line.
        os.write(fd, b"sleep 50 & jobs; echo $((40 + 2))\n")
        seen = read_until(fd, b"42\r\n")
        assert b"Running" in seen and b"\n42\r\n" in seen
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        if pid:
            os.kill(pid, 9)  # runbox, the test's own child
            os.waitpid(pid, 0)
            from runbox import container
            container.gc()
        os.close(fd)


@pytest.mark.parametrize("given, seen", [
    # A whole line, then the end of the pipe: cat reads one line and then
    # an end, as from a person's Ctrl-D.
    (b"hi\n", b"hi"),
    # A line left unfinished: the first Ctrl-D ends the line, the second
    # the input.
    (b"abc", b"abc"),
    # Nothing at all.
    (b"", b""),
])
def test_the_end_of_a_piped_stdin_reaches_the_container(
        image_root, state_root, given, seen):
    # docker -it refuses a stdin that is no terminal; runbox -t passes its
    # end on, so the container's cat ends instead of waiting for ever.
    result = subprocess.run(
        [sys.executable, "-m", "runbox.command", "run", "--rootfs",
         str(image_root), "-t", "cat"], input=given, capture_output=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)}, timeout=60)
    assert result.returncode == 0, result.stderr
    # The terminal echoes what it was given, and cat writes it again;
    # the end itself leaves no trace.
    assert result.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"") == \
        seen * 2


def test_a_shell_fed_from_a_pipe_ends_at_its_end(image_root, state_root):
    # busybox sh edits its line in raw mode at the prompt: there the end
    # comes as a Ctrl-D byte, which its line editor takes as the end.
    result = subprocess.run(
        [sys.executable, "-m", "runbox.command", "run", "--rootfs",
         str(image_root), "-t", "sh"], input=b"echo $((6 * 7))\n",
        capture_output=True, timeout=60,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 0, result.stderr
    assert b"\r\n42\r\n" in result.stdout


def test_a_large_piped_stdin_does_not_stall(image_root, state_root):
    # While cat's output waits to be read, the terminal takes no more
    # input: runbox must go on reading while it has input to give, or
    # each would wait on the other.
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbox.command", "run", "--rootfs",
         str(image_root), "-t", "sh", "-c", "stty -echo; echo ready; cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    try:
        # Input only once the terminal no longer echoes it.
        assert proc.stdout.readline() == b"ready\r\n"
        lines = b"".join(b"%d\n" % i for i in range(100_000))
        out, err = proc.communicate(lines, timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # runbox, the test's own child
            proc.wait()
            from runbox import container
            container.gc()
    assert proc.returncode == 0, err
    assert out.replace(b"\r\n", b"\n") == lines


def test_closing_the_terminal_ends_the_container(image_root, state_root):
    # A closed window or a dropped ssh session: runbox's terminal hangs up,
    # and so must the container's, whose shell then ends.  PID 1 ignores
    # the SIGHUP runbox passes on, so that alone would leave both running.
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["RUNBOX_ROOT"] = str(state_root)
        os.execv(sys.executable, [
            sys.executable, "-m", "runbox.command", "run", "--rootfs",
            str(image_root), "-t", "sh"])
    try:
        assert b"# " in read_until(fd, b"# ")
        os.close(fd)
        fd = -1
        for _ in range(3000):
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                break
            time.sleep(0.01)
        assert ended, "runbox still runs after its terminal hung up"
        pid = 0
        assert not any((state_root / "containers").iterdir())
    finally:
        if pid:
            os.kill(pid, 9)  # runbox, the test's own child
            os.waitpid(pid, 0)
            from runbox import container
            container.gc()
        if fd >= 0:
            os.close(fd)


def test_output_to_a_closed_pipe_is_no_runbox_failure(image_root,
                                                      state_root):
    # `runbox run -t yes | head -1`: once head has gone, the container's
    # terminal hangs up and yes ends of it, as it would writing to the
    # pipe itself; runbox reports no failure of its own.
    result = subprocess.run(
        f"{sys.executable} -m runbox.command run --rootfs {image_root} -t "
        "yes | head -1", shell=True, capture_output=True, text=True,
        timeout=60, env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.stdout.splitlines() == ["y"]
    assert result.stderr == ""
