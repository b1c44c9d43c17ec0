"""The mount table as the kernel reports it: /proc/self/mountinfo.

One line a mount (proc(5)): ids, the mount point, per-mount options, then
optional fields such as "shared:3" or "master:1" up to a lone "-", then the
filesystem type, its source and the superblock's options.  Paths are
escaped: a space is \\040, a tab \\011, a newline \\012, a backslash \\134.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo, the fields runbox reads."""

    point: str
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse(text: str) -> list[Mount]:
    """Every mount in a mountinfo text, in the kernel's order."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        found.append(Mount(_unescape(fields[4]), tuple(fields[6:sep]),
                           fields[sep + 1], _unescape(fields[sep + 2]),
                           tuple(fields[sep + 3].split(","))))
    return found


def read() -> list[Mount]:
    """This process's mounts."""
    with open("/proc/self/mountinfo") as f:
        return parse(f.read())
