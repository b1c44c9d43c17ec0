"""Seccomp: the BPF program run through an interpreter here, then the real
kernel enforcing it in a forked child (never in the pytest process, which
could not shed the filter again)."""

from __future__ import annotations

import ctypes
import errno
import io
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import threading
import traceback
from pathlib import Path

import pytest

from conftest import REPO, needs_root
from runbox import bpf, libc, seccomp, trace
from runbox.errors import RunboxError
from runbox.seccomp import Arg, Profile, Syscall
from runbox.syscall_table import AARCH64, X86_64

ALLOW = seccomp.SECCOMP_RET_ALLOW
KILL_PROCESS = seccomp.SECCOMP_RET_KILL_PROCESS


def errno_ret(code: int) -> int:
    return seccomp.SECCOMP_RET_ERRNO | code


EPERM, ENOSYS = errno_ret(errno.EPERM), errno_ret(errno.ENOSYS)
NAMESPACES = (libc.CLONE_NEWUSER, libc.CLONE_NEWNS, libc.CLONE_NEWPID,
              libc.CLONE_NEWNET, libc.CLONE_NEWUTS, libc.CLONE_NEWIPC,
              libc.CLONE_NEWCGROUP, libc.CLONE_NEWTIME)
SIGCHLD = 17
# What glibc's fork passes to clone(2).
FORK_FLAGS = 0x01200000 | SIGCHLD


# --- A classic BPF interpreter, enough for seccomp filters ---------------

def run_bpf(program: bytes, nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64,
            args: tuple[int, ...] = ()) -> int:
    """What the kernel would do with the program: its return value."""
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *args)
    insns = list(struct.iter_unpack("=HBBI", program))
    assert 0 < len(insns) <= bpf.BPF_MAXINSNS
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS:
            assert k % 4 == 0 and k < len(data)
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K:
            acc &= k
        elif code == bpf.BPF_JMP | bpf.BPF_JA:
            pc += k
        elif code & 0x07 == bpf.BPF_JMP:
            taken = {bpf.BPF_JEQ: acc == k, bpf.BPF_JGT: acc > k,
                     bpf.BPF_JGE: acc >= k,
                     bpf.BPF_JSET: acc & k != 0}[code & 0xF0]
            pc += jt if taken else jf
        elif code == bpf.BPF_RET | bpf.BPF_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")
        pc += 1


def reference(profile: Profile, table: dict[str, int], nr: int,
              args: tuple[int, ...]) -> int:
    """The profile's meaning, read directly: the first rule that holds."""
    def holds(arg: Arg) -> bool:
        value = args[arg.index]
        return {
            "SCMP_CMP_EQ": value == arg.value,
            "SCMP_CMP_NE": value != arg.value,
            "SCMP_CMP_LT": value < arg.value,
            "SCMP_CMP_LE": value <= arg.value,
            "SCMP_CMP_GT": value > arg.value,
            "SCMP_CMP_GE": value >= arg.value,
            "SCMP_CMP_MASKED_EQ": value & arg.value == arg.value_two,
        }[arg.op]

    for rule in profile.syscalls:
        if not any(table.get(name) == nr for name in rule.names):
            continue
        indexes = [a.index for a in rule.args]
        if len(set(indexes)) < len(indexes):
            matched = any(holds(a) for a in rule.args)
        else:
            matched = all(holds(a) for a in rule.args)
        if matched:
            return seccomp._ret(rule.action, rule.errno_ret)
    return seccomp._ret(profile.default_action, profile.default_errno_ret)


def getpid_rule(arg: Arg) -> Profile:
    return Profile("SCMP_ACT_ALLOW", syscalls=[
        Syscall(["getpid"], "SCMP_ACT_ERRNO", errno.EACCES, [arg])])


# --- The program, through the interpreter --------------------------------

EDGES = [0, 1, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
         (1 << 32) | 5, (5 << 32) | 1, 0x80000000_00000000, (1 << 64) - 1]


@pytest.mark.parametrize("op", seccomp.OPS)
def test_64_bit_comparisons_use_both_halves(op):
    # Each value against arguments that differ from it in one half only.
    for value in EDGES:
        profile = getpid_rule(Arg(0, value, op, value & 0xFFFF0000_0000FFFF))
        program = seccomp.compile(profile, "x86_64")
        for arg in EDGES:
            got = run_bpf(program, X86_64["getpid"], args=(arg,))
            want = reference(profile, X86_64, X86_64["getpid"], (arg,))
            assert got == want, (op, hex(value), hex(arg))


def test_clone_flags_are_checked_in_both_halves():
    # A namespace flag is refused; bits above 32 do not hide one, and do
    # not add one either.
    program = seccomp.compile(seccomp.default_profile(), "x86_64")
    clone = X86_64["clone"]
    assert run_bpf(program, clone, args=(FORK_FLAGS,)) == ALLOW
    assert run_bpf(program, clone, args=((1 << 32) | FORK_FLAGS,)) == ALLOW
    for flag in NAMESPACES:
        assert run_bpf(program, clone, args=(FORK_FLAGS | flag,)) == EPERM
        assert run_bpf(program, clone,
                       args=((1 << 32) | FORK_FLAGS | flag,)) == EPERM


@pytest.mark.parametrize("arch,table", [("x86_64", X86_64),
                                        ("aarch64", AARCH64)])
@pytest.mark.parametrize("caps", [set(), {"CAP_SYS_ADMIN"},
                                  {"sys_ptrace", "SYS_TIME"}])
def test_the_program_does_what_the_profile_says(arch, table, caps):
    profile = seccomp.default_profile(caps)
    program = seccomp.compile(profile, arch)
    audit = seccomp.ARCHES[arch].audit
    samples = [(0,), (0xFFFFFFFF,), (FORK_FLAGS,),
               (FORK_FLAGS | libc.CLONE_NEWUSER,), (0x40000,)]
    for nr in sorted(set(table.values())):
        for args in samples:
            assert run_bpf(program, nr, audit, args) == \
                reference(profile, table, nr, args + (0,) * 5), nr


def test_default_policy_on_x86_64():
    program = seccomp.compile(seccomp.default_profile(), "x86_64")

    def outcome(name, *args):
        return run_bpf(program, X86_64[name], args=args)

    for name in ("read", "write", "getpid", "execve", "mmap", "futex",
                 "rt_sigreturn", "exit_group", "arch_prctl", "seccomp"):
        assert outcome(name) == ALLOW, name
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns",
                 "keyctl", "add_key", "request_key", "bpf", "kexec_load",
                 "init_module", "finit_module", "delete_module",
                 "open_by_handle_at", "name_to_handle_at", "io_uring_setup",
                 "io_uring_enter", "io_uring_register", "reboot", "swapon",
                 "acct", "settimeofday", "clock_settime", "clock_adjtime",
                 "syslog", "quotactl", "perf_event_open", "fanotify_init",
                 "userfaultfd", "lookup_dcookie", "iopl", "ioperm", "fsopen",
                 "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
                 "mount_setattr", "kcmp", "process_vm_readv",
                 "process_vm_writev", "ptrace", "uselib", "_sysctl",
                 "nfsservctl", "create_module", "chroot"):
        assert outcome(name) == EPERM, name
    for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert outcome("personality", persona) == ALLOW
    assert outcome("personality", 0x0040000) == EPERM   # ADDR_NO_RANDOMIZE
    assert outcome("clone3") == ENOSYS


def test_calling_conventions_are_checked_first():
    program = seccomp.compile(seccomp.default_profile(), "x86_64")
    getpid = X86_64["getpid"]
    assert run_bpf(program, getpid) == ALLOW
    # x32 numbers: refused even for a call that is allowed.
    assert run_bpf(program, 0x40000000 | getpid) == EPERM
    assert run_bpf(program, 0x40000000 | X86_64["mount"]) == EPERM
    # i386 through int $0x80, where 20 is getpid and 21 mount.
    assert run_bpf(program, 20, seccomp.AUDIT_ARCH_I386) == EPERM
    assert run_bpf(program, getpid, seccomp.AUDIT_ARCH_AARCH64) == \
        KILL_PROCESS

    arm = seccomp.compile(seccomp.default_profile(), "aarch64")
    assert run_bpf(arm, AARCH64["getpid"], seccomp.AUDIT_ARCH_AARCH64) == \
        ALLOW
    assert run_bpf(arm, AARCH64["mount"], seccomp.AUDIT_ARCH_AARCH64) == \
        EPERM
    assert run_bpf(arm, 20, seccomp.AUDIT_ARCH_ARM) == EPERM
    assert run_bpf(arm, 20, seccomp.AUDIT_ARCH_X86_64) == KILL_PROCESS


def test_calls_newer_than_the_table_get_enosys():
    newest = max(X86_64.values())
    refusing = seccomp.compile(seccomp.default_profile(), "x86_64")
    for nr in (newest + 1, newest + 2, 1000, 0x3FFFFFFF):
        assert run_bpf(refusing, nr) == ENOSYS, nr
    # A hole in the numbering (x86_64 jumps from 334 to 424) is not new.
    assert run_bpf(refusing, 400) == EPERM
    allowing = seccomp.compile(Profile("SCMP_ACT_ALLOW"), "x86_64")
    assert run_bpf(allowing, newest + 1) == ALLOW


def test_capabilities_relax_the_default():
    def program(*caps):
        return seccomp.compile(seccomp.default_profile(set(caps)), "x86_64")

    admin = program("CAP_SYS_ADMIN")
    assert run_bpf(admin, X86_64["mount"]) == ALLOW
    assert run_bpf(admin, X86_64["clone3"]) == ALLOW
    assert run_bpf(admin, X86_64["clone"],
                   args=(libc.CLONE_NEWUSER,)) == ALLOW
    assert run_bpf(admin, X86_64["keyctl"]) == EPERM
    ptrace = program("SYS_PTRACE")
    assert run_bpf(ptrace, X86_64["ptrace"]) == ALLOW
    assert run_bpf(ptrace, X86_64["mount"]) == EPERM
    assert run_bpf(program("CAP_SYS_CHROOT"), X86_64["chroot"]) == ALLOW


def test_far_jumps_go_through_trampolines():
    # Hundreds of conditional rules push jump targets past 255.
    rules = [Syscall([name], "SCMP_ACT_ERRNO", errno.EACCES,
                     [Arg(1, nr * 3, "SCMP_CMP_GE")])
             for name, nr in X86_64.items()]
    profile = Profile("SCMP_ACT_ALLOW", syscalls=rules)
    program = seccomp.compile(profile, "x86_64")
    insns = list(struct.iter_unpack("=HBBI", program))
    assert any(code == bpf.BPF_JMP | bpf.BPF_JA
               for code, *_ in insns)
    assert len(insns) <= bpf.BPF_MAXINSNS
    for nr in X86_64.values():
        for arg in (0, max(nr * 3 - 1, 0), nr * 3, 1 << 40):
            assert run_bpf(program, nr, args=(0, arg)) == \
                reference(profile, X86_64, nr, (0, arg, 0, 0, 0, 0))


def test_program_size():
    program = seccomp.compile(seccomp.default_profile(), "x86_64")
    assert len(program) // 8 < 300


def test_only_known_arches():
    with pytest.raises(RunboxError) as caught:
        seccomp.compile(seccomp.default_profile(), "riscv64")
    assert str(caught.value) == ("seccomp filters are only built for "
                                 "x86_64 and aarch64 here, not riscv64")


# --- docker's profile format ---------------------------------------------

def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_docker_profile_with_includes_and_excludes(tmp_path):
    path = write(tmp_path / "p.json", {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["read", "write", "execve", "no_such_call"],
             "action": "SCMP_ACT_ALLOW"},
            {"name": "ptrace", "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_PTRACE"]}},
            {"names": ["uname"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
             "includes": {"minKernel": "99.0"}},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
        ]})
    plain = seccomp.load_profile(path, set(), arch="x86_64")
    assert [r.names for r in plain.syscalls] == [
        ["read", "write", "execve", "no_such_call"], ["uname"],
        ["arch_prctl"], ["socket"]]
    traced = seccomp.load_profile(path, {"CAP_SYS_PTRACE", "SYS_ADMIN"},
                                  arch="aarch64")
    assert [r.names for r in traced.syscalls] == [
        ["read", "write", "execve", "no_such_call"], ["ptrace"],
        ["socket"]]
    assert plain.syscalls[3].args == [Arg(0, 40, "SCMP_CMP_NE")]
    # The unknown name is kept (it may be known elsewhere) and skipped.
    program = seccomp.compile(plain, "x86_64")
    assert run_bpf(program, X86_64["read"]) == ALLOW
    assert run_bpf(program, X86_64["socket"], args=(40,)) == EPERM
    assert run_bpf(program, X86_64["socket"], args=(2,)) == ALLOW


@pytest.mark.parametrize("profile", [
    # Nothing allowed at all: not even the exit that would report it.
    {"defaultAction": "SCMP_ACT_ERRNO"},
    {"defaultAction": "SCMP_ACT_ALLOW",
     "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_KILL"}]},
    # Allowed only for some arguments, which runbox cannot promise.
    {"defaultAction": "SCMP_ACT_ERRNO",
     "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 2, "value": 0,
                             "op": "SCMP_CMP_EQ"}]}]},
])
def test_a_profile_that_stops_the_command_starting(profile):
    # The filter goes in before execve: a profile refusing it would crash
    # runbox's child before the command, and read as the command's SIGSEGV.
    with pytest.raises(RunboxError) as caught:
        seccomp.parse_profile(profile, source="p.json")
    assert str(caught.value) == ("seccomp profile p.json: it does not "
                                 "allow execve, which starts the command")


def test_lets_through_decides_as_the_filter_does():
    rules = [Syscall(["write"], "SCMP_ACT_ALLOW", None,
                     [Arg(0, 1, "SCMP_CMP_EQ")]),
             Syscall(["write"], "SCMP_ACT_ERRNO"),
             Syscall(["read"], "SCMP_ACT_LOG"),
             Syscall(["read"], "SCMP_ACT_ERRNO")]
    profile = Profile("SCMP_ACT_ALLOW", syscalls=rules)
    # write: allowed for fd 1 only, then refused: not whatever its args.
    assert not seccomp.lets_through(profile, "write")
    # read: the first rule without conditions decides.
    assert seccomp.lets_through(profile, "read")
    # No rule: the default action.
    assert seccomp.lets_through(profile, "getpid")
    assert not seccomp.lets_through(Profile("SCMP_ACT_ERRNO"), "getpid")


def test_the_oci_form_reads_back_the_same():
    profile = seccomp.default_profile({"CAP_SYS_PTRACE"})
    oci = profile.to_oci()
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == errno.EPERM
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.ENOSYS} in oci["syscalls"]
    assert seccomp.parse_profile(json.loads(json.dumps(oci))) == profile


@pytest.mark.parametrize("content,problem", [
    (None, "No such file or directory"),
    ("{'defaultAction': 1}", "not valid JSON: Expecting property name "
                             "enclosed in double quotes: line 1 column 2 "
                             "(char 1)"),
    ("[]", "the top level must be an object"),
    ({"defaultAction": "SCMP_ACT_NOPE"},
     "defaultAction: unknown action 'SCMP_ACT_NOPE', expected one of "
     "SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, "
     "SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_TRACE, SCMP_ACT_LOG"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
     "syscalls[0].action: SCMP_ACT_NOTIFY needs a seccomp agent, which "
     "runbox does not have"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]},
     "syscalls[0].args[0]: unknown op 'SCMP_CMP_LIKE', expected one of "
     "SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, "
     "SCMP_CMP_GE, SCMP_CMP_MASKED_EQ"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "syscalls[0].args[0].index must be 0 to 5"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]},
     "syscalls[0].errnoRet: -1 is not a number from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]},
     "syscalls[0]: use either name or names"),
])
def test_bad_profiles_are_one_line(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    if content is not None:
        write(path, content)
    with pytest.raises(RunboxError) as caught:
        seccomp.load_profile(path)
    assert str(caught.value) == f"seccomp profile {path}: {problem}"
    assert caught.value.exit_code == 125


# --- The real kernel, in a forked child ----------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
TABLE = seccomp.ARCHES.get(platform.machine(), seccomp.ARCHES["x86_64"]).table
on_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                               reason="x86_64 calling conventions")


def syscall(nr: int, *args: object) -> int | str:
    """A raw syscall: its result, or the errno's name."""
    cargs = [a if isinstance(a, (bytes, type(None))) else ctypes.c_long(a)
             for a in args]
    ret = _libc.syscall(ctypes.c_long(nr), *cargs)
    if ret == -1:
        return errno.errorcode[ctypes.get_errno()]
    return ret


def in_child(probe, program: bytes | None = None, *,
             raw: bool = False) -> object:
    """probe() in a forked child, after installing program if given.

    The result comes back as JSON over a pipe; with raw, as whatever the
    child wrote to stdout (for a probe that execs).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            if raw:
                os.dup2(write_end, 1)
            if program is not None:
                libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
                seccomp.install(program)
            result = probe()
            os.write(write_end, json.dumps({"result": result}).encode())
            code = 0
        except BaseException:
            os.write(write_end, json.dumps(
                {"error": traceback.format_exc()}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if raw:
        return data.decode(), os.waitstatus_to_exitcode(status)
    message = json.loads(data)
    assert "error" not in message, message["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return message["result"]


@pytest.fixture(scope="module")
def default_program() -> bytes:
    return seccomp.compile(seccomp.default_profile())


def test_seccomp_mode_shows_in_proc(default_program):
    def probe():
        with open("/proc/self/status") as f:
            return [line.strip() for line in f
                    if line.startswith(("Seccomp", "NoNewPrivs"))]

    assert in_child(probe, default_program) == [
        "NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1"]


def test_allowed_calls_work(default_program):
    def probe():
        return [os.getpid(), syscall(TABLE["getpid"]), os.uname().sysname]

    pid, raw_pid, sysname = in_child(probe, default_program)
    assert raw_pid == pid and sysname == "Linux"


@needs_root
def test_refused_calls_fail_with_eperm(default_program):
    # Without the filter the kernel gives other answers (run as root),
    # so EPERM is the filter's.
    def probe():
        return {
            "mount": syscall(TABLE["mount"], None,
                             b"/nonexistent-runbox-target", None, 0, None),
            "unshare": syscall(TABLE["unshare"], libc.CLONE_NEWUTS),
            "keyctl": syscall(TABLE["keyctl"], 0, -4, 0),
            "bpf": syscall(TABLE["bpf"], 0xFFFF, None, 0),
            "clone": syscall(TABLE["clone"], libc.CLONE_NEWUSER | 0x200,
                             0, 0, 0, 0),
            "clone3": syscall(TABLE["clone3"], None, 0),
            "personality": syscall(TABLE["personality"], 0x0040000),
        }

    unfiltered = in_child(probe)
    assert "EPERM" not in unfiltered.values(), unfiltered
    assert in_child(probe, default_program) == {
        "mount": "EPERM", "unshare": "EPERM", "keyctl": "EPERM",
        "bpf": "EPERM", "clone": "EPERM", "clone3": "ENOSYS",
        "personality": "EPERM"}


def test_fork_and_threads_still_work(default_program):
    # glibc's pthread_create tries clone3 first and takes clone on ENOSYS.
    def probe():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        seen = []
        thread = threading.Thread(
            target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join()
        return forked, seen, os.getpid()

    forked, seen, pid = in_child(probe, default_program)
    assert forked == 7
    assert len(seen) == 1 and seen[0] != pid


@on_x86_64
def test_x32_numbers_are_refused(default_program):
    def probe():
        return syscall(0x40000000 | X86_64["getpid"])

    assert in_child(probe, default_program) == "EPERM"


def test_newer_calls_get_enosys(default_program):
    # fchmodat2 (Linux 6.6) is past linux-libc-dev 6.1's table.
    fchmodat2 = 452
    assert fchmodat2 > max(TABLE.values())

    def probe():
        return syscall(fchmodat2, -100, b"/nonexistent-runbox", 0o755, 0)

    assert in_child(probe, default_program) == "ENOSYS"


@pytest.fixture(scope="module")
def probe_binary(tmp_path_factory) -> Path:
    """probes/seccomp_probe.c, built static so it runs anywhere."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the probe: make test-deps")
    out = tmp_path_factory.mktemp("probe") / "seccomp_probe"
    built = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(out),
         str(REPO / "probes/seccomp_probe.c")], capture_output=True,
        text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build a static probe: {built.stderr.strip()}")
    return out


@on_x86_64
def test_i386_calls_are_refused(default_program, probe_binary):
    # The filter stays across execve: the probe inherits it.
    def probe():
        os.execv(probe_binary, [str(probe_binary)])

    plain = subprocess.run([probe_binary], capture_output=True, text=True)
    found = re.fullmatch(r"int80=(\d+) getpid=(\d+)\n", plain.stdout)
    if not found or found[1] != found[2]:
        pytest.skip("this kernel runs no i386 calls (no IA32 emulation)")
    out, code = in_child(probe, default_program, raw=True)
    assert re.fullmatch(r"int80=-1 getpid=\d+\n", out), out
    assert code == 0


def test_a_docker_profile_is_enforced(tmp_path):
    path = write(tmp_path / "no-uname.json", {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EACCES}]})
    program = seccomp.compile(seccomp.load_profile(path))

    def probe():
        try:
            os.uname()
        except OSError as exc:
            return errno.errorcode[exc.errno], syscall(TABLE["getpid"])
        return "uname worked", None

    code, pid = in_child(probe, program)
    assert code == "EACCES" and pid > 0


def test_install_is_narrated(default_program):
    def probe():
        out = io.StringIO()
        trace.enable(file=out, color=False)
        trace.set_role("child")
        seccomp.install(default_program, why="the container's syscalls")
        try:
            libc.seccomp(libc.SECCOMP_SET_MODE_FILTER, 0,
                         libc.sock_fprog(0, None))
        except OSError as exc:
            failed = [exc.strerror, exc.hint]
        trace.disable()
        return out.getvalue(), failed, os.getpid()

    text, failed, pid = in_child(probe)
    who = f"child {pid}".ljust(trace.WHO_WIDTH)
    pad = " " * trace.WHO_WIDTH
    n = len(default_program) // 8
    assert re.fullmatch(
        re.escape(f"{who}seccomp(SECCOMP_SET_MODE_FILTER, 0, {{len={n}, "
                  "filter=") + r"0x[0-9a-f]+" + re.escape("}) = 0\n"
                  f"{pad}why: the container's syscalls\n"
                  f"{who}seccomp(SECCOMP_SET_MODE_FILTER, 0, {{len=0, "
                  "filter=0x0}) = -1 EINVAL (Invalid argument)\n"
                  f"{pad}likely: ") + r".*\n", text), text
    assert failed[0] == "seccomp: Invalid argument"
