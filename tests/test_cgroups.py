"""Stage 04 on this host's real cgroups: limits, placement, OOM, cleanup.

These run real containers and read what the kernel reports.  They work on
whichever layout the host has (v1, hybrid or v2); test_cgroups_v2.py covers
v2's rules against a fake tree, and `make test` also runs the v2 tests in a
VM with a pure cgroup v2 kernel.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import STAGES, Background, needs_root, runbox_cgroups
from runbox import cgroups, libc

pytestmark = needs_root


def layout() -> cgroups.Layout:
    return cgroups.detect()


def host_dir(controller: str, own_cgroup: str) -> Path:
    """Where a container's cgroup for controller is on the host."""
    lay = layout()
    if lay.version_of(controller) == 1:
        return lay.v1_roots[controller] / own_cgroup.lstrip("/")
    return lay.v2_root / own_cgroup.lstrip("/")


def cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controller or "": path}."""
    found = {}
    for line in text.splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            found[name] = path
    return found


def running(state_root, image_root, *opts, script):
    """A stage 04 container running script in the background."""
    return Background(4, *opts, "sh", "-c", script, state_root=state_root,
                      image_root=image_root)


def test_detected_layout_matches_statfs():
    # C14: the version comes from statfs, not from guessing.
    lay = layout()
    magic = libc.statfs("/sys/fs/cgroup")
    if magic == libc.CGROUP2_SUPER_MAGIC:
        assert lay.mode == "v2"
    else:
        assert magic == libc.TMPFS_MAGIC
        assert lay.mode in ("v1", "hybrid")
        assert lay.v1_roots, "a tmpfs layout holds v1 hierarchies"
        for controller, root in lay.v1_roots.items():
            assert libc.statfs(str(root)) == libc.CGROUP_SUPER_MAGIC


def test_container_has_its_own_cgroup(stage):
    result = stage(4, "--memory", "64m", "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = cgroup_lines(result.stdout)
    lay = layout()
    for controller in cgroups.CONTROLLERS:
        if lay.version_of(controller) == 1:
            assert re.fullmatch(r"/runbox/[0-9a-f]{12}", lines[controller])
    if lay.v2_root:
        assert re.fullmatch(r"/runbox/[0-9a-f]{12}", lines[""])


def test_limits_reach_the_kernel(state_root, image_root):
    # The files the kernel reads, read back from the host while the
    # container runs.
    with running(state_root, image_root, "--memory", "64m", "--cpus", "0.5",
                 "--pids-limit", "20",
                 script="cat /proc/self/cgroup; echo; read x") as proc:
        text = ""
        for line in proc.stdout:
            if line == "\n":
                break
            text += line
        own = cgroup_lines(text)
        lay = layout()
        mem = host_dir("memory", own.get("memory", own.get("")))
        pids = host_dir("pids", own.get("pids", own.get("")))
        cpu = host_dir("cpu", own.get("cpu", own.get("")))
        if lay.version_of("memory") == 1:
            assert (mem / "memory.limit_in_bytes").read_text() == \
                f"{64 << 20}\n"
            memsw = mem / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                assert memsw.read_text() == f"{64 << 20}\n"
        else:
            assert (mem / "memory.max").read_text() == f"{64 << 20}\n"
        if lay.version_of("cpu") == 1:
            assert (cpu / "cpu.cfs_quota_us").read_text() == "50000\n"
            assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
        else:
            assert (cpu / "cpu.max").read_text() == "50000 100000\n"
        assert (pids / "pids.max").read_text() == "20\n"
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0


def test_hybrid_never_writes_controller_files_to_v2(stage):
    # C14: on a hybrid host, the v2 tree gets no file of a controller that
    # lives in v1.  The narration says every write (test_strace proves it
    # truthful).
    lay = layout()
    if lay.mode != "hybrid":
        pytest.skip("this host is not hybrid")
    result = stage(4, "--memory", "32m", "--pids-limit", "9", "--cpus", "1",
                   "true", trace=True)
    assert result.returncode == 0
    writes = re.findall(r'write\("([^"]+)"', result.stderr)
    assert writes
    for path in writes:
        if path.startswith(str(lay.v2_root) + "/"):
            assert Path(path).name in ("cgroup.procs", "cgroup.kill")


def test_every_process_is_placed(stage):
    # C16: the first process and its children all run in the cgroup.
    result = stage(4, "--pids-limit", "16", "sh", "-c",
                   "cat /proc/1/cgroup; echo --; "
                   "sleep 1 & cat /proc/$!/cgroup; echo --; "
                   "sleep 1 & cat /proc/$!/cgroup; wait")
    assert result.returncode == 0, result.stderr
    blocks = [cgroup_lines(b.strip())
              for b in result.stdout.split("--\n")]
    assert len(blocks) == 3
    assert blocks[0] == blocks[1] == blocks[2]
    lay = layout()
    for controller in cgroups.CONTROLLERS:
        if lay.version_of(controller) == 1:
            assert blocks[0][controller].startswith("/runbox/")
    if lay.v2_root:
        assert blocks[0][""].startswith("/runbox/")


def test_out_of_memory_is_reported(stage):
    # C17: 100 MiB in a 32 MiB container: killed, said so, 137.
    result = stage(4, "--memory", "32m", "dd", "if=/dev/zero",
                   "of=/dev/null", "bs=100M", "count=1")
    assert result.returncode == 137
    assert result.stderr.splitlines()[-1] == \
        "runbox: killed: out of memory, limit 32M"


def test_fork_bomb_is_contained(stage):
    # C18: forks fail inside, PID 1 ends, and everything goes with it.
    result = stage(4, "--pids-limit", "16", "sh", "-c",
                   "f(){ f|f& }; f; sleep 1; echo survived", timeout=120)
    assert result.stdout == "survived\n"
    assert "can't fork" in result.stderr


@pytest.mark.parametrize("opts, words", [
    (["--memory", "lots"], "--memory: bad size 'lots'"),
    (["--memory", "1k"], "--memory: '1k' is below the minimum of 6m"),
    (["--cpus", "0"], "--cpus: 0 is out of range"),
    (["--cpus", "half"], "--cpus: 'half' is not a number"),
    (["--pids-limit", "-3"], "--pids-limit: '-3' is not a positive"),
    # Past the kernel's PID_MAX_LIMIT, pids.max would answer ERANGE or
    # EINVAL, a raw write error: the option says so first.
    (["--pids-limit", "4194305"],
     "--pids-limit: 4194305 is out of range: use 1 to 4194304"),
    (["--pids-limit", "9" * 30], "--pids-limit: 9999"),
    (["--memory-swap", "1g"], "--memory-swap needs --memory as well"),
    (["--memory", "64m", "--memory-swap", "32m"],
     "--memory-swap is memory and swap together"),
])
def test_bad_limits_are_one_line(stage, opts, words):
    result = stage(4, *opts, "true")
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith(f"runbox: {words}")


def gc_command(state_root) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "runbox.container", "gc"],
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 0 and result.stderr == ""
    return result.stdout.splitlines()


def test_runtime_killed_then_gc(state_root, image_root):
    # C19: runbox dies by SIGKILL mid-run.  The container dies with it
    # (parent-death signal); its cgroup and directory stay until gc.
    before = runbox_cgroups()
    with running(state_root, image_root, "--pids-limit", "8",
                 script="echo ready; read x") as proc:
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGKILL)  # runbox only, not its group
        proc.wait()
        left = runbox_cgroups() - before
        assert left, "the dead runbox's cgroup should still be there"
        for _ in range(500):
            procs = "".join(Path(d, "cgroup.procs").read_text()
                            for d in left)
            if not procs:
                break
            time.sleep(0.01)
        assert procs == "", "the container outlived its runbox"

        assert len(gc_command(state_root)) == 1
        assert runbox_cgroups() == before
    assert list((state_root / "containers").iterdir()) == []


def test_gc_leaves_a_live_container_alone(state_root, image_root):
    before = runbox_cgroups()
    with running(state_root, image_root,
                 script="echo ready; read x; echo done") as proc:
        assert proc.stdout.readline() == "ready\n"
        assert gc_command(state_root) == []
        assert runbox_cgroups() - before != set()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        assert proc.wait(timeout=30) == 0


def test_next_run_collects_stale_state(state_root, image_root, stage):
    before = runbox_cgroups()
    with running(state_root, image_root, script="echo ready; read x") as p:
        assert p.stdout.readline() == "ready\n"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert runbox_cgroups() != before
        assert stage(4, "true").returncode == 0
        assert runbox_cgroups() == before


def test_narration_into_a_closed_pipe_leaves_nothing(state_root, image_root):
    # `... 2>&1 | head -1`: the reader goes away after one line.  The
    # narration stops; the container still runs and is cleaned up.
    proc = subprocess.Popen(
        [sys.executable, str(STAGES[4]), "--rootfs", str(image_root),
         "--memory", "32m", "sh", "-c", "sleep 0.2; exit 4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    proc.stderr.readline()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 4


def test_closed_narration_pipe_keeps_the_containers_stdout(state_root,
                                                           image_root,
                                                           tmp_path):
    # rich, left to itself, answers a broken pipe by pointing fd 1 at
    # /dev/null: the container's stdout would vanish with the narration.
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, str(STAGES[4]), "--rootfs", str(image_root),
             "sh", "-c", "sleep 0.3; echo container-output"],
            stdout=stdout, stderr=subprocess.PIPE,
            env={**os.environ, "RUNBOX_ROOT": str(state_root)})
        proc.stderr.readline()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 0
    assert out.read_text() == "container-output\n"
