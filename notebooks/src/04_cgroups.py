# %% [markdown]
# # Stage 04: cgroups
#
# Namespaces hide the host; they do not stop a container from taking all of its
# memory, filling its process table or spinning every CPU. A control group (cgroup,
# [cgroups(7)](https://man7.org/linux/man-pages/man7/cgroups.7.html)) does: it is a
# directory in a special filesystem, a process joins it when its pid is written to the
# directory's `cgroup.procs`, and the files beside that one are the limits. Stage 04
# takes docker's options: `--memory`, `--memory-swap`, `--cpus`, `--pids-limit`.
#
# ## The weakness of stage 03, live
#
# A stage 03 container holds 100 MB at once, and starts fifty processes (a fork bomb,
# `f(){ f|f& }; f`, would go on until the host's process table is full).

# %%
import os

from runbox import cgroups, limits

import nbhelp

r = nbhelp.run_stage(3, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1",
                     narrate=False)
assert r.code == 0
r = nbhelp.run_stage(3, "sh", "-c",
                     "for i in $(seq 50); do sleep 1 & done; ps | wc -l; wait",
                     narrate=False)
assert int(r.lines[0]) > 50

# %% [markdown]
# ## Which cgroups this host has
#
# There are two versions, and a host has one, the other, or both ("hybrid"):
#
# - **v2**: one tree at `/sys/fs/cgroup`. A controller (memory, cpu, pids) works in a
#   cgroup only if every ancestor enables it in `cgroup.subtree_control`, and
#   processes may live only in leaves.
# - **v1**: one tree per controller, `/sys/fs/cgroup/memory`, `/sys/fs/cgroup/pids`,
#   ... under a tmpfs. A hybrid host also mounts a v2 tree at `/sys/fs/cgroup/unified`.
#
# runbox does not guess: [statfs(2)][statfs] on `/sys/fs/cgroup` says cgroup2 or
# tmpfs, and for a tmpfs the mount table says where each v1 controller lives. The
# same detection, called from here:
#
# [statfs]: https://man7.org/linux/man-pages/man2/statfs.2.html

# %%
layout = cgroups.detect()
print("mode:", layout.mode)
print("v1 controllers:", {c: str(p) for c, p in layout.v1_roots.items()})
print("v2 tree:", layout.v2_root, "with", sorted(layout.v2_controllers))
assert layout.mode in ("v1", "v2", "hybrid")

# %% [markdown]
# ## A container in its cgroup, narrated
#
# The parent makes the cgroup (`runbox/ID` under each hierarchy's root) and writes the
# limits before the container exists. The child waits on a pipe right after the fork;
# the parent writes its pid into every `cgroup.procs` and only then lets it go on, so
# the container's first instruction already runs limited. Inside,
# `/proc/self/cgroup` names its cgroup in each hierarchy: one line per v1 hierarchy,
# and `0::` for v2.

# %%
r = nbhelp.run_stage(4, "--memory", "64m", "sh", "-c",
                     "hostname; cat /proc/self/cgroup")
assert r.code == 0
cid, *lines = r.lines
# hierarchy id : controllers : path, and v2's controllers field is empty.
paths = {line.split(":")[1]: line.split(":")[2] for line in lines}
memory = "memory" if "memory" in layout.v1_roots else ""
assert paths[memory] == f"/runbox/{cid}"

# %% [markdown]
# There is no cgroup namespace here: the container sees its cgroup's path as the host
# names it, `/runbox/ID` (the ID is also its default hostname).
#
# ## The limits, read from the host
#
# While a container waits for a line on its stdin, the notebook reads its limit files,
# in the directories named by the container's id (`$HOSTNAME` inside).
# Their names differ between the versions:
#
# | option | v2 file | v1 file |
# |---|---|---|
# | `--memory 64m` | `memory.max` | `memory.limit_in_bytes` |
# | `--cpus 0.5` | `cpu.max` = `50000 100000` | `cpu.cfs_quota_us` = `50000` |
# | `--pids-limit 16` | `pids.max` | `pids.max` |
#
# (v1's quota is per `cpu.cfs_period_us`, 100000 µs by default.)

# %%
def cgroup_file(cid: str, controller: str, v1_name: str, v2_name: str) -> str:
    """Where this host keeps a limit of the container's cgroup."""
    if controller in layout.v1_roots:
        return str(layout.v1_roots[controller] / "runbox" / cid / v1_name)
    return str(layout.v2_root / "runbox" / cid / v2_name)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# Only shell builtins before the read: a command the shell forked might still be in
# cgroup.procs, exiting, when the notebook looks.
with nbhelp.started(4, "--memory", "64m", "--cpus", "0.5", "--pids-limit", "16",
                    "sh", "-c", "echo $HOSTNAME; read line; echo done") as box:
    cid = box.readline()
    files = {
        "memory": cgroup_file(cid, "memory", "memory.limit_in_bytes", "memory.max"),
        "cpu": cgroup_file(cid, "cpu", "cpu.cfs_quota_us", "cpu.max"),
        "pids": cgroup_file(cid, "pids", "pids.max", "pids.max"),
        "procs": cgroup_file(cid, "pids", "cgroup.procs", "cgroup.procs"),
    }
    values = {name: read(path) for name, path in files.items()}
    for name, path in files.items():
        print(f"{path}: {values[name]}")
    host_pid = box.container_pid()
    r = box.finish()

assert values["memory"] == str(64 * 1024 * 1024)
assert values["cpu"].split()[0] == "50000"
assert values["pids"] == "16"
# The container's only process is in it: the shell, PID 1 inside.
assert values["procs"].split() == [str(host_pid)]
assert r.lines[-1] == "done"
# Once the container ended, runbox removed the cgroup.
assert not [p for p in files.values() if os.path.exists(p)]

# %% [markdown]
# ## Memory: an OOM kill, reported as one
#
# Past its limit the kernel reclaims what it can, then kills a process of the cgroup:
# an OOM kill. To the parent that is only "killed by SIGKILL" (137), so runbox reads
# the cgroup's own count of OOM kills (`memory.events` in v2, `memory.oom_control` in
# v1) before it removes the cgroup, and says so.

# %%
r = nbhelp.run_stage(4, "--memory", "32m", "dd", "if=/dev/zero", "of=/dev/null",
                     "bs=100M", "count=1", narrate=False)
assert r.code == 137
assert r.failures == ["runbox: killed: out of memory, limit 32M"]

# %% [markdown]
# ## Processes: a fork bomb, contained
#
# With `--pids-limit 16`, fork fails in the container once it holds 16 tasks, and the
# host does not notice. When the shell, PID 1, exits, everything else in the container
# goes with it.

# %%
r = nbhelp.run_stage(4, "--pids-limit", "16", "sh", "-c",
                     "f(){ f|f& }; f 2>/dev/null; sleep 1; echo survived",
                     narrate=False)
assert r.code == 0 and r.lines == ["survived"]

# %% [markdown]
# ## CPU: half of one
#
# `--cpus 0.5` gives the cgroup 50 ms of CPU time in every 100 ms. A busy loop run for
# two seconds gets about one second of CPU; busybox's `time` says how much (on stderr).

# %%
r = nbhelp.run_stage(4, "--cpus", "0.5", "sh", "-c",
                     'time timeout 2 sh -c "while :; do :; done"', narrate=False)
times = dict(line.split(None, 1) for line in r.err.splitlines()
             if line.startswith(("real", "user")))
user = float(times["user"].split()[-1].rstrip("s"))
print(f"\nCPU time used in 2 s: {user} s")
assert user < 1.5

# %% [markdown]
# ## Exercises
#
# **1.** What does `--cpus 1.5` write to the cgroup? Find out with
# `runbox.limits.parse`, without running a container. Answer below, collapsed.

# %% [answer]
# 150 ms of CPU time per 100 ms period: more than one CPU's worth.
cpu = limits.parse(cpus="1.5").cpu
print(cpu)
assert (cpu.quota, cpu.period) == (150000, 100000)

# %% [markdown]
# **2.** Can the container read its own limits? Look in its `/sys/fs/cgroup`.

# %% [answer]
# No: runbox mounts sysfs, but no cgroup filesystem on it, so the directory is
# empty. (docker mounts the container's own cgroup there, read-only, in a cgroup
# namespace of its own.)
r = nbhelp.run_stage(4, "ls", "-A", "/sys/fs/cgroup", narrate=False)
assert r.code == 0 and r.out == ""

# %% [markdown]
# **3.** With `--memory 32m`, does a 16 MB block pass?

# %% [answer]
# Yes: the limit is on what the cgroup holds, and 16 MB plus dd itself fit in 32.
r = nbhelp.run_stage(4, "--memory", "32m", "dd", "if=/dev/zero", "of=/dev/null",
                     "bs=16M", "count=1", narrate=False)
assert r.code == 0

# %% [markdown]
# ## What is still wrong
#
# The container is limited, but its root is still root with every capability. Its
# capability sets, as `/proc/self/status` reports them, are the host's root's: it may
# mount filesystems, trace processes, read the kernel's keyrings. Stage 05 drops
# capabilities, sets no_new_privs and filters syscalls with seccomp.

# %%
r = nbhelp.run_stage(4, "cat", "/proc/self/status", narrate=False, show=False)
inside = nbhelp.parse_status(r.out)
print("CapEff inside:", inside["CapEff"], " here:", nbhelp.status()["CapEff"])
assert inside["CapEff"] == nbhelp.status()["CapEff"]
