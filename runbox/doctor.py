"""`runbox doctor`: can this machine run the stages?  The check a workshop
starts with.

Each check is a small function that returns a Check: whether it passed, a
label saying what was found, and, when it failed, one line on how to fix
it.  A check asks the kernel for real where it can: namespaces are
unshared and an overlay is mounted and written to, each in a child process
whose mount namespace dies with it, so the host's mount table never
changes; a cgroup is made where stage 04 makes its own, and removed.
The parameters of a check exist so that
a test can show it what this machine cannot (a cgroup v2 layout, WSL).

Some checks are needed by a stage (root, the kernel's features, Python,
the default rootfs) and some are only good to know (unprivileged user
namespaces, being inside a container or WSL).  The exit status is 1 when
a needed check fails, else 0.

What it cannot tell: that the stages will work in every detail (a seccomp
filter refused for its size, a controller whose limits do not bite), and
whether a container that looks like one is one; it reads the usual hints.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TextIO

from runbox import cgroups, images, libc, overlay, paths
from runbox import mountinfo as mountinfo_
from runbox.errors import RunboxError
from runbox.libc import (
    CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS,
    MS_PRIVATE, MS_REC,
)
from runbox.seccomp import SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS

# SECCOMP_RET_KILL_PROCESS, which stage 05's filter ends with, and
# SECCOMP_GET_ACTION_AVAIL, which asks for it, came in Linux 4.14.
MIN_KERNEL = (4, 14)
MIN_PYTHON = (3, 11)

# Filesystems an overlay's upper directory cannot live on, by statfs(2)
# magic: an overlay on an overlay (a container's root), shared folders of
# VMs, network filesystems.  0xFACE is the vboxsf of VirtualBox's own guest
# additions; mainline Linux's vboxsf says "VBox".
NO_UPPER = {
    0x794C7630: "overlayfs",
    0x786F4256: "vboxsf",
    0x0000FACE: "vboxsf",
    0x01021997: "9p",
    0x00006969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x0000F15F: "ecryptfs",
}
NAMES = {**{m: n.split("_")[0].lower() for m, n in libc.FS_MAGIC.items()},
         0x9123683E: "btrfs", 0x58465342: "xfs", **NO_UPPER}

SECCOMP_ACTIONS = {"kill_process": SECCOMP_RET_KILL_PROCESS,
                   "errno": SECCOMP_RET_ERRNO}


class Check(NamedTuple):
    ok: bool
    label: str
    fix: str = ""


def _failed(exc: OSError) -> str:
    """An OSError as "mount: Invalid argument", with its likely cause."""
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {exc.filename}"
    hint = getattr(exc, "hint", None)
    return text + (f" ({hint})" if hint else "")


def in_child(step: Callable[[], None]) -> str | None:
    """Run step in a forked child; None if it worked, else its error.

    What the child unshares or mounts dies with it.  Its error comes back
    as text over a pipe; the child always ends in os._exit, so it never
    runs the parent's cleanup or flushes the parent's buffers.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            step()
            code = 0
        except OSError as exc:
            os.write(write_fd, _failed(exc).encode())
        except BaseException as exc:  # noqa: BLE001 - sent to the parent
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"the child {libc.describe_status(status)}"


# --- Needed by a stage ---------------------------------------------------

def root(euid: int | None = None) -> Check:
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return Check(True, "running as root")
    return Check(False, f"not running as root (uid {euid})",
                 "run it with sudo: namespaces and mounts need "
                 "CAP_SYS_ADMIN")


def kernel(release: str | None = None) -> Check:
    release = platform.release() if release is None else release
    numbers = release.split("-")[0].split(".")
    try:
        version = (int(numbers[0]), int(numbers[1]))
    except (IndexError, ValueError):
        version = (0, 0)
    need = ".".join(map(str, MIN_KERNEL))
    if version >= MIN_KERNEL:
        return Check(True, f"Linux {release}")
    return Check(False, f"Linux {release}, older than {need}",
                 f"boot a kernel of {need} or newer (Debian 10 or later)")


def python(version: tuple[int, ...] | None = None) -> Check:
    version = tuple(sys.version_info) if version is None else version
    shown = ".".join(map(str, version[:3]))
    need = ".".join(map(str, MIN_PYTHON))
    if version >= MIN_PYTHON:
        return Check(True, f"Python {shown}")
    return Check(False, f"Python {shown}, older than {need}",
                 f"install Python {need} or newer, then rm -rf .venv && "
                 "make venv")


def namespaces() -> Check:
    """Unshare what the stages unshare, in a child."""
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID
    error = in_child(lambda: libc.unshare(flags))
    if error is None:
        return Check(True, "namespaces: mount, UTS, IPC and PID")
    return Check(False, f"namespaces: unshare failed: {error}",
                 "run as root, on a kernel with namespaces; in a container, "
                 "only a privileged one may make them")


def propagation(mountinfo: str | None = None) -> Check:
    """How / propagates; pivot_root(2) also needs it to be a mount point."""
    mounts = (mountinfo_.read() if mountinfo is None
              else mountinfo_.parse(mountinfo))
    fields = None
    for mount in mounts:
        if mount.point == "/":
            fields = mount.optional
    if fields is None:
        return Check(False, "/ is not a mount point (a chroot?)",
                     "run runbox outside any chroot: pivot_root needs the "
                     "root to be a mount point")
    kind = ("shared" if any(f.startswith("shared:") for f in fields) else
            "slave" if any(f.startswith("master:") for f in fields) else
            "unbindable" if "unbindable" in fields else "private")
    return Check(True, f"/ propagation: {kind} (each container makes its "
                       "own copy private)")


def _fs_name(magic: int) -> str:
    return NAMES.get(magic, hex(magic))


def _overlay_probe(work: Path) -> None:
    """In a child: mount an overlay under work and write through it."""
    lower, upper, merged = work / "lower", work / "upper", work / "merged"
    libc.unshare(CLONE_NEWNS)
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    libc.mount("overlay", str(merged), "overlay", 0,
               overlay.options(lower, upper, work / "work"))
    if (merged / "lower").read_text() != "lower\n":
        raise OSError(errno.EIO, "the lower layer does not show through")
    (merged / "lower").write_text("upper\n")
    if (upper / "lower").read_text() != "upper\n":
        raise OSError(errno.EIO, "a write did not reach the upper layer")


def overlay_fs(state: Path | None = None,
               statfs: Callable[[str], int] = libc.statfs) -> Check:
    """An overlay in the state root, where containers keep their layers."""
    state = paths.state_root() if state is None else state
    # A state root not made yet will be made on its nearest existing
    # parent's filesystem: the probe runs there and leaves nothing behind.
    existing = next(p for p in (state, *state.parents) if p.is_dir())
    magic = statfs(str(existing))
    if magic in NO_UPPER:
        return Check(False, f"{state} is on {NO_UPPER[magic]}, where an "
                            "overlay cannot keep its upper layer",
                     "set RUNBOX_ROOT to a directory on a local disk "
                     "(the default /var/lib/runbox usually is)")
    work = Path(tempfile.mkdtemp(prefix=".runbox-doctor-", dir=existing))
    try:
        for name in ("lower", "upper", "work", "merged"):
            (work / name).mkdir()
        (work / "lower/lower").write_text("lower\n")
        error = in_child(lambda: _overlay_probe(work))
    finally:
        shutil.rmtree(work)
    shown = f"{state} ({_fs_name(magic)})"
    if error is None:
        return Check(True, f"overlayfs works in {shown}")
    return Check(False, f"overlayfs fails in {shown}: {error}",
                 "load it (modprobe overlay), or set RUNBOX_ROOT to a "
                 "directory on a local disk")


def describe_cgroups(layout: cgroups.Layout) -> Check:
    """The layout's mode and which of runbox's controllers it can use."""
    usable: dict[int, list[str]] = {}
    missing = []
    for name in cgroups.CONTROLLERS:
        version = layout.version_of(name)
        if version is None:
            missing.append(name)
        else:
            usable.setdefault(version, []).append(name)
    found = [f"{', '.join(names)} usable in v{version}"
             for version, names in sorted(usable.items(), reverse=True)]
    if missing:
        found.append(f"no {', '.join(missing)}")
    label = f"cgroup {layout.mode}: {'; '.join(found)}"
    if layout.mode == "hybrid":
        label += f" (v2 mounted at {layout.v2_root})"
    if not missing:
        return Check(True, label)
    where = ("boot with cgroup_enable=" if layout.mode == "v2" else
             "mount its v1 hierarchy under /sys/fs/cgroup, or boot with "
             "cgroup_enable=")
    return Check(False, label,
                 f"stage 04 limits with it: {where}{missing[0]}")


def cgroup(root: str = cgroups.CGROUP_ROOT,
           mountinfo: str | None = None) -> Check:
    """The layout, then a cgroup made and removed where stage 04 makes
    its own: runbox/ID under each hierarchy's root.  On v2 that enables
    the controllers top-down first, as stage 04 does, and they stay on."""
    try:
        layout = cgroups.detect(root, mountinfo)
    except RunboxError as exc:
        return Check(False, f"cgroups: {exc}",
                     f"mount cgroup2 on {root} (or boot with systemd)")
    found = describe_cgroups(layout)
    if not found.ok:
        return found
    probe = cgroups.Cgroup(layout, f"doctor-{os.getpid()}")
    try:
        probe.create(None)
    except OSError as exc:
        return Check(False, f"cgroup {layout.mode}: cannot make a cgroup: "
                            f"{_failed(exc)}",
                     f"{root} must be writable: in a container, run it "
                     "--privileged with --cgroupns=host")
    probe.remove()
    return found


def seccomp(avail: Callable[[int], object] | None = None) -> Check:
    """Ask the kernel for the filter actions stage 05 uses."""
    def ask(action: int) -> object:
        return libc.seccomp(libc.SECCOMP_GET_ACTION_AVAIL, 0,
                            ctypes.c_uint32(action))

    avail = ask if avail is None else avail
    for name, action in SECCOMP_ACTIONS.items():
        try:
            avail(action)
        except OSError as exc:
            return Check(False, f"seccomp: no {name} action: {_failed(exc)}",
                         "boot a kernel built with CONFIG_SECCOMP_FILTER, "
                         "4.14 or newer")
    return Check(True, "seccomp filters, with the "
                       f"{' and '.join(SECCOMP_ACTIONS)} actions")


def rootfs() -> Check:
    """The image stage 03 and later run on when no --rootfs is given."""
    path = images.image_rootfs(images.DEFAULT_IMAGE)
    if not path.is_dir():
        return Check(False, f"no default rootfs at {path}",
                     "make rootfs (any make stage3 builds it too)")
    try:
        images.resolve_rootfs(None)
    except RunboxError as exc:
        return Check(False, f"default rootfs: {exc}",
                     "rebuild it: .venv/bin/python -m runbox.images "
                     "busybox --force")
    return Check(True, f"default rootfs: {path}")


# --- Good to know --------------------------------------------------------

def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _unshare_user() -> None:
    """In a child: become nobody, then ask for a user namespace."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    libc.unshare(CLONE_NEWUSER)


def userns(sysctl: Callable[[str], str | None] = _sysctl,
           probe: Callable[[], str | None] | None = None) -> Check:
    """Whether a user without privileges may make a user namespace."""
    label = "unprivileged user namespaces"
    if sysctl("user.max_user_namespaces") == "0":
        return Check(False, f"{label}: user.max_user_namespaces is 0",
                     "sysctl -w user.max_user_namespaces=15000")
    if sysctl("kernel.unprivileged_userns_clone") == "0":
        return Check(False, f"{label}: refused by "
                            "kernel.unprivileged_userns_clone",
                     "sysctl -w kernel.unprivileged_userns_clone=1")
    if sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return Check(False, f"{label}: restricted by AppArmor (Ubuntu "
                            "23.10 and later)",
                     "sysctl -w kernel.apparmor_restrict_unprivileged_userns"
                     "=0, or give the program an AppArmor profile that "
                     "allows userns")
    error = (probe or (lambda: in_child(_unshare_user)))()
    if error is not None:
        return Check(False, f"{label}: unshare failed: {error}",
                     "in a container, its seccomp profile may refuse them: "
                     "run on the host or in a VM")
    return Check(True, f"{label} allowed")


def container_hints(root: Path = Path("/")) -> list[str]:
    """What suggests that this runs inside a container, as sentences."""
    found = [f"/{name} exists" for name in (".dockerenv", "run/.containerenv")
             if (root / name).exists()]
    try:
        init_cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        init_cgroup = ""
    for word in ("docker", "kubepods", "containerd", "libpod", "lxc"):
        if word in init_cgroup:
            found.append(f"PID 1's cgroup names {word}")
            break
    try:
        environ = (root / "proc/1/environ").read_bytes().split(b"\0")
    except OSError:
        environ = []
    for entry in environ:
        if entry.startswith(b"container="):
            found.append(f"PID 1 has {entry.decode(errors='replace')}")
    return found


def container_or_wsl(root: Path = Path("/")) -> Check:
    try:
        release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        release = ""
    if "microsoft" in release.lower():
        if "WSL2" in release or "microsoft-standard" in release:
            return Check(False, f"WSL 2 ({release})",
                         "keep the repository and RUNBOX_ROOT in WSL's own "
                         "filesystem, not under /mnt/c")
        return Check(False, f"WSL 1 ({release}): no namespaces",
                     "convert the distribution: wsl --set-version DISTRO 2")
    hints = container_hints(root)
    if hints:
        return Check(False, f"inside a container? {'; '.join(hints)}",
                     "if so, run it with --privileged --cgroupns=host, or "
                     "use a VM")
    return Check(True, "not inside a container or WSL")


# --- Running them --------------------------------------------------------

NEEDED: list[Callable[[], Check]] = [
    root, kernel, python, namespaces, propagation, overlay_fs, cgroup,
    seccomp, rootfs]
OPTIONAL: list[Callable[[], Check]] = [userns, container_or_wsl]

# The checks that make mounts, namespaces or cgroups: as another user they
# fail for that reason alone, which the root check already says.
AS_ROOT = {namespaces, overlay_fs, cgroup}


def run(checks: list[Callable[[], Check]]) -> list[Check]:
    """Each check's result; one that cannot run at all is a failure."""
    results = []
    for check in checks:
        if check in AS_ROOT and os.geteuid() != 0:
            results.append(Check(False, f"{check.__name__}: not checked",
                                 "run runbox doctor as root"))
            continue
        try:
            results.append(check())
        except (OSError, RunboxError) as exc:
            text = _failed(exc) if isinstance(exc, OSError) else str(exc)
            results.append(Check(False, f"{check.__name__}: {text}",
                                 "see the Troubleshooting section of the "
                                 "README"))
    return results


def use_color(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set."""
    environ = os.environ if environ is None else environ
    return stream.isatty() and not environ.get("NO_COLOR")


def marks(encoding: str | None) -> tuple[str, str]:
    """✔ and ✘, or plain letters where the terminal cannot show them."""
    try:
        "✔✘".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "NO"
    return "✔", "✘"


def _count(n: int, what: str) -> str:
    """How many, as "2 needed checks"; "" for none."""
    return f"{n} {what}{'s' if n > 1 else ''}" if n else ""


def render(needed: list[Check], optional: list[Check], *,
           color: bool = False, encoding: str = "utf-8") -> str:
    """The report, one line per check and a fix line under each failure."""
    good, bad = marks(encoding)
    lines = []
    for results, tint, suffix in ((needed, "31", ""),
                                  (optional, "33", " (optional)")):
        for check in results:
            mark, code = (good, "32") if check.ok else (bad, tint)
            if color:
                mark = f"\033[{code}m{mark}\033[0m"
            lines.append(f"{mark} {check.label}"
                         + ("" if check.ok else suffix))
            if not check.ok:
                lines.append(f"  fix: {check.fix}")
    failed = _count(sum(not c.ok for c in needed), "needed check")
    warned = _count(sum(not c.ok for c in optional), "optional check")
    ready = "Ready: every stage can run here"
    lines.append("")
    lines.append(f"Not ready: {failed} failed." if failed else
                 f"{ready} ({warned} failed)." if warned else f"{ready}.")
    return "\n".join(lines) + "\n"


def main(stream: TextIO | None = None, *,
         needed: list[Callable[[], Check]] | None = None,
         optional: list[Callable[[], Check]] | None = None) -> int:
    """Run the checks, print the report; 1 if a needed check failed."""
    stream = sys.stdout if stream is None else stream
    found = run(NEEDED if needed is None else needed)
    extra = run(OPTIONAL if optional is None else optional)
    # A stream without an encoding (StringIO) holds any text.
    stream.write(render(found, extra, color=use_color(stream),
                        encoding=getattr(stream, "encoding", None)
                        or "utf-8"))
    stream.flush()
    return 1 if any(not check.ok for check in found) else 0


if __name__ == "__main__":
    sys.exit(main())
