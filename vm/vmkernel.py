"""The test VM's kernel: Debian's, unpacked, and a busybox initramfs for it.

The kernel is the package linux-image-amd64 points to, downloaded with apt
and unpacked, never installed on the host.  It boots as the uncompressed ELF
inside vmlinuz, through its PVH entry.  Debian builds virtio_blk, ext4, 9p
and overlay as modules, so an initramfs of busybox-static loads them, in
the order modprobe works out on the host, then mounts the root disk
(vm/initramfs-init).

What it cannot do: a kernel compressed with zstd, lz4 or lzo (not in
Python's standard library) boots as the bzImage, about 3 s slower per boot
under TCG; Debian's amd64 kernels use xz.
"""

import lzma
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from vmbuild import (
    HERE, BuildError, apt_download, cached, digest, installed_version, log,
    remove_tree, run,
)

# Bump when the way the kernel directory is made changes, so caches built
# the old way are rebuilt.
RECIPE = 1

# What the root disk and the shares need: the virtio PCI transport, the
# disk, ext4, 9p over virtio, and overlay for the containers under test.
# modprobe adds their dependencies, soft ones (ext4's crc32c) included.
MODULES = ["virtio_pci", "virtio_blk", "ext4", "9pnet_virtio", "9p",
           "overlay"]


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel linux-image-amd64 depends on."""
    argv = ["apt-cache", "depends", "linux-image-amd64"]
    try:
        out = run(argv)
    except BuildError:
        # No package lists yet, as on a fresh machine.
        run(["apt-get", "update", "-q"])
        out = run(argv)
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.strip().startswith("Depends: linux-image-")]
    if not names:
        raise BuildError("linux-image-amd64 depends on no linux-image-*"
                         " package: this needs Debian's amd64 archive")
    fields = run(["apt-cache", "show", "--no-all-versions", names[0]])
    version = next(line.split(":", 1)[1].strip()
                   for line in fields.splitlines()
                   if line.startswith("Version:"))
    return names[0], version


def build_kernel(cache: Path) -> Path:
    package, version = kernel_package()
    init = (HERE / "initramfs-init").read_bytes()
    inputs = {"recipe": RECIPE, "package": package,
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
