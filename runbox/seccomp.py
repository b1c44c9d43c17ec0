"""Seccomp: the system calls a container may make, as a BPF program.

A profile says, call by call, what happens when the container makes it:
allow it, fail it with an errno, or kill the caller.  compile() turns a
profile into a classic BPF program that the kernel runs on every syscall
(seccomp(2), filter section), and install() hands it to the kernel.  The
default profile follows docker's policy: everything but the calls that act
on the host, on the kernel, or on other containers.

What this cannot do:

- The filter is built for x86_64 and aarch64 only.  32-bit programs (i386
  on x86_64, arm on aarch64) and x32 programs cannot run under any
  profile: each of their syscalls fails with EPERM.  Any other calling
  convention kills the process.
- The syscall numbers come from linux-libc-dev 6.1 (runbox.syscall_table).
  A name the table lacks is skipped, as docker skips names the kernel does
  not know; a call newer than the table gets ENOSYS under a profile that
  refuses by default, so the C library falls back to an older call.
- A profile's `architectures` and `archMap` are ignored (the rule above
  decides), and SCMP_ACT_NOTIFY and filter `flags` are refused.
- Rules are tried in the profile's order and the first that matches a call
  decides, where libseccomp ranks rules by action; as in runc, conditions
  on one argument are alternatives, conditions on different ones must all
  hold.
- install() filters the calling thread only: call it single-threaded.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from runbox import libc, syscall_table
from runbox.bpf import (
    BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET, BPF_MAXINSNS, Label, and_,
    assemble, jump, ld,
)
from runbox.bpf import ret as ret_k
from runbox.errors import RunboxError
from runbox.libc import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
    CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS,
)

# What a filter returns, from <linux/seccomp.h>: the action in the high 16
# bits, its data (an errno, a message for the tracer) in the low 16.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ACTION_FULL = 0xFFFF0000

# seccomp_data.arch for each calling convention, from <linux/audit.h>.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028

# An x32 call arrives as x86_64, with this bit set in its number.
__X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: nr, arch, instruction_pointer, args[6].  Arguments
# are 64 bits and BPF loads 32, so each is read in halves; on these
# little-endian machines the low half comes first.
_NR, _ARCH, _ARGS = 0, 4, 16

# docker's (libseccomp's) action names, and what each returns from the
# filter; SCMP_ACT_KILL is the old name for killing the thread.
ACTIONS = {
    "SCMP_ACT_ALLOW": SECCOMP_RET_ALLOW,
    "SCMP_ACT_ERRNO": SECCOMP_RET_ERRNO,
    "SCMP_ACT_KILL": SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": SECCOMP_RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": SECCOMP_RET_TRAP,
    "SCMP_ACT_TRACE": SECCOMP_RET_TRACE,
    "SCMP_ACT_LOG": SECCOMP_RET_LOG,
}
OPS = ("SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
       "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ")


@dataclass(frozen=True)
class _Arch:
    """One machine's calling conventions, as the filter tells them apart."""

    audit: int
    compat: int          # the 32-bit convention, refused with EPERM
    x32: bool            # whether numbers may carry __X32_SYSCALL_BIT
    table: dict[str, int]
    goarch: str          # the name docker's includes.arches use


ARCHES = {
    "x86_64": _Arch(AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, True,
                    syscall_table.X86_64, "amd64"),
    "aarch64": _Arch(AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, False,
                     syscall_table.AARCH64, "arm64"),
}


@dataclass
class Arg:
    """A condition on one argument: OCI's linux.seccomp.syscalls[].args[].

    SCMP_CMP_MASKED_EQ holds when (argument & value) == value_two.
    """

    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass
class Syscall:
    """A rule: OCI's linux.seccomp.syscalls[]."""

    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[Arg] = field(default_factory=list)


@dataclass
class Profile:
    """OCI's linux.seccomp: rules, and the action for calls none matches."""

    default_action: str = "SCMP_ACT_ERRNO"
    default_errno_ret: int | None = None
    architectures: list[str] = field(default_factory=list)
    syscalls: list[Syscall] = field(default_factory=list)

    def to_oci(self) -> dict:
        """This profile as config.json's linux.seccomp holds it."""
        out: dict = {"defaultAction": self.default_action}
        if self.default_errno_ret is not None:
            out["defaultErrnoRet"] = self.default_errno_ret
        out["architectures"] = list(self.architectures)
        out["syscalls"] = []
        for rule in self.syscalls:
            entry: dict = {"names": list(rule.names), "action": rule.action}
            if rule.errno_ret is not None:
                entry["errnoRet"] = rule.errno_ret
            if rule.args:
                entry["args"] = [
                    {"index": a.index, "value": a.value,
                     "valueTwo": a.value_two, "op": a.op} for a in rule.args]
            out["syscalls"].append(entry)
        return out


# --- The default profile -------------------------------------------------

# Calls no container gets, whatever its capabilities.
_REFUSED = (
    # The kernel keyring is not namespaced: keys would be shared with the host.
    "add_key", "keyctl", "request_key",
    # io_uring works out of seccomp's sight, and its bugs are a road to root.
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # Booting another kernel, or swapping to a file, acts on the whole host.
    "kexec_load", "kexec_file_load", "swapon", "swapoff",
    # userfaultfd stalls the kernel mid-copy at will: how exploits win races.
    "userfaultfd",
    # Old ways into the kernel that nothing needs and little tests.
    "uselib", "vm86", "vm86old",
    # Removed from Linux, or never implemented: nothing to allow.
    "_sysctl", "nfsservctl", "create_module", "get_kernel_syms",
    "query_module", "afs_syscall", "tuxcall", "security", "getpmsg",
    "putpmsg", "vserver", "epoll_ctl_old", "epoll_wait_old",
)

# Calls a container gets only with one of the capabilities named, as
# docker grants them.
_NEEDS_CAPS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    # Mounts and namespaces: the walls of the container itself.
    (("CAP_SYS_ADMIN",), (
        "mount", "umount", "umount2", "pivot_root", "unshare", "setns",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
        "open_tree", "mount_setattr")),
    # Host-wide state: quotas, file handles, fanotify, host and domain name.
    (("CAP_SYS_ADMIN",), (
        "quotactl", "quotactl_fd", "name_to_handle_at", "fanotify_init",
        "lookup_dcookie", "sethostname", "setdomainname")),
    # BPF programs and perf events see across the whole kernel.
    (("CAP_SYS_ADMIN", "CAP_BPF"), ("bpf",)),
    (("CAP_SYS_ADMIN", "CAP_PERFMON"), ("perf_event_open",)),
    # The kernel log holds the host's messages and kernel addresses.
    (("CAP_SYS_ADMIN", "CAP_SYSLOG"), ("syslog",)),
    # A file handle opens past the container's root (the "shocker" escape).
    (("CAP_DAC_READ_SEARCH",), ("open_by_handle_at",)),
    # Other processes' memory; before Linux 4.8 ptrace could undo seccomp.
    (("CAP_SYS_PTRACE",), (
        "ptrace", "kcmp", "process_vm_readv", "process_vm_writev",
        "pidfd_getfd", "process_madvise")),
    # A module runs as part of the host's kernel.
    (("CAP_SYS_MODULE",), ("init_module", "finit_module", "delete_module")),
    # There is one clock, the host's.
    (("CAP_SYS_TIME",), (
        "settimeofday", "stime", "clock_settime", "clock_settime64",
        "clock_adjtime", "clock_adjtime64")),
    # I/O ports reach the hardware under the host.
    (("CAP_SYS_RAWIO",), ("iopl", "ioperm")),
    # Outside a PID namespace, reboot(2) restarts the host.
    (("CAP_SYS_BOOT",), ("reboot",)),
    # Process accounting records every process on the host.
    (("CAP_SYS_PACCT",), ("acct",)),
    # vhangup(2) cuts off every process on the terminal, the host's included.
    (("CAP_SYS_TTY_CONFIG",), ("vhangup",)),
    # chroot inside the container; docker's default capabilities include it.
    (("CAP_SYS_CHROOT",), ("chroot",)),
]

# personality(2) values that only choose Linux behaviour (PER_LINUX,
# PER_LINUX32, UNAME26 and both) or, 0xffffffff, read the current one.
_HARMLESS_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# clone(2) may not make namespaces.  CLONE_NEWTIME (0x80) lies in clone's
# exit-signal byte, which no valid signal reaches, so refusing it is free.
_NEW_NAMESPACES = int(
    CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
    | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWTIME)


def _cap_names(caps: Iterable[str]) -> set[str]:
    """"sys_admin" and "CAP_SYS_ADMIN" are one capability."""
    upper = {cap.upper() for cap in caps}
    return {c if c.startswith("CAP_") else f"CAP_{c}" for c in upper}


def default_profile(caps: Iterable[str] = ()) -> Profile:
    """docker's policy, relaxed for the capabilities the container has."""
    have = _cap_names(caps)
    gated = {name: needs for needs, names in _NEEDS_CAPS for name in names}
    granted = {name for name, needs in gated.items() if have & set(needs)}
    special = {"personality", "clone", "clone3"}
    known = set(syscall_table.X86_64) | set(syscall_table.AARCH64)
    allowed = (known - set(_REFUSED) - gated.keys() - special) | granted

    rules = [Syscall(sorted(allowed), "SCMP_ACT_ALLOW")]
    rules += [Syscall(["personality"], "SCMP_ACT_ALLOW",
                      args=[Arg(0, value, "SCMP_CMP_EQ")])
              for value in _HARMLESS_PERSONALITIES]
    if "CAP_SYS_ADMIN" in have:
        rules.append(Syscall(["clone", "clone3"], "SCMP_ACT_ALLOW"))
    else:
        rules.append(Syscall(["clone"], "SCMP_ACT_ALLOW", args=[
            Arg(0, _NEW_NAMESPACES, "SCMP_CMP_MASKED_EQ", 0)]))
        # clone3's flags sit in a struct that BPF cannot read.  glibc tries
        # clone3 first and falls back to clone only on ENOSYS: with EPERM,
        # pthread_create would fail and no thread could start.
        rules.append(Syscall(["clone3"], "SCMP_ACT_ERRNO",
                             errno_ret=errno.ENOSYS))
    return Profile("SCMP_ACT_ERRNO", errno.EPERM, [], rules)


# --- docker's profile files ----------------------------------------------

# Makes the one-line error for a problem in the profile being read.
_Fail = Callable[[str], RunboxError]

# An errno (or a tracer's message) travels in a return value's low 16 bits.
_ERRNO_LIMIT = 1 << 16

def load_profile(path: str | os.PathLike, caps: Iterable[str] = (), *,
                 arch: str | None = None) -> Profile:
    """A profile in docker's JSON format, for a container with caps.

    Rules are kept or dropped here by their includes and excludes, since an
    OCI profile has neither.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise RunboxError(
            f"seccomp profile {path}: {exc.strerror}") from None
    import json  # only for a profile of the user's: not on the start path

    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunboxError(
            f"seccomp profile {path}: not valid JSON: {exc}") from None
    return parse_profile(data, caps, arch=arch, source=str(path))


def parse_profile(data: object, caps: Iterable[str] = (), *,
                  arch: str | None = None,
                  source: str = "<profile>") -> Profile:
    """A profile from docker's JSON format, already decoded."""
    def fail(problem: str) -> RunboxError:
        return RunboxError(f"seccomp profile {source}: {problem}")

    if not isinstance(data, dict):
        raise fail("the top level must be an object")
    if data.get("flags"):
        raise fail("filter flags are not supported")
    profile = Profile(
        _action(data.get("defaultAction"), "defaultAction", fail),
        _number(data.get("defaultErrnoRet"), "defaultErrnoRet", fail,
                _ERRNO_LIMIT),
        list(data.get("architectures") or []))
    have = _cap_names(caps)
    goarch = ARCHES.get(arch or libc.MACHINE)
    rules = data.get("syscalls") or []
    if not isinstance(rules, list):
        raise fail("syscalls must be a list")
    for i, entry in enumerate(rules):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be an object")
        if _applies(entry, have, goarch and goarch.goarch, where, fail):
            profile.syscalls.append(_rule(entry, where, fail))
    # The one call runbox's child makes under the filter is execve
    # (unless no-new-privileges=false puts the filter in before the
    # capabilities are cut).  Were it refused, the child could not start
    # the command, nor (its write and exit refused too, as with a bare
    # defaultAction of SCMP_ACT_ERRNO) say so: it would crash, and look
    # like the command's own SIGSEGV.
    if not lets_through(profile, "execve"):
        raise fail("it does not allow execve, which starts the command")
    return profile


_LETS_THROUGH = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")


def lets_through(profile: Profile, name: str) -> bool:
    """Whether the profile lets the call name through, whatever its
    arguments: as the filter decides, the first rule without conditions
    ends the call's rules, and the default action comes after them."""
    for rule in profile.syscalls:
        if name not in rule.names:
            continue
        if rule.action not in _LETS_THROUGH:
            return False
        if not rule.args:
            return True
    return profile.default_action in _LETS_THROUGH


def _rule(entry: dict, where: str, fail: _Fail) -> Syscall:
    names = entry.get("names") or []
    if entry.get("name"):
        if names:
            raise fail(f"{where}: use either name or names")
        names = [entry["name"]]
    if not names or not all(isinstance(n, str) for n in names):
        raise fail(f"{where}: names must be a list of syscall names")
    action = _action(entry.get("action"), f"{where}.action", fail)
    errno_ret = _number(entry.get("errnoRet"), f"{where}.errnoRet", fail,
                        _ERRNO_LIMIT)
    if errno_ret is not None and action not in ("SCMP_ACT_ERRNO",
                                                "SCMP_ACT_TRACE"):
        raise fail(f"{where}: errnoRet goes only with SCMP_ACT_ERRNO or "
                   "SCMP_ACT_TRACE")
    args = []
    for j, arg in enumerate(entry.get("args") or []):
        at = f"{where}.args[{j}]"
        if not isinstance(arg, dict):
            raise fail(f"{at} must be an object")
        index = _number(arg.get("index"), f"{at}.index", fail)
        if index is None or index > 5:
            raise fail(f"{at}.index must be 0 to 5")
        if arg.get("op") not in OPS:
            raise fail(f"{at}: unknown op {arg.get('op')!r}, expected one "
                       f"of {', '.join(OPS)}")
        value = _number(arg.get("value"), f"{at}.value", fail)
        two = _number(arg.get("valueTwo"), f"{at}.valueTwo", fail)
        args.append(Arg(index, value or 0, arg["op"], two or 0))
    return Syscall(list(names), action, errno_ret, args)


def _applies(entry: dict, caps: set[str], goarch: str | None, where: str,
             fail: _Fail) -> bool:
    """docker's includes and excludes: all included caps, none excluded."""
    inc = entry.get("includes") or {}
    exc = entry.get("excludes") or {}
    if not isinstance(inc, dict) or not isinstance(exc, dict):
        raise fail(f"{where}: includes and excludes must be objects")
    if goarch in (exc.get("arches") or ()):
        return False
    if caps & _cap_names(exc.get("caps") or ()):
        return False
    if exc.get("minKernel") and _kernel_at_least(exc["minKernel"], fail):
        return False
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if not _cap_names(inc.get("caps") or ()) <= caps:
        return False
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], fail):
        return False
    return True


def _kernel_at_least(version: str, fail: _Fail) -> bool:
    wanted = re.fullmatch(r"(\d+)\.(\d+)", str(version))
    if not wanted:
        raise fail(f"bad minKernel {version!r}: expected like 4.8")
    running = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if not running:
        return False
    return tuple(map(int, running.groups())) >= \
        tuple(map(int, wanted.groups()))


def _action(name: object, where: str, fail: _Fail) -> str:
    if name == "SCMP_ACT_NOTIFY":
        raise fail(f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which "
                   "runbox does not have")
    if name not in ACTIONS:
        raise fail(f"{where}: unknown action {name!r}, expected one of "
                   f"{', '.join(ACTIONS)}")
    return str(name)


def _number(value: object, where: str, fail: _Fail,
            limit: int = 1 << 64) -> int | None:
    if value is not None and (not isinstance(value, int) or
                              isinstance(value, bool) or
                              not 0 <= value < limit):
        raise fail(f"{where}: {value!r} is not a number from 0 to "
                   f"{limit - 1}")
    return value


# --- Installing ----------------------------------------------------------

def install(program: bytes, *, why: str | None = None) -> None:
    """Make program the filter of every syscall this thread makes from now.

    The kernel takes a filter from an unprivileged process only after
    prctl(PR_SET_NO_NEW_PRIVS), which the caller does; the filter then
    holds across fork and execve and cannot be removed.
    """
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = libc.sock_fprog(len(program) // 8, ctypes.addressof(buffer))
    libc.seccomp(libc.SECCOMP_SET_MODE_FILTER, 0, fprog, why=why)


# --- Compiling to BPF ----------------------------------------------------

def _ret(action: str, errno_ret: int | None) -> int:
    if action not in ACTIONS:
        raise RunboxError(f"seccomp: unknown action {action!r}")
    data = 0
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        data = errno.EPERM if errno_ret is None else errno_ret
        if not 0 <= data <= 0xFFFF:
            raise RunboxError(f"seccomp: errnoRet {data} does not fit")
    return ACTIONS[action] | data


def compile(profile: Profile, arch: str | None = None) -> bytes:
    """The profile as a BPF program: an array of struct sock_filter.

    The program checks the calling convention first, then finds the call's
    number by binary search over ranges of numbers that end the same way,
    so a call costs about ten instructions whatever the profile's size.
    """
    arch = arch or libc.MACHINE
    if arch not in ARCHES:
        raise RunboxError(f"seccomp filters are only built for "
                          f"{' and '.join(ARCHES)} here, not {arch}")
    target = ARCHES[arch]
    default = _ret(profile.default_action, profile.default_errno_ret)

    # What each known number leads to: a return value, or a chain of
    # argument checks.  A rule without conditions ends its calls' chains.
    chains: dict[int, list[tuple[list[Arg], int]]] = {}
    for rule in profile.syscalls:
        ret = _ret(rule.action, rule.errno_ret)
        for name in rule.names:
            nr = target.table.get(name)
            if nr is None:
                continue
            chain = chains.setdefault(nr, [])
            decided = chain and not chain[-1][0]
            if not decided:
                chain += [(conds, ret) for conds in _alternatives(rule.args)]

    # Numbers past the table's newest call: the kernel's own answer for a
    # call it lacks is ENOSYS, and libc knows to try an older call then.
    newer = default
    if default & SECCOMP_RET_ACTION_FULL not in (SECCOMP_RET_ALLOW,
                                                 SECCOMP_RET_LOG):
        newer = SECCOMP_RET_ERRNO | errno.ENOSYS
    ranges: list[tuple[int, object]] = []

    def add(start: int, outcome: object) -> None:
        if not ranges or ranges[-1][1] != outcome:
            ranges.append((start, outcome))

    following = 0
    for nr in sorted(chains):
        if nr > following:
            add(following, default)
        chain = chains[nr]
        add(nr, chain[0][1] if not chain[0][0] else _chain(chain, default))
        following = nr + 1
    add(following, newer)

    refuse = SECCOMP_RET_ERRNO | errno.EPERM
    native, kill = Label(), Label()
    code = [
        ld(_ARCH),
        jump(BPF_JEQ, target.audit, native, 0),
        jump(BPF_JEQ, target.compat, 0, kill),
        ret_k(refuse),
        kill,
        ret_k(SECCOMP_RET_KILL_PROCESS),
        native,
        ld(_NR),
    ]
    if target.x32:
        # Before anything else: an x32 number would dodge every check below.
        search = Label()
        code += [jump(BPF_JSET, __X32_SYSCALL_BIT, 0, search),
                 ret_k(refuse), search]
    code += _search(ranges)
    program = assemble(code)
    if len(program) // 8 > BPF_MAXINSNS:
        raise RunboxError(
            f"seccomp: the profile needs {len(program) // 8} instructions; "
            f"the kernel takes at most {BPF_MAXINSNS}")
    return program


def _alternatives(args: list[Arg]) -> list[list[Arg]]:
    """runc's reading: checks on one argument are each a rule of their own."""
    indexes = [a.index for a in args]
    if len(set(indexes)) < len(indexes):
        return [[a] for a in args]
    return [args]


def _chain(chain: list[tuple[list[Arg], int]], default: int) -> list:
    """Each rule's checks in turn; the first to pass all returns."""
    code: list = []
    for conds, ret in chain:
        failed = Label()
        for arg in conds:
            code += _check(arg, failed)
        code += [ret_k(ret), failed]
    if chain[-1][0]:
        code.append(ret_k(default))
    return code


def _check(arg: Arg, failed: Label) -> list:
    """Fall through if the 64-bit argument passes, else jump to failed.

    Each half is compared in turn: the high halves decide unless they are
    equal, and only then do the low halves.
    """
    if (arg.op not in OPS or not 0 <= arg.index <= 5
            or not 0 <= arg.value < 1 << 64
            or not 0 <= arg.value_two < 1 << 64):
        raise RunboxError(f"seccomp: bad argument check {arg}")
    low, high = _ARGS + 8 * arg.index, _ARGS + 8 * arg.index + 4
    v_hi, v_lo = arg.value >> 32, arg.value & 0xFFFFFFFF
    passed = Label()
    if arg.op == "SCMP_CMP_EQ":
        return [ld(high), jump(BPF_JEQ, v_hi, 0, failed),
                ld(low), jump(BPF_JEQ, v_lo, 0, failed)]
    if arg.op == "SCMP_CMP_NE":
        return [ld(high), jump(BPF_JEQ, v_hi, 0, passed),
                ld(low), jump(BPF_JEQ, v_lo, failed, 0), passed]
    if arg.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        last = BPF_JGT if arg.op == "SCMP_CMP_GT" else BPF_JGE
        return [ld(high), jump(BPF_JGT, v_hi, passed, 0),
                jump(BPF_JEQ, v_hi, 0, failed),
                ld(low), jump(last, v_lo, 0, failed), passed]
    if arg.op in ("SCMP_CMP_LT", "SCMP_CMP_LE"):
        last = BPF_JGE if arg.op == "SCMP_CMP_LT" else BPF_JGT
        return [ld(high), jump(BPF_JGT, v_hi, failed, 0),
                jump(BPF_JEQ, v_hi, 0, passed),
                ld(low), jump(last, v_lo, failed, 0), passed]
    # SCMP_CMP_MASKED_EQ: value is the mask, value_two what must remain.
    want_hi, want_lo = arg.value_two >> 32, arg.value_two & 0xFFFFFFFF
    return [ld(high), and_(v_hi), jump(BPF_JEQ, want_hi, 0, failed),
            ld(low), and_(v_lo), jump(BPF_JEQ, want_lo, 0, failed)]


def _search(ranges: list[tuple[int, object]]) -> list:
    """A binary search on the number: each leaf returns or checks args."""
    if len(ranges) == 1:
        outcome = ranges[0][1]
        return outcome if isinstance(outcome, list) else [ret_k(outcome)]
    middle = len(ranges) // 2
    upper = Label()
    return [jump(BPF_JGE, ranges[middle][0], upper, 0),
            *_search(ranges[:middle]), upper, *_search(ranges[middle:])]
