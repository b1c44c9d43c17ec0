# %% [markdown]
# # Stage 05: security
#
# A stage 04 container is hidden and limited, but root inside it is still root: every
# capability, any syscall. Stage 05 closes those doors the way production runtimes
# do, as the last steps before exec:
#
# 1. masked and read-only paths in `/proc` and `/sys`;
# 2. a session of its own, so the caller's terminal is not its terminal;
# 3. every fd above 2 closed, and a working directory inside the root;
# 4. capabilities cut to docker's default 14, then `--user`;
# 5. no_new_privs, then a seccomp filter.
#
# ## The weakness of stage 04, live: the escape lab
#
# `/lab/escape` tries each classic container escape in a way that is harmless if it
# works, and prints one line per door: `blocked`, `POSSIBLE` or `skipped` (this
# kernel has no such thing). Its exit status is the number of open doors.
# `nbhelp.lab_rootfs()` builds the lab image into a temporary directory; the last cell
# removes it.

# %%
import os
import re
import subprocess
import sys
import textwrap

from runbox import capabilities, security

import nbhelp

DOOR = re.compile(r"^([a-z_]+): (blocked|POSSIBLE|skipped) \((.+)\)$", re.M)

lab = nbhelp.lab_rootfs()
r4 = nbhelp.run_stage(4, "--rootfs", lab, "/lab/escape", narrate=False)
doors4 = {name: state for name, state, why in DOOR.findall(r4.out)}
assert doors4["mount"] == doors4["hostname"] == "POSSIBLE"
assert r4.code == list(doors4.values()).count("POSSIBLE")

# %% [markdown]
# ## Capabilities, as the kernel reports them
#
# Root's power is split into about forty capabilities
# ([capabilities(7)](https://man7.org/linux/man-pages/man7/capabilities.7.html)):
# `CAP_SYS_ADMIN` to mount, `CAP_SYS_MODULE` to load modules, `CAP_SYS_PTRACE` to trace
# processes. A process carries five sets, shown in `/proc/self/status` as hex masks,
# bit N for capability N:
#
# | set | meaning |
# |---|---|
# | `CapBnd` bounding | the most the process or its children can ever get back |
# | `CapPrm` permitted | what it may switch on |
# | `CapEff` effective | what the kernel checks right now |
# | `CapInh` inheritable | what may pass through execve, with file capabilities |
# | `CapAmb` ambient | what passes through execve of ordinary programs |

# %%
def capability_names(mask: str) -> set[str]:
    """The capabilities whose bits are set in a hex mask of a status file."""
    bits = int(mask, 16)
    return {name for name, n in capabilities.NUMBERS.items() if bits >> n & 1}


r = nbhelp.run_stage(5, "cat", "/proc/self/status", narrate=False, show=False)
status = nbhelp.parse_status(r.out)
for key in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
    print(f"{key} {status[key]} {len(capability_names(status[key]))} capabilities")

kept = capability_names(status["CapEff"])
taken = capability_names(nbhelp.status()["CapEff"]) - kept
print(textwrap.fill("kept: " + " ".join(sorted(kept)), 80))
print(textwrap.fill("taken away: " + " ".join(sorted(taken)), 80))

assert kept == capability_names(status["CapBnd"]) == set(capabilities.DEFAULT)
assert status["CapInh"] == status["CapAmb"] == "0" * 16
assert {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE"} <= taken

# %% [markdown]
# The same file has two more lines this stage changes: `NoNewPrivs: 1`, and `Seccomp:
# 2`, which means a filter ("mode 2"; 1 would be the old strict mode, 0 none).

# %%
assert status["NoNewPrivs"] == "1"
assert status["Seccomp"] == "2"

# %% [markdown]
# ## The last steps before exec, narrated
#
# The narration is long: stage 04's container, then the lock-down. Look for the
# masked paths (`mount("/dev/null", "/proc/keys", ..., MS_BIND)`), the read-only
# remounts, `setsid()`, the capabilities dropped from the bounding set one by one
# with `prctl(PR_CAPBSET_DROP, N)`, `capset`, `prctl(PR_SET_NO_NEW_PRIVS, 1)` and
# finally `seccomp(SECCOMP_SET_MODE_FILTER, ...)`, right before execve.
#
# The order matters. The bounding set is cut while `CAP_SETPCAP` is still there to do
# it. no_new_privs lets an unprivileged process install a seccomp filter, so the
# filter can go in after the capabilities are gone; and with the filter last, only
# execve and what the command does run under it.

# %%
r = nbhelp.run_stage(5, "true")
assert r.code == 0
steps = ["setsid()", "PR_CAPBSET_DROP", "capset(", "PR_SET_NO_NEW_PRIVS",
         "seccomp(SECCOMP_SET_MODE_FILTER", "execve("]
where = [r.err.index(step) for step in steps]
assert where == sorted(where)

# %% [markdown]
# ## Masked and read-only paths, in mountinfo
#
# Files of `/proc` and `/sys` that tell about the host (its memory in `/proc/kcore`,
# its keys in `/proc/keys`) get `/dev/null` or an empty read-only tmpfs mounted over
# them; directories of kernel knobs (`/proc/sys`) are mounted read-only. A path this
# kernel does not have is left alone. The `root` column of mountinfo says which file
# of the mounted filesystem shows there: `/null` of the container's `/dev`.

# %%
r = nbhelp.run_stage(5, "cat", "/proc/self/mountinfo", narrate=False, show=False)
mounts = {m.point: m for m in nbhelp.parse_mountinfo(r.out)}  # the top one wins
for path in security.MASKED_PATHS + security.READONLY_PATHS:
    if os.path.exists(path):
        m = mounts[path]
        print(f"{path:18} {m.fstype:6} {m.root:6} {','.join(m.options)}")
        assert "ro" in m.options or path in security.MASKED_PATHS

# %% [markdown]
# ## no_new_privs: a setuid binary gains nothing
#
# `/lab/show_ids` is installed setuid root. Run as user 1000, it would normally run
# with an effective uid of 0: that is what setuid means, and how `sudo` works. With
# no_new_privs, execve ignores the setuid bit. `--security-opt
# no-new-privileges=false` shows the difference.

# %%
r = nbhelp.run_stage(5, "--rootfs", lab, "--user", "1000", "/lab/show_ids",
                     narrate=False)
assert r.lines == ["uid=1000 euid=1000"]
r = nbhelp.run_stage(5, "--rootfs", lab, "--user", "1000",
                     "--security-opt", "no-new-privileges=false", "/lab/show_ids",
                     narrate=False)
assert r.lines == ["uid=1000 euid=0"]

# %% [markdown]
# ## seccomp: syscalls refused to root itself
#
# A seccomp filter is a small BPF program the kernel runs on every syscall; runbox
# builds docker's default profile into one. Making a user namespace needs no
# capability at all, so only the filter stands in the way: `unshare -U` works at
# stage 04, fails at stage 05, and works again with `--security-opt
# seccomp=unconfined`.

# %%
r = nbhelp.run_stage(4, "unshare", "-U", "true", narrate=False)
assert r.code == 0
r = nbhelp.run_stage(5, "unshare", "-U", "true", narrate=False)
assert r.code == 1 and "Operation not permitted" in r.err
r = nbhelp.run_stage(5, "--security-opt", "seccomp=unconfined", "sh", "-c",
                     "unshare -U true && grep Seccomp: /proc/self/status",
                     narrate=False)
assert r.code == 0 and r.lines == ["Seccomp:\t0"]

# %% [markdown]
# ## The escape lab at stage 05
#
# Every door that stage 04 left open is shut: `blocked` now, or `skipped` where this
# kernel has no such thing.

# %%
r5 = nbhelp.run_stage(5, "--rootfs", lab, "/lab/escape", narrate=False)
doors5 = {name: state for name, state, why in DOOR.findall(r5.out)}
print()
for name in doors4:
    print(f"{name:18} stage 04: {doors4[name]:9} stage 05: {doors5[name]}")
assert doors5.keys() == doors4.keys()
assert "POSSIBLE" not in doors5.values()
assert r5.code == 0

# %% [markdown]
# ## The `runbox` command
#
# `runbox run` is this stage with docker's manners: quiet unless `--trace`, and stdin
# only with `-i`. It is installed in the same venv as this kernel.

# %%
runbox = os.path.join(os.path.dirname(sys.executable), "runbox")
done = subprocess.run([runbox, "run", "id"], capture_output=True, text=True,
                      stdin=subprocess.DEVNULL, timeout=60)
print(done.stdout, done.stderr)
assert done.returncode == 0 and done.stdout.startswith("uid=0(root)")

# %% [markdown]
# ## Exercises
#
# **1.** Which capability does the `hostname` door need? Give it back with
# `--cap-add` and rename the container. Answer below, collapsed.

# %% [answer]
# CAP_SYS_ADMIN, which also gives back mount and much else: never in earnest.
r = nbhelp.run_stage(5, "--cap-add", "SYS_ADMIN", "sh", "-c",
                     "hostname renamed && hostname", narrate=False)
assert r.lines == ["renamed"]

# %% [markdown]
# **2.** With `--cap-drop ALL`, may root in the container still `chown` a file?

# %% [answer]
# No: chown to another user needs CAP_CHOWN, whoever asks.
r = nbhelp.run_stage(5, "--cap-drop", "ALL", "sh", "-c",
                     "touch /tmp/f && chown 1000 /tmp/f", narrate=False)
assert r.code == 1 and "Operation not permitted" in r.err

# %% [markdown]
# **3.** Run as `--user 1000`: what are `CapEff` and `CapBnd` now?

# %% [answer]
# CapEff is empty: setuid away from 0 clears permitted and effective. The bounding
# set stays docker's 14: a setuid binary could get those back, if no_new_privs did not
# stop it.
r = nbhelp.run_stage(5, "--user", "1000", "cat", "/proc/self/status",
                     narrate=False, show=False)
status = nbhelp.parse_status(r.out)
assert status["CapEff"] == "0" * 16
assert capability_names(status["CapBnd"]) == set(capabilities.DEFAULT)

# %% [markdown]
# **4.** runbox installs the filter after no_new_privs. Why could it not install the
# filter last *without* no_new_privs (`--security-opt no-new-privileges=false`)?
#
# <details><summary>Answer</summary>
#
# Without no_new_privs, installing a seccomp filter needs `CAP_SYS_ADMIN`, which the
# container no longer has once its capabilities are dropped. So with
# `no-new-privileges=false` runbox installs the filter earlier, while it still has the
# capability, and the steps after it run under the filter (docker's default profile
# allows them). See
# [seccomp(2)](https://man7.org/linux/man-pages/man2/seccomp.2.html).
#
# </details>

# %% [markdown]
# ## Clean up

# %%
nbhelp.cleanup()
assert not os.path.exists(lab)
