"""The escape lab: the default image plus probe programs under /lab.

Each probe in probes/*.c tries one classic container escape and only ever
reads, so that a success shows the weakness without harming the host.  They
are built static with the host's gcc, because the busybox image has no C
library to link against.

    python -m runbox.lab [DEST]   build the image "lab", or a rootfs at DEST
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from runbox import images
from runbox.errors import RunboxError

PROBES = Path(__file__).resolve().parent.parent / "probes"
# Installed setuid root, to show what no_new_privs does to such a binary.
SETUID = {"show_ids"}


def build_probes(dest: Path) -> list[Path]:
    """Compile every probe into dest, statically; return the binaries."""
    if shutil.which("gcc") is None:
        raise RunboxError("the probes need gcc: apt-get install gcc libc6-dev")
    dest.mkdir(parents=True, exist_ok=True)
    built = []
    for source in sorted(PROBES.glob("*.c")):
        binary = dest / source.stem
        result = subprocess.run(
            ["gcc", "-static", "-O2", "-pthread", "-o", str(binary),
             str(source)],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise RunboxError(
                f"building {source.name} failed: "
                + (result.stderr.strip().splitlines() or ["?"])[-1])
        if binary.name in SETUID:
            binary.chmod(0o4755)
        built.append(binary)
    return built


def build_lab_rootfs(dest: Path) -> Path:
    """A copy of the default image at dest with the probes in /lab."""
    base = images.resolve_rootfs(None)
    shutil.copytree(base, dest, symlinks=True)
    build_probes(dest / "lab")
    return dest


def main(argv: list[str]) -> int:
    try:
        if argv:
            build_lab_rootfs(Path(argv[0]))
            return 0
        target = images.image_rootfs("lab")
        with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
            built = build_lab_rootfs(Path(tmp) / "rootfs")
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            built.rename(target)
        print(target)
        return 0
    except RunboxError as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
