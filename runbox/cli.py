"""What every stage's command line shares: parsing, and reporting failures.

A stage is run as `python stages/NN_name [OPTIONS] CMD [ARG...]`.  Options
stop at the command's name: everything after it belongs to the command, so
`sh --help` shows busybox's help, not runbox's.  A `--` before the command
is accepted and never needed.

Failures are reported here and nowhere else: one line on stderr, starting
with "runbox:", and the exit code of runbox.errors.  A bad option is 125,
as in docker.
"""

from __future__ import annotations

# First, before the slow imports below: see the module's docstring.
from runbox import early_sigint  # noqa: F401 - imported for its effect

import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from runbox import options, trace
from runbox.errors import EXIT_RUNTIME, RunboxError
from runbox.options import Argument, Option
from runbox.process import describe_error

__all__ = ["Argument", "Option", "StageApp", "main"]

# Options end at the first argument that is not one: that is the command.
CONTEXT = {"allow_interspersed_args": False,
           "help_option_names": ["-h", "--help"]}

COMMAND = Argument(None, metavar="CMD [ARG...]",
                   help="The command to run, and its arguments.")
QUIET = Option(False, "--quiet", "-q", help="Do not narrate the syscalls.")

# The options several stages share, declared once.
HOSTNAME = Option(None, "--hostname",
                  help="The container's hostname (default: its id).")
ROOTFS = Option(None, "--rootfs",
                help="An image name or a directory (default: busybox).")
ENV = Option(None, "--env", "-e", help="Set a variable, KEY=VALUE.")
MEMORY = Option(None, "--memory", "-m",
                help="Memory limit, e.g. 64m or 1g.")
MEMORY_SWAP = Option(None, "--memory-swap",
                     help="Memory and swap together; -1 for unlimited "
                          "swap (default: the memory limit, no swap).")
CPUS = Option(None, "--cpus", help="CPUs' worth of time, e.g. 0.5.")
PIDS_LIMIT = Option(None, "--pids-limit",
                    help="At most this many processes.")

HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?")


class StageApp:
    """A stage's one command: parsed fast, or by typer (runbox.options)."""

    def __init__(self, help_text: str) -> None:
        self.help = help_text
        self.func: Callable[..., int] | None = None

    def command(self) -> Callable[[Callable[..., int]], Callable[..., int]]:
        def register(func: Callable[..., int]) -> Callable[..., int]:
            self.func = func
            return func
        return register

    def typer_app(self) -> Any:
        import typer

        app = typer.Typer(add_completion=False, help=self.help,
                          context_settings=CONTEXT,
                          pretty_exceptions_enable=False)
        app.command()(options.typer_command(self.func))
        return app


def stage_app(help_text: str) -> StageApp:
    return StageApp(help_text)


def start(command: list[str] | None, *, quiet: bool) -> list[str]:
    """Check the command, switch narration on unless quiet; return argv."""
    if not command:
        raise RunboxError("no command given: try 'sh'")
    if not quiet and sys.stderr is not None:
        trace.enable()
    return list(command)


def require_root(stage: str) -> None:
    """Namespaces and mounts need root; say so before trying anything."""
    if os.geteuid() != 0:
        raise RunboxError(
            f"{stage} needs root: namespaces and mounts need CAP_SYS_ADMIN "
            "(run it with sudo)")


def stdin_from_devnull() -> None:
    """docker's default without -i: the container reads nothing."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def host_cwd() -> str:
    """The caller's working directory, which stages 01 and 02 keep."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise RunboxError("the current directory no longer exists: "
                          "cd somewhere else first") from None


def check_hostname(name: str) -> str:
    if not HOSTNAME_RE.fullmatch(name):
        raise RunboxError(
            f"bad hostname {name!r}: use letters, digits, '-' and '.', "
            "at most 64 characters")
    return name


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """-e KEY=VALUE options as a dict; a bare KEY takes the host's value."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not key or "\0" in pair:
            raise RunboxError(f"bad environment variable {pair!r}")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return env


def main(app: StageApp, argv: list[str] | None = None) -> NoReturn:
    """Run a stage's command and exit with its code, reporting failures."""
    args = sys.argv[1:] if argv is None else argv
    sys.exit(run_command(app.func, args, app.typer_app))


def run_command(func: Callable[..., int], argv: list[str],
                slow: Callable[[], Any]) -> int:
    """func on argv: by the fast parser if it can, else by slow(), a typer
    app built from the same declarations."""
    kwargs = options.fast_parse(func, argv)
    if kwargs is not None:
        return call(func, kwargs)
    return run_typer(slow(), argv)


def call(func: Callable[..., int], kwargs: dict) -> int:
    """func(**kwargs), its failure reported as one line."""
    return _run(lambda: func(**kwargs))


def run_typer(app: Any, argv: list[str]) -> int:
    return _run(lambda: app(args=argv, standalone_mode=False))


def _run(call: Callable[[], object]) -> int:
    try:
        result = call()
    except BaseException as exc:  # noqa: BLE001 - reported once, as a line
        if isinstance(exc, SystemExit):
            raise
        return _report(exc)
    return result if isinstance(result, int) else 0


def _report(exc: BaseException) -> int:
    """A failure as its one line, and the exit code it ends with."""
    if type(exc).__module__.startswith("typer"):
        import typer

        if isinstance(exc, typer.Exit):
            return exc.exit_code
        if isinstance(exc, typer.Abort):
            return _fail("interrupted", 130)
        if isinstance(exc, typer.TyperException):
            # No arguments at all: the help was the answer, and click's
            # error has no words of its own.
            message = exc.format_message().rstrip(".") or "no command given"
            return _fail(message + " (see --help)")
    if isinstance(exc, KeyboardInterrupt):
        return _fail("interrupted", 130)
    message, code = describe_error(exc)
    return _fail(message, code)


def _fail(message: str, code: int = EXIT_RUNTIME) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    # With stderr closed, Python's sys.stderr is None, and print would
    # fall back to stdout: the command's output is no place for this.
    if sys.stderr is not None:
        try:
            print(f"runbox: {first}", file=sys.stderr, flush=True)
        except OSError:
            pass
    return code
