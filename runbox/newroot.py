"""Moving the container into its own root: chroot, then pivot_root.

chroot(2) only changes where path lookups start for one process.  The old
root is still mounted in the namespace, the working directory may lie
outside the new root, and a process that may call chroot again can climb
out with "..": chroot_into() is here to show that.  pivot_root(2) moves the
whole mount namespace onto the new root and hands back the old one, which
is then unmounted, so nothing of the host is left to climb to.
"""

from __future__ import annotations

import os

from runbox import libc
from runbox.libc import MNT_DETACH

PUT_OLD = ".oldroot"


def chroot_into(new_root: str) -> None:
    """The weak way: change this process's root directory only."""
    libc.chdir(new_root, why="stand in the new root before chroot")
    libc.chroot(".", why="path lookups start here now; the host's mounts "
                         "are all still there")
    libc.chdir("/", why="leave no working directory outside the new root")


def pivot_into(new_root: str, *, keep_old: bool = False) -> None:
    """The real way: make new_root the root of the mount namespace.

    pivot_root(2) wants new_root to be a mount point (the overlay is) and
    no mount involved to be shared (make_private ran first).  With
    keep_old, the host's root stays at /.oldroot until detach_old_root():
    a user namespace mounts /proc only while a full one is in sight.
    """
    libc.chdir(new_root, why="pivot_root resolves put_old from here")
    libc.mkdir(PUT_OLD, 0o700, why="somewhere to put the old root")

    libc.pivot_root(".", PUT_OLD,
                    why="the overlay becomes /, the host's root moves to "
                        f"/{PUT_OLD}")
    libc.chdir("/", why="the working directory was left on the old root")
    if not keep_old:
        detach_old_root()


def detach_old_root() -> None:
    """Unmount the host's root from the container, and its mount point."""
    # Lazily: the old root still has busy mounts (the host's /proc, /sys)
    # and a plain umount would fail with EBUSY.
    libc.umount2(f"/{PUT_OLD}", MNT_DETACH,
                 why="detach the host's whole tree from this namespace")
    libc.rmdir(f"/{PUT_OLD}", why="leave no trace of where it was")


def _replace(path: str, content: str) -> None:
    """Write a file in the new root, replacing a symlink rather than
    following it: an image whose /etc/hosts points elsewhere must not make
    runbox write there.  This runs after the root moved, so even a
    followed link would stay inside; the image is still left as it was.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                 0o644)
    with open(fd, "w") as f:
        f.write(content)


def host_resolv_conf() -> str:
    """The host's resolver settings, to pass on; none if it has none."""
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write_etc(hostname: str, resolv_conf: str) -> None:
    """Give the container its /etc/hostname, /etc/hosts and resolv.conf.

    The container shares the host's network at this stage, so the host's
    resolver settings (read before the fork) still apply.
    """
    _replace("/etc/hostname", f"{hostname}\n")
    _replace("/etc/hosts",
             "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
             f"127.0.1.1\t{hostname}\n")
    _replace("/etc/resolv.conf", resolv_conf)
