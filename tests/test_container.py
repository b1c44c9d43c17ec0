"""Container directories: made, removed, and collected after a crash."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbox import container
from runbox.errors import RunboxError


def test_create_and_remove(state_root):
    bundle = container.create()
    assert bundle.dir.parent == state_root / "containers"
    assert {p.name for p in bundle.dir.iterdir()} == {
        "owner", "upper", "work", "merged"}
    assert container.owner_alive(bundle)
    container.remove(bundle)
    assert not bundle.dir.exists()


def test_gc_removes_only_dead_owners(state_root):
    mine = container.create()
    # A directory made by a process that has since exited.
    subprocess.run([sys.executable, "-c",
                    "from runbox import container; container.create()"],
                   check=True, env={**os.environ,
                                    "RUNBOX_ROOT": str(state_root)})
    dead = [p.name for p in (state_root / "containers").iterdir()
            if p.name != mine.id]
    assert len(dead) == 1
    assert container.gc() == dead
    assert [p.name for p in (state_root / "containers").iterdir()] == [
        mine.id]
    container.remove(mine)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")
def test_remove_refuses_a_directory_with_a_mount(state_root):
    bundle = container.create()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(bundle.merged)],
                   check=True)
    try:
        with pytest.raises(RunboxError) as caught:
            container.remove(bundle)
        assert "still mounted" in str(caught.value)
    finally:
        subprocess.run(["umount", str(bundle.merged)], check=True)
    container.remove(bundle)


def test_gc_command_is_idempotent(state_root):
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "runbox.container", "gc"],
            capture_output=True, text=True,
            env={**os.environ, "RUNBOX_ROOT": str(state_root)})
        assert result.returncode == 0 and result.stderr == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for containers")
def test_many_runboxes_at_once_collect_nothing_alive(state_root,
                                                     image_root):
    # Each run collects dead containers as it starts: twelve at once must
    # never take one another's for dead (a directory half made or half
    # removed has no owner file to show it alive).
    stage = Path(__file__).resolve().parent.parent / "stages/04_cgroups"
    procs = [subprocess.Popen(
        [sys.executable, str(stage), "-q", "--rootfs", str(image_root),
         "true"], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
        for _ in range(12)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert results == [(0, "")] * 12


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for containers")
def test_gc_takes_a_killed_runbox_not_yet_reaped_for_dead(state_root,
                                                          image_root):
    # A runbox killed with SIGKILL stays a zombie until its parent reaps
    # it, which a slow parent (a VM's PID 1) may not do for seconds; it has
    # died all the same, and its container with it must go.
    from conftest import STAGES, container_pid

    proc = subprocess.Popen(
        [sys.executable, str(STAGES[3]), "-q", "--rootfs", str(image_root),
         "sleep", "300"], start_new_session=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    try:
        sleeper = container_pid(state_root, b"sleep\x00300\x00")
        os.kill(proc.pid, 9)
        # Dead, and left unreaped: this test is its parent.
        for _ in range(500):
            if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(
                    ")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert len(container.gc()) == 1
        assert not (state_root / "containers").exists() or \
            list((state_root / "containers").iterdir()) == []
        # Its PID 1, the stage 03 container that outlives runbox, ended.
        assert not Path(f"/proc/{sleeper}").exists() or \
            Path(f"/proc/{sleeper}/stat").read_text().rsplit(
                ")", 1)[1].split()[0] == "Z"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()
        container.gc()


def test_gc_removes_what_dead_image_builds_left(state_root):
    # A build, import or uid-shifted copy killed half-way leaves its work
    # directory in the image; gc takes it when its maker is gone, and
    # leaves a live one's alone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    image = state_root / "images/bb"
    (image / "rootfs").mkdir(parents=True)
    left = image / f".shift-{dead.pid}-abcd1234"
    live = image / f".build-{os.getpid()}-efgh5678"
    left.mkdir()
    live.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "runbox.container", "gc"],
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(state_root)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed bb/{left.name}\n"
    assert sorted(p.name for p in image.iterdir()) == [live.name, "rootfs"]
