# %% [markdown]
# # Stage 01: fork and exec
#
# Every process on Linux starts the same way. A running process copies itself with
# [fork(2)](https://man7.org/linux/man-pages/man2/fork.2.html), and the copy replaces
# its program with [execve(2)](https://man7.org/linux/man-pages/man2/execve.2.html).
# The original waits with [waitpid(2)][waitpid] to learn how the command ended. A
# shell does this for every command you type, and a container runtime does it for
# every container: the later stages change only what happens between the fork and
# the exec.
#
# [waitpid]: https://man7.org/linux/man-pages/man2/waitpid.2.html
#
# This notebook runs `stages/01_fork_exec` and reads what it says. The stage narrates
# every syscall it makes: who made it (`parent` or `child`, with its pid), the call
# with its arguments, the result, and why the step is there.
#
# ## Why the notebook runs each stage as a program
#
# The kernel behind this notebook is a Python process with several threads. fork
# copies only the thread that calls it: a lock another thread held at that moment
# stays locked in the child for good, and the child hangs the first time it needs it.
# So no container is ever forked from the notebook's kernel. `nbhelp.run_stage(n,
# ...)` starts stage n as a program of its own, exactly as you would at a shell
# (`python stages/01_fork_exec ...`), prints what it says as it says it, and returns
# its exit code, its output and its narration.
#
# The kernel's own `/proc/self/status` says how many threads it has:

# %%
import os
import re
import signal
import socket

import nbhelp

threads = int(nbhelp.status()["Threads"])
print(f"this kernel, pid {os.getpid()}, runs {threads} threads")
assert threads > 1

# %% [markdown]
# ## A first run
#
# The stage takes a command and its arguments, like `env` or `sudo` do. `$$` is the
# shell's own pid.

# %%
r = nbhelp.run_stage(1, "sh", "-c", "echo hello from $$")
assert r.code == 0

# The pid the parent's fork returned is the pid the shell reports.
[(parent, child)] = re.findall(r"^parent (\d+) +fork\(\) = (\d+)$", r.err, re.M)
assert int(parent) == r.pid
assert r.lines == [f"hello from {child}"]

# %% [markdown]
# Read the narration from the top:
#
# - `fork()` is one call that returns twice, once in each process: in the parent it
#   returns the child's pid, in the child it returns 0. Which of the two prints first
#   is up to the scheduler.
# - `every signal back to its default action`: runbox catches Ctrl-C and friends to
#   pass them on, and the command must not inherit that.
# - `execve(...) ...` is narrated before the call, because an execve that works never
#   returns: from that instant the child *is* the command, `[N vars]` its environment.
# - `waitpid(...) = N (exited with 0)`: the parent sleeps until the child ends, and the
#   kernel hands it a status word, decoded here.
#
# The shell printed the number the parent's fork returned: the command is an ordinary
# process of the host, one among all the others.

# %% [markdown]
# ## What the kernel reports
#
# `/proc/PID/status` tells about a process: its `Pid`, its parent's `PPid`, and
# `NSpid`, its pid in each PID namespace it belongs to, outermost first. Each
# `/proc/self/ns/*` link names one namespace by its inode number: two processes with
# the same link share that namespace. (`/proc/self` is whoever reads it: here `grep`
# reads the shell's own, `/proc/$$`.)

# %%
r = nbhelp.run_stage(
    1, "sh", "-c",
    'grep -E "^(Pid|PPid|NSpid):" /proc/$$/status;'
    " readlink /proc/self/ns/pid /proc/self/ns/mnt /proc/self/ns/uts; hostname",
    narrate=False)
assert r.code == 0
status = nbhelp.parse_status("\n".join(r.lines[:3]))

# Its parent is runbox, which is this notebook's child.
assert status["PPid"] == str(r.pid)
# One pid only: it lives in one PID namespace, the host's.
assert status["NSpid"] == status["Pid"]
# The same namespaces and the same hostname as this notebook.
assert r.lines[3:6] == [os.readlink(f"/proc/self/ns/{name}")
                        for name in ("pid", "mnt", "uts")]
assert r.lines[6] == socket.gethostname()

# %% [markdown]
# ## How it ended: exit codes
#
# waitpid's status word says whether the child exited (and with what) or was killed
# (and by which signal). runbox never prints it raw: it follows the convention of
# shells, docker and runc.
#
# | the command | runbox exits with |
# |---|---|
# | exits with N | N |
# | is killed by signal N | 128 + N (SIGTERM, 15: 143) |
# | cannot be executed | 126 |
# | is not found | 127 |
# | runbox itself failed (a bad option, a setup step) | 125 |

# %%
cases = [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["/etc"], 126),
    (["nosuchcmd"], 127),
]
for command, expected in cases:
    r = nbhelp.run_stage(1, *command, narrate=False)
    assert r.code == expected, (command, r.code)

# A failure is reported once, as one line.
assert r.failures == ["runbox: nosuchcmd: command not found"]

# %% [markdown]
# When execve fails, it fails in the child, after the fork: the parent would only see
# an exit status. So the child writes the error to a pipe opened with `O_CLOEXEC`
# before the fork. If execve works, the kernel closes the pipe and the parent reads
# nothing; if it fails, the parent reads why, and says it in one line.

# %% [markdown]
# ## Signals go on to the command
#
# While runbox waits, a Ctrl-C (SIGINT) or a `kill` sent to runbox is passed on to the
# command. `nbhelp.started` runs a stage in the background: the command says it is
# ready, the notebook sends SIGINT to runbox, and the command dies of it: 128 + 2.

# %%
with nbhelp.started(1, "sh", "-c", "echo ready; exec sleep 30") as box:
    assert box.readline() == "ready"
    os.kill(box.pid, signal.SIGINT)
    r = box.finish()
assert r.code == 130

# %% [markdown]
# ## Exercises
#
# **1.** Predict runbox's exit code when the command is killed with SIGKILL
# (`sh -c 'kill -KILL $$'`), then run it. The answer is the collapsed cell below;
# click its left bar to open it.

# %% [answer]
r = nbhelp.run_stage(1, "sh", "-c", "kill -KILL $$", narrate=False)
assert r.code == 128 + signal.SIGKILL == 137

# %% [markdown]
# **2.** Can the command see this notebook's kernel? Its pid is `os.getpid()`, and
# every process has a directory in `/proc`.

# %% [answer]
# Yes: test -d succeeds, so the kernel's /proc directory is there to read.
# Same user, same PID namespace: the command could signal it as well.
r = nbhelp.run_stage(1, "test", "-d", f"/proc/{os.getpid()}", narrate=False)
assert r.code == 0

# %% [markdown]
# **3.** What raw status word does waitpid give for `exit 7`, and for a death by
# SIGTERM? Decode both with the `os.W*` functions (no fork needed: the words are just
# numbers).

# %% [answer]
# The exit code sits in the second byte; a signal number in the low seven bits.
exited, killed = 7 << 8, int(signal.SIGTERM)
assert os.WIFEXITED(exited) and os.WEXITSTATUS(exited) == 7
assert os.WIFSIGNALED(killed) and os.WTERMSIG(killed) == 15
# os.waitstatus_to_exitcode gives -15 for a signal; runbox reports 128 + 15.
assert os.waitstatus_to_exitcode(killed) == -15
print(f"exit 7: {exited:#06x}, SIGTERM: {killed:#06x}")

# %% [markdown]
# ## What is still wrong
#
# Everything is shared with the host: the command has the host's hostname, a host
# pid, sees every process (this notebook's included) and every file. Stage 02 gives
# it namespaces: a hostname, process numbers, IPC and a mount table of its own.
#
# Nothing to clean up: every container here ended with its run.
