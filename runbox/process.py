"""Starting the container's process and learning how it ended.

The child side of fork is fragile: it must never return into the caller's
code, and an error there must reach the user once, as one line.  So the
child runs inside try/except and always ends in execve or os._exit, and its
error travels to the parent over a pipe that is closed on exec: EOF with
nothing written means the exec succeeded.  The parent raises it again as a
RunboxError with the right exit code (125, 126 or 127).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from runbox import libc, trace
from runbox.errors import (
    EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_RUNTIME, RunboxError,
)
from runbox.spec import DEFAULT_PATH

# The signals a user sends to runbox that are meant for the container:
# each would otherwise end runbox and leave the container running.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
# In the child: the read end of the pipe whose write end only the parent
# holds.  It reads as hung up once the parent is gone.
_parent_pipe = -1

# Those that ask for an end: sent twice, the second is SIGKILL.
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line for a failure, and the exit code it ends with."""
    if isinstance(exc, RunboxError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError):
        syscall = getattr(exc, "syscall", None)
        text = exc.strerror or str(exc)
        if syscall is None and exc.errno:
            text = os.strerror(exc.errno)
        if exc.filename:
            text = f"{text}: {exc.filename}"
        hint = getattr(exc, "hint", None)
        return (f"{text} ({hint})" if hint else text), EXIT_RUNTIME
    return f"internal error: {type(exc).__name__}: {exc}", EXIT_RUNTIME


def spawn(child_main: Callable[[], NoReturn], signals: SignalForwarder, *,
          place: Callable[[int], None] | None = None,
          die_with_parent: bool = False,
          clone_flags: int = 0,
          why: str | None = None) -> int:
    """Fork; the child runs child_main, which must end in execve.

    Returns the child's pid once it has exec'd.  If the child failed before
    that, it is reaped and its error raised here as a RunboxError.  From
    the moment of the fork, signals goes to the child.

    With place, the child first waits until place(pid) has run in the
    parent (to put it in its cgroup, say), so that nothing of the
    container runs before that.  If place fails, the child never starts.
    With die_with_parent, the kernel kills the child if runbox dies, even
    by SIGKILL.  With clone_flags, the child is made by clone(2) in those
    new namespaces rather than by fork(2): a PID namespace made with a user
    namespace belongs to it, which a mount of /proc inside requires.
    """
    sync = place is not None or die_with_parent
    # Close-on-exec: a successful execve closes the child's end for us.
    r, w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC) if sync else (-1, -1)
    try:
        if clone_flags:
            pid = libc.clone(clone_flags, why=why)
        else:
            pid = libc.fork(why=why)
    except OSError:
        for fd in (r, w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
        raise
    if pid == 0:
        # Where runbox is itself PID 1 (in a container of its own), a
        # child made in a new PID namespace is PID 1 too: the pid alone
        # cannot tell the handler which side it runs on.
        signals.in_child = True
        os.close(r)
        if sync:
            os.close(go_w)
            if die_with_parent:
                libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL,
                           why="if runbox dies, the container dies too")
            # EOF instead of the byte: the parent failed, or died before
            # the prctl above could catch it.  Either way, leave.
            if libc.read(go_r, 1, why="wait until the parent has placed "
                                       "this process") != b"1":
                os._exit(EXIT_RUNTIME)
            global _parent_pipe
            _parent_pipe = go_r
        _run_child(child_main, w)
    signals.pid = pid
    os.close(w)
    if sync:
        os.close(go_r)
        try:
            if place:
                place(pid)
            libc.write(go_w, b"1", why="the child may go on")
        except BaseException as exc:
            os.close(go_w)
            os.close(r)
            _, status = os.waitpid(pid, 0)
            signals.reaped()
            if isinstance(exc, BrokenPipeError):
                # Gone before it was let go: a signal ended it there (see
                # SignalForwarder._handle), with 128 + its number.
                code = exit_code(status)
                raise RunboxError(
                    f"interrupted by {libc.signal_name(code - 128)}"
                    if code > 128 else "the container's process ended "
                    "before it started", exit_code=code) from None
            raise
    try:
        with open(r, "rb") as pipe:
            report = pipe.read()
    finally:
        # Held open until the exec, so the child can tell that runbox is
        # still there (see rearm_parent_death).
        if sync:
            os.close(go_w)
    if report:
        os.waitpid(pid, 0)
        signals.reaped()
        code, _, message = report.decode(errors="replace").partition(" ")
        raise RunboxError(message, exit_code=int(code))
    return pid


def own_pipes() -> set[int]:
    """The fds the child must keep until execve closes them."""
    return {fd for fd in (_parent_pipe, *_report_fds) if fd >= 0}


def rearm_parent_death() -> None:
    """Set the parent-death signal again, after a change of user.

    The kernel clears it whenever the effective uid or gid changes.  If
    runbox died before the prctl, no signal will come, so the pipe from
    the parent is checked too: hung up means runbox is gone.
    """
    import select

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL,
               why="a change of user cleared it: set it again")
    if _parent_pipe >= 0:
        ready, _, _ = select.select([_parent_pipe], [], [], 0)
        if ready:
            os._exit(EXIT_RUNTIME)


_report_fds: list[int] = []


def _run_child(child_main: Callable[[], NoReturn], report_fd: int) -> NoReturn:
    """The child's whole life: run, or tell the parent why not, then exit."""
    code = EXIT_RUNTIME
    _report_fds.append(report_fd)
    try:
        child_main()
    except BaseException as exc:  # noqa: BLE001 - the child must not return
        message, code = describe_error(exc)
        try:
            # The exit code, a space, the message: one write, so the
            # parent reads it whole.
            os.write(report_fd, f"{code} {message}".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def find_command(name: str, env: dict[str, str]) -> str:
    """Find name on env's PATH, as a shell would; raise 126 or 127.

    Run this after the container's root is in place, so the lookup happens
    in the container's filesystem, never the host's.
    """
    if not name:
        raise RunboxError("'': command not found", exit_code=EXIT_NOT_FOUND)
    if "/" in name:
        return name
    denied = None
    # Like execvp: with no PATH set at all, the default one applies.  A
    # directory of that name on the way is passed over, as a shell does.
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        path = os.path.join(directory or ".", name)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            continue
        if os.access(path, os.X_OK):
            return path
        denied = denied or path
    if denied:
        raise RunboxError(f"{denied}: permission denied",
                          exit_code=EXIT_CANNOT_EXECUTE)
    raise RunboxError(f"{name}: command not found", exit_code=EXIT_NOT_FOUND)


def exec_command(args: list[str], env: dict[str, str], *,
                 last: Callable[[], None] | None = None,
                 why: str | None = None) -> NoReturn:
    """Look up args[0] on the container's PATH and execve it.

    A missing file gives 127; one that exists but cannot run gives 126.
    last, if given, runs just before the execve, after the lookup and the
    signals' reset: stage 05 puts its seccomp filter in there.
    """
    path = find_command(args[0], env)
    reset_signals()
    if last:
        last()
    try:
        libc.execve(path, args, env, why=why)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.isfile(path):
            # The file is there: what is missing is its #! interpreter.
            raise RunboxError(
                f"{path}: bad interpreter: {_interpreter(path)}: no such "
                "file or directory", exit_code=EXIT_CANNOT_EXECUTE) from None
        if exc.errno == errno.ENOENT:
            raise RunboxError(f"{path}: no such file or directory",
                              exit_code=EXIT_NOT_FOUND) from None
        reason = os.strerror(exc.errno or errno.EIO).lower()
        if os.path.isdir(path):
            reason = "is a directory"
        raise RunboxError(f"{path}: cannot execute: {reason}",
                          exit_code=EXIT_CANNOT_EXECUTE) from None


def _interpreter(path: str) -> str:
    """The interpreter a script's #! line names, or "?"."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return "?"
    if not first.startswith(b"#!"):
        return "?"
    words = first[2:].split()
    return os.fsdecode(words[0]) if words else "?"


def reset_signals() -> None:
    """Give the command every signal's default action, and none blocked.

    An ignored signal stays ignored across execve, and so does the mask.
    Python ignores SIGPIPE and SIGXFSZ, and whatever started runbox may
    have ignored more: the command would inherit all of it.
    """
    for signum in range(1, signal.SIGRTMAX + 1):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            libc.rt_sigaction_default(signum)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    trace.note("every signal back to its default action, none blocked")


def exit_code(status: int) -> int:
    """A wait status as a shell's exit code: 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class SignalForwarder:
    """Pass the user's signals to the container while runbox waits for it.

    A container's PID 1 ignores any signal it has no handler for, even
    SIGTERM, so a forwarded signal may do nothing.  The second INT, TERM or
    QUIT therefore ends the container with SIGKILL: a user pressing Ctrl-C
    twice always gets their terminal back.
    """

    def __init__(self) -> None:
        self.in_child = False
        self.pid: int | None = None
        self.ended = False
        self.seen: set[int] = set()
        self.saved: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        self.owner = os.getpid()
        for sig in FORWARDED:
            self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            # Once the container has ended, runbox only has its exit code
            # left to give: a late Ctrl-C must not replace it.
            signal.signal(sig, signal.SIG_IGN if self.ended else handler)

    def reaped(self) -> None:
        """The container is gone: its pid may already belong to another
        process, so nothing is sent to it any more."""
        self.pid = None
        self.ended = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.in_child or os.getpid() != self.owner:
            # The container's process, before its exec, has this handler
            # too (a Ctrl-C reaches runbox's whole process group).  It
            # must end there, and not unwind through runbox's cleanup,
            # which is the parent's to do.
            os._exit(128 + signum)
        if self.ended:
            return
        if self.pid is None:
            # Nothing started yet: unwind, so that cleanup runs.
            raise RunboxError(f"interrupted by {libc.signal_name(signum)}",
                              exit_code=128 + signum)
        sig = signum
        if signum in ENDING:
            if signum in self.seen:
                sig = signal.SIGKILL
            self.seen.add(signum)
        try:
            libc.kill(self.pid, sig, why="pass the user's signal on")
        except ProcessLookupError:
            pass


def wait(pid: int, signals: SignalForwarder) -> int:
    """Wait for the container's process; return its shell exit code."""
    _, status = libc.waitpid(
        pid, 0, why="wait for the container to end, and learn how it did")
    signals.reaped()
    return exit_code(status)
