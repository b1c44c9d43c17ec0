"""Capabilities: root's power, cut into pieces that can be dropped.

Since Linux 2.2, what root may do is split into about forty capabilities
(capabilities(7)): CAP_SYS_ADMIN to mount, CAP_SYS_MODULE to load modules,
CAP_NET_ADMIN to reconfigure the network, and so on.  A process carries
five sets of them:

    bounding     the most it or its children can ever get back
    permitted    what it may switch on
    effective    what the kernel checks right now
    inheritable  what may pass through execve (with file capabilities)
    ambient      what passes through execve of ordinary programs

A container keeps docker's 14 defaults in bounding, permitted and effective,
and nothing in inheritable and ambient: root inside it may chown files and
bind low ports, but not mount, load modules or change the clock.
"""

from __future__ import annotations

import ctypes

from runbox import libc
from runbox.errors import RunboxError

# The kernel's numbering, from <linux/capability.h>.
NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]
NUMBERS = {f"CAP_{name}": n for n, name in enumerate(NAMES)}

# docker's default set: what most programs that run as root need, and no
# more.  Nothing here lets a process mount, load modules or trace others.
DEFAULT = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# capget(2)/capset(2) ABI: version 3 carries 64 bits in two 32-bit words.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32),
                ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    """The highest capability this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def normalize(name: str) -> str:
    """"sys_admin", "SYS_ADMIN" and "CAP_SYS_ADMIN" are one capability."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full != "CAP_ALL" and full not in NUMBERS:
        raise RunboxError(
            f"unknown capability {name!r}: see capabilities(7) for the names")
    return full


def resolve(cap_add: list[str] | None, cap_drop: list[str] | None,
            ) -> list[str]:
    """docker's rules: start from the defaults, drop, then add; ALL means
    every capability."""
    adds = {normalize(c) for c in cap_add or []}
    drops = {normalize(c) for c in cap_drop or []}
    caps = set() if "CAP_ALL" in drops else set(DEFAULT) - drops
    if "CAP_ALL" in adds:
        caps |= {name for name, n in NUMBERS.items() if n <= last_cap()}
    caps |= adds - {"CAP_ALL"}
    return sorted(caps, key=NUMBERS.__getitem__)


def drop_bounding(keep: list[str]) -> None:
    """Drop everything else from the bounding set, for good.

    Needs CAP_SETPCAP, so it comes before the effective set shrinks.
    """
    wanted = {NUMBERS[name] for name in keep}
    first = True
    for cap in range(last_cap() + 1):
        if cap in wanted:
            continue
        libc.prctl(libc.PR_CAPBSET_DROP, cap,
                   why="no process of the container can regain the "
                       "capabilities dropped here" if first else None)
        first = False


def clear_ambient() -> None:
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL,
               why="nothing passes through execve to ordinary programs")


def set_process(keep: list[str]) -> None:
    """Effective and permitted as keep, inheritable empty (capset(2))."""
    bits = 0
    for name in keep:
        bits |= 1 << NUMBERS[name]
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for word in (0, 1):
        value = (bits >> (32 * word)) & 0xFFFFFFFF
        data[word].effective = data[word].permitted = value
    libc.capset(header, data, shown=f"{{effective=permitted={bits:#x}, "
                                    "inheritable=0}",
                why="root in the container keeps only these")
