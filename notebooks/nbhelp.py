"""What the notebooks share: run a stage as a program, show what it says.

A notebook's kernel runs several threads (its heartbeat, its output
streams), and fork(2) in a threaded process copies only the thread that
called it: a lock another thread held stays locked in the child for good.
So no container is ever forked from the kernel.  Each run starts the stage
as a program of its own, `python stages/NN_name ...`, as a person would at
a shell, and this module shows its output and its narration as they come.

Nothing here is needed to understand a stage; it only keeps the notebooks'
cells short.  It cannot show a terminal: a container run from here has no
tty (stdin is /dev/null, or a pipe for `started`).
"""

from __future__ import annotations

import atexit
import codecs
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    from runbox import lab
except ImportError:
    raise ImportError(
        f"this kernel's Python ({sys.executable}) has no runbox: pick the "
        "kernel of the repository's venv (make notebook starts Jupyter "
        "with it)") from None

REPO = Path(__file__).resolve().parent.parent
STAGES = {
    1: "stages/01_fork_exec",
    2: "stages/02_namespaces",
    3: "stages/03_pivot_root",
    4: "stages/04_cgroups",
    5: "stages/05_security",
}

# Temporary directories made for a notebook, removed by cleanup() or, if
# the notebook stopped half-way, when its kernel exits.
_made: list[Path] = []


@dataclass
class Result:
    """How a run ended: its exit code, its stdout and its stderr."""

    code: int
    out: str
    err: str
    pid: int  # runbox's own pid, on the host

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def failures(self) -> list[str]:
        """The lines runbox itself printed about a failure."""
        return [x for x in self.err.splitlines() if x.startswith("runbox:")]


def argv(n: int, *args: str, narrate: bool = True) -> list[str]:
    """The command line that runs stage n."""
    quiet = [] if narrate else ["--quiet"]
    return [sys.executable, STAGES[n], *quiet, *args]


def _env() -> dict[str, str]:
    # Plain narration, no escape codes: ipykernel sets FORCE_COLOR for its
    # own output, which would make rich write them into a pipe.
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE")}
    return dict(env, NO_COLOR="1")


def _shown(command: list[str]) -> str:
    return "$ python " + shlex.join(command[1:])


def run_stage(n: int, *args: str, narrate: bool = True, show: bool = True,
              timeout: float = 60) -> Result:
    """Run stage n with args, as a subprocess, and wait for it to end.

    Its output and narration are printed as they come (unless show is
    False) and returned, stdout and stderr apart, with the exit code.
    """
    command = argv(n, *args, narrate=narrate)
    if show:
        print(_shown(command), flush=True)
    proc = subprocess.Popen(command, cwd=REPO, env=_env(),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = _Reader(proc, show=show)
    reader.until_end(timeout)
    return reader.result(show=show)


class started:
    """Stage n running in the background, its stdin a pipe.

        with nbhelp.started(4, "sh", "-c", "echo $HOSTNAME; read x") as box:
            name = box.readline()
            ...                       # look at it from the host
            result = box.finish()     # close its stdin: read ends, and so
                                      # does the container

    Leaving the block any other way stops the container.  Narration is off
    unless asked for: nobody reads it while the container waits.
    """

    def __init__(self, n: int, *args: str, narrate: bool = False,
                 show: bool = True) -> None:
        self.command = argv(n, *args, narrate=narrate)
        self.show = show

    def __enter__(self) -> started:
        if self.show:
            print(_shown(self.command) + " &", flush=True)
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env=_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._reader = _Reader(self.proc, show=self.show)
        return self

    def readline(self, timeout: float = 30) -> str:
        """The container's next line of output, without its newline."""
        return self._reader.readline(timeout)

    def container_pid(self) -> int:
        """The host pid of the container's first process: runbox's child."""
        for entry in os.listdir("/proc"):
            if entry.isdigit() and status(f"/proc/{entry}/status").get(
                    "PPid") == str(self.pid):
                return int(entry)
        raise LookupError(f"runbox {self.pid} has no child")

    def finish(self, timeout: float = 30) -> Result:
        """Close the container's stdin and wait for it to end."""
        self.proc.stdin.close()
        self._reader.until_end(timeout)
        return self._reader.result(show=self.show)

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()


class _Reader:
    """Reads a process's stdout and stderr as they come, printing both.

    Narration goes to stderr and the command's output to stdout; both are
    printed in the order they arrive, and kept apart for the asserts.
    """

    def __init__(self, proc: subprocess.Popen, *, show: bool) -> None:
        self.proc = proc
        self.show = show
        self.text = {proc.stdout: "", proc.stderr: ""}
        self.decoders = {f: codecs.getincrementaldecoder("utf-8")("replace")
                         for f in self.text}
        self.selector = selectors.DefaultSelector()
        for f in self.text:
            self.selector.register(f, selectors.EVENT_READ)
        self.taken = 0  # how much of stdout readline has handed out

    def close(self) -> None:
        # Leaving early (an error, Ctrl-C in the notebook): the container
        # must not outlive the cell.
        if self.proc.poll() is None:
            stop(self.proc)
        for f in self.text:
            f.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        self.selector.close()

    def _pump(self, deadline: float) -> bool:
        """Read what has come; False once both pipes are at their end."""
        if not self.selector.get_map():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            stop(self.proc)
            raise TimeoutError(f"{_shown(self.proc.args)}: still running "
                               "when its time was up, so it was stopped")
        for key, _ in self.selector.select(left):
            data = os.read(key.fd, 65536)
            if not data:
                self.selector.unregister(key.fileobj)
                continue
            text = self.decoders[key.fileobj].decode(data)
            self.text[key.fileobj] += text
            if self.show:
                print(text, end="", flush=True)
        return True

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.text[self.proc.stdout]
            end = out.find("\n", self.taken)
            if end >= 0:
                line, self.taken = out[self.taken:end], end + 1
                return line
            if not self._pump(deadline):
                raise EOFError("the container ended without that line")

    def until_end(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while self._pump(deadline):
                pass
            self.proc.wait(max(deadline - time.monotonic(), 1))
        except BaseException:
            self.close()
            raise

    def result(self, *, show: bool) -> Result:
        self.close()
        code = self.proc.returncode
        if show:
            print(f"[exit code {code}]", flush=True)
        return Result(code, self.text[self.proc.stdout],
                      self.text[self.proc.stderr], self.proc.pid)


def stop(proc: subprocess.Popen) -> None:
    """End a runbox the way a person at a terminal would: TERM, then TERM
    again (which runbox turns into SIGKILL for a PID 1 that ignores it), so
    that it removes what it made.  SIGKILL only if it does not listen."""
    for sig, wait in ((signal.SIGTERM, 2), (signal.SIGTERM, 5),
                      (signal.SIGKILL, 5)):
        try:
            proc.send_signal(sig)
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def status(path: str = "/proc/self/status") -> dict[str, str]:
    """A /proc/PID/status file as a dict; {} if the process is gone."""
    try:
        with open(path) as f:
            return parse_status(f.read())
    except OSError:
        return {}


def parse_status(text: str) -> dict[str, str]:
    """The "Key:<tab>value" lines of a status file, as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


@dataclass
class Mount:
    """One line of /proc/PID/mountinfo (see proc_pid_mountinfo(5))."""

    root: str  # the directory or file of the filesystem mounted here
    point: str
    options: list[str]
    tags: list[str]  # the optional fields: shared:N, master:N, ...
    fstype: str
    source: str
    super_options: list[str]


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts.append(Mount(
            root=fields[3], point=fields[4], options=fields[5].split(","),
            tags=fields[6:sep], fstype=fields[sep + 1],
            source=fields[sep + 2], super_options=fields[sep + 3].split(",")))
    return mounts


def tempdir() -> Path:
    """A new temporary directory, removed by cleanup()."""
    path = Path(tempfile.mkdtemp(prefix="runbox-nb-"))
    _made.append(path)
    return path


def lab_rootfs() -> str:
    """The escape lab's image, built into a temporary directory: the
    busybox image plus the probe programs of probes/ under /lab."""
    return str(lab.build_lab_rootfs(tempdir() / "rootfs"))


@atexit.register
def cleanup() -> None:
    """Remove every temporary directory this notebook made."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
