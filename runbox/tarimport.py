"""Importing a rootfs tarball safely: nothing may land outside the image.

A tarball is someone else's data: a member named ../../etc/passwd, or one
written through a symlink the archive made a moment earlier, must not reach
the host.  So extraction runs in a child that has chroot(2)ed into the new
image, where every path and link resolves inside it, and every member is
checked first (runbox's own checks: tarfile's filters exist only from
Python 3.11.4, and would strip the setuid bits a rootfs needs).
"""

from __future__ import annotations

import copy
import os
import signal
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from runbox.errors import RunboxError

# The first bytes of each compressed format tarfile can read; anything
# else is taken for a plain tar.  zstd needs Python 3.14.
_COMPRESSIONS = [(b"\x1f\x8b", "gz", "gzip"), (b"BZh", "bz2", "bzip2"),
                 (b"\xfd7zXZ\x00", "xz", "xz"),
                 (b"\x28\xb5\x2f\xfd", "zst", "zstd")]

def open_tarball(tarball: Path) -> tarfile.TarFile:
    # tarfile.open() left to guess tries every compression in turn and,
    # when all fail, lists each failure on a line of its own.  Opened
    # with the compression the file's first bytes announce, it fails
    # with the one reason that applies.
    try:
        with open(tarball, "rb") as file:
            head = file.read(8)
    except FileNotFoundError:
        raise RunboxError(f"tarball {tarball} does not exist") from None
    except OSError as exc:
        raise RunboxError(f"importing {tarball}: {exc.strerror}") from None

    method, label = next(((m, lb) for magic, m, lb in _COMPRESSIONS
                          if head.startswith(magic)), ("", "tar"))
    try:
        return tarfile.open(tarball, f"r:{method}")
    except tarfile.CompressionError as exc:
        raise RunboxError(f"importing {tarball}: cannot decompress"
                          f" {label} ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RunboxError(f"importing {tarball}: not a tar archive ({exc})"
                          ) from None


class _Refused(Exception):
    """A member that cannot be extracted as the archive means it."""


def _inside(path: str, member: tarfile.TarInfo) -> str:
    """path made relative to the image root; refused if it climbs out."""
    # A leading "/" is dropped, as GNU tar and docker do.  A ".." that
    # climbs above the root is refused rather than clipped: no honest
    # export holds one, and skipping it would leave a silently partial
    # image.
    rel = os.path.normpath(path.lstrip("/"))
    if rel == ".." or rel.startswith("../"):
        raise _Refused(f"member {member.name!r} points outside the image;"
                       " refusing the archive")
    return rel


def _checked(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members, each checked against the tree so far.

    Runs in the extracting child, under chroot(2).  extractall() takes
    one member from here and extracts it before it asks for the next,
    so each check sees what the members before it made.  The checks are
    runbox's own: tarfile's extraction filters exist only from Python
    3.11.4 on, and their "data" filter would strip setuid bits.
    """
    for member in archive:
        # Device nodes are skipped: the runtime builds /dev itself, and a
        # node from an archive could give the container a host device.
        if member.ischr() or member.isblk():
            continue
        name = _inside(member.name, member)
        _check_parents(member, name)
        if member.islnk():
            _hard_link(member, name)
            continue
        _clear_place(member, name)
        # Symlinks stay unchanged: they resolve against the image root,
        # here under chroot(2) as later in the container.
        member = copy.copy(member)
        member.name = name
        yield member


def _check_parents(member: tarfile.TarInfo, name: str) -> None:
    # tarfile makes missing parent directories and writes through those
    # that exist, links included.  A link resolves inside the image
    # under chroot(2), so going through one is safe, but only a link to
    # a directory can be gone through.
    parts = name.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        parent = "/".join(parts[:depth])
        path = "/" + parent
        if os.path.isdir(path):
            continue
        if os.path.islink(path):
            raise _Refused(
                f"member {member.name!r} goes through the link {parent!r}"
                f" (to {os.readlink(path)!r}), which leads to no"
                " directory; refusing the archive")
        if os.path.lexists(path):
            raise _Refused(
                f"member {member.name!r} goes through {parent!r}, which is"
                " not a directory; refusing the archive")
        return  # missing: tarfile makes it and everything below it


def _clear_place(member: tarfile.TarInfo, name: str) -> None:
    # A later member replaces an earlier one of the same name.  Left in
    # place, a symlink would be written through (a file member over
    # "hosts -> /etc/shadow" rewrites etc/shadow), and a file would be
    # truncated under every hard link to it.
    path = "/" + name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
    elif not member.isdir():
        raise _Refused(f"member {member.name!r} would replace the directory"
                       f" {name!r}; refusing the archive")


def _hard_link(member: tarfile.TarInfo, name: str) -> None:
    # A hard link names a member extracted earlier.  It is made here, not
    # by tarfile: tarfile links what a symlink points to rather than the
    # symlink, and when the target is missing it copies an earlier member
    # of that name instead, or fails with a bare KeyError.
    target = _inside(member.linkname, member)
    try:
        mode = os.lstat("/" + target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise _Refused(
            f"hard link {member.name!r} points to {member.linkname!r},"
            " which the archive has not created; refusing the archive"
            ) from None
    if stat.S_ISDIR(mode):
        raise _Refused(
            f"hard link {member.name!r} points to the directory"
            f" {member.linkname!r}; refusing the archive")
    if target == name:
        return  # a file archived twice under one name is already here
    _clear_place(member, name)

    # The link is a second name for an inode the archive already made,
    # owner, mode and times included, so nothing more is set on it.
    # follow_symlinks=False links a symlink itself, as link(2) does.
    os.link("/" + target, "/" + name, follow_symlinks=False)


def extract_in_chroot(archive: tarfile.TarFile, root: Path,
                       tarball: Path) -> None:
    # The archive is already open and every module tarfile needs already
    # imported: after chroot(2) the host's files are out of reach.
    #
    # numeric_owner keeps uids as numbers and, as important, never looks
    # names up, which under chroot would load the image's own NSS
    # libraries into this root process.  A Python with extraction filters
    # is told to trust the members, already checked by _checked():
    # without it 3.12 and 3.13 warn, and 3.14 strips setuid bits.
    options: dict[str, object] = {"numeric_owner": True}
    if hasattr(tarfile, "fully_trusted_filter"):
        options["filter"] = "fully_trusted"

    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise

    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            # Under chroot every name and every link, absolute or full of
            # "..", resolves inside the new rootfs, so no member reaches
            # the host however the archive is built.
            os.chroot(root)
            os.chdir("/")
            # errorlevel 2 turns a failed chown or chmod into an error
            # instead of a silently wrong owner or a lost setuid bit.
            archive.errorlevel = 2
            archive.extractall("/", _checked(archive), **options)
            status = 0
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            os.write(write_fd, message.encode(errors="replace")[:4000])
        finally:
            os._exit(status)

    os.close(write_fd)
    try:
        with open(read_fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
    except BaseException:
        # Interrupted (Ctrl-C): the child must be gone before the caller
        # deletes the directory it is writing into.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        message = f"extracting process killed by signal {-code}"
    if code != 0:
        raise RunboxError(f"importing {tarball}: {message}")
