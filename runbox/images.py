"""Root filesystems for containers ("images"), one directory each.

An image is a plain directory, images/NAME/rootfs under the state root.  It
comes from one of two places: build_busybox() assembles a tiny one from
Debian's busybox-static package, and import_tarball() unpacks a rootfs
tarball such as `docker export` output or an Alpine minirootfs.  Containers
never write to it; the runtime lays an overlay on top.  For a user
namespace, shifted_rootfs() keeps a copy beside it whose owners are moved
into the host ids the namespace maps (images/NAME/rootfs-100000-65536).

What this module cannot do:

- It pulls nothing from a registry and knows no layers or manifests: an
  image is whatever one tarball held.
- Extended attributes are not restored, because Python's tarfile ignores
  them; a binary that relies on file capabilities (ping in some images)
  loses them and needs setuid or root inside the container instead.
- A tarball's symlinks are kept as they are and may point anywhere
  (etc/hosts -> /etc/shadow).  They resolve inside the container, but host
  code that opens a path inside a rootfs must resolve it inside that rootfs
  too, or it follows the link on the host.
- remove_image() does not know which containers use an image; removing one
  under a running container pulls the lower layer out from under it.
- A copy for a user namespace takes the image's disk space again.  It is
  replaced when the image is built or imported again with --force, but
  not if the rootfs is changed by hand; `images rm` removes it.
- A build's leftovers are recognised by the process id in their name.  A
  build running in another PID namespace on the same state root looks dead,
  and a build or import of the same name there deletes its work.
"""

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from runbox import paths, pids
from runbox.errors import EXIT_RUNTIME, RunboxError

DEFAULT_IMAGE = "busybox"
BUSYBOX_PACKAGE = "busybox-static"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")

# Work directories inside an image directory: .build-PID-RANDOM and the
# like, named after the process that made them so that a later build can
# tell a dead one's leftovers from a concurrent build.  Names without a
# pid come from runbox versions before that and are always leftovers.
_WORK = re.compile(
    r"\.(?:build|import|old|shift)-(?:(\d+)-)?[a-z0-9_]{8}")

# Copies for user namespaces: rootfs-UID-COUNT, and -GID-COUNT after it
# when the gids come from another range than the uids.
_SHIFTED = re.compile(r"rootfs-\d+-\d+(?:-\d+-\d+)?")

# Mount points and the usual skeleton; tmp and var/tmp are world-writable
# and sticky, root's home is private, as on any Debian system.
_SKELETON = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "etc": 0o755, "root": 0o700, "tmp": 0o1777, "proc": 0o555,
    "sys": 0o555, "dev": 0o755, "home": 0o755, "var/tmp": 0o1777,
    "run": 0o755,
}

# hostname, hosts and resolv.conf are replaced at run time by bind mounts,
# which need an existing file as their target.
_ETC_FILES = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hostname": "runbox\n",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "resolv.conf": "",
}


def validate_name(name: str) -> str:
    """Return name if it can name an image, else raise RunboxError."""
    if not _NAME.fullmatch(name):
        raise RunboxError(
            f"invalid image name {name!r}: use lowercase letters, digits,"
            " '.', '_' and '-', starting with a letter or digit,"
            " at most 128 characters")
    return name


def image_rootfs(name: str) -> Path:
    """Where the image NAME keeps its root filesystem."""
    return paths.images_dir() / validate_name(name) / "rootfs"


def resolve_rootfs(rootfs: str | None) -> Path:
    """Turn an image name or a directory into an absolute rootfs path.

    None means the default image.  A value with a slash in it (or "."
    or "..") is a directory used as it is; anything else names an image,
    so a directory in the current directory never shadows one: write
    ./NAME for that.
    """
    name = image_name(rootfs)
    path = image_rootfs(name) if name is not None else \
        Path(rootfs).absolute()
    try:
        # Asked first, so that a closed directory on the way says so: on
        # a newer Python, exists() and is_dir() may answer False for it.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.stat(path)
        if name is not None and not path.is_dir():
            raise RunboxError(
                f"rootfs {name!r} not found in {paths.images_dir()}: "
                + _how_to_get(name))
        if not path.exists():
            raise RunboxError(f"rootfs {path} does not exist")
        if not path.is_dir():
            raise RunboxError(f"rootfs {path} is not a directory")

        # The host's / passes every other check, and a container on it
        # would lay its overlay over the host's own files.  samefile also
        # catches "/..", a link to / and a bind mount of it.
        if os.path.samefile(path, "/"):
            raise RunboxError(f"rootfs {path} is the host's own root: give "
                              "an image or a rootfs directory")
        _check_plausible(path)
    except PermissionError:
        # root's images are closed to other users (images/NAME is 0700).
        raise RunboxError(
            f"rootfs {path}: permission denied"
            + (": a non-root runbox needs a rootfs of its own, --rootfs DIR"
               if os.geteuid() != 0 else "")) from None
    return path.resolve()


def image_name(rootfs: str | None) -> str | None:
    """The image a --rootfs value names, or None if it is a directory."""
    if rootfs is None:
        return DEFAULT_IMAGE
    if "/" in rootfs or rootfs in (".", ".."):
        return None
    return rootfs


def _how_to_get(name: str) -> str:
    if name == DEFAULT_IMAGE:
        return "run 'make rootfs' to build it"
    return f"import it with 'runbox import TARBALL {name}'"


def _looks_like_rootfs(path: Path) -> bool:
    # A rootfs without bin or usr is almost always a wrong path, most often
    # the image directory instead of its rootfs; running it would only fail
    # later with a confusing "not found".  This also refuses a rootfs made
    # of one static binary at the top, which then needs a bin directory.
    # lexists: a merged-/usr bin -> /usr/bin must not be followed on the host.
    return any(os.path.lexists(path / d) for d in ("bin", "usr"))


def _check_plausible(path: Path) -> None:
    if _looks_like_rootfs(path):
        return
    hint = ""
    if (path / "rootfs").is_dir():
        hint = f"; did you mean {path / 'rootfs'}?"
    raise RunboxError(
        f"rootfs {path} has no bin or usr directory, so it is not a root"
        f" filesystem{hint}")


def list_images() -> list[tuple[str, Path]]:
    """Every image that has a rootfs, as (name, rootfs path), by name."""
    try:
        names = sorted(os.listdir(paths.images_dir()))
    except FileNotFoundError:
        return []
    # Build leftovers and half-made images (no rootfs yet) are not images.
    return [(n, paths.images_dir() / n / "rootfs") for n in names
            if _NAME.fullmatch(n)
            and (paths.images_dir() / n / "rootfs").is_dir()]


def remove_image(name: str) -> None:
    """Delete the image NAME, its rootfs and its records."""
    image = paths.images_dir() / validate_name(name)
    if not image.is_dir():
        raise RunboxError(
            f"image {name!r} not found in {paths.images_dir()}")
    # Move it aside first, so a half-deleted rootfs is never found by name.
    import tempfile

    trash = Path(tempfile.mkdtemp(dir=paths.images_dir(), prefix=".rm-"))
    try:
        os.rename(image, trash / name)
    finally:
        shutil.rmtree(trash)


@contextlib.contextmanager
def _workspace(name: str, kind: str) -> Iterator[tuple[Path, Path]]:
    """The image directory of NAME and a fresh work directory inside it.

    The work directory is removed however the block ends; the image
    directory too when the block fails and this call made it.
    """
    image = paths.images_dir() / validate_name(name)
    image.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.mkdir()
        made = True
    except FileExistsError:
        made = False

    work = None
    finished = False
    try:
        # A rootfs keeps the setuid-root binaries its archive holds; a
        # host user who could reach them would run them as root.  So the
        # directory above it is closed to others, as docker does with
        # /var/lib/docker.  The price: a runtime without CAP_DAC_OVERRIDE
        # (rootless) cannot reach the image either.
        os.chmod(image, 0o700)
        _remove_stale(image)
        work = _work_dir(image, kind)
        yield image, work
        finished = True
    finally:
        if work is not None and work.exists():
            shutil.rmtree(work)
        if made and not finished:
            _remove_if_empty(image)


def _work_dir(parent: Path, kind: str) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(dir=parent,
                                 prefix=f".{kind}-{os.getpid()}-"))


def _remove_stale(image: Path) -> list[str]:
    """Delete the work directories of builds whose process is gone, and
    return their names.

    A build killed by a signal or a power cut never reaches its cleanup;
    the next build of the same name does it, or gc.
    """
    removed = []
    for entry in os.listdir(image):
        match = _WORK.fullmatch(entry)
        if match is None:
            continue
        # A dead build's pid reused since by another process keeps its
        # leftovers until that process ends too.
        if match[1] is not None and pids.running(int(match[1])):
            continue  # a concurrent build, still at work
        try:
            shutil.rmtree(image / entry)
            removed.append(entry)
        except FileNotFoundError:
            pass  # another build swept it at the same moment
    return sorted(removed)


def gc() -> list[str]:
    """Delete what dead builds, imports and uid-shifted copies left in
    every image; return the work directories removed."""
    removed = []
    try:
        names = sorted(os.listdir(paths.images_dir()))
    except FileNotFoundError:
        return []
    for name in names:
        image = paths.images_dir() / name
        if not image.is_dir() or image.is_symlink():
            continue
        removed += [f"{name}/{entry}" for entry in _remove_stale(image)]
    return removed


def _remove_if_empty(image: Path) -> None:
    # A concurrent build of the same name that made the directory a
    # moment ago but not yet its work directory then fails with "No such
    # file or directory", and succeeds when run again.
    try:
        os.rmdir(image)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.ENOENT):
            raise


def _install(new: Path, dest: Path, force: bool) -> None:
    """Move a finished rootfs into place with rename(2)."""
    if force and dest.exists():
        # rename(2) cannot replace a non-empty directory, so the old one
        # moves aside first.  Between the two renames the image is absent:
        # a container starting in that instant fails with "not found".
        old = _work_dir(dest.parent, "old")
        os.rename(dest, old / "rootfs")
        os.rename(new, dest)
        # The copies for user namespaces are of the old rootfs: they go
        # with it, and the next container with --userns makes a new one.
        for entry in os.listdir(dest.parent):
            if _SHIFTED.fullmatch(entry):
                os.rename(dest.parent / entry, old / entry)
        shutil.rmtree(old)
        return
    try:
        os.rename(new, dest)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # A concurrent build finished first; its rootfs is as good.
        shutil.rmtree(new)


def _write_source(image: Path, text: str) -> None:
    tmp = image / ".source.tmp"
    tmp.write_text(text)
    os.replace(tmp, image / "source")


def build_busybox(name: str = DEFAULT_IMAGE, *, force: bool = False
                  ) -> Path:
    """Build a busybox rootfs from Debian's busybox-static package.

    The package is downloaded and unpacked, never installed on the host.
    An existing image is returned as it is unless force is set.
    """
    dest = image_rootfs(name)
    if dest.is_dir() and not force:
        # An earlier build that was killed after another had finished
        # left its work behind; this is the next build of the name.
        _remove_stale(dest.parent)
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RunboxError(
                f"building the busybox rootfs needs {tool} (a Debian or"
                " Ubuntu host); import a rootfs tarball instead with"
                " 'python -m runbox.images import TARBALL NAME'")

    # Everything is built next to the destination, on the same filesystem,
    # so the final rename(2) is atomic and a half-built image is never seen.
    with _workspace(name, "build") as (image, work):
        deb = _download(work)
        _run(["dpkg-deb", "-x", str(deb), str(work / "deb")])
        fields = _run(["dpkg-deb", "-f", str(deb),
                       "Package", "Version", "Architecture"])
        rootfs = work / "rootfs"
        _make_busybox_tree(work / "deb", rootfs)
        _install(rootfs, dest, force)
    _write_source(image, fields + "Fetched-With: apt-get download\n")
    return dest


def _run(argv: list[str], cwd: Path | None = None) -> str:
    """Run a tool; its stdout, or RunboxError with its last error line."""
    import subprocess

    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [
            f"exit status {proc.returncode}"]
        errors = [ln for ln in lines if ln.startswith("E:")]
        raise RunboxError(f"{' '.join(argv[:2])} failed: "
                          f"{(errors or lines)[-1]}")
    return proc.stdout


def _download(work: Path) -> Path:
    argv = ["apt-get", "download", BUSYBOX_PACKAGE]
    try:
        _run(argv, cwd=work)
    except RunboxError:
        # Package lists that are missing (a fresh container image) or
        # stale (the mirror dropped the version) both fail here; one
        # update fixes either, and a second failure is reported as is.
        _run(["apt-get", "update"])
        _run(argv, cwd=work)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise RunboxError(f"apt-get download left {len(debs)} .deb files"
                          f" in {work}, expected one")
    return debs[0]


def _make_busybox_tree(unpacked: Path, rootfs: Path) -> None:
    # Debian 12 ships bin/busybox; later releases moved it under usr.
    binary = next((unpacked / p for p in ("bin/busybox", "usr/bin/busybox")
                   if (unpacked / p).is_file()), None)
    if binary is None:
        raise RunboxError(f"{BUSYBOX_PACKAGE} holds no bin/busybox")

    rootfs.mkdir(mode=0o755)
    for rel, mode in _SKELETON.items():
        (rootfs / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(rootfs / rel, mode)  # mkdir's mode is cut by the umask
    shutil.copyfile(binary, rootfs / "bin/busybox")
    os.chmod(rootfs / "bin/busybox", 0o755)

    # One link per applet, where a full system would have the program.
    # The absolute target dangles on the host but resolves in the container.
    applets = _run([str(rootfs / "bin/busybox"), "--list-full"])
    for rel in applets.split() + ["bin/sh"]:
        link = rootfs / rel.lstrip("/")
        if os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)

    for file, text in _ETC_FILES.items():
        (rootfs / "etc" / file).write_text(text)
        os.chmod(rootfs / "etc" / file, 0o644)


def shifted_rootfs(name: str, uids: tuple[int, int],
                   gids: tuple[int, int]) -> Path:
    """The image NAME owned by the host ids a user namespace maps.

    uids and gids are (first host id, count).  A file of uid N in the image
    belongs to host uid first+N in the copy, so root of the namespace owns
    what root owned in the image, and may change it through the overlay.
    The copy is made once per range, next to the image, in a work
    directory that rename(2) moves into place when it is complete.
    """
    source = image_rootfs(name)
    suffix = f"{uids[0]}-{uids[1]}"
    if gids != uids:
        suffix += f"-{gids[0]}-{gids[1]}"
    dest = source.parent / f"rootfs-{suffix}"
    if dest.is_dir():
        return dest
    with _workspace(name, "shift") as (_, work):
        shift_copy(source, work / "rootfs", uids, gids)
        _install(work / "rootfs", dest, force=False)
    return dest


def shift_copy(source: Path, dest: Path, uids: tuple[int, int],
               gids: tuple[int, int]) -> None:
    """Copy the tree at source to dest, each owner moved up by the first id.

    Nothing on the way is followed: a symlink is copied as the link it is,
    a file is opened with O_NOFOLLOW, hard links stay links.  Modes, the
    setuid bits among them, and times are kept; extended attributes are
    not (images have none, see above).  An owner beyond the range's count
    cannot be mapped and stops the copy.
    """
    seen: dict[tuple[int, int], str] = {}

    def owner(path: str, st: os.stat_result) -> tuple[int, int]:
        if st.st_uid >= uids[1] or st.st_gid >= gids[1]:
            raise RunboxError(
                f"{path}: owner {st.st_uid}:{st.st_gid} lies outside the "
                f"ids the user namespace maps (uids 0-{uids[1] - 1}, gids "
                f"0-{gids[1] - 1})")
        return uids[0] + st.st_uid, gids[0] + st.st_gid

    def copy(src: str, dst: str, st: os.stat_result) -> None:
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(mode):
            os.mkdir(dst, 0o700)
            with os.scandir(src) as entries:
                for entry in entries:
                    copy(entry.path, os.path.join(dst, entry.name),
                         entry.stat(follow_symlinks=False))
        elif key in seen:
            os.link(seen[key], dst, follow_symlinks=False)
            return
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(mode):
            _copy_file(src, dst)
        else:
            os.mknod(dst, mode, st.st_rdev)  # devices, fifos, sockets
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            seen[key] = dst
        # For a directory, after its entries, which change its times.
        os.chown(dst, *owner(src, st), follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            # After chown, which clears the setuid and setgid bits.
            os.chmod(dst, stat.S_IMODE(mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns),
                 follow_symlinks=False)

    copy(str(source), str(dest), os.lstat(source))


def _copy_file(src: str, dst: str) -> None:
    # O_NONBLOCK: a fifo put in the file's place would not hang the copy.
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                    | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while os.sendfile(fd_out, fd_in, None, 1 << 30):
                pass
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def import_tarball(tarball: Path, name: str, *, force: bool = False
                   ) -> Path:
    """Unpack a rootfs tarball as the image NAME, keeping modes and owners.

    No member can land outside the image: extraction runs in a child that
    has chroot(2)ed into the new rootfs, and every member is checked
    before it is extracted.
    """
    dest = image_rootfs(name)
    if dest.exists() and not force:
        raise RunboxError(f"image {name!r} already exists in"
                          f" {paths.images_dir()}: pass --force to replace it")
    if os.geteuid() != 0:
        raise RunboxError("importing a tarball needs root: it extracts"
                          " inside chroot(2) and keeps the archive's owners")
    from runbox import tarimport

    tarball = Path(tarball).absolute()
    archive = tarimport.open_tarball(tarball)

    with archive, _workspace(name, "import") as (image, work):
        os.chmod(work, 0o755)
        tarimport.extract_in_chroot(archive, work, tarball)
        if not _looks_like_rootfs(work):
            raise RunboxError(f"{tarball} holds no bin or usr directory,"
                              " so it is not a root filesystem")
        _install(work, dest, force)
    _write_source(image, f"Imported-From: {tarball}\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    """The command line: build, import, list and remove images."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            # A bad option is runbox's own failure: exit 125, not 2.
            self.print_usage(sys.stderr)
            raise RunboxError(message)

    parser = _Parser(prog="python -m runbox.images",
                     description="Build, import and list runbox images.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("busybox", help="build the busybox image")
    build.add_argument("--name", default=DEFAULT_IMAGE)
    build.add_argument("--force", action="store_true",
                       help="rebuild even if it exists")
    imp = sub.add_parser("import", help="import a rootfs tarball")
    imp.add_argument("tarball", type=Path)
    imp.add_argument("name")
    imp.add_argument("--force", action="store_true",
                     help="replace an existing image")
    sub.add_parser("list", help="list images")
    rm = sub.add_parser("rm", help="remove an image")
    rm.add_argument("name")

    try:
        args = parser.parse_args(argv)
        if args.command == "busybox":
            print(build_busybox(args.name, force=args.force))
        elif args.command == "import":
            print(import_tarball(args.tarball, args.name, force=args.force))
        elif args.command == "list":
            for name, rootfs in list_images():
                print(f"{name:<20} {rootfs}")
        else:
            remove_image(args.name)
    except RunboxError as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The host refused something (permissions, a full disk); the
        # message names the call's path, a traceback would add nothing.
        print(f"runbox: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
