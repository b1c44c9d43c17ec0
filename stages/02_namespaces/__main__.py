"""Stage 02: namespaces, so the command sees a machine of its own.

A namespace gives a process its own copy of one kind of kernel resource:
UTS its hostname, IPC its message queues and shared memory, PID its process
numbers, mount its mount table.  Each flag is unshared where it belongs:
CLONE_NEWPID only takes effect for the children forked after it, so the
parent unshares it before the fork and the first child is PID 1; the rest
the child unshares for itself, so runbox stays on the host to clean up.

The files are still the host's: this container can read and change every
file the host has.  Stage 03 fixes that.

    python stages/02_namespaces [--hostname NAME] [--quiet] CMD [ARG...]
"""

import os
from typing import NoReturn

from runbox import cli, libc, mounts, process, spec

app = cli.stage_app(__doc__.split("\n\n")[0])


def run(config: spec.Spec) -> int:
    """Unshare, fork, set the child up inside its namespaces, exec."""

    def child() -> NoReturn:
        libc.unshare(config.clone_flags("mount", "uts", "ipc"),
                     why="a mount table, hostname and IPC of its own")

        # First thing in the new mount namespace: without it, the /proc
        # mounted below would show up on the host too.
        mounts.make_private("/")

        libc.sethostname(config.hostname,
                         why="renames only the new UTS namespace")

        # Only the mounts this stage asks for: a fresh /proc over the
        # host's, so ps shows the container's processes alone.
        mounts.mount_all(config.mounts)

        process.exec_command(config.process.args, config.process.env,
                             why="the container's PID 1 becomes the command")

    # Nothing else may be forked between here and the container: the
    # first child made after this unshare becomes PID 1, and if it dies
    # the namespace accepts no new process.
    libc.unshare(config.clone_flags("pid"),
                 why="the next child forked is PID 1 of a new PID namespace")

    with process.SignalForwarder() as signals:
        pid = process.spawn(
            child, signals, why="the container's first process, PID 1 inside")
        return process.wait(pid, signals)


@app.command()
def main(
    command: list[str] = cli.COMMAND,
    hostname: str = cli.HOSTNAME,
    quiet: bool = cli.QUIET,
) -> int:
    args = cli.start(command, quiet=quiet)
    cli.require_root("stage 02")

    proc = [m for m in spec.default_mounts() if m.destination == "/proc"]
    config = spec.Spec(
        spec.Process(args, dict(os.environ), cli.host_cwd()),
        spec.Root("/"),
        hostname=cli.check_hostname(
            os.urandom(6).hex() if hostname is None else hostname),
        mounts=proc,
        linux=spec.Linux(spec.namespaces("pid", "mount", "uts", "ipc")),
    )
    spec.validate(config)
    return run(config)


if __name__ == "__main__":
    cli.main(app)
