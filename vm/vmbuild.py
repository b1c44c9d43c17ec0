"""Build the test VM from Debian's packages, each piece cached by its inputs.

Four artifacts, one directory each under the cache, each with an `inputs` file
that records what it was built from; a piece is rebuilt only when that record
differs from what it would be built from now:

- kernel: Debian's kernel (the package linux-image-amd64 points to, unpacked,
  never installed) as an uncompressed ELF, and an initramfs of busybox-static
  plus the modules the root disk and the shares need.
- base: a debootstrap'd minbase root with python3 and python3-pytest.
- pydeps: the repo's Python dependencies, installed by pip for the guest.
- image: an ext4 image of base, pydeps, the guest's init and runbox's default
  busybox image.

What it cannot do:

- The base root is keyed on the suite, the mirror and the package list, not
  on package versions: an update in the mirror (python3, say) is not picked
  up until the cache directory is removed.  The kernel follows its version.
- pydeps are keyed on the repo's declared requirements, not on PyPI: a new
  release of rich is not picked up until the cache directory is removed.
"""

import fcntl
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent

# Bump one of these when the way its artifact is made changes, so caches
# built the old way are rebuilt.
KERNEL_RECIPE = 1
BASE_RECIPE = 1
PYDEPS_RECIPE = 1
IMAGE_RECIPE = 1

# What the root disk and the shares need: the virtio PCI transport, the
# disk, ext4 (crc32c for its checksums, a soft dependency modprobe cannot
# see), 9p over virtio, and overlay for the containers under test.
MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4",
           "9pnet_virtio", "9p", "overlay"]

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


# --- the cache ------------------------------------------------------------

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
    """Hold the cache's lock: two builds at once would race on renames."""
    cache.mkdir(parents=True, exist_ok=True)
    handle = open(cache / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


# --- what the host's apt knows ---------------------------------------------

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


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel linux-image-amd64 depends on."""
    out = run(["apt-cache", "depends", "linux-image-amd64"])
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.strip().startswith("Depends: linux-image-")]
    if not names:
        raise BuildError("apt-cache knows no linux-image-amd64:"
                         " run apt-get update")
    fields = run(["apt-cache", "show", "--no-all-versions", names[0]])
    version = next(line.split(":", 1)[1].strip()
                   for line in fields.splitlines()
                   if line.startswith("Version:"))
    return names[0], version


def installed_version(package: str) -> str:
    return run(["dpkg-query", "-W", "-f", "${Version}", package])


# --- the kernel and its initramfs ------------------------------------------

def build_kernel(cache: Path) -> Path:
    package, version = kernel_package()
    init = (HERE / "initramfs-init").read_bytes()
    inputs = {"recipe": KERNEL_RECIPE, "package": package,
              "version": version, "modules": MODULES,
              "busybox-static": installed_version("busybox-static"),
              "initramfs-init": digest(init)}

    def build(work: Path) -> None:
        download = work / "download"
        download.mkdir()
        deb = apt_download(package, download)
        tree = work / "tree"
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        os.unlink(deb)
        (release,) = os.listdir(tree / "lib/modules")
        # The package ships no modules.dep: depmod writes it, and modprobe
        # then reads the load order off it.
        run(["depmod", "-b", str(tree), release])

        bzimage = (tree / "boot" / f"vmlinuz-{release}").read_bytes()
        config = (tree / "boot" / f"config-{release}").read_text()
        elf = uncompressed_kernel(bzimage)
        # The ELF boots through its PVH entry, about 3 s faster under TCG
        # than the bzImage's own decompressor; without PVH, qemu cannot
        # load the ELF, so the bzImage it is.
        if elf is not None and "\nCONFIG_PVH=y\n" in config:
            (work / "vmlinux").write_bytes(elf)
        else:
            log("no PVH ELF in the kernel; booting the bzImage")
            (work / "bzImage").write_bytes(bzimage)

        make_initramfs(tree, release, init, work / "initramfs.cpio")
        remove_tree(tree)
        download.rmdir()

    return cached(cache, "kernel", inputs, build)


def uncompressed_kernel(bzimage: bytes) -> bytes | None:
    """The ELF inside a bzImage, or None if it cannot be had."""
    # The boot protocol (Documentation/arch/x86/boot.rst) gives the
    # compressed payload's place from version 2.08 on.
    if bzimage[0x202:0x206] != b"HdrS":
        return None
    if struct.unpack_from("<H", bzimage, 0x206)[0] < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]

    # Decompressor objects, because the kernel's payload carries its
    # uncompressed size after the stream, which one-shot calls reject.
    if payload.startswith(b"\xfd7zXZ\x00"):
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    elif payload.startswith(b"\x1f\x8b"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    else:
        return None  # zstd, lz4 or lzo: not in Python's standard library
    elf = decompressor.decompress(payload)
    return elf if elf.startswith(b"\x7fELF") else None


def module_order(tree: Path, release: str) -> list[Path]:
    """MODULES and their dependencies, each before what needs it."""
    order: list[Path] = []
    for module in MODULES:
        out = run(["modprobe", "--dirname", str(tree), "--set-version",
                   release, "--show-depends", module])
        for line in out.splitlines():
            words = line.split()
            # "builtin NAME" lines are already in the kernel.
            if words[0] == "insmod":
                path = Path(words[1])
                if path not in order:
                    order.append(path)
    return order


def make_initramfs(tree: Path, release: str, init: bytes,
                   dest: Path) -> None:
    root = dest.with_suffix(".d")
    for sub in ("bin", "dev", "proc", "newroot", "lib/modules"):
        (root / sub).mkdir(parents=True)
    # The kernel opens /dev/console for init's stdio before anything is
    # mounted, so the node must be in the archive; without it init's output
    # goes nowhere.
    os.mknod(root / "dev/console", 0o600 | 0o020000, os.makedev(5, 1))

    shutil.copy2(shutil.which("busybox", path="/bin:/usr/bin"),
                 root / "bin/busybox")
    (root / "init").write_bytes(init)
    os.chmod(root / "init", 0o755)

    names = []
    for module in module_order(tree, release):
        shutil.copy2(module, root / "lib/modules" / module.name)
        names.append(module.name)
    (root / "modules.order").write_text("\n".join(names) + "\n")

    # Uncompressed: the kernel unpacks it faster than it would inflate it
    # under TCG, and it is only a few megabytes.
    files = run(["find", ".", "-mindepth", "1"], cwd=root)
    with open(dest, "wb") as out:
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"],
                              input=files.encode(), stdout=out, cwd=root,
                              stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise BuildError(f"cpio failed: {proc.stderr.decode().strip()}")
    shutil.rmtree(root)


# --- the Debian root -------------------------------------------------------

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


def build_pydeps(cache: Path, repo: Path, python_version: str) -> Path:
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
            h.update(f"{path}\0{st.st_mode}\0{st.st_size}\0"
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
                busybox_image: Path) -> Path:
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


def build_all(cache: Path, repo: Path, busybox_image: Path
              ) -> tuple[Path, Path]:
    """(kernel dir, image dir), each built unless its cache is current."""
    with lock(cache):
        kernel = build_kernel(cache)
        base = build_base(cache)
        pydeps = build_pydeps(cache, repo, guest_python(base))
        image = build_image(cache, base, pydeps, busybox_image)
    return kernel, image
