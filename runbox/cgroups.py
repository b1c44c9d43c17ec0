"""Control groups: the limits namespaces cannot give.

A cgroup is a directory in a special filesystem; a process belongs to it
once its pid is written to cgroup.procs, and the files beside it set the
limits.  Two versions are in use, often side by side:

    v2  one tree at /sys/fs/cgroup (cgroup2); a controller works in a
        child only if every ancestor lists it in cgroup.subtree_control,
        and processes may only live in leaves ("no internal processes").
    v1  one tree per controller: /sys/fs/cgroup/memory, .../pids, ...
        under a tmpfs.  "Hybrid" hosts also mount an empty cgroup2 tree at
        /sys/fs/cgroup/unified that holds no controllers.

The version is detected, never guessed: statfs(2) on /sys/fs/cgroup says
cgroup2 or tmpfs, and for tmpfs the mount table says where each v1
controller lives.  A controller is used where it actually lives.

runbox's cgroups are runbox/ID under each hierarchy's root, never under the
caller's own cgroup, and runbox never writes to a cgroup it did not create,
except to enable controllers top-down in v2's subtree_control.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from runbox import libc, trace
from runbox import mountinfo as mountinfo_
from runbox.errors import RunboxError
from runbox.spec import Resources

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "runbox"
# The controllers runbox limits with.  Every container joins all of them
# that the host has, so that /proc/self/cgroup names its own cgroup.
CONTROLLERS = ("memory", "cpu", "pids")


@dataclass
class Layout:
    """Where each controller lives on this host."""

    mode: str  # "v2", "hybrid" or "v1"
    v2_root: Path | None = None
    v2_controllers: set[str] = field(default_factory=set)
    v1_roots: dict[str, Path] = field(default_factory=dict)

    def version_of(self, controller: str) -> int | None:
        """1 or 2 for where controller lives, None if nowhere usable."""
        if controller in self.v1_roots:
            return 1
        if controller in self.v2_controllers:
            return 2
        return None


def detect(root: str = CGROUP_ROOT, mountinfo: str | None = None) -> Layout:
    """Find out how this host's cgroups are laid out."""
    magic = libc.statfs(root, why="which cgroup version this host runs")
    if magic == libc.CGROUP2_SUPER_MAGIC:
        controllers = set(Path(root, "cgroup.controllers").read_text().split())
        trace.note(f"cgroup v2: {root} is cgroup2, with "
                   f"{' '.join(sorted(controllers)) or 'no controllers'}")
        return Layout("v2", Path(root), controllers)
    if magic != libc.TMPFS_MAGIC:
        raise RunboxError(
            f"no cgroup filesystem at {root} (statfs says "
            f"{libc.FS_MAGIC.get(magic, hex(magic))}): mount cgroup2 there")

    mounts = (mountinfo_.read() if mountinfo is None
              else mountinfo_.parse(mountinfo))
    layout = Layout("v1")
    for mount in mounts:
        point = mount.point
        if mount.fstype not in ("cgroup", "cgroup2") or \
                not point.startswith(root.rstrip("/") + "/"):
            continue
        if mount.fstype == "cgroup2":
            layout.mode, layout.v2_root = "hybrid", Path(point)
            layout.v2_controllers = set(
                Path(point, "cgroup.controllers").read_text().split())
        else:
            for name in mount.super_options:
                if name in CONTROLLERS:
                    layout.v1_roots[name] = Path(point)
    if not layout.v1_roots and layout.v2_root is None:
        raise RunboxError(
            f"no cgroup filesystem at {root}: a tmpfs with no cgroup "
            "hierarchy mounted under it")
    # On a hybrid host a controller in v1 is unavailable to v2 anyway.
    layout.v2_controllers -= set(layout.v1_roots)
    trace.note(
        f"cgroup {layout.mode}: {root} is a tmpfs; v1 holds "
        f"{' '.join(sorted(layout.v1_roots)) or 'nothing'}"
        + (f", v2 at {layout.v2_root} holds "
           f"{' '.join(sorted(layout.v2_controllers)) or 'nothing'}"
           if layout.v2_root else ""))
    return layout


def _write(path: Path, value: str, why: str | None = None) -> None:
    libc.write_file(str(path), value, why=why)


def _make_parent(path: Path) -> None:
    """runbox's parent cgroup, made once and kept; it holds no process."""
    if path.is_dir():
        return
    try:
        libc.mkdir(str(path), 0o755,
                   why="runbox's own parent cgroup, never the caller's")
    except FileExistsError:
        pass  # another runbox made it meanwhile


def _swap_in_use() -> bool:
    with open("/proc/swaps") as f:
        return len(f.read().splitlines()) > 1


class Cgroup:
    """One container's cgroup: a directory in each hierarchy it uses."""

    def __init__(self, layout: Layout, cid: str) -> None:
        self.layout = layout
        self.cid = cid
        self.v1_dirs: dict[str, Path] = {
            c: root / PARENT / cid for c, root in layout.v1_roots.items()}
        # On a hybrid host the container joins the v2 tree too, for its
        # cgroup.kill and so that /proc/self/cgroup's "0::" line names it;
        # no controller file is ever written there.
        self.v2_dir = layout.v2_root / PARENT / cid if layout.v2_root else None

    @property
    def dirs(self) -> list[Path]:
        """Each distinct directory of this cgroup, v2's first."""
        found = [self.v2_dir] if self.v2_dir else []
        for d in self.v1_dirs.values():
            if d not in found:
                found.append(d)
        return found

    def _dir(self, controller: str) -> Path:
        if controller in self.v1_dirs:
            return self.v1_dirs[controller]
        if self.v2_dir and controller in self.layout.v2_controllers:
            return self.v2_dir
        raise RunboxError(
            f"{controller} controller not available: this host has no "
            f"{controller} cgroup where runbox can use it")

    # --- Creating ------------------------------------------------------

    def create(self, resources: Resources | None) -> None:
        """Make the directories and write the limits; undo on failure."""
        res = resources or Resources()
        wanted = [c for c, v in (("memory", res.memory), ("cpu", res.cpu),
                                 ("pids", res.pids)) if v]
        for controller in wanted:
            self._dir(controller)  # a missing one fails before any mkdir
        try:
            if self.v2_dir:
                self._enable_v2(wanted)
            for d in self.dirs:
                _make_parent(d.parent)
                libc.mkdir(str(d), 0o755,
                           why="the container's own cgroup")
            self._limit(res)
        except BaseException:
            self.remove()
            raise

    def _enable_v2(self, wanted: list[str]) -> None:
        """Enable controllers in subtree_control, from the root down.

        A controller works in a cgroup only if its parent lists it in
        cgroup.subtree_control, and so on up to the root.  runbox's own
        parent holds no process, so enabling there cannot hit EBUSY.
        """
        available = sorted(self.layout.v2_controllers & set(CONTROLLERS))
        for level in (self.layout.v2_root, self.layout.v2_root / PARENT):
            _make_parent(level)
            enabled = (level / "cgroup.subtree_control").read_text().split()
            for controller in available:
                if controller in enabled:
                    continue
                try:
                    _write(level / "cgroup.subtree_control", f"+{controller}",
                           why="let the cgroups below use the "
                               f"{controller} controller")
                except OSError as exc:
                    if controller in wanted:
                        raise RunboxError(
                            f"{controller} controller not available: "
                            f"enabling it in {level} failed: "
                            f"{os.strerror(exc.errno or errno.EIO)}"
                        ) from None
                    trace.note(f"{controller} left off: {exc.strerror}")

    def _limit(self, res: Resources) -> None:
        if res.memory:
            self._memory(self._dir("memory"), res.memory.limit,
                         res.memory.swap)
        if res.cpu:
            d = self._dir("cpu")
            if d == self.v2_dir:
                _write(d / "cpu.max", f"{res.cpu.quota} {res.cpu.period}",
                       why="CPU time: quota per period, in microseconds")
            else:
                _write(d / "cpu.cfs_period_us", str(res.cpu.period),
                       why="the CPU accounting period")
                _write(d / "cpu.cfs_quota_us", str(res.cpu.quota),
                       why="CPU time allowed per period")
        if res.pids:
            _write(self._dir("pids") / "pids.max", str(res.pids.limit),
                   why="fork fails past this many tasks")

    def _memory(self, d: Path, limit: int, total: int) -> None:
        """The memory limit, and swap: total is memory and swap together
        (-1 unlimited).  v2 limits swap alone, v1 the sum."""
        v2 = d == self.v2_dir
        _write(d / ("memory.max" if v2 else "memory.limit_in_bytes"),
               str(limit), why="past this, the kernel reclaims, then "
                               "OOM-kills")
        if total == -1:
            return
        if v2:
            swap, value = d / "memory.swap.max", total - limit
            why = "swap allowed beyond memory.max"
            missing = "memory.swap.max"
        else:
            swap, value = d / "memory.memsw.limit_in_bytes", total
            why = "memory and swap together: no escape into swap"
            missing = "boot with swapaccount=1"
        if swap.exists():
            _write(swap, str(value), why=why)
        elif _swap_in_use():
            raise RunboxError(
                "memory-swap cannot be limited: this kernel has no swap "
                f"accounting ({missing}), so the container could swap past "
                "its limit")

    # --- Using ---------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move pid into every directory of this cgroup."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid),
                   why="the container joins its cgroup before it runs")

    def oom_kills(self) -> int:
        """How many processes the kernel killed for memory, from the files
        that count it: memory.events (v2) or memory.oom_control (v1)."""
        try:
            d = self._dir("memory")
        except RunboxError:
            return 0
        name = "memory.events" if d == self.v2_dir else "memory.oom_control"
        try:
            text = (d / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def oom_report(self, resources: Resources | None, code: int,
                   ) -> str | None:
        """What to tell the user if the kernel killed for memory here:
        read before the cgroup goes, since the count goes with it."""
        memory = resources.memory if resources else None
        if not memory or not self.oom_kills():
            return None
        from runbox.limits import format_size

        what = "killed" if code == 137 else "a process was killed"
        return f"{what}: out of memory, limit {format_size(memory.limit)}"

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text()
                          .split()}
            except OSError:
                pass
        return found

    # --- Removing ------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup.

        cgroup.kill (v2, Linux 5.14+) does it in one write, racing no fork.
        Elsewhere each pid is killed in turn; a process forked meanwhile is
        caught by the next round.  These pids are the container's own: only
        its processes were ever put here.
        """
        if self.v2_dir and (self.v2_dir / "cgroup.kill").exists():
            if self.pids():
                _write(self.v2_dir / "cgroup.kill", "1",
                       why="end every process still in the container")
            return
        for _ in range(100):
            left = self.pids()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the directories.

        rmdir fails with EBUSY while a killed process is still exiting, so
        it is retried for up to two seconds.
        """
        self.kill_all()
        for d in self.dirs:
            for attempt in range(200):
                try:
                    libc.rmdir(str(d), why="the container's cgroup is done")
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == 199:
                        raise
                    self.kill_all()
                    time.sleep(0.01)


def stale(layout: Layout, cid: str) -> Cgroup | None:
    """The cgroup of container cid, if any directory of it exists."""
    cg = Cgroup(layout, cid)
    return cg if any(d.exists() for d in cg.dirs) else None
