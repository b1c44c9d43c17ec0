"""User namespaces: root in the container, an unprivileged user on the host.

A user namespace maps ids.  With `0 100000 65536` in its uid_map, uid 0
inside is uid 100000 outside, uid 1 is 100001, and so on for 65536 ids.
Root inside holds every capability, but only over what the namespace owns:
its mount, PID, UTS and IPC namespaces, and files whose owners it maps.
A file of host root's belongs to no one inside (it shows as nobody), and
root there cannot change it.  A container that got past its other walls
would be uid 100000 on the host.  See user_namespaces(7).

How --userns sets one up:

    clone(2)     the user namespace and the others in one call, so that
                 it owns them: /proc is mounted only in a PID namespace
                 that the mounter's user namespace owns
    the maps     written by runbox to /proc/PID/uid_map and gid_map while
                 the child waits for the word to go on (spawn's place);
                 setgroups "deny" first only if runbox is not root, as
                 the kernel requires of a writer without CAP_SETGID
    setuid(0)    in the child: its ids become the mapped root's, so host
                 root's files are no longer its own
    the image    a copy owned by the mapped ids (images.shifted_rootfs):
                 overlay copies a file up only if its owner is mapped
    /sys, /dev   bound from the host: a new sysfs needs a network
                 namespace the container owns (it shares the host's), and
                 mknod(2) of a device is refused

Run as root, runbox maps the range of root's line in /etc/subuid and
/etc/subgid, or 100000:65536 where there is none.  Run by another user
("rootless"), it maps that user alone to root: the one id a process may
map without help.

What this module cannot do:

- A non-root runbox maps one id, so inside there is root and no one else:
  --user is refused, and chown to another id fails.  newuidmap(1) and the
  user's /etc/subuid range, which would map more, are not used.
- A non-root runbox makes no cgroup, even where systemd has delegated one
  to the user: --memory, --cpus and --pids-limit are refused and no OOM
  kill is reported.  The container's processes still end with its PID 1.
- A non-root runbox uses the image as it is: the user's files are root's
  inside, any other file shows as nobody and cannot be changed.
- A non-root runbox keeps its supplementary groups inside (shown as
  nobody): the kernel forbids dropping them, as a dropped group could be
  one that denies access.
- The host's network is shared, and it belongs to the host's user
  namespace: root in the container holds no CAP_NET_RAW or
  CAP_NET_BIND_SERVICE over it, so ping and ports below 1024 fail.
- A rootfs given as a directory is copied for each container, where an
  image is copied once: for a big tree, import it as an image.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runbox import container, images, libc, overlay, paths, process, trace
from runbox.container import Bundle
from runbox.errors import RunboxError
from runbox.libc import O_CLOEXEC, O_DIRECTORY, O_PATH
from runbox.spec import Mount, Resources

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
PROC_SYS = "/proc/sys"

# The range docker's userns-remap and podman pick when nothing says more.
DEFAULT_FIRST = 100000
DEFAULT_COUNT = 65536

# The rbind of the host's /sys brings its cgroup trees along, read-only;
# they tell of every other container's limits, which a new sysfs would
# not show, so they are covered like docker's masked paths.
MASKED_PATHS = ["/sys/fs/cgroup"]


@dataclass(frozen=True)
class IdMap:
    """One line of uid_map or gid_map: ids 0 to count-1 inside are the
    host's from first on."""

    first: int
    count: int

    def line(self) -> str:
        return f"0 {self.first} {self.count}"

    def shown(self) -> str:
        return f"{self.first}-{self.first + self.count - 1}"


@dataclass(frozen=True)
class Mapping:
    """The ids a container's user namespace maps, and who maps them."""

    uids: IdMap
    gids: IdMap
    rootless: bool


def _sysctl(name: str, proc_sys: str) -> str | None:
    try:
        with open(f"{proc_sys}/{name.replace('.', '/')}") as f:
            return f.read().strip()
    except OSError:
        return None


def _mapped(first: int, count: int, path: str) -> bool:
    """Whether ids first to first+count-1 are mapped in the user namespace
    runbox runs in, by one line of its uid_map or gid_map at path."""
    try:
        with open(path) as f:
            lines = [line.split() for line in f]
    except OSError:
        return True
    return any(len(words) == 3 and int(words[0]) <= first
               and first + count <= int(words[0]) + int(words[2])
               for words in lines)


def check_host(*, rootless: bool, proc_sys: str = PROC_SYS,
               proc_self: str = "/proc/self") -> None:
    """Refuse, before anything starts, a host that forbids user namespaces
    to this process: the kernel's own refusal would come later, as EPERM
    or ENOSPC with no word of which setting is behind it."""
    if _sysctl("user.max_user_namespaces", proc_sys) == "0":
        raise RunboxError("--userns: user namespaces are disabled on this "
                          "host (user.max_user_namespaces=0)")
    if not (_mapped(os.geteuid(), 1, f"{proc_self}/uid_map")
            and _mapped(os.getegid(), 1, f"{proc_self}/gid_map")):
        raise RunboxError(
            "--userns: runbox runs in a user namespace that does not map "
            "its own uid or gid, and the kernel makes none inside such a "
            "one")
    if not rootless:
        return
    if _sysctl("kernel.unprivileged_userns_clone", proc_sys) == "0":
        raise RunboxError(
            "--userns: this host allows user namespaces to root only "
            "(kernel.unprivileged_userns_clone=0): run runbox as root")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns",
               proc_sys) == "1":
        raise RunboxError(
            "--userns: AppArmor denies user namespaces to programs without "
            "a profile that allows them (kernel.apparmor_restrict_"
            "unprivileged_userns=1): run runbox as root")


def _subid(path: str) -> IdMap | None:
    """root's range in /etc/subuid or /etc/subgid, if it has one."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, _, rest = line.strip().partition(":")
        first, _, count = rest.partition(":")
        if (name in ("root", "0") and first.isdigit() and count.isdigit()
                and int(count) > 0):
            return IdMap(int(first), int(count))
    return None


def mapping(*, subuid: str = SUBUID, subgid: str = SUBGID) -> Mapping:
    """The ids the container's user namespace maps, for this runbox."""
    if os.geteuid() != 0:
        uids, gids = IdMap(os.geteuid(), 1), IdMap(os.getegid(), 1)
        trace.note(f"not root: host uid {uids.first} and gid {gids.first} "
                   "alone become root inside, the only ids a process may "
                   "map without help")
        return Mapping(uids, gids, rootless=True)
    found = []
    for path in (subuid, subgid):
        ids = _subid(path)
        if ids is None:
            ids = IdMap(DEFAULT_FIRST, DEFAULT_COUNT)
            trace.note(f"no line for root in {path}: runbox's default "
                       f"range {ids.first}:{ids.count}")
        found.append(ids)
    uids, gids = found
    trace.note(f"host uids {uids.shown()} and gids {gids.shown()} are 0 "
               f"to {uids.count - 1} inside: root in the container is "
               f"uid {uids.first} on the host")
    return Mapping(uids, gids, rootless=False)


def check(ids: Mapping, resources: Resources, user: str | None) -> None:
    """Refuse, in one line, a mapping runbox cannot write, and what a
    non-root runbox cannot give."""
    if not ids.rootless:
        # Root of a user namespace itself (runbox in a container) can map
        # only the ids its own namespace maps.
        for kind, ids_ in (("uid", ids.uids), ("gid", ids.gids)):
            if not _mapped(ids_.first, ids_.count, f"/proc/self/{kind}_map"):
                raise RunboxError(
                    f"--userns: host {kind}s {ids_.shown()} are not mapped "
                    "in the user namespace runbox runs in: give root a "
                    f"range there in /etc/sub{kind}")
        return
    if resources.memory or resources.cpu or resources.pids:
        raise RunboxError(
            "--memory, --cpus and --pids-limit need a cgroup, and a "
            "non-root runbox makes none: run runbox as root")
    if user is not None:
        raise RunboxError(
            "--user: a non-root runbox maps its own uid alone, as root, so "
            "no other user exists inside")
    # The nearest existing directory on the way to the state root must
    # be writable, or container.create fails with a bare EACCES.
    root = paths.state_root()
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunboxError(
            f"a non-root runbox keeps its state under RUNBOX_ROOT, and "
            f"{root} is not writable: set RUNBOX_ROOT to a directory of "
            "your own")


def no_cgroup() -> None:
    trace.note("no cgroup: a non-root runbox cannot make one here, so "
               "nothing limits the container; its PID 1 ending ends the "
               "rest of its processes")


def container_mounts(mounts: list[Mount], ids: Mapping) -> list[Mount]:
    """The default mounts, as a user namespace can have them."""
    adapted = []
    for entry in mounts:
        if entry.type == "sysfs":
            # runc's rootless spec does the same: the host's /sys, bound
            # read-only with everything below it.
            entry = Mount(entry.destination, "bind", "/sys",
                          ["rbind", *entry.options])
        elif entry.type == "devpts" and ids.gids.count == 1:
            # gid 5 (tty) is not mapped, and devpts refuses an owner it
            # cannot map; the ptys then belong to root's group.
            entry = Mount(entry.destination, entry.type, entry.source,
                          [o for o in entry.options
                           if not o.startswith("gid=")])
        adapted.append(entry)
    return adapted


def rootfs_for(rootfs: str | None, root: Path, bundle: Bundle,
               ids: Mapping) -> Path:
    """The lower layer: the image, with owners the namespace maps."""
    if ids.rootless:
        # Only root may give files to other uids, so a non-root runbox has
        # no shifted copy to run on: the image's own files must be its
        # user's, or root inside could not even write /etc/hostname.
        owner = root.stat().st_uid
        if owner != os.geteuid():
            raise RunboxError(
                f"rootfs {root} belongs to uid {owner}: a non-root runbox "
                "runs only on a rootfs its user owns (copy one: "
                "stages/05_security/README.md says how)")
        trace.note("the image as it is: the files this user owns are "
                   "root's inside, any other shows as nobody")
        return root
    uids = (ids.uids.first, ids.uids.count)
    gids = (ids.gids.first, ids.gids.count)
    name = images.image_name(rootfs)
    if name is not None:
        path = images.shifted_rootfs(name, uids, gids)
        trace.note(f"{path}: the image owned by host uids "
                   f"{ids.uids.shown()}, made once, kept with the image")
        return path
    path = bundle.dir / "rootfs"
    images.shift_copy(root, path, uids, gids)
    trace.note(f"{path}: a copy of {root} owned by host uids "
               f"{ids.uids.shown()}, for this container alone: a directory "
               "is no image to keep it with")
    return path


def prepare_bundle(bundle: Bundle, ids: Mapping) -> None:
    """Let the namespace's root reach its layers, and own upper and work."""
    uid, gid = ids.uids.first, ids.gids.first
    for layer in (bundle.upper, bundle.work):
        libc.chown(str(layer), uid, gid,
                   why="the overlay writes here as the container's root")
    libc.chown(str(bundle.dir), -1, gid, why="the container's root group")
    libc.chmod(str(bundle.dir), 0o710,
               why="its root may pass through to upper, work and merged, "
                   "not list or change runbox's files here")


def write_maps(pid: int, ids: Mapping) -> None:
    """The parent's part: the maps of the child's user namespace.

    Each map is written once, by a process in the parent namespace.  One
    without CAP_SETGID over the host's ids must first switch setgroups(2)
    off in the child: otherwise the child could drop a group that
    denies it access to a file.
    """
    if ids.rootless:
        libc.write_file(f"/proc/{pid}/setgroups", "deny",
                        why="the kernel requires it before a non-root "
                            "process writes gid_map")
    else:
        trace.note('setgroups stays "allow": runbox writes gid_map with '
                   "CAP_SETGID over the host's ids, so the kernel does not "
                   'require "deny", and the child drops host groups itself')
    libc.write_file(f"/proc/{pid}/uid_map", ids.uids.line(),
                    why=f"uid 0 inside is host uid {ids.uids.first}")
    libc.write_file(f"/proc/{pid}/gid_map", ids.gids.line(),
                    why=f"gid 0 inside is host gid {ids.gids.first}")


def become_root(lower: str, bundle: Bundle, ids: Mapping) -> int:
    """The child's part, once the maps are there; returns the image's fd.

    Until setuid, the child has host root's ids, unmapped in its namespace:
    it owns host root's files, and may still pass the 0700 directories
    above the image and the bundle.  The mapped root cannot, so the image
    is held by an fd and the bundle is made the working directory first.
    """
    fd = libc.open(lower, O_PATH | O_DIRECTORY | O_CLOEXEC,
                   why="hold the image while the way to it is still open")
    libc.chdir(str(bundle.dir), why="upper, work and merged are found "
                                    "from here, by relative paths")
    if not ids.rootless:
        libc.setgroups([], why="host root's groups, unmapped, would still "
                               "open the host's files of those groups")
    libc.setgid(0, why=f"root's group inside, host gid {ids.gids.first}")
    libc.setuid(0, why=f"root inside, host uid {ids.uids.first}: host "
                       "root's files are no longer its own")
    process.rearm_parent_death()
    return fd


def mount_overlay(lower_fd: int) -> None:
    """The copy-on-write root, mounted as the namespace's root.

    overlay records the mounter's ids and writes the upper layer as them,
    so this comes after setuid.  userxattr: its whiteout and opaque marks
    go in user.* attributes, since trusted.* ones are host root's alone.
    """
    data = overlay.options(Path(f"/proc/self/fd/{lower_fd}"),
                           Path("upper"), Path("work")) + ",userxattr"
    try:
        libc.mount("overlay", "merged", "overlay", 0, data,
                   why="a copy-on-write root; the image by its fd")
    finally:
        os.close(lower_fd)


def make_removable(directory: Path) -> None:
    """Open every directory under directory to its owner, so a non-root
    runbox can delete it: overlay makes work/work with mode 0, and the
    container may close directories of its own."""
    try:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            return
        if st.st_mode & 0o700 != 0o700:
            os.chmod(directory, stat.S_IMODE(st.st_mode) | 0o700)
        with os.scandir(directory) as entries:
            below = [Path(e.path) for e in entries
                     if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return  # a gc in another runbox removed it meanwhile
    for path in below:
        make_removable(path)


def open_dead_bundles() -> None:
    """Before gc, as non-root: make the directories of containers whose
    runbox died removable, or gc would stop at their work/work."""
    root = paths.containers_dir()
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        bundle = Bundle(entry.name, entry)
        if (entry.is_dir() and not entry.is_symlink()
                and not container.owner_alive(bundle)):
            make_removable(entry)
