"""Stage 04: cgroups, so the container is limited as well as hidden.

Namespaces hide the host; they do not stop a container from taking all of
its memory, filling its process table or spinning every CPU.  This stage
puts the container in a cgroup of its own with docker's limits: --memory,
--memory-swap, --cpus and --pids-limit.  The child waits on a pipe until the
parent has written its pid into cgroup.procs, so nothing of the container
ever runs unlimited.  An OOM kill is reported as one, read from the cgroup
before it goes; when PID 1 exits, whatever is left in the cgroup is killed
and the cgroup removed.  What a killed runbox left behind, the next run
collects.

    python stages/04_cgroups [--rootfs NAME|DIR] [--hostname NAME]
                             [-e KEY=VALUE] [--memory SIZE]
                             [--memory-swap SIZE] [--cpus N]
                             [--pids-limit N] [--quiet] CMD [ARG...]
"""

import os
import sys
from pathlib import Path
from typing import NoReturn

from runbox import (
    cgroups, cli, container, images, libc, limits, mounts, newroot, overlay,
    process, spec,
)

app = cli.stage_app(__doc__.split("\n\n")[0])


def run(config: spec.Spec, bundle: container.Bundle,
        signals: process.SignalForwarder) -> int:
    """Make the cgroup, unshare, fork, place the child, build its root."""
    resolv_conf = newroot.host_resolv_conf()

    # The cgroup exists, limits written, before the container does.
    cgroup = cgroups.Cgroup(cgroups.detect(), bundle.id)
    container.mark_cgroup(bundle)
    cgroup.create(config.linux.resources)
    try:
        def child() -> NoReturn:
            libc.unshare(config.clone_flags("mount", "uts", "ipc"),
                         why="a mount table, hostname and IPC of its own")
            mounts.make_private("/")
            libc.sethostname(config.hostname,
                             why="renames only the new UTS namespace")
            overlay.mount_overlay(Path(config.root.path), bundle)
            newroot.pivot_into(str(bundle.merged))
            mounts.mount_all(config.mounts)
            mounts.populate_dev()
            newroot.write_etc(config.hostname, resolv_conf)
            libc.chdir(config.process.cwd,
                       why="the command's working directory")
            process.exec_command(
                config.process.args, config.process.env,
                why="the container's PID 1 becomes the command")

        libc.unshare(config.clone_flags("pid"),
                     why="the next child forked is PID 1 of a new PID "
                         "namespace")

        def place(pid: int) -> None:
            container.record_pid(bundle, pid)
            cgroup.add(pid)

        # The child waits until place() has put it in its cgroup: its
        # first instruction already runs limited.  And from here on it
        # dies with runbox, even if runbox is killed with SIGKILL.
        pid = process.spawn(
            child, signals, place=place, die_with_parent=True,
            why="the container's first process, PID 1 inside")
        code = process.wait(pid, signals)

        # Read before the cgroup goes: the count goes with it.
        note = cgroup.oom_report(config.linux.resources, code)
        if note:
            print(f"runbox: {note}", file=sys.stderr, flush=True)
        return code
    finally:
        # PID 1 is gone; anything left in the cgroup goes with it.
        cgroup.remove()


@app.command()
def main(
    command: list[str] = cli.COMMAND,
    rootfs: str = cli.ROOTFS,
    hostname: str = cli.HOSTNAME,
    env: list[str] = cli.ENV,
    memory: str = cli.MEMORY,
    memory_swap: str = cli.MEMORY_SWAP,
    cpus: str = cli.CPUS,
    pids_limit: str = cli.PIDS_LIMIT,
    quiet: bool = cli.QUIET,
) -> int:
    args = cli.start(command, quiet=quiet)
    cli.require_root("stage 04")
    root = images.resolve_rootfs(rootfs)
    extra = cli.parse_env(env)
    resources = limits.parse(memory=memory, memory_swap=memory_swap,
                             cpus=cpus, pids_limit=pids_limit)

    # What a runbox killed with SIGKILL left behind: its cgroup, its
    # container's processes, its directories.  Only those of dead runboxes.
    container.gc()

    with process.SignalForwarder() as signals:
        bundle = container.create()
        try:
            name = cli.check_hostname(
                bundle.id if hostname is None else hostname)
            config = spec.Spec(
                spec.Process(args, spec.container_env(
                    extra, hostname=name, term=os.environ.get("TERM"))),
                spec.Root(str(root)),
                hostname=name,
                mounts=spec.default_mounts(),
                linux=spec.Linux(
                    spec.namespaces("pid", "mount", "uts", "ipc"),
                    resources=resources),
            )
            spec.validate(config)
            return run(config, bundle, signals)
        finally:
            container.remove(bundle)


if __name__ == "__main__":
    cli.main(app)
