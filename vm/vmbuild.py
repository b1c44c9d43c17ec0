"""What the test VM's builders share: running tools, the cache, Debian's apt.

Each artifact of the VM (vmkernel: the kernel and its initramfs; vmroot: the
Debian root, the guest's Python packages, the disk image) lives in its own
directory under the cache, with an `inputs` file recording what it was built
from.  It is rebuilt only when that record differs from what it would be
built from now, so a warm run builds nothing.

Everything the VM is made of comes from Debian's archive, through the apt
sources the host is configured with, and from PyPI for the repo's own
Python dependencies.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


class BuildError(Exception):
    """A step of the build failed; the message says which and why."""


def log(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs) -> str:
    """Run a tool quietly; its stdout, or BuildError with its last lines."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{' '.join(argv[:3])} failed with status "
                         f"{proc.returncode}: " + " | ".join(tail))
    return proc.stdout


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached(cache: Path, name: str, inputs: dict,
           build: Callable[[Path], None]) -> Path:
    """cache/name as built from inputs, built by build(dir) if needed."""
    dest = cache / name
    record = json.dumps(inputs, sort_keys=True, indent=1) + "\n"
    try:
        if (dest / "inputs").read_text() == record:
            return dest
    except FileNotFoundError:
        pass

    log(f"building {name} ...")
    started = time.monotonic()
    # mkdtemp's mode 700 stays with the artifact: the Debian root in it
    # holds setuid-root binaries no other user may reach.
    work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-"))
    try:
        build(work)
        (work / "inputs").write_text(record)
        # rename(2) cannot replace a non-empty directory: the old one moves
        # aside first.  A VM still running from it keeps its open files.
        if dest.exists():
            os.rename(dest, work.with_name(work.name + ".old"))
        os.rename(work, dest)
    finally:
        for leftover in (work, work.with_name(work.name + ".old")):
            if leftover.exists():
                remove_tree(leftover)
    log(f"built {name} in {time.monotonic() - started:.0f} s")
    return dest


def remove_tree(path: Path) -> None:
    """rmtree, after unmounting what a failed debootstrap left mounted."""
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    points = [p.encode().decode("unicode_escape") for p in points]
    # Deepest first, and lazily: a busy mount must not stop the clean-up,
    # and rmtree must never walk into a live /proc or /sys.
    for point in sorted((p for p in points if p.startswith(prefix)),
                        key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    shutil.rmtree(path)


def lock(cache: Path):
    """The cache's lock, held while the file is open (use it in a with).

    Two builds at once would race on the same renames.
    """
    cache.mkdir(parents=True, exist_ok=True)
    handle = open(cache / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def apt_download(package: str, dest: Path) -> Path:
    """Download one .deb into dest with apt-get; its path."""
    argv = ["apt-get", "download", "-q", package]
    try:
        run(argv, cwd=dest)
    except BuildError:
        # Lists that are missing or stale (the mirror dropped the version)
        # both fail here, and one update fixes either.
        run(["apt-get", "update", "-q"])
        run(argv, cwd=dest)
    debs = list(dest.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise BuildError(f"apt-get download {package} left {len(debs)}"
                         f" .deb files in {dest}, expected one")
    return debs[0]


def installed_version(package: str) -> str:
    return run(["dpkg-query", "-W", "-f", "${Version}", package])
