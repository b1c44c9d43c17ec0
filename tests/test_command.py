"""The `runbox` command: stage 05 with docker's manners."""

import os
import subprocess
import sys
import tarfile

import pytest

from conftest import needs_root

RUNBOX = [sys.executable, "-m", "runbox.command"]


def runbox(*args, state_root, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNBOX, *args], capture_output=True, text=True,
                          env={**os.environ, "RUNBOX_ROOT": str(state_root)},
                          timeout=60, **kwargs)


@needs_root
def test_run_is_quiet_and_locked_down(state_root, image_root):
    result = runbox("run", "--rootfs", str(image_root), "--memory", "64m",
                    "--pids-limit", "64", "grep", "-E",
                    "NoNewPrivs|Seccomp:", "/proc/self/status",
                    state_root=state_root)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]


@needs_root
def test_trace_narrates(state_root, image_root):
    result = runbox("run", "--trace", "--rootfs", str(image_root), "true",
                    state_root=state_root)
    assert "seccomp(SECCOMP_SET_MODE_FILTER" in result.stderr
    assert "execve(" in result.stderr


@needs_root
def test_stdin_only_with_i(state_root, image_root):
    quiet = runbox("run", "--rootfs", str(image_root), "cat",
                   input="hello\n", state_root=state_root)
    assert quiet.stdout == ""
    passed = runbox("run", "-i", "--rootfs", str(image_root), "cat",
                    input="hello\n", state_root=state_root)
    assert passed.stdout == "hello\n"


@needs_root
def test_import_images_and_gc(state_root, image_root, tmp_path):
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(image_root, arcname=".")
    imported = runbox("import", str(tarball), "mine", state_root=state_root)
    assert imported.returncode == 0, imported.stderr
    listing = runbox("images", state_root=state_root)
    assert listing.stdout.split("\t")[0] == "mine"
    ran = runbox("run", "--rootfs", "mine", "echo", "ok",
                 state_root=state_root)
    assert ran.stdout == "ok\n"
    assert runbox("gc", state_root=state_root).returncode == 0


@pytest.mark.parametrize("args, words", [
    (["bogus"], "runbox: No such command 'bogus' (see --help)"),
    (["run"], "runbox: no command given: try 'sh'"),
    # The help goes to stdout; the line says why it came.
    ([], "runbox: no command given (see --help)"),
])
def test_bad_commands_are_one_line(state_root, args, words):
    result = runbox(*args, state_root=state_root)
    assert result.returncode == 125
    assert result.stderr.splitlines() == [words]


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_at_every_level(state_root, flag):
    # Run as python -m runbox.command, the usage line names it so.
    for args, usage in (([flag], "runbox.command [OPTIONS] COMMAND"),
                        (["run", flag], "runbox.command run [OPTIONS]")):
        result = runbox(*args, state_root=state_root)
        assert result.returncode == 0, result.stderr
        assert usage in result.stdout


def test_import_of_a_missing_file(state_root, tmp_path):
    result = runbox("import", str(tmp_path / "none.tar"), "x",
                    state_root=state_root)
    assert result.returncode == 125
    [line] = result.stderr.splitlines()
    assert line.startswith("runbox: ")
