"""The kernel interface: one thin, narrated wrapper per syscall.

Wrappers are named exactly like the syscall and take the man page's
arguments in the man page's order, plus a keyword-only `why` that the
narration prints.  Flags are enum.IntFlag values with the kernel header
names, so a trace shows CLONE_NEWNS|CLONE_NEWPID rather than a number.

Where the stdlib already makes the call well, the wrapper passes through to
it: os.fork runs Python's after-fork hooks (a raw fork would not), and
os.execve, os.waitpid, os.chroot and friends already check errors.  Only what
the stdlib lacks goes through ctypes: unshare, setns, mount, umount2,
pivot_root, prctl, mount_setattr, and clone, which runs Python's after-fork
hooks itself.

A failed call raises OSError with the errno, so PermissionError and friends
still apply, and with the syscall's name in its strerror and the path as its
filename.  Where a cause is well known, the error carries it as `hint`.

This module speaks to x86_64 and aarch64 Linux; on another architecture
pivot_root (which glibc does not wrap) raises an OSError saying so.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from runbox import trace

_libc = ctypes.CDLL(None, use_errno=True)

# The processor's name, as uname(2) gives it ("x86_64", "aarch64"): the
# same as platform.machine(), without importing platform at every start.
MACHINE = os.uname().machine

# glibc has no pivot_root(); it is reached through syscall(2) by number,
# as is rt_sigaction, whose glibc wrapper refuses glibc's own signals.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(MACHINE)
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}.get(MACHINE)
# clone(2) with namespace flags, and mount_setattr(2), which glibc 2.36
# does not wrap either.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(MACHINE)
_SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}.get(MACHINE)


class CloneFlag(enum.IntFlag):
    """Namespace flags for unshare(2), setns(2) and clone(2)."""

    CLONE_NEWTIME = 0x00000080
    CLONE_NEWNS = 0x00020000
    CLONE_NEWCGROUP = 0x02000000
    CLONE_NEWUTS = 0x04000000
    CLONE_NEWIPC = 0x08000000
    CLONE_NEWUSER = 0x10000000
    CLONE_NEWPID = 0x20000000
    CLONE_NEWNET = 0x40000000


class MountFlag(enum.IntFlag):
    """Flags for mount(2)."""

    MS_RDONLY = 1
    MS_NOSUID = 2
    MS_NODEV = 4
    MS_NOEXEC = 8
    MS_SYNCHRONOUS = 16
    MS_REMOUNT = 32
    MS_NOATIME = 1024
    MS_BIND = 4096
    MS_MOVE = 8192
    MS_REC = 16384
    MS_SILENT = 32768
    MS_UNBINDABLE = 1 << 17
    MS_PRIVATE = 1 << 18
    MS_SLAVE = 1 << 19
    MS_SHARED = 1 << 20
    MS_STRICTATIME = 1 << 24


class UmountFlag(enum.IntFlag):
    """Flags for umount2(2)."""

    MNT_FORCE = 1
    MNT_DETACH = 2
    MNT_EXPIRE = 4
    UMOUNT_NOFOLLOW = 8


class MountAttr(enum.IntFlag):
    """Attributes for mount_setattr(2), from <linux/mount.h>."""

    MOUNT_ATTR_RDONLY = 0x1
    MOUNT_ATTR_NOSUID = 0x2
    MOUNT_ATTR_NODEV = 0x4
    MOUNT_ATTR_NOEXEC = 0x8


class OpenFlag(enum.IntFlag):
    """The open(2) flags runbox uses."""

    O_RDONLY = 0
    O_DIRECTORY = os.O_DIRECTORY
    O_NOFOLLOW = os.O_NOFOLLOW
    O_CLOEXEC = os.O_CLOEXEC
    O_PATH = os.O_PATH


class PrctlOption(enum.IntEnum):
    """The prctl(2) options runbox uses."""

    PR_SET_PDEATHSIG = 1
    PR_GET_PDEATHSIG = 2
    PR_SET_KEEPCAPS = 8
    PR_SET_NAME = 15
    PR_CAPBSET_READ = 23
    PR_CAPBSET_DROP = 24
    PR_SET_NO_NEW_PRIVS = 38
    PR_GET_NO_NEW_PRIVS = 39
    PR_CAP_AMBIENT = 47


# prctl(PR_CAP_AMBIENT, ...)'s second argument.
PR_CAP_AMBIENT_CLEAR_ALL = 4


# The constants under their kernel names, as `from runbox.libc import ...`.
globals().update(CloneFlag.__members__)
globals().update(MountFlag.__members__)
globals().update(UmountFlag.__members__)
globals().update(PrctlOption.__members__)
globals().update(MountAttr.__members__)
globals().update(OpenFlag.__members__)

# The *at calls' dirfd for "the working directory", and mount_setattr's
# flag for a whole tree of mounts.
AT_FDCWD = -100
AT_RECURSIVE = 0x8000

# File type bits for mknod(2), as in <sys/stat.h>.
S_IFCHR = 0o020000
S_IFREG = 0o100000

# Likely causes of well-known failures, shown in narration and error lines.
HINTS: dict[tuple[str, int], str] = {
    ("unshare", errno.EPERM):
        "creating namespaces needs CAP_SYS_ADMIN: run as root",
    ("unshare", errno.EINVAL):
        "a flag this kernel does not know, or one it refuses here",
    ("unshare", errno.ENOSPC):
        "the limit in /proc/sys/user/max_*_namespaces is reached",
    ("setns", errno.EPERM):
        "joining a namespace needs CAP_SYS_ADMIN in its owner namespace",
    ("mount", errno.EPERM):
        "mounting needs CAP_SYS_ADMIN in the mount namespace's owner",
    ("mount", errno.ENOENT):
        "the mount point (or the source) does not exist",
    ("mount", errno.ENODEV):
        "this kernel does not know the filesystem type",
    ("mount", errno.EINVAL):
        "a bad flag combination, or options the filesystem refuses "
        "(overlay: upper and work must be on one filesystem that is not "
        "itself an overlay or a shared folder)",
    ("mount", errno.EBUSY):
        "something is already mounted there, or it is in use",
    ("umount2", errno.EINVAL):
        "the target is not a mount point",
    ("umount2", errno.EBUSY):
        "the mount is in use; MNT_DETACH detaches it lazily",
    ("pivot_root", errno.EINVAL):
        "new_root must be a mount point that is not on the current root's "
        "mount, put_old must be under it, and no mount involved may have "
        "shared propagation (make / private first)",
    ("pivot_root", errno.EBUSY):
        "new_root or put_old is the current root, or something is mounted "
        "on put_old",
    ("pivot_root", errno.EPERM):
        "pivot_root needs CAP_SYS_ADMIN",
    ("chroot", errno.EPERM):
        "chroot needs CAP_SYS_CHROOT",
    ("sethostname", errno.EPERM):
        "needs CAP_SYS_ADMIN in the UTS namespace's owner",
    ("execve", errno.ENOENT):
        "no such file; for a script, its #! interpreter may be missing",
    ("execve", errno.EACCES):
        "not a regular file with execute permission, or on a noexec mount",
    ("execve", errno.ENOEXEC):
        "not a binary this kernel can run, and no #! line",
    ("mknod", errno.EPERM):
        "device nodes need CAP_MKNOD in the initial user namespace",
    ("fork", errno.ENOMEM):
        "in a PID namespace whose PID 1 has exited, no process can be "
        "created",
    ("clone", errno.EPERM):
        "a user namespace needs the caller's uid and gid mapped where it "
        "runs, and a host that allows it (kernel.unprivileged_userns_clone, "
        "AppArmor); other namespaces need CAP_SYS_ADMIN",
    ("clone", errno.ENOSPC):
        "the limit in /proc/sys/user/max_*_namespaces is reached",
    ("clone", errno.EINVAL):
        "a flag this kernel does not know, or one it refuses here",
    ("setuid", errno.EINVAL):
        "that uid is not mapped in this user namespace",
    ("setgid", errno.EINVAL):
        "that gid is not mapped in this user namespace",
    ("chown", errno.EINVAL):
        "that uid or gid is not mapped in this user namespace",
    ("setgroups", errno.EPERM):
        "needs CAP_SETGID, and /proc/self/setgroups not \"deny\"",
    ("mount_setattr", errno.ENOSYS):
        "this kernel is older than 5.12",
}


# How much of a string argument narration shows.
MAX_SHOWN = 1024


class _Raw(str):
    """An argument already formatted, printed without quotes."""


def _fmt(value: object) -> str:
    """One argument, as strace would print it."""
    if isinstance(value, _Raw):
        return str(value)
    if value is None:
        return "NULL"
    if isinstance(value, enum.Flag):
        return flag_names(value)
    if isinstance(value, (str, bytes, os.PathLike)):
        text = os.fsdecode(value)
        # Like strace -s: a huge argument would drown the story.
        cut = "..." if len(text) > MAX_SHOWN else ""
        text = text[:MAX_SHOWN].replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"{cut}'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def flag_names(value: enum.Flag) -> str:
    """CLONE_NEWNS|CLONE_NEWPID, with unknown bits left as hex."""
    cls = type(value)
    names = [m.name for m in cls if m.value and (value & m) == m]
    rest = int(value) & ~sum(int(m) for m in cls if (value & m) == m)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


def _error(name: str, err: int, path: object = None) -> OSError:
    """An OSError that names the syscall; OSError picks the subclass."""
    filename = os.fsdecode(path) if path is not None else None
    exc = OSError(err, f"{name}: {os.strerror(err)}", filename)
    exc.syscall = name  # type: ignore[attr-defined]
    exc.hint = HINTS.get((name, err))  # type: ignore[attr-defined]
    return exc


T = TypeVar("T")


def _traced(
    name: str, args: Sequence[object], call: Callable[[], T], *,
    why: str | None, path: object = None, show: Callable[[T], str] = str,
) -> T:
    """Make the call, narrate it, and turn a failure into a named OSError.

    With narration off nothing is formatted: a quiet run pays one check.
    """
    try:
        result = call()
    except OSError as exc:
        err = _error(name, exc.errno or errno.EIO, path)
        if trace.enabled():
            code = errno.errorcode.get(err.errno, str(err.errno))
            trace.call(_text(name, args),
                       f"-1 {code} ({os.strerror(err.errno)})", why=why,
                       ok=False, likely=err.hint)  # type: ignore
        raise err from None
    if trace.enabled():
        trace.call(_text(name, args), show(result), why=why)
    return result


def _text(name: str, args: Sequence[object]) -> str:
    return f"{name}({', '.join(_fmt(a) for a in args)})"


def _check(name: str, ret: int, path: object = None) -> int:
    """Raise the errno of a failed libc call (-1), else return ret."""
    if ret == -1:
        raise _error(name, ctypes.get_errno() or errno.EIO, path)
    return ret


def _b(value: str | bytes | os.PathLike | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


# --- Processes -----------------------------------------------------------

def fork(*, why: str | None = None) -> int:
    """fork(2) through os.fork, so Python's after-fork hooks run."""
    text = "fork()"
    try:
        pid = os.fork()
    except OSError as exc:
        err = _error("fork", exc.errno or errno.EIO)
        trace.call(text, f"-1 {errno.errorcode.get(err.errno, '?')}",
                   why=why, ok=False, likely=err.hint)  # type: ignore
        raise err from None
    if pid == 0:
        trace.set_role("child")
        trace.call(text, "0", why="this side is the child")
    else:
        trace.call(text, str(pid), why=why)
    return pid


# The Python interpreter's own fork hooks, called with the GIL held, and
# the raw syscall through a handle that keeps the GIL, as os.fork does.
_pythonapi = ctypes.pythonapi
for _hook in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent",
              "PyOS_AfterFork_Child"):
    getattr(_pythonapi, _hook).restype = None
_libc_holding_gil = ctypes.PyDLL(None, use_errno=True)


def clone(flags: int, *, why: str | None = None) -> int:
    """clone(2) as fork with new namespaces: the child goes on from here.

    With no stack given, the child runs on a copy of this one, exactly as
    after fork(2), and the namespaces exist from its first instruction:
    a user namespace and those it must own are made in one call.  Python's
    before- and after-fork hooks run around it, as os.fork runs them.
    What glibc's fork does beyond the syscall is skipped: the child's
    glibc still holds the parent's thread id, which nothing runbox does
    before its execve reads.
    """
    import signal

    flags = CloneFlag(flags)
    text = f"clone({flag_names(flags)}|SIGCHLD)"
    if _SYS_CLONE is None:
        raise _error("clone", errno.ENOSYS)
    _pythonapi.PyOS_BeforeFork()
    pid = _libc_holding_gil.syscall(
        ctypes.c_long(_SYS_CLONE), ctypes.c_ulong(int(flags) | signal.SIGCHLD),
        None, None, None, ctypes.c_ulong(0))
    err = ctypes.get_errno()
    if pid == 0:
        _pythonapi.PyOS_AfterFork_Child()
        trace.set_role("child")
        trace.call(text, "0", why="this side is the child")
        return 0
    _pythonapi.PyOS_AfterFork_Parent()
    if pid == -1:
        exc = _error("clone", err or errno.EIO)
        code = errno.errorcode.get(exc.errno, "?")
        trace.call(text, f"-1 {code} ({os.strerror(exc.errno)})", why=why,
                   ok=False, likely=exc.hint)  # type: ignore[attr-defined]
        raise exc
    trace.call(text, str(pid), why=why)
    return pid


def execve(path: str, argv: Sequence[str], envp: dict[str, str], *,
           why: str | None = None) -> NoReturn:
    """execve(2): replace this process with path; returns only by raising."""
    text = f"execve({_fmt(path)}, {_fmt(list(argv))}, [{len(envp)} vars])"
    trace.before(text, why=why)
    try:
        os.execve(path, list(argv), envp)
    except OSError as exc:
        err = _error("execve", exc.errno or errno.EIO, path)
        code = errno.errorcode.get(err.errno, "?")
        trace.call(text, f"-1 {code} ({os.strerror(err.errno)})", ok=False,
                   likely=err.hint)  # type: ignore[attr-defined]
        raise err from None


def describe_status(status: int) -> str:
    """A wait status in words: "exited with 0", "killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal_name(os.WTERMSIG(status))}"
    if os.WIFEXITED(status):
        return f"exited with {os.WEXITSTATUS(status)}"
    if os.WIFSTOPPED(status):
        return f"stopped by {signal_name(os.WSTOPSIG(status))}"
    return f"status {status:#x}"


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def waitpid(pid: int, options: int = 0, *,
            why: str | None = None) -> tuple[int, int]:
    """waitpid(2) through os.waitpid, with the status told in words."""
    return _traced(
        "waitpid", [pid, options], lambda: os.waitpid(pid, options),
        why=why, show=lambda r: f"{r[0]} ({describe_status(r[1])})"
        if r[0] else "0",
    )


def rt_sigaction_default(signum: int) -> None:
    """rt_sigaction(2) with SIG_DFL, unnarrated: it runs for every signal.

    The raw syscall, because glibc's sigaction and Python's signal module
    refuse signals 32 and 33, which glibc keeps for itself; a parent (GNU
    make, for one) may have left them ignored all the same.
    """
    if _SYS_RT_SIGACTION is None:
        return
    # struct sigaction all zero: SIG_DFL, no flags, no restorer, no mask.
    act = ctypes.create_string_buffer(32)
    _libc.syscall(ctypes.c_long(_SYS_RT_SIGACTION), ctypes.c_int(signum),
                  act, None, ctypes.c_size_t(8))


def kill(pid: int, sig: int, *, why: str | None = None) -> None:
    """kill(2)."""
    _traced("kill", [pid, signal_name(sig)], lambda: os.kill(pid, sig),
            why=why, show=lambda _: "0")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
          arg5: int = 0, *, why: str | None = None) -> int:
    """prctl(2)."""
    opt = PrctlOption(option)
    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return _traced(
        "prctl", [_Raw(opt.name), arg2, arg3, arg4, arg5],
        lambda: _check("prctl", _libc.prctl(int(opt), *args)), why=why,
    )


def capset(header: ctypes.Structure, data: ctypes.Array, *, shown: str,
           why: str | None = None) -> None:
    """capset(2); glibc exports it, though it is meant for libcap."""
    _traced("capset", [_Raw("{_LINUX_CAPABILITY_VERSION_3, 0}"),
                       _Raw(shown)],
            lambda: _check("capset", _libc.capset(ctypes.byref(header),
                                                  ctypes.byref(data))),
            why=why, show=lambda _: "0")


def setsid(*, why: str | None = None) -> int:
    """setsid(2) through os.setsid: a new session, with no terminal."""
    return _traced("setsid", [], os.setsid, why=why,
                   show=lambda _: str(os.getpid()))


def setgroups(list_: Sequence[int], *, why: str | None = None) -> None:
    """setgroups(2) through os.setgroups."""
    _traced("setgroups", [len(list_), list(list_)],
            lambda: os.setgroups(list(list_)), why=why, show=lambda _: "0")


def setgid(gid: int, *, why: str | None = None) -> None:
    """setgid(2) through os.setgid."""
    _traced("setgid", [gid], lambda: os.setgid(gid), why=why,
            show=lambda _: "0")


def setuid(uid: int, *, why: str | None = None) -> None:
    """setuid(2) through os.setuid."""
    _traced("setuid", [uid], lambda: os.setuid(uid), why=why,
            show=lambda _: "0")


def ioctl(fd: int, request: int, arg: int = 0, *, name: str,
          why: str | None = None) -> None:
    """ioctl(2) through fcntl.ioctl, with the request shown by name."""
    import fcntl

    _traced("ioctl", [fd, _Raw(name), arg],
            lambda: fcntl.ioctl(fd, request, arg), why=why,
            show=lambda _: "0")


# --- Namespaces ----------------------------------------------------------

def unshare(flags: int, *, why: str | None = None) -> None:
    """unshare(2): move this process into new namespaces."""
    flags = CloneFlag(flags)
    _traced("unshare", [flags],
            lambda: _check("unshare", _libc.unshare(ctypes.c_int(flags))),
            why=why, show=lambda _: "0")


def setns(fd: int, nstype: int, *, why: str | None = None) -> None:
    """setns(2): join the namespace that fd refers to."""
    nstype = CloneFlag(nstype)
    _traced("setns", [fd, nstype],
            lambda: _check("setns", _libc.setns(fd, ctypes.c_int(nstype))),
            why=why, show=lambda _: "0")


def sethostname(name: str, *, why: str | None = None) -> None:
    """sethostname(2)."""
    raw = name.encode()
    _traced("sethostname", [name, len(raw)],
            lambda: _check("sethostname", _libc.sethostname(
                raw, ctypes.c_size_t(len(raw)))),
            why=why, show=lambda _: "0")


# --- Mounts --------------------------------------------------------------

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, filesystemtype: str | None,
          mountflags: int = 0, data: str | None = None, *,
          why: str | None = None) -> None:
    """mount(2)."""
    flags = MountFlag(mountflags)
    _traced(
        "mount", [source, target, filesystemtype, flags, data],
        lambda: _check("mount", _libc.mount(
            _b(source), _b(target), _b(filesystemtype), int(flags), _b(data),
        ), target),
        why=why, path=target, show=lambda _: "0",
    )


def umount2(target: str, flags: int = 0, *, why: str | None = None) -> None:
    """umount2(2)."""
    flags = UmountFlag(flags)
    _traced("umount2", [target, flags],
            lambda: _check("umount2", _libc.umount2(_b(target), int(flags)),
                           target),
            why=why, path=target, show=lambda _: "0")


class mount_attr(ctypes.Structure):
    """struct mount_attr from <linux/mount.h>, as mount_setattr takes it."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, pathname: str, flags: int, attr_set: int, *,
                  why: str | None = None) -> None:
    """mount_setattr(2), setting attr_set and clearing nothing.

    Unlike a remount with mount(2), it leaves every other flag of the
    mount as it is, and with AT_RECURSIVE reaches each mount below too.
    """
    attrs = MountAttr(attr_set)
    attr = mount_attr(int(attrs), 0, 0, 0)
    at = "AT_FDCWD" if dirfd == AT_FDCWD else str(dirfd)
    shown_flags = "AT_RECURSIVE" if flags == AT_RECURSIVE else str(flags)

    def call() -> int:
        if _SYS_MOUNT_SETATTR is None:
            raise OSError(errno.ENOSYS, "no mount_setattr number for "
                          + MACHINE)
        ret = _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(dirfd),
            _b(pathname), ctypes.c_uint(flags), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)))
        return _check("mount_setattr", ret, pathname)

    _traced("mount_setattr",
            [_Raw(at), pathname, _Raw(shown_flags),
             _Raw(f"{{attr_set={flag_names(attrs)}}}"),
             ctypes.sizeof(attr)],
            call, why=why, path=pathname, show=lambda _: "0")


def pivot_root(new_root: str, put_old: str, *, why: str | None = None) -> None:
    """pivot_root(2): make new_root the root, moving the old one to put_old."""
    def call() -> int:
        if _SYS_PIVOT_ROOT is None:
            raise OSError(errno.ENOSYS, "no pivot_root number for "
                          + MACHINE)
        ret = _libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT),
                            _b(new_root), _b(put_old))
        return _check("pivot_root", ret, new_root)

    _traced("pivot_root", [new_root, put_old], call, why=why,
            path=new_root, show=lambda _: "0")


def chroot(path: str, *, why: str | None = None) -> None:
    """chroot(2) through os.chroot."""
    _traced("chroot", [path], lambda: os.chroot(path), why=why, path=path,
            show=lambda _: "0")


# --- Files ---------------------------------------------------------------

# Filesystem magic numbers from <linux/magic.h>, as statfs(2) reports them.
FS_MAGIC = {
    0x63677270: "CGROUP2_SUPER_MAGIC",
    0x0027E0EB: "CGROUP_SUPER_MAGIC",
    0x01021994: "TMPFS_MAGIC",
    0x794C7630: "OVERLAYFS_SUPER_MAGIC",
    0x62656572: "SYSFS_MAGIC",
    0x00009FA0: "PROC_SUPER_MAGIC",
    0x0000EF53: "EXT4_SUPER_MAGIC",
}
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x0027E0EB
TMPFS_MAGIC = 0x01021994


def statfs(path: str, *, why: str | None = None) -> int:
    """statfs(2), returning only f_type, the filesystem's magic number.

    os.statvfs is statvfs(3), which leaves f_type out, so this goes through
    ctypes; f_type is the first field of struct statfs on every Linux ABI.
    """
    buf = ctypes.create_string_buffer(256)

    def call() -> int:
        _check("statfs", _libc.statfs(_b(path), buf), path)
        return ctypes.c_long.from_buffer(buf).value

    return _traced("statfs", [path], call, why=why, path=path,
                   show=lambda t: f"0 (f_type={FS_MAGIC.get(t, hex(t))})")


def read(fd: int, count: int, *, why: str | None = None) -> bytes:
    """read(2) through os.read."""
    return _traced("read", [fd, count], lambda: os.read(fd, count), why=why,
                   show=lambda data: str(len(data)))


def write(fd: int, data: bytes, *, why: str | None = None) -> int:
    """write(2) through os.write."""
    return _traced("write", [fd, data.decode(errors="replace"), len(data)],
                   lambda: os.write(fd, data), why=why)


def write_file(path: str, text: str, *, why: str | None = None) -> None:
    """open(2), write(2), close(2): how the cgroup filesystem is driven.

    Narrated as one write naming the path, since the path is the point; a
    cgroup file takes each value in a single write(2).
    """
    def call() -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return os.write(fd, text.encode())
        finally:
            os.close(fd)

    _traced("write", [path, text], call, why=why, path=path)


def open(pathname: str, flags: int, *, why: str | None = None) -> int:
    """open(2) through os.open, returning the fd."""
    flags = OpenFlag(flags)
    return _traced("open", [pathname, flags],
                   lambda: os.open(pathname, flags), why=why, path=pathname)


def chown(pathname: str, owner: int, group: int, *,
          why: str | None = None) -> None:
    """chown(2) through os.chown."""
    _traced("chown", [pathname, owner, group],
            lambda: os.chown(pathname, owner, group), why=why,
            path=pathname, show=lambda _: "0")


def chdir(path: str, *, why: str | None = None) -> None:
    """chdir(2) through os.chdir."""
    _traced("chdir", [path], lambda: os.chdir(path), why=why, path=path,
            show=lambda _: "0")


def mkdir(pathname: str, mode: int = 0o777, *,
          why: str | None = None) -> None:
    """mkdir(2) through os.mkdir."""
    _traced("mkdir", [pathname, _Raw(oct(mode))], lambda: os.mkdir(pathname, mode),
            why=why, path=pathname, show=lambda _: "0")


def rmdir(pathname: str, *, why: str | None = None) -> None:
    """rmdir(2) through os.rmdir."""
    _traced("rmdir", [pathname], lambda: os.rmdir(pathname), why=why,
            path=pathname, show=lambda _: "0")


def mknod(pathname: str, mode: int, dev: int, *,
          why: str | None = None) -> None:
    """mknod(2) through os.mknod; dev is os.makedev(major, minor)."""
    kind = {S_IFCHR: "S_IFCHR", S_IFREG: "S_IFREG"}.get(mode & 0o170000)
    shown = f"{kind}|{oct(mode & 0o7777)}" if kind else oct(mode)
    dev_shown = f"makedev({os.major(dev)}, {os.minor(dev)})"
    _traced("mknod", [pathname, _Raw(shown), _Raw(dev_shown)],
            lambda: os.mknod(pathname, mode, dev), why=why, path=pathname,
            show=lambda _: "0")


def chmod(pathname: str, mode: int, *, why: str | None = None) -> None:
    """chmod(2) through os.chmod."""
    _traced("chmod", [pathname, _Raw(oct(mode))],
            lambda: os.chmod(pathname, mode), why=why, path=pathname,
            show=lambda _: "0")


def symlink(target: str, linkpath: str, *, why: str | None = None) -> None:
    """symlink(2) through os.symlink."""
    _traced("symlink", [target, linkpath],
            lambda: os.symlink(target, linkpath), why=why, path=linkpath,
            show=lambda _: "0")


# --- Seccomp -------------------------------------------------------------

# glibc has no seccomp() wrapper: like pivot_root, it goes by number.
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}.get(MACHINE)


class SeccompOperation(enum.IntEnum):
    """The operations of seccomp(2)."""

    SECCOMP_SET_MODE_STRICT = 0
    SECCOMP_SET_MODE_FILTER = 1
    SECCOMP_GET_ACTION_AVAIL = 2
    SECCOMP_GET_NOTIF_SIZES = 3


class SeccompFilterFlag(enum.IntFlag):
    """Flags for seccomp(2)'s SECCOMP_SET_MODE_FILTER."""

    SECCOMP_FILTER_FLAG_TSYNC = 1
    SECCOMP_FILTER_FLAG_LOG = 2
    SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
    SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
    SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16


globals().update(SeccompOperation.__members__)
globals().update(SeccompFilterFlag.__members__)


class sock_fprog(ctypes.Structure):
    """struct sock_fprog from <linux/filter.h>: a BPF program in memory."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


HINTS.update({
    ("seccomp", errno.EACCES):
        "a filter needs no_new_privs set first (prctl "
        "PR_SET_NO_NEW_PRIVS), or CAP_SYS_ADMIN",
    ("seccomp", errno.EINVAL):
        "the kernel refused the program: a bad instruction or jump, more "
        "than 4096 instructions, or an operation it does not know",
    ("seccomp", errno.ENOMEM):
        "the filters stacked on this process hold too many instructions",
})


def seccomp(operation: int, flags: int = 0,
            args: sock_fprog | ctypes.c_uint32 | None = None, *,
            why: str | None = None) -> int:
    """seccomp(2); args is the program for SECCOMP_SET_MODE_FILTER."""
    op = SeccompOperation(operation)
    flags = SeccompFilterFlag(flags)
    if isinstance(args, sock_fprog):
        shown = _Raw(f"{{len={args.len}, filter={args.filter or 0:#x}}}")
    elif args is not None:
        shown = _Raw(f"[{args.value:#x}]")
    else:
        shown = None

    def call() -> int:
        if _SYS_SECCOMP is None:
            raise OSError(errno.ENOSYS, "no seccomp number for "
                          + MACHINE)
        ret = _libc.syscall(
            ctypes.c_long(_SYS_SECCOMP), ctypes.c_uint(op),
            ctypes.c_uint(flags),
            None if args is None else ctypes.byref(args))
        return _check("seccomp", ret)

    return _traced("seccomp", [_Raw(op.name), flags, shown], call, why=why)
