"""Stage 03: a root filesystem of its own, copy-on-write, with pivot_root.

The container gets its own files: an overlay of the image with a layer of
its own on top, so it may change anything and the image stays pristine.
First the weak way, chroot(2) (--chroot), which a root process can climb
out of; then the real one, pivot_root(2), which swaps the root of the whole
mount namespace and lets the host's tree be unmounted for good.  Inside
the new root come /proc, /sys, a minimal /dev, and /etc files naming the
container.

    python stages/03_pivot_root [--rootfs NAME|DIR] [--hostname NAME]
                                [-e KEY=VALUE] [--chroot] [--quiet]
                                CMD [ARG...]
"""

import os
from pathlib import Path
from typing import NoReturn

from runbox import (
    cli, container, images, libc, mounts, newroot, overlay, process, spec,
)

app = cli.stage_app(__doc__.split("\n\n")[0])


def run(config: spec.Spec, bundle: container.Bundle,
        signals: process.SignalForwarder, *, chroot: bool = False) -> int:
    """Unshare, fork, build the container's root in the child, exec."""
    # Read before the fork: once the root has moved the host's file is gone.
    resolv_conf = newroot.host_resolv_conf()

    def child() -> NoReturn:
        libc.unshare(config.clone_flags("mount", "uts", "ipc"),
                     why="a mount table, hostname and IPC of its own")
        mounts.make_private("/")
        libc.sethostname(config.hostname,
                         why="renames only the new UTS namespace")

        # The overlay is mounted inside the container's mount namespace:
        # it vanishes with the container, and the host never sees it.
        overlay.mount_overlay(Path(config.root.path), bundle)

        if chroot:
            newroot.chroot_into(str(bundle.merged))
        else:
            newroot.pivot_into(str(bundle.merged))

        # From here on every path is the container's own.
        mounts.mount_all(config.mounts)
        mounts.populate_dev()
        newroot.write_etc(config.hostname, resolv_conf)
        libc.chdir(config.process.cwd, why="the command's working directory")

        # The command is looked up on the container's PATH, in its root.
        process.exec_command(config.process.args, config.process.env,
                             why="the container's PID 1 becomes the command")

    libc.unshare(config.clone_flags("pid"),
                 why="the next child forked is PID 1 of a new PID namespace")

    # The child waits until its pid is on record: should runbox be killed,
    # gc can then find the orphaned container and end it.
    pid = process.spawn(
        child, signals, place=lambda pid: container.record_pid(bundle, pid),
        why="the container's first process, PID 1 inside")
    return process.wait(pid, signals)


@app.command()
def main(
    command: list[str] = cli.COMMAND,
    rootfs: str = cli.ROOTFS,
    hostname: str = cli.HOSTNAME,
    env: list[str] = cli.ENV,
    chroot: bool = cli.Option(False, "--chroot",
                                help="Use chroot instead of pivot_root, "
                                     "to see why it is not enough."),
    quiet: bool = cli.QUIET,
) -> int:
    args = cli.start(command, quiet=quiet)
    cli.require_root("stage 03")
    root = images.resolve_rootfs(rootfs)
    extra = cli.parse_env(env)

    # Signals are caught before the container's directory exists, so that
    # no way out of here skips its removal.
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
                    spec.namespaces("pid", "mount", "uts", "ipc")),
            )
            spec.validate(config)
            return run(config, bundle, signals, chroot=chroot)
        finally:
            # The overlay went with the container's mount namespace; only
            # its directories are left.
            container.remove(bundle)


if __name__ == "__main__":
    cli.main(app)
