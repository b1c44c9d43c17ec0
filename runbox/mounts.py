"""Mounts inside the container: propagation, /proc, /sys and a working /dev.

Everything here runs in the child, inside its own mount namespace, so none
of it can reach the host's mount table, provided make_private("/") ran
first.  Paths are the container's: these run after the root has moved.
A bind mount's source is the host's, found under the host's old root while
it is still attached; a symlink on the way there would resolve inside the
container, so only plain host paths such as /sys and /dev/null are bound.
"""

from __future__ import annotations

import os

from runbox import libc
from runbox.errors import RunboxError
from runbox.libc import (
    AT_FDCWD, AT_RECURSIVE, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID,
    MS_PRIVATE, MS_RDONLY, MS_REC, MS_STRICTATIME, S_IFCHR, S_IFREG,
    MountAttr,
)
from runbox.spec import Mount

# OCI mount options that are mount(2) flags; the rest go to the filesystem.
OPTION_FLAGS = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
}

# What a new bind takes from its source whatever mount(2) is told, and so
# is set afterwards with mount_setattr(2).
BIND_ATTRS = {
    MS_RDONLY: MountAttr.MOUNT_ATTR_RDONLY,
    MS_NOSUID: MountAttr.MOUNT_ATTR_NOSUID,
    MS_NODEV: MountAttr.MOUNT_ATTR_NODEV,
    MS_NOEXEC: MountAttr.MOUNT_ATTR_NOEXEC,
}

# The character devices a program expects, as docker creates them.
DEVICES = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
]

# The links a program expects in /dev, into the container's own /proc.
DEV_LINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
]


def make_private(path: str = "/") -> None:
    """Stop mount events crossing between this namespace and the host's.

    A new mount namespace starts with copies of the host's mounts, and
    systemd marks them shared: without this, a mount made in the container
    would appear on the host, and unmounting would propagate back too.
    """
    libc.mount(None, path, None, MS_REC | MS_PRIVATE,
               why="make every mount private, so nothing propagates to "
                   "or from the host")


def parse_options(options: list[str]) -> tuple[int, str | None]:
    """OCI mount options as mount(2)'s flags and data string."""
    flags = 0
    data = []
    for option in options:
        if option in OPTION_FLAGS:
            flags |= OPTION_FLAGS[option]
        else:
            data.append(option)
    return flags, ",".join(data) or None


def mount_all(mounts: list[Mount], *, host_root: str | None = None) -> None:
    """Mount each entry, in order, creating its mount point if missing.

    A bind mount's source is taken under host_root, the host's old root.
    """
    for entry in mounts:
        if not os.path.isabs(entry.destination):
            raise RunboxError(
                f"mount destination {entry.destination!r} is not absolute")
        # Any symlink on the way resolves inside the container: the root
        # has already moved, so the host is out of reach.  Something other
        # than a directory in the way is left for mount(2) to refuse.
        if not os.path.lexists(entry.destination):
            os.makedirs(entry.destination)
        flags, data = parse_options(entry.options)
        if flags & MS_BIND:
            bind(entry.source, entry.destination, flags, host_root)
            continue
        libc.mount(entry.source, entry.destination, entry.type, flags, data,
                   why=MOUNT_WHY.get(entry.destination))


def bind(source: str, target: str, flags: int, host_root: str | None) -> None:
    """Bind the host's source onto target, then set its flags.

    mount(2) ignores MS_RDONLY and the like when it makes a bind: the new
    mount has its source's flags.  mount_setattr(2) then sets them, on
    every mount of the tree for an rbind, and leaves alone the flags a
    user namespace may not clear (the host's nosuid, say).
    """
    if host_root is None:
        raise RunboxError(f"bind mount of {source}: the host's root is no "
                          "longer attached to take it from")
    libc.mount(host_root + source, target, None, flags & (MS_BIND | MS_REC),
               None, why=BIND_WHY.get(target, MOUNT_WHY.get(target)))
    attrs = 0
    for flag, attr in BIND_ATTRS.items():
        if flags & flag:
            attrs |= attr
    if attrs:
        libc.mount_setattr(AT_FDCWD, target,
                           AT_RECURSIVE if flags & MS_REC else 0, attrs,
                           why="the bind's own flags, on every mount of it")


MOUNT_WHY = {
    "/proc": "a /proc of the container's own PID namespace: ps sees only "
             "its processes",
    "/sys": "the kernel's device tree, read-only",
    "/dev": "an empty /dev: the container gets only the devices made next",
    "/dev/pts": "a new devpts instance: the container's ptys are its own",
    "/dev/shm": "POSIX shared memory, private to the container",
    "/dev/mqueue": "POSIX message queues of the container's IPC namespace",
}
BIND_WHY = {
    "/sys": "the host's /sys itself: a new sysfs needs a network namespace "
            "the container's user namespace owns",
}


def populate_dev(dev: str = "/dev", *, host_dev: str | None = None,
                 own_mounts: bool = False) -> None:
    """Create the device nodes and links of a minimal /dev.

    With host_dev, the host's own device nodes are bound instead, as docker
    does in a user namespace: there, mknod(2) of a device is refused.  With
    own_mounts, each node made is bound onto itself, a mount of its own
    that keeps working once /dev itself may hold no device (stage 05).
    """
    for name, major, minor in DEVICES:
        path = f"{dev}/{name}"
        if host_dev:
            libc.mknod(path, S_IFREG | 0o666, 0,
                       why="an empty file to bind the device onto")
            libc.mount(f"{host_dev}/{name}", path, None, MS_BIND, None,
                       why=f"the host's {name} device, the same node")
            continue
        libc.mknod(path, S_IFCHR | 0o666, os.makedev(major, minor),
                   why=f"the {name} device")
        # mknod applies the umask, which takes the write bits away.
        libc.chmod(path, 0o666, why="mknod's mode was cut by the umask")
        if own_mounts:
            libc.mount(path, path, None, MS_BIND, None,
                       why="a mount of its own, which /dev's nodev will "
                           "not reach")
    for target, link in DEV_LINKS:
        if dev != "/dev":
            link = dev + link.removeprefix("/dev")
        libc.symlink(target, link, why=None)
