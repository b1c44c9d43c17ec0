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
from typing import NoReturn

import typer

from runbox import trace
from runbox.errors import EXIT_RUNTIME, RunboxError
from runbox.process import describe_error

# Options end at the first argument that is not one: that is the command.
CONTEXT = {"allow_interspersed_args": False,
           "help_option_names": ["-h", "--help"]}

COMMAND = typer.Argument(None, metavar="CMD [ARG...]",
                         help="The command to run, and its arguments.")
QUIET = typer.Option(False, "--quiet", "-q",
                     help="Do not narrate the syscalls.")

HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?")


def stage_app(help_text: str) -> typer.Typer:
    """A one-command Typer app for a stage."""
    return typer.Typer(add_completion=False, help=help_text,
                       context_settings=CONTEXT, pretty_exceptions_enable=False)


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


def main(app: typer.Typer, argv: list[str] | None = None) -> NoReturn:
    """Run a stage's app and exit with its code, reporting any failure."""
    code = _run(lambda: app(args=argv, standalone_mode=False))
    sys.exit(code)


def _run(call: Callable[[], object]) -> int:
    try:
        result = call()
    except typer.TyperException as exc:
        return _fail(exc.format_message().rstrip(".") + " (see --help)")
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", 130)
    except BaseException as exc:  # noqa: BLE001 - reported once, as a line
        if isinstance(exc, SystemExit):
            raise
        message, code = describe_error(exc)
        return _fail(message, code)
    return result if isinstance(result, int) else 0


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
