"""The narration tells the truth: strace sees every narrated syscall, made
by the process that claims it, in the narrated order."""

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from conftest import STAGES, needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("strace") is None,
                       reason="needs strace: make test-deps installs it"),
]

# What the kernel calls the syscall behind a wrapper, when it differs:
# glibc's fork is clone, os.waitpid is wait4, and newer libcs prefer the
# *at variants.
KERNEL_NAMES = {
    "fork": {"clone", "clone3", "fork"},
    "waitpid": {"wait4", "waitid"},
    "mkdir": {"mkdir", "mkdirat"},
    "rmdir": {"rmdir", "unlinkat"},
    "chmod": {"chmod", "fchmodat", "fchmodat2"},
    "mknod": {"mknod", "mknodat"},
    "symlink": {"symlink", "symlinkat"},
}

# Calls whose arguments strace prints exactly as the narration does.
SAME_TEXT = {"unshare", "mount", "umount2", "pivot_root", "chroot",
             "chdir", "sethostname"}

NARRATED = re.compile(r"^(parent|child) +(\d+) +(\w+)\((.*?)\)"
                      r"(?: = | \.\.\.$)")
# A call interrupted by another process's output is split in two by strace:
# "name(args <unfinished ...>" and later "<... name resumed>".
STRACED = re.compile(r"^(\d+) +(\w+)\((.*?)(?:\) += .*| <unfinished \.\.\.>)$")


def narrated_calls(stderr: str) -> dict[str, list[tuple[str, str]]]:
    """(name, args) per process role, in narration order."""
    calls = defaultdict(list)
    for line in stderr.splitlines():
        m = NARRATED.match(line)
        if m:
            role, _, name, args = m.groups()
            calls[role].append((name, args))
    return calls


def fork_result(stderr: str) -> int:
    """The child's host pid, from the parent's fork() line."""
    m = re.search(r"^parent +\d+ +fork\(\) = (\d+)$", stderr, re.M)
    assert m, "no fork narrated"
    return int(m.group(1))


def straced_calls(path: str) -> dict[int, list[tuple[str, str]]]:
    calls = defaultdict(list)
    with open(path) as f:
        for line in f:
            m = STRACED.match(line)
            if m:
                pid, name, args = m.groups()
                calls[int(pid)].append((name, args))
    return calls


def assert_in_order(claimed, seen, who):
    """Each claimed call appears in seen, in the same order."""
    position = 0
    for name, args in claimed:
        wanted = KERNEL_NAMES.get(name, {name})
        while position < len(seen):
            seen_name, seen_args = seen[position]
            position += 1
            if seen_name not in wanted:
                continue
            if name in SAME_TEXT and seen_args != args:
                continue
            break
        else:
            pytest.fail(f"{who}: narrated {name}({args}) not seen by "
                        "strace in that order")


def run_straced(n: int, image_root, log) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(STAGES[n])]
    if n >= 3:
        argv += ["--rootfs", str(image_root)]
    if n >= 2:
        argv += ["--hostname", "traced"]
    if n >= 4:
        argv += ["--memory", "32m", "--pids-limit", "16"]
    result = subprocess.run(
        ["strace", "-f", "-qq", "-s", "4096", "-o", str(log), *argv,
         "sh", "-c", "exit 0"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_every_narrated_syscall_is_real(n, stage, image_root, tmp_path):
    log = tmp_path / "strace.log"
    result = run_straced(n, image_root, log)

    claimed = narrated_calls(result.stderr)
    seen = straced_calls(str(log))
    parent_pid = int(re.search(r"^parent +(\d+) ", result.stderr,
                               re.M).group(1))
    child_pid = fork_result(result.stderr)
    assert len(claimed["parent"]) >= 2 and len(claimed["child"]) >= 2
    assert claimed["child"][-1][0] == "execve"
    assert_in_order(claimed["parent"], seen[parent_pid], "parent")
    # The child's "fork() = 0" is its side of the parent's one call: the
    # child itself makes no syscall there.
    assert claimed["child"][0][0] == "fork"
    assert_in_order(claimed["child"][1:], seen[child_pid], "child")


def test_child_waits_until_placed_in_its_cgroup(stage, image_root, tmp_path):
    # C16: the child does nothing of the container's before the parent
    # has written its pid into every cgroup.procs.
    log = tmp_path / "strace.log"
    result = run_straced(4, image_root, log)
    child = fork_result(result.stderr)
    lines = log.read_text().splitlines()
    placed = [i for i, line in enumerate(lines)
              if "cgroup.procs" in line and "openat(" in line
              and "O_WRONLY" in line]
    unshared = [i for i, line in enumerate(lines)
                if line.startswith(f"{child} ") and "unshare(" in line]
    assert placed and unshared
    assert max(placed) < min(unshared)
