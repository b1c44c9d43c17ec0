"""The last steps before exec: what a container may still see and do.

Each closes a known way out of the earlier stages:

    masked paths     /proc/kcore, /proc/keys and friends show nothing
    read-only paths  /proc/sys, /proc/sysrq-trigger cannot be written
    no devices       a node made with CAP_MKNOD (the host's disk) opens
                     nothing: the writable mounts lose `dev`
    a new session    no controlling terminal to push keystrokes into
                     (TIOCSTI) on the caller's behalf
    closed fds       no directory fd of the host's is left to climb from
    the working dir  must lie inside the container's root
    the user         --user switches uid and gids, capabilities go with it
    no_new_privs     no setuid binary or file capability can raise them

All of it runs in the child, in the container's namespaces, after
pivot_root: every path here is the container's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from runbox import libc, trace
from runbox.errors import RunboxError
from runbox.libc import MS_BIND, MS_NODEV, MS_RDONLY, MS_REC, MS_REMOUNT

# docker's lists: files that leak the host's memory, keys or timing, and
# directories of hardware the container has no business with.
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
# Kernel knobs that a write would change for the whole host.
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]


def mask(paths: list[str]) -> None:
    """Hide each path: /dev/null over a file, an empty tmpfs over a dir."""
    for path in paths:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            libc.mount("tmpfs", path, "tmpfs", MS_RDONLY, None,
                       why="hide what the host keeps here")
        else:
            libc.mount("/dev/null", path, None, MS_BIND, None,
                       why="reads of this file now read /dev/null")


def make_readonly(paths: list[str]) -> None:
    """Bind each path onto itself, then make that bind read-only."""
    for path in paths:
        if not os.path.lexists(path):
            continue
        libc.mount(path, path, None, MS_BIND | MS_REC, None,
                   why="a mount of its own, to set read-only")
        libc.mount(path, path, None, MS_BIND | MS_REC | MS_REMOUNT
                   | MS_RDONLY, None,
                   why="no write can change the host's kernel settings")


# The per-mount flags statvfs(3) reports, with the values mount(2) takes.
_KEPT_FLAGS = os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC


def forbid_devices(points: tuple[str, ...] = ("/", "/dev")) -> None:
    """No device node made in the container opens anything.

    runbox keeps CAP_MKNOD, as docker does, and docker pairs it with a
    device cgroup that lets only /dev/null and its like be opened: without
    that, mknod of the host's disk and a read of it is the whole escape.
    runbox closes it with mount flags instead, on both cgroup versions:
    the writable filesystems it gave the container, the overlay root and
    /dev, lose `dev`, so a node made on them opens nothing (EACCES).
    /dev's own nodes are bind mounts of their own and keep working.
    Remounting a bind sets its flags anew, so each keeps the ones it had
    (the atime ones stay by themselves).
    """
    for point in points:
        flags = os.statvfs(point).f_flag & _KEPT_FLAGS
        libc.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_NODEV
                   | flags, None,
                   why="a device node made here opens nothing")


def close_fds(keep: set[int]) -> None:
    """Close every fd above 2 but those in keep.

    A directory fd of the host's that survives into the container is a way
    out: fchdir to it and walk up (runc's CVE-2024-21626).  runbox's own
    pipes are close-on-exec and stay until execve closes them.
    """
    start = 3
    for fd in sorted(keep) + [1 << 20]:
        if fd >= start:
            os.closerange(start, min(fd, os.sysconf("SC_OPEN_MAX")))
            start = fd + 1
    trace.note("every fd above 2 closed, but runbox's own pipes")


def enter_workdir(cwd: str) -> None:
    """chdir into cwd, made first if it is missing (as docker does), and
    make sure it lies inside the container's root."""
    if not os.path.isabs(cwd):
        raise RunboxError(f"working directory {cwd!r} is not absolute")
    # After pivot_root every path is the container's, and /proc is
    # read-only: nothing made here can land on the host.
    made = ""
    for part in cwd.strip("/").split("/"):
        made += "/" + part
        if part and not os.path.lexists(made):
            libc.mkdir(made, 0o755, why="a missing working directory is "
                                        "made, as docker does")
    libc.chdir(cwd, why="the command's working directory")
    try:
        os.getcwd()
    except FileNotFoundError:
        # getcwd(2) says "(unreachable)" for a directory outside the root.
        raise RunboxError(
            f"working directory {cwd} is outside the container") from None


@dataclass
class User:
    """Who the command runs as: OCI's process.user."""

    uid: int
    gid: int
    additional_gids: list[int]


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f
                    if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def lookup_user(spec: str) -> User:
    """--user NAME|UID[:GROUP|GID], looked up in the container's files."""
    name, _, group = spec.partition(":")
    passwd = _entries("/etc/passwd")
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if len(e) > 3 and e[2] == name),
                     None)
        gid = int(entry[3]) if entry else uid if not group else 0
        login = entry[0] if entry else None
    else:
        entry = next((e for e in passwd if e and e[0] == name), None)
        if entry is None or len(entry) < 4:
            raise RunboxError(
                f"unable to find user {name}: no matching entries in "
                "the container's /etc/passwd")
        uid, gid, login = int(entry[2]), int(entry[3]), name
    groups = _entries("/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if g and g[0] == group), None)
            if found is None:
                raise RunboxError(
                    f"unable to find group {group}: no matching entries in "
                    "the container's /etc/group")
            gid = int(found[2])
    extra = sorted({int(g[2]) for g in groups
                    if len(g) > 3 and login and login in g[3].split(",")}
                   - {gid})
    return User(uid, gid, extra)


def parse_user(spec: str) -> str:
    """Check --user's shape before anything starts; names come later."""
    name, sep, group = spec.partition(":")
    if not name or (sep and not group) or ":" in group:
        raise RunboxError(f"bad user {spec!r}: use NAME|UID[:GROUP|GID]")
    for part in (name, group):
        # (uid_t)-1 means "no change" to setuid(2) and friends, so the
        # kernel takes no id above 4294967294.
        if part.isdigit() and int(part) >= (1 << 32) - 1:
            raise RunboxError(f"bad user {spec!r}: id out of range: use 0 "
                              f"to {(1 << 32) - 2}")
    return spec


def switch_user(user: User) -> None:
    """Become user: groups first, then gid, then uid (which needs root)."""
    libc.setgroups(user.additional_gids,
                   why="only the user's own supplementary groups")
    libc.setgid(user.gid, why="the user's group")
    libc.setuid(user.uid, why="the user: from here on, not root")


def no_new_privs() -> None:
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1,
               why="no setuid binary or file capability can raise "
                   "privileges from here on")
