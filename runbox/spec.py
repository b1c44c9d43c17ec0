"""A container's settings, in one plain data structure shaped like OCI's.

The fields follow the OCI runtime-spec's config.json (process, root,
hostname, mounts, linux.namespaces), so that a later `runbox` can read an
OCI bundle into the same structure that the stages and the command line
produce today.  Names are Python's snake_case; to_oci() gives the JSON keys.

Later stages add linux.resources, process.capabilities and linux.seccomp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runbox.errors import RunboxError
from runbox.libc import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
    CLONE_NEWUSER, CLONE_NEWUTS, CloneFlag,
)

# What docker and runc put on PATH when the image says nothing.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# OCI's namespace type names, with the flag that creates each.
NAMESPACE_FLAGS: dict[str, CloneFlag] = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
}


@dataclass
class Process:
    """What runs: OCI's `process`."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    terminal: bool = False
    # docker's --user, NAME|UID[:GROUP|GID]; names are looked up in the
    # container's /etc/passwd, so the numbers are only known inside.
    user: str | None = None
    # One list for OCI's bounding, permitted and effective sets; the
    # inheritable and ambient sets are always empty.
    capabilities: list[str] | None = None
    no_new_privileges: bool = False


@dataclass
class Root:
    """The root filesystem: OCI's `root`."""

    path: str
    readonly: bool = False


@dataclass
class Mount:
    """One mount inside the container: an entry of OCI's `mounts`."""

    destination: str
    type: str
    source: str
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    """One entry of OCI's `linux.namespaces`: a new one unless path is set."""

    type: str
    path: str | None = None


@dataclass
class Memory:
    """OCI's `linux.resources.memory`, in bytes.

    swap is OCI's (and docker's --memory-swap): the limit of memory and
    swap together, so swap == limit allows no swap at all; -1 is no limit.
    """

    limit: int
    swap: int


@dataclass
class Cpu:
    """OCI's `linux.resources.cpu`: quota microseconds per period."""

    quota: int
    period: int = 100_000


@dataclass
class Pids:
    """OCI's `linux.resources.pids`."""

    limit: int


@dataclass
class Resources:
    """OCI's `linux.resources`: what the container's cgroup limits."""

    memory: Memory | None = None
    cpu: Cpu | None = None
    pids: Pids | None = None


@dataclass
class Linux:
    """OCI's `linux` section."""

    namespaces: list[Namespace] = field(default_factory=list)
    resources: Resources | None = None
    # A runbox.seccomp.Profile, shaped like OCI's linux.seccomp.
    seccomp: object | None = None
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)


@dataclass
class Spec:
    """A whole container's settings: OCI's config.json."""

    process: Process
    root: Root
    hostname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    linux: Linux = field(default_factory=Linux)

    def has_namespace(self, kind: str) -> bool:
        return any(ns.type == kind for ns in self.linux.namespaces)

    def clone_flags(self, *kinds: str) -> CloneFlag:
        """The flags of this spec's new namespaces among kinds."""
        flags = CloneFlag(0)
        for ns in self.linux.namespaces:
            if ns.type in kinds and ns.path is None:
                flags |= NAMESPACE_FLAGS[ns.type]
        return flags

    def to_oci(self) -> dict:
        """This spec as the dict a config.json would hold."""
        process = {
            "args": list(self.process.args),
            "env": [f"{k}={v}" for k, v in self.process.env.items()],
            "cwd": self.process.cwd,
            "terminal": self.process.terminal,
            "noNewPrivileges": self.process.no_new_privileges,
        }
        user = self.process.user
        if user and all(p.isdigit() for p in user.split(":")):
            uid, _, gid = user.partition(":")
            process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        if self.process.capabilities is not None:
            caps = list(self.process.capabilities)
            process["capabilities"] = {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": []}
        namespaces = [
            {"type": ns.type} | ({"path": ns.path} if ns.path else {})
            for ns in self.linux.namespaces
        ]
        oci = {
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": self.root.path, "readonly": self.root.readonly},
            "mounts": [
                {"destination": m.destination, "type": m.type,
                 "source": m.source, "options": list(m.options)}
                for m in self.mounts
            ],
            "linux": {"namespaces": namespaces},
        }
        linux = oci["linux"]
        if self.linux.resources is not None:
            linux["resources"] = _resources_oci(self.linux.resources)
        if self.linux.seccomp is not None:
            linux["seccomp"] = self.linux.seccomp.to_oci()
        if self.linux.masked_paths:
            linux["maskedPaths"] = list(self.linux.masked_paths)
        if self.linux.readonly_paths:
            linux["readonlyPaths"] = list(self.linux.readonly_paths)
        if self.hostname is not None:
            oci["hostname"] = self.hostname
        return oci


def _resources_oci(res: Resources) -> dict:
    out: dict = {}
    if res.memory:
        out["memory"] = {"limit": res.memory.limit, "swap": res.memory.swap}
    if res.cpu:
        out["cpu"] = {"quota": res.cpu.quota, "period": res.cpu.period}
    if res.pids:
        out["pids"] = {"limit": res.pids.limit}
    return out


def namespaces(*kinds: str) -> list[Namespace]:
    """New namespaces of the given OCI types."""
    for kind in kinds:
        if kind not in NAMESPACE_FLAGS:
            raise RunboxError(f"unknown namespace type {kind!r}")
    return [Namespace(kind) for kind in kinds]


def container_env(extra: dict[str, str], *, hostname: str | None,
                  term: str | None) -> dict[str, str]:
    """The environment a container starts with, as docker builds it.

    The host's environment never leaks in: PATH is the default one (so a
    command is found inside the new root even when runbox was started with
    an empty environment), then HOSTNAME, HOME and TERM, then what the user
    asked for, which wins.
    """
    env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
    if hostname:
        env["HOSTNAME"] = hostname
    if term:
        env["TERM"] = term
    env.update(extra)
    return env


def default_mounts() -> list[Mount]:
    """The filesystems every container gets, as runc's default spec has.

    /proc and /sys are mounted read-only: a container has no business
    changing kernel settings through them.
    """
    nosuid = ["nosuid", "noexec", "nodev"]
    return [
        Mount("/proc", "proc", "proc", nosuid + ["ro"]),
        Mount("/sys", "sysfs", "sysfs", nosuid + ["ro"]),
        Mount("/dev", "tmpfs", "tmpfs",
              ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
               "mode=0620", "gid=5"]),
        Mount("/dev/shm", "tmpfs", "shm",
              nosuid + ["mode=1777", "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", nosuid),
    ]


def validate(spec: Spec) -> None:
    """Refuse settings that would act on the host instead of the container."""
    if not spec.process.args:
        raise RunboxError("no command given")
    if spec.hostname is not None and not spec.has_namespace("uts"):
        raise RunboxError(
            "a hostname needs a UTS namespace: without one it would "
            "rename the host"
        )
    if spec.mounts and not spec.has_namespace("mount"):
        raise RunboxError(
            "mounts need a mount namespace: without one they would land "
            "on the host"
        )
