"""A container's own directory under the state root, and its removal.

Each container gets containers/ID/ holding the overlay's upper, work and
merged directories and an `owner` file naming the runbox process that made
it.  The overlay itself is mounted inside the container's mount namespace,
so it disappears with the container's last process; only the directories
are left for runbox to remove.  If runbox dies before it can (SIGKILL),
gc() finds directories whose owner is gone and removes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runbox import mountinfo, paths, pids
from runbox.errors import RunboxError


@dataclass
class Bundle:
    """The on-disk state of one container."""

    id: str
    dir: Path

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        return self.dir / "merged"


def create() -> Bundle:
    """Make a new container directory owned by this process."""
    root = paths.containers_dir()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RunboxError(f"cannot create {root}: {exc.strerror}") from None
    cid = os.urandom(6).hex()
    # Made under a hidden name and renamed once complete: a gc running in
    # another runbox meanwhile must never see a directory without its
    # owner file, or it would take it for a dead one.
    partial = Bundle(cid, root / f".new-{os.getpid()}-{cid}")
    partial.dir.mkdir(mode=0o700)
    try:
        owner = f"{os.getpid()} {pids.start_time(os.getpid())}\n"
        (partial.dir / "owner").write_text(owner)
        for d in (partial.upper, partial.work, partial.merged):
            d.mkdir(mode=0o755)
        bundle = Bundle(cid, root / cid)
        partial.dir.rename(bundle.dir)
    except BaseException:
        # A Ctrl-C comes as an exception, here as anywhere.
        shutil.rmtree(partial.dir, ignore_errors=True)
        raise
    return bundle


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below directory, as this process sees them."""
    prefix = str(directory).rstrip("/") + "/"
    return [m.point for m in mountinfo.read()
            if m.point == prefix[:-1] or m.point.startswith(prefix)]


def remove(bundle: Bundle) -> None:
    """Delete a container's directory, never through a mount.

    If something is still mounted inside it, deleting would reach into
    that filesystem, perhaps an image or the host, so it is refused.
    """
    mounted = mounts_under(bundle.dir)
    if mounted:
        raise RunboxError(
            f"not removing {bundle.dir}: {mounted[0]} is still mounted")
    # Out of sight first: a directory half deleted, its owner file gone,
    # would look dead to a gc in another runbox.
    gone = bundle.dir
    if not gone.name.startswith(".gc-"):
        gone = bundle.dir.parent / f".gc-{os.getpid()}-{bundle.id}"
        bundle.dir.rename(gone)
    shutil.rmtree(gone)


def _alive(record: Path) -> int | None:
    """The pid a "PID STARTTIME" file names, if that very process runs
    (a zombie has died: only its parent has not reaped it yet)."""
    try:
        pid_text, start = record.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if pids.running(pid, start) else None


def owner_alive(bundle: Bundle) -> bool:
    """Whether the runbox process that made this directory still runs."""
    return _alive(bundle.dir / "owner") is not None


def record_pid(bundle: Bundle, pid: int) -> None:
    """Note the container's first process, for gc to end if orphaned."""
    (bundle.dir / "pid").write_text(f"{pid} {pids.start_time(pid)}\n")


def _end_orphan(bundle: Bundle) -> None:
    """SIGKILL the container's PID 1 if its runbox died and it did not.

    Its PID namespace goes with it, and so does its mount namespace with
    the overlay, so the directories can go next.  The start time check
    makes sure the pid is still the container's, not a reused one.
    """
    pid = _alive(bundle.dir / "pid")
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(500):
        if not pids.running(pid):
            return
        time.sleep(0.01)
    raise RunboxError(f"container {bundle.id}: pid {pid} did not die")


def gc() -> list[str]:
    """Remove the directories of containers whose runbox has died.

    Only directories under runbox's own state root are looked at, and only
    those whose owner process is gone (a reused pid is told apart by its
    start time).  Returns the ids removed.
    """
    root = paths.containers_dir()
    if not root.is_dir():
        return []
    removed = []
    layout = None
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith((".new-", ".gc-")):
            # Half made, or half collected: the maker's pid is in the name.
            maker = entry.name.split("-")[1]
            if maker.isdigit() and pids.running(int(maker)):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if owner_alive(Bundle(entry.name, entry)):
            continue
        # Claimed by a rename first: of several runboxes collecting at
        # once, exactly one gets each dead container.
        claimed = root / f".gc-{os.getpid()}-{entry.name}"
        try:
            entry.rename(claimed)
        except FileNotFoundError:
            continue
        bundle = Bundle(entry.name, claimed)
        # What still runs first: that ends the container's mount namespace,
        # and with it the overlay.
        _end_orphan(bundle)
        if (claimed / "cgroup").exists():
            from runbox import cgroups

            layout = layout or cgroups.detect()
            stale = cgroups.stale(layout, bundle.id)
            if stale:
                stale.remove()
        remove(bundle)
        removed.append(bundle.id)
    return removed


def mark_cgroup(bundle: Bundle) -> None:
    """Note that this container has a cgroup, for gc to find and remove."""
    (bundle.dir / "cgroup").touch()


def main(argv: list[str]) -> int:
    """`python -m runbox.container gc`: remove dead containers' state."""
    import sys

    if argv != ["gc"]:
        print("usage: python -m runbox.container gc", file=sys.stderr)
        return 125
    from runbox import images

    try:
        for cid in gc():
            print(f"removed {cid}")
        for work in images.gc():
            print(f"removed {work}")
    except (RunboxError, OSError) as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        return 125
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
