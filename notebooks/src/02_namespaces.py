# %% [markdown]
# # Stage 02: namespaces
#
# A namespace gives a process its own copy of one kind of kernel resource. Stage 02
# uses four ([namespaces(7)](https://man7.org/linux/man-pages/man7/namespaces.7.html)):
#
# | namespace | flag | the container gets its own |
# |---|---|---|
# | UTS | `CLONE_NEWUTS` | hostname |
# | IPC | `CLONE_NEWIPC` | System V message queues, semaphores, shared memory |
# | PID | `CLONE_NEWPID` | process numbers, starting at 1 |
# | mount | `CLONE_NEWNS` | mount table, so a `/proc` that shows its processes only |
#
# ## The weakness of stage 01, live
#
# The stage 01 command has the host's hostname, a host pid, and sees every process of
# the host: this notebook's kernel among them.

# %%
import os
import re
import socket
import time

import nbhelp

r = nbhelp.run_stage(1, "sh", "-c", "hostname; echo $$; ls /proc", narrate=False,
                     show=False)
name, pid, *listing = r.lines
pids = [entry for entry in listing if entry.isdigit()]
print(f"hostname {name}, pid {pid}, sees {len(pids)} processes in /proc,"
      f" this kernel's ({os.getpid()}) among them")
assert name == socket.gethostname()
assert pid != "1"
assert str(os.getpid()) in pids

# %% [markdown]
# ## Stage 02, narrated
#
# The calls are [unshare(2)](https://man7.org/linux/man-pages/man2/unshare.2.html),
# which moves the caller into new namespaces,
# [sethostname(2)](https://man7.org/linux/man-pages/man2/sethostname.2.html), and
# [mount(2)](https://man7.org/linux/man-pages/man2/mount.2.html) twice: once to make
# every mount private, once for a new `/proc`.

# %%
r = nbhelp.run_stage(2, "--hostname", "box", "sh", "-c", "hostname; echo $$; ps -e")
assert r.code == 0
assert r.lines[:2] == ["box", "1"]
# ps sees two processes: the shell, PID 1, and ps itself.
assert [line.split()[-1] for line in r.lines[3:]] == ["sh", "ps"]
# Renaming the container's UTS namespace left the host's name alone.
assert socket.gethostname() != "box"

# %% [markdown]
# Each namespace is made where it belongs, and the narration shows where:
#
# - `parent ... unshare(CLONE_NEWPID)` comes **before** the fork, in runbox. A new PID
#   namespace does not move the caller: it decides where the caller's next child goes,
#   and that child is PID 1 (see how the child calls itself `child 1`).
# - `child 1 unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC)`: the child unshares the
#   rest for itself, so that runbox stays on the host, where it cleans up afterwards.
# - `mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL)` comes first in the new mount
#   namespace. A new mount namespace starts as a copy of the old one, with the same
#   propagation: where the host's mounts are shared (systemd makes them so), the
#   `/proc` mounted next would show up on the host too.

# %%
calls = re.findall(r"^(parent|child) +\d+ +(\w+)\(", r.err, re.M)


def in_order(wanted: list[str], made: list[str]) -> bool:
    """Whether the calls in wanted were made in that order."""
    rest = iter(made)
    return all(call in rest for call in wanted)


assert in_order(["unshare", "fork", "waitpid"],
                [call for who, call in calls if who == "parent"])
assert in_order(["unshare", "mount", "sethostname", "mount", "execve"],
                [call for who, call in calls if who == "child"])

# %% [markdown]
# ## What the kernel reports: `/proc/self/ns`
#
# Each link in `/proc/PID/ns/` names a namespace by its inode number. The container's
# differ from this notebook's for the four namespaces stage 02 makes, and only for
# those.

# %%
NAMES = ["pid", "uts", "ipc", "mnt", "net", "user", "cgroup"]
r = nbhelp.run_stage(2, "sh", "-c", "cd /proc/$$/ns && readlink " + " ".join(NAMES),
                     narrate=False)
inside = dict(zip(NAMES, r.lines))
own = set()
for name in NAMES:
    host = os.readlink(f"/proc/self/ns/{name}")
    mine = inside[name] != host
    own |= {name} if mine else set()
    print(f"{name:7} host {host:24} container {inside[name]:24}",
          "its own" if mine else "shared")
assert own == {"pid", "uts", "ipc", "mnt"}

# %% [markdown]
# ## PID 1, seen from both sides
#
# A process in a new PID namespace has a pid in it *and* one in every namespace above.
# The `NSpid` line of its status lists them, outermost first. While the container
# waits for a line on its stdin, the notebook reads the status of the container's
# first process through the host's `/proc`.

# %%
with nbhelp.started(2, "sh", "-c", "echo $$; read line; echo done") as box:
    assert box.readline() == "1"
    host_pid = box.container_pid()
    nspid = nbhelp.status(f"/proc/{host_pid}/status")["NSpid"].split()
    print(f"NSpid: {nspid}: pid {host_pid} on the host, 1 inside")
    r = box.finish()  # read gets end-of-file, and the shell goes on
assert nspid == [str(host_pid), "1"]
assert r.code == 0 and r.lines[-1] == "done"

# %% [markdown]
# ## What the kernel reports: mountinfo
#
# `/proc/self/mountinfo` has one line per mount ([proc_pid_mountinfo(5)][mountinfo]):
# ids, the mount point, its options, then optional fields such as `shared:N` (the
# mount propagates to and from its peer group N), a `-`, and the filesystem type,
# source and the filesystem's own options.
#
# [mountinfo]: https://man7.org/linux/man-pages/man5/proc_pid_mountinfo.5.html

# %%
host_before = open("/proc/self/mountinfo").read()
r = nbhelp.run_stage(2, "cat", "/proc/self/mountinfo", narrate=False, show=False)
mounts = nbhelp.parse_mountinfo(r.out)
host = nbhelp.parse_mountinfo(host_before)

proc = [m for m in mounts if m.point == "/proc"][-1]  # the last one is on top
print(f"the container's /proc: {proc.fstype} {','.join(proc.options)}")
assert proc.fstype == "proc" and "ro" in proc.options
# Nothing propagates in or out any more.
assert not [m for m in mounts if any(t.startswith("shared:") for t in m.tags)]
# And the host saw none of it.
assert open("/proc/self/mountinfo").read() == host_before
[host_root] = [m for m in host if m.point == "/"]
print("the host's / has the optional fields", host_root.tags or "(none: private)")

# %% [markdown]
# ## PID 1 is special
#
# The kernel spares the init process of a PID namespace every signal it has no
# handler for. The same `kill -TERM $$` that ends the shell at stage 01 does nothing
# to it at stage 02, where the shell is PID 1. (This is why runbox ends a container
# with SIGKILL when you press Ctrl-C twice.)

# %%
command = ["sh", "-c", "kill -TERM $$; echo still here"]
r1 = nbhelp.run_stage(1, *command, narrate=False)
r2 = nbhelp.run_stage(2, *command, narrate=False)
assert (r1.code, r1.out) == (143, "")
assert (r2.code, r2.lines) == (0, ["still here"])

# %% [markdown]
# ## What is still wrong
#
# The mount table is a copy of the host's: every file of the host is there, to read
# and to change. The container reads the host's `/etc/os-release` and writes a file
# into a directory of the notebook's.

# %%
assert {m.point for m in host} <= {m.point for m in mounts}

scratch = nbhelp.tempdir()
note = scratch / "written-by-stage2"
r = nbhelp.run_stage(2, "sh", "-c",
                     f"head -1 /etc/os-release; echo hello > {note}",
                     narrate=False)
with open("/etc/os-release") as f:
    assert r.lines == [f.readline().rstrip("\n")]
assert note.read_text() == "hello\n"

# %% [markdown]
# ## Exercises
#
# **1.** In a stage 02 container, what pid does the first process the shell starts
# get? (`$!` is the pid of the last command started in the background.) Answer below,
# collapsed.

# %% [answer]
r = nbhelp.run_stage(2, "sh", "-c", "true & echo $!", narrate=False)
assert r.lines == ["2"]

# %% [markdown]
# **2.** What happens to the container's other processes when its PID 1 exits? Run
# `sh -c 'sleep 100 & echo started'` and time it.

# %% [answer]
# It ends at once: when the init of a PID namespace exits, the kernel kills every
# other process in it with SIGKILL. The sleep dies with the shell.
start = time.monotonic()
r = nbhelp.run_stage(2, "sh", "-c", "sleep 100 & echo started", narrate=False)
elapsed = time.monotonic() - start
print(f"{elapsed:.2f} s")
assert r.lines == ["started"] and elapsed < 10

# %% [markdown]
# **3.** Why does the parent, and not the child, call `unshare(CLONE_NEWPID)`? And why
# must nothing else be forked between that unshare and the container's fork?
#
# <details><summary>Answer</summary>
#
# unshare(CLONE_NEWPID) does not move the caller into the new namespace: only the
# children it forks afterwards go there, the first one as PID 1. So the parent has to
# call it, before the fork. If anything else were forked in between, that process
# would become PID 1; and once it exited the namespace would accept no new process:
# fork fails with ENOMEM (see
# [pid_namespaces(7)](https://man7.org/linux/man-pages/man7/pid_namespaces.7.html)).
#
# </details>

# %% [markdown]
# ## Clean up
#
# The containers removed what they made; the scratch directory goes now.

# %%
nbhelp.cleanup()
assert not scratch.exists()
