# %% [markdown]
# # Stage 03: a root of its own, with pivot_root
#
# Stage 03 gives the container its own files: an image (a busybox root filesystem)
# with a copy-on-write layer on top, so the container may change anything while the
# image stays as it was. That overlay becomes the root of the container's mount
# namespace, and the host's tree is detached from it for good. Then come the
# filesystems a program expects: `/proc`, `/sys` (read-only), a small `/dev`, and
# `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` naming the container.
#
# ## The weakness of stage 02, live
#
# A stage 02 container has a mount table of its own, but it is a copy of the host's:
# it reads and writes the host's files.

# %%
import os
from pathlib import Path

from runbox import images

import nbhelp

scratch = nbhelp.tempdir()
r = nbhelp.run_stage(2, "sh", "-c", f"echo written > {scratch}/by-stage2",
                     narrate=False)
assert (scratch / "by-stage2").read_text() == "written\n"

# %% [markdown]
# ## The image
#
# The default image is busybox: one static binary and a link to it for every
# command, built from Debian's `busybox-static` package by `make rootfs`. It lives
# under `/var/lib/runbox/images` (or `$RUNBOX_ROOT/images`), never in the repository.

# %%
image = images.resolve_rootfs(None)
print(image)
print(sorted(os.listdir(image)))
print("bin/sh ->", os.readlink(image / "bin/sh"))
assert (image / "bin/busybox").is_file()

# %% [markdown]
# `bin/sh` is an absolute link, `/bin/busybox`: it means the image's busybox only
# once the image is the root. Followed from the host it names the host's own
# `/bin/busybox`, which may not even exist. Keep that in mind whenever host code
# looks into an image: a path inside it must never be resolved against the host.

# %% [markdown]
# ## First, chroot, and why it is not enough
#
# [chroot(2)](https://man7.org/linux/man-pages/man2/chroot.2.html) changes where one
# process's path lookups start, and nothing else: the host's mounts are all still
# there. A process that may call chroot climbs out. It chroots into a subdirectory
# while its working directory stays above it, walks up with `..` (the kernel stops a
# climb only at the current root, which is now below it), and chroots to where it got.
#
# The escape lab's image has a probe that does exactly that, `/lab/chroot_escape`,
# and only reads a file when it gets out. `nbhelp.lab_rootfs()` builds the lab image
# (busybox plus the probes of `probes/`, compiled with the host's gcc) into a
# temporary directory; the last cell removes it.

# %%
lab = nbhelp.lab_rootfs()
r = nbhelp.run_stage(3, "--chroot", "--rootfs", lab,
                     "/lab/chroot_escape", "/etc/os-release")
assert r.code == 0
assert r.lines[0].startswith("ESCAPED: /etc/os-release")

# %% [markdown]
# The same probe in a container made with pivot_root finds nothing to climb to:

# %%
r = nbhelp.run_stage(3, "--rootfs", lab, "/lab/chroot_escape", "/etc/os-release",
                     narrate=False)
assert r.code == 1
assert r.lines == ["contained: /etc/os-release: No such file or directory"]

# %% [markdown]
# ## pivot_root, narrated
#
# [pivot_root(2)](https://man7.org/linux/man-pages/man2/pivot_root.2.html) swaps the
# root of the whole mount namespace: the overlay becomes `/`, and the old root moves to
# a directory under it, `put_old`. Then
# [umount2(2)](https://man7.org/linux/man-pages/man2/umount2.2.html) with
# `MNT_DETACH` takes the host's tree away (detached, because its mounts are busy).
#
# It has preconditions, and EINVAL is all it says when one is missed: the new root
# must be a mount point (the overlay is), not on the same mount as the current root;
# put_old must be under it; and no mount involved may have shared propagation, which
# stage 02's private `/` takes care of.
#
# Look in the narration for the overlay's `mount`, `pivot_root(".", ".oldroot")`,
# `umount2("/.oldroot", MNT_DETACH)`, then `/proc`, `/sys` and `/dev`.

# %%
r = nbhelp.run_stage(3, "--hostname", "box", "sh", "-c", "hostname; ls /")
assert r.code == 0
assert r.lines[0] == "box"
assert {"bin", "dev", "etc", "proc", "sys", "tmp"} <= set(r.lines[1:])
assert 'pivot_root(".", ".oldroot") = 0' in r.err
assert 'umount2("/.oldroot", MNT_DETACH) = 0' in r.err

# %% [markdown]
# ## What the kernel reports: mountinfo
#
# Inside, the mount table is short: the overlay as `/` (its `lowerdir` the image, its
# `upperdir` the container's own layer), then `/proc` and `/sys` read-only, and `/dev`
# with its parts. None of the host's mounts is left, and neither is `/.oldroot`.

# %%
r = nbhelp.run_stage(3, "cat", "/proc/self/mountinfo", narrate=False, show=False)
mounts = nbhelp.parse_mountinfo(r.out)
for m in mounts:
    print(f"{m.point:12} {m.fstype:8} {','.join(m.options)}")

root = mounts[0]
assert (root.point, root.fstype) == ("/", "overlay")
assert f"lowerdir={image}" in root.super_options
assert [m.point for m in mounts] == [
    "/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"]
assert {"ro", "nosuid", "nodev", "noexec"} <= set(mounts[1].options)  # /proc
assert "ro" in mounts[2].options  # /sys

# %% [markdown]
# ## Copy-on-write
#
# The first container deletes `/bin` and makes a file; the second sees the image as it
# was. The first one's changes went to its own upper directory, removed when it ended.

# %%
r = nbhelp.run_stage(3, "sh", "-c", "rm -rf /bin; touch /new", narrate=False)
assert r.code == 0
r = nbhelp.run_stage(3, "ls", "/bin/sh", "/new", narrate=False)
assert r.code == 1
assert r.lines == ["/bin/sh"]
assert "/new: No such file or directory" in r.err
assert (image / "bin").is_dir()

# %% [markdown]
# ## A `/dev` with only what a program needs
#
# A tmpfs, the six devices made with
# [mknod(2)](https://man7.org/linux/man-pages/man2/mknod.2.html) (null, zero, full,
# random, urandom, tty), the usual links and the `pts`, `shm` and `mqueue` mounts: no
# disk of the host's.

# %%
r = nbhelp.run_stage(3, "ls", "/dev", narrate=False)
assert set(r.lines) == {
    "null", "zero", "full", "random", "urandom", "tty",
    "fd", "stdin", "stdout", "stderr", "ptmx", "pts", "shm", "mqueue"}

# %% [markdown]
# ## Exercises
#
# **1.** Does the container see the host's `/etc/os-release` now? Answer below,
# collapsed.

# %% [answer]
# No: the busybox image has none, and the host's is no longer reachable.
r = nbhelp.run_stage(3, "cat", "/etc/os-release", narrate=False)
assert r.code == 1

# %% [markdown]
# **2.** Where did a container's changes go while it ran, and is that place still
# there afterwards? (Hint: the overlay's options in mountinfo.)

# %% [answer]
# Its upper directory, under $RUNBOX_ROOT/containers/ID/: gone once it ended.
r = nbhelp.run_stage(3, "sh", "-c", "touch /made; cat /proc/self/mountinfo",
                     narrate=False, show=False)
options = nbhelp.parse_mountinfo(r.out)[0].super_options
[upper] = [o.split("=", 1)[1] for o in options if o.startswith("upperdir=")]
print(upper)
assert not Path(upper).exists()

# %% [markdown]
# **3.** Why does runbox mount the overlay *inside* the container's mount namespace,
# rather than on the host before the fork?
#
# <details><summary>Answer</summary>
#
# A mount made inside the namespace exists only there: it vanishes with the
# namespace when the container's last process exits, whatever way runbox ends, and
# the host's mount table never shows it. A mount made on the host would stay behind
# whenever runbox died before unmounting it.
#
# </details>

# %% [markdown]
# ## What is still wrong
#
# Namespaces hide; they do not limit. This container can take as much of the host's
# memory as it likes: here it reads 100 MB in one block, held in memory at once.
# Stage 04 adds limits, with cgroups.

# %%
r = nbhelp.run_stage(3, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1",
                     narrate=False)
assert r.code == 0

# %% [markdown]
# ## Clean up
#
# The lab image and the scratch directory go.

# %%
nbhelp.cleanup()
assert not os.path.exists(lab) and not scratch.exists()
