"""The test VM's root disk: a Debian minbase root, made an ext4 image.

Three cached pieces: base, a debootstrap'd minbase root of the host's Debian
suite with python3 and python3-pytest, docs and caches stripped; pydeps, the
repo's own Python dependencies (typer, rich) installed by pip for the
guest's Python, whose Debian install is externally managed; and image, an
ext4 image (mkfs.ext4 -d) of base plus pydeps, the guest's init
(vm/guest-init) and runbox's default busybox image at
/var/lib/runbox/images/busybox.

What it cannot do:

- base is keyed on the suite, the mirror and the package list, not on
  package versions: an update in the mirror (python3, say) is not picked up
  until the cache's base directory is removed.
- pydeps are keyed on the repo's declared requirements, not on PyPI: a new
  release of rich is not picked up until the cache's pydeps directory is
  removed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from vmbuild import HERE, BuildError, cached, digest, run

# Bump one of these when the way its piece is made changes, so caches built
# the old way are rebuilt.
BASE_RECIPE = 1
PYDEPS_RECIPE = 1
IMAGE_RECIPE = 1

# python3-pytest for the tests; the guest's init needs only python3, and
# dmesg and mount come with minbase.
GUEST_PACKAGES = ["python3", "python3-pytest"]

# Documentation and package caches: half of a minbase root, and no test
# reads them.
STRIP = ["usr/share/doc", "usr/share/man", "usr/share/info",
         "usr/share/locale", "usr/share/lintian", "var/cache/apt",
         "var/cache/debconf", "var/lib/apt/lists", "var/log"]

# Free space in the root image for what the tests write outside /tmp
# (containers' upper directories under /var/lib/runbox).  The file is
# sparse, so only what the guest writes costs disk, and snapshot=on puts
# even that in a throwaway file.
IMAGE_HEADROOM_MB = 768


# --- the Debian root -------------------------------------------------------

def codename() -> str:
    """The host's Debian suite; the guest runs the same one."""
    with open("/etc/os-release") as f:
        fields = dict(line.rstrip("\n").split("=", 1) for line in f
                      if "=" in line)
    name = fields.get("VERSION_CODENAME", "").strip('"')
    if not name:
        raise BuildError("/etc/os-release names no VERSION_CODENAME:"
                         " this needs a Debian host")
    return name


def mirror(suite: str) -> str:
    """The first Debian mirror apt is configured with for suite/main."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted(apt.glob("sources.list.d/*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        entries = (_deb822_entries(text) if path.suffix == ".sources"
                   else _one_line_entries(text))
        for uri, suites, components in entries:
            if suite in suites and "main" in components:
                return uri
    raise BuildError(f"no apt source for {suite} main in /etc/apt:"
                     " debootstrap needs a Debian mirror")


def _one_line_entries(text: str):
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        # Options such as [arch=amd64] stand between "deb" and the URI.
        words = [w for w in words if not w.startswith("[")
                 and not w.endswith("]")]
        if len(words) >= 4 and words[0] == "deb":
            yield words[1], {words[2]}, set(words[3:])


def _deb822_entries(text: str):
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("uris"):
            yield (fields["uris"][0], set(fields.get("suites", [])),
                   set(fields.get("components", [])))


def build_base(cache: Path) -> Path:
    suite = codename()
    url = mirror(suite)
    inputs = {"recipe": BASE_RECIPE, "suite": suite, "mirror": url,
              "variant": "minbase", "include": GUEST_PACKAGES,
              "strip": STRIP}

    def build(work: Path) -> None:
        root = work / "root"
        argv = ["debootstrap", "--variant=minbase", "--components=main",
                "--include=" + ",".join(GUEST_PACKAGES), suite, str(root),
                url]
        with open(work / "debootstrap.log", "w") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = (work / "debootstrap.log").read_text().splitlines()[-3:]
            raise BuildError(f"debootstrap {suite} failed with status "
                             f"{proc.returncode}: " + " | ".join(tail))
        for rel in STRIP:
            shutil.rmtree(root / rel, ignore_errors=True)
        (root / "var/log").mkdir()
        # debootstrap copies the host's names in; the guest has its own.
        # Stage 03 reads /etc/resolv.conf, so it must exist, empty is fine.
        (root / "etc/hostname").write_text("runbox-vm\n")
        (root / "etc/resolv.conf").write_text("")

    return cached(cache, "base", inputs, build)


def guest_python(base: Path) -> str:
    """The guest's Python version, "3.11", from its python3 symlink."""
    target = os.readlink(base / "root/usr/bin/python3")
    return target.removeprefix("python")


# --- Python packages for the guest -----------------------------------------

def requirements(repo: Path) -> list[str]:
    """The repo's own dependencies, as pyproject.toml declares them."""
    with open(repo / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"].get("dependencies", [])


def host_pip(repo: Path) -> list[str]:
    venv = repo / ".venv/bin/python"
    python = str(venv) if venv.exists() else sys.executable
    if run([python, "-c", "import importlib.util as u;"
            " print(u.find_spec('pip') is not None)"]).strip() != "True":
        raise BuildError(f"{python} has no pip: run 'make venv' first")
    return [python, "-m", "pip"]


def build_pydeps(cache: Path, repo: Path, python_version: str
                 ) -> Path:
    reqs = requirements(repo)
    inputs = {"recipe": PYDEPS_RECIPE, "requirements": reqs,
              "python": python_version}

    def build(work: Path) -> None:
        # Wheels for the guest's Python, whatever the host's is; pip then
        # refuses source distributions, which it would build for the host.
        run([*host_pip(repo), "install", "--quiet", "--no-input",
             "--disable-pip-version-check", "--target", str(work / "site"),
             "--python-version", python_version, "--only-binary=:all:",
             *reqs])

    return cached(cache, "pydeps", inputs, build)


# --- the root image --------------------------------------------------------

def fingerprint(top: Path) -> str:
    """A digest of a tree's names, types, modes, sizes and times."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in [".", *sorted(filenames), *dirnames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            link = os.readlink(path) if os.path.islink(path) else ""
            rel = os.path.relpath(path, top)
            h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def tree_size(top: Path) -> int:
    """Bytes the tree's files occupy, each hard-linked inode once."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def build_image(cache: Path, base: Path, pydeps: Path,
                python_version: str, busybox_image: Path) -> Path:
    init = (HERE / "guest-init").read_bytes()
    inputs = {"recipe": IMAGE_RECIPE,
              "base": (base / "inputs").read_text(),
              "pydeps": (pydeps / "inputs").read_text(),
              "busybox-image": fingerprint(busybox_image),
              "guest-init": digest(init),
              "headroom-mb": IMAGE_HEADROOM_MB}

    def build(work: Path) -> None:
        # mkfs.ext4 -d takes one directory: a tree of hard links to the
        # cached root, plus the new files.  Nothing linked is written to.
        tree = work / "tree"
        run(["cp", "-al", str(base / "root"), str(tree)])
        (tree / "opt/runbox").mkdir(parents=True)
        run(["cp", "-al", str(pydeps / "site"),
             str(tree / "opt/runbox/pydeps")])
        (tree / "sbin/runbox-init").write_bytes(init)
        os.chmod(tree / "sbin/runbox-init", 0o755)

        # The guest's init puts both on PYTHONPATH too, but tests run
        # runbox with a scrubbed environment (env={}), and on the host the
        # venv finds typer and the editable runbox without help; this .pth
        # gives the guest's python3 the same.
        site = tree / f"usr/local/lib/python{python_version}/dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        (site / "runbox-vm.pth").write_text("/repo\n/opt/runbox/pydeps\n")

        # The image keeps its mode 700 parent, as runbox.images makes it.
        images = tree / "var/lib/runbox/images"
        images.mkdir(parents=True)
        run(["cp", "-a", str(busybox_image), str(images / "busybox")])

        size_mb = tree_size(tree) * 5 // 4 // 2**20 + IMAGE_HEADROOM_MB
        image = work / "root.img"
        with open(image, "wb") as f:
            f.truncate(size_mb * 2**20)
        run(["mkfs.ext4", "-q", "-F", "-L", "runbox-vm", "-E",
             "root_owner=0:0", "-d", str(tree), str(image)])
        shutil.rmtree(tree)

    return cached(cache, "image", inputs, build)
