"""Stage 05: security, so root in the container is not root on the host.

A stage 04 container is limited, but its root still has every capability
and may call any syscall: it can mount, load modules, read /proc/kcore and
push keystrokes into the caller's terminal.  This stage closes those doors
the way production runtimes do, as the last steps before exec:

    masked and read-only paths in /proc and /sys
    a session of its own (and with -t, a terminal of its own)
    every fd above 2 closed, and a working directory inside the root
    capabilities cut to docker's default 14, and --user
    no_new_privs, then a seccomp filter

With --userns, root in the container is also no root on the host: a user
namespace maps it to an unprivileged uid (runbox/userns.py), and runbox
itself may then run as a user other than root.

    python stages/05_security [--rootfs NAME|DIR] [--hostname NAME]
        [-e KEY=VALUE] [-w DIR] [-u USER[:GROUP]] [--memory SIZE]
        [--memory-swap SIZE] [--cpus N] [--pids-limit N] [--cap-add CAP]
        [--cap-drop CAP] [--security-opt OPT] [--userns] [-t] [--quiet]
        CMD [ARG...]
"""

import os
import sys
from pathlib import Path
from typing import NoReturn

from runbox import (
    capabilities, cgroups, cli, container, images, libc, limits, lsm,
    mounts, newroot, overlay, process, security, seccomp, spec, tty, userns,
)
from runbox.errors import RunboxError

app = cli.stage_app(__doc__.split("\n\n")[0])

# The runbox command runs this stage as `runbox run`, as docker would: quiet
# unless --trace, and stdin only with -i.  Run directly, the stage narrates
# and passes stdin on, like the stages before it.
AS_RUNBOX = False


def run(config: spec.Spec, bundle: container.Bundle,
        signals: process.SignalForwarder, opts: dict,
        ids: userns.Mapping | None = None) -> int:
    """Stage 04's container, locked down before it execs."""
    resolv_conf = newroot.host_resolv_conf()
    program = (seccomp.compile(config.linux.seccomp)
               if config.linux.seccomp else None)
    channel = tty.socketpair() if config.process.terminal else None
    old_root = f"/{newroot.PUT_OLD}"

    cgroup = None
    if ids and ids.rootless:
        userns.no_cgroup()
    else:
        cgroup = cgroups.Cgroup(cgroups.detect(), bundle.id)
        container.mark_cgroup(bundle)
        cgroup.create(config.linux.resources)
    try:
        def child() -> NoReturn:
            # Through the host's /proc, while it is still writable: the
            # request holds until this process's execve.
            lsm.apply(opts.get("apparmor"), opts.get("label"))

            # With a user namespace, clone made every namespace already;
            # the child becomes its root first.
            if ids:
                lower = userns.become_root(config.root.path, bundle, ids)
            else:
                libc.unshare(config.clone_flags("mount", "uts", "ipc"),
                             why="a mount table, hostname and IPC of its "
                                 "own")
            mounts.make_private("/")
            libc.sethostname(config.hostname,
                             why="renames only the new UTS namespace")
            if ids:
                userns.mount_overlay(lower)
                newroot.pivot_into("merged", keep_old=True)
            else:
                overlay.mount_overlay(Path(config.root.path), bundle)
                newroot.pivot_into(str(bundle.merged), keep_old=True)

            # The host's root goes last: a user namespace may mount a
            # new /proc only while a full one is in sight, and binds /sys
            # and the device nodes from the host's.  Each node is a mount
            # of its own, which keeps working below when /dev itself may
            # hold no device.
            mounts.mount_all(config.mounts, host_root=old_root)
            mounts.populate_dev(host_dev=f"{old_root}/dev" if ids else None,
                                own_mounts=True)
            newroot.detach_old_root()
            newroot.write_etc(config.hostname, resolv_conf)

            # What /proc and /sys would tell or let change about the host.
            security.mask(config.linux.masked_paths)
            security.make_readonly(config.linux.readonly_paths)

            # CAP_MKNOD stays, as in docker: a node it makes, of the
            # host's disk say, must open nothing.
            security.forbid_devices()

            # A session of its own: the caller's terminal is no longer
            # its controlling terminal, so TIOCSTI cannot reach it.
            if channel:
                channel[0].close()
                tty.setup_child(channel[1])
            else:
                tty.own_session()

            # No fd of the host's may survive to be climbed out of.
            security.close_fds(process.own_pipes())
            security.enter_workdir(config.process.cwd)

            # Without no_new_privs, installing a filter needs CAP_SYS_ADMIN:
            # then it goes in now, while runbox still has it, and the steps
            # below run under it (the default profile allows them).
            if program and not config.process.no_new_privileges:
                seccomp.install(program, why="the syscalls the container "
                                             "may make, from here on")

            # Capabilities: the bounding set first, while CAP_SETPCAP is
            # still there to do it; then the user, then the rest.
            keep = config.process.capabilities or []
            capabilities.drop_bounding(keep)
            capabilities.clear_ambient()
            user = (security.lookup_user(config.process.user)
                    if config.process.user else None)
            if user:
                # setuid away from 0 empties permitted and effective, and
                # clears the parent-death signal.
                security.switch_user(user)
                process.rearm_parent_death()
            if not user or user.uid == 0:
                capabilities.set_process(keep)

            # Last: the filter goes in once the command has been found and
            # the signals reset, so that execve is the one call runbox
            # makes under it.
            last = None
            if config.process.no_new_privileges:
                security.no_new_privs()
                if program:
                    def last() -> None:
                        seccomp.install(program, why="the syscalls the "
                                                     "container may make")
            process.exec_command(
                config.process.args, config.process.env, last=last,
                why="the container's PID 1 becomes the command")

        # A PID namespace belongs to the user namespace of its maker: with
        # --userns, clone makes it together with the user namespace.
        flags = 0
        if ids:
            flags = config.clone_flags("user", "pid", "mount", "uts", "ipc")
        else:
            libc.unshare(config.clone_flags("pid"),
                         why="the next child forked is PID 1 of a new PID "
                             "namespace")

        def place(pid: int) -> None:
            container.record_pid(bundle, pid)
            if cgroup:
                cgroup.add(pid)
            if ids:
                userns.write_maps(pid, ids)

        pid = process.spawn(
            child, signals, place=place, die_with_parent=True,
            clone_flags=flags,
            why="the container's first process, PID 1 inside")
        if channel:
            channel[1].close()
            master = tty.receive_master(channel[0])
            if master >= 0:
                tty.relay(master)
        code = process.wait(pid, signals)

        note = cgroup and cgroup.oom_report(config.linux.resources, code)
        if note:
            print(f"runbox: {note}", file=sys.stderr, flush=True)
        return code
    finally:
        if cgroup:
            cgroup.remove()


def parse_security_opts(values: list[str] | None,
                        caps: list[str]) -> tuple[object, bool, dict]:
    """docker's --security-opt: the seccomp profile, no_new_privs, LSM."""
    profile = seccomp.default_profile(set(caps))
    nnp = True
    lsm_opts: dict = {}
    for value in values or []:
        key, sep, arg = value.partition("=")
        if key == "seccomp" and sep:
            profile = None if arg == "unconfined" else \
                seccomp.load_profile(arg, set(caps))
        elif key == "no-new-privileges":
            if arg not in ("", "true", "false"):
                raise RunboxError(f"bad security option {value!r}")
            nnp = arg != "false"
        elif key in ("apparmor", "label") and sep and arg:
            lsm_opts[key] = arg
        else:
            raise RunboxError(
                f"unknown security option {value!r}: use seccomp=PROFILE|"
                "unconfined, no-new-privileges[=false], apparmor=PROFILE "
                "or label=CONTEXT")
    lsm.check(lsm_opts.get("apparmor"), lsm_opts.get("label"))
    return profile, nnp, lsm_opts


@app.command()
def main(
    command: list[str] = cli.COMMAND,
    rootfs: str = cli.ROOTFS,
    hostname: str = cli.HOSTNAME,
    env: list[str] = cli.ENV,
    workdir: str = cli.Option("/", "--workdir", "-w",
                                help="The command's working directory."),
    user: str = cli.Option(None, "--user", "-u",
                             help="Run as NAME|UID[:GROUP|GID]."),
    memory: str = cli.MEMORY,
    memory_swap: str = cli.MEMORY_SWAP,
    cpus: str = cli.CPUS,
    pids_limit: str = cli.PIDS_LIMIT,
    cap_add: list[str] = cli.Option(None, "--cap-add",
                                      help="Add a capability (or ALL)."),
    cap_drop: list[str] = cli.Option(None, "--cap-drop",
                                       help="Drop a capability (or ALL)."),
    security_opt: list[str] = cli.Option(
        None, "--security-opt",
        help="seccomp=PROFILE.json|unconfined, no-new-privileges=false, "
             "apparmor=PROFILE, label=CONTEXT."),
    terminal: bool = cli.Option(False, "--tty", "-t",
                                  help="Give the container a terminal."),
    interactive: bool = cli.Option(
        False, "--interactive", "-i",
        help="Pass stdin on (runbox run: without it, stdin is /dev/null)."),
    trace: bool = cli.Option(False, "--trace",
                               help="Narrate the syscalls (runbox run)."),
    user_namespace: bool = cli.Option(
        False, "--userns",
        help="Map root in the container to an unprivileged host uid (a "
             "user namespace); runbox may then run as non-root."),
    quiet: bool = cli.QUIET,
) -> int:
    narrate = trace if AS_RUNBOX else not quiet
    args = cli.start(command, quiet=not narrate)
    if user_namespace:
        userns.check_host(rootless=os.geteuid() != 0)
    else:
        cli.require_root("runbox run" if AS_RUNBOX else "stage 05")
    # -t means someone types: stdin comes along, as the issue's
    # `runbox run -t sh` expects (docker would want -it).
    if AS_RUNBOX and not (interactive or terminal):
        cli.stdin_from_devnull()
    root = images.resolve_rootfs(rootfs)
    extra = cli.parse_env(env)
    resources = limits.parse(memory=memory, memory_swap=memory_swap,
                             cpus=cpus, pids_limit=pids_limit)
    caps = capabilities.resolve(cap_add, cap_drop)
    profile, nnp, lsm_opts = parse_security_opts(security_opt, caps)
    if user is not None:
        security.parse_user(user)
    ids = userns.mapping() if user_namespace else None
    if ids:
        userns.check(ids, resources, user)

    if ids and ids.rootless:
        userns.open_dead_bundles()
    container.gc()

    with process.SignalForwarder() as signals:
        bundle = container.create()
        try:
            namespaces = ["pid", "mount", "uts", "ipc"]
            filesystems = spec.default_mounts()
            masked = security.MASKED_PATHS
            if ids:
                root = userns.rootfs_for(rootfs, root, bundle, ids)
                userns.prepare_bundle(bundle, ids)
                namespaces.append("user")
                filesystems = userns.container_mounts(filesystems, ids)
                masked = masked + userns.MASKED_PATHS
            name = cli.check_hostname(
                bundle.id if hostname is None else hostname)
            term = os.environ.get("TERM") if terminal else None
            config = spec.Spec(
                spec.Process(
                    args, spec.container_env(extra, hostname=name,
                                             term=term),
                    cwd=workdir, terminal=terminal, user=user,
                    capabilities=caps, no_new_privileges=nnp),
                spec.Root(str(root)),
                hostname=name,
                mounts=filesystems,
                linux=spec.Linux(
                    spec.namespaces(*namespaces),
                    resources=resources, seccomp=profile,
                    masked_paths=masked,
                    readonly_paths=security.READONLY_PATHS),
            )
            spec.validate(config)
            return run(config, bundle, signals, lsm_opts, ids)
        finally:
            if ids and ids.rootless:
                userns.make_removable(bundle.dir)
            container.remove(bundle)


if __name__ == "__main__":
    cli.main(app)
