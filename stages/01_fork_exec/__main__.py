"""Stage 01: fork and exec, the way every process on Linux starts.

A shell runs a command in two steps: fork(2) copies the running process,
and the copy calls execve(2) to become the command.  The original waits
with waitpid(2) to learn how the command ended.  A container runtime does
the same; every later stage only adds what happens between fork and exec.

Nothing is isolated yet: the command shares everything with the host.

    python stages/01_fork_exec [--quiet] CMD [ARG...]
"""

import os
from typing import NoReturn

from runbox import cli, process, spec

app = cli.stage_app(__doc__.split("\n\n")[0])


def run(config: spec.Spec) -> int:
    """Fork, exec the command in the child, wait in the parent."""

    def child() -> NoReturn:
        # The child becomes the command.  execve only returns by failing,
        # and spawn() carries that failure back to the parent.
        process.exec_command(config.process.args, config.process.env,
                             why="the child becomes the command")

    # While runbox waits, Ctrl-C and friends go on to the command.
    with process.SignalForwarder() as signals:
        pid = process.spawn(
            child, signals, why="a copy of runbox, to become the command")
        return process.wait(pid, signals)


@app.command()
def main(command: list[str] = cli.COMMAND, quiet: bool = cli.QUIET) -> int:
    args = cli.start(command, quiet=quiet)

    # No namespaces and no root of its own: the command sees the host's
    # files, so it gets the host's environment too.  That includes what
    # Python added to it: started in the C locale, Python sets LC_CTYPE
    # (PEP 538), so a command started with `env -i` still sees LC_CTYPE.
    config = spec.Spec(spec.Process(args, dict(os.environ), cli.host_cwd()),
                       spec.Root("/"))
    spec.validate(config)
    return run(config)


if __name__ == "__main__":
    cli.main(app)
