"""The copy-on-write root: an overlay of the image and a per-container layer.

overlayfs shows the image (lowerdir) with the container's own directory
(upperdir) on top: a write copies the file up, a delete leaves a whiteout,
and the image itself is never changed.  Every container starts from the same
pristine image.  See the kernel's Documentation/filesystems/overlayfs.rst.
"""

from __future__ import annotations

from pathlib import Path

from runbox import libc
from runbox.container import Bundle
from runbox.errors import RunboxError


# mount(2) hands a filesystem one page of options, the final NUL included.
MAX_OPTIONS = 4095


def options(lower: Path, upper: Path, work: Path) -> str:
    """The data string of the overlay mount.

    overlayfs splits its options at commas, its lower layers at colons, and
    takes a backslash as an escape, so a path holding any of them cannot be
    named here; it is refused rather than mounted wrongly.
    """
    for path in (lower, upper, work):
        if any(c in str(path) for c in ",:\\\n"):
            raise RunboxError(
                f"{path}: overlay cannot use a path with ',', ':' or '\\' "
                "in it")
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data.encode()) > MAX_OPTIONS:
        raise RunboxError(
            f"overlay options are {len(data.encode())} bytes, more than the "
            f"kernel takes ({MAX_OPTIONS}): use shorter paths for the image "
            "and RUNBOX_ROOT")
    return data


def mount_overlay(lower: Path, bundle: Bundle) -> None:
    """Mount the image with the container's layer on top at bundle.merged."""
    data = options(lower, bundle.upper, bundle.work)
    libc.mount("overlay", str(bundle.merged), "overlay", 0, data,
               why="a copy-on-write root: the container's writes go to its "
                   "upper dir, the image stays as it was")
