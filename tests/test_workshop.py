"""The workshop set-up: the Vagrantfile, scripts/provision.sh run for real
on this machine, and `make diff STAGE=N`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, needs_root

WORKSHOP = ("vagrant up && vagrant ssh -c "
            "'cd /vagrant && sudo make stage3 CMD=sh'")


def installable(package: str) -> bool:
    """Whether apt could install package here, and this test may."""
    if os.geteuid() != 0 or shutil.which("apt-cache") is None:
        return False
    policy = subprocess.run(["apt-cache", "policy", package],
                            capture_output=True, text=True).stdout
    return "Candidate:" in policy and "Candidate: (none)" not in policy


def have(tool: str, package: str) -> bool:
    """tool on PATH, installed from Debian's archive if it is not yet.
    A failed install leaves it missing, and the caller tries the next."""
    if shutil.which(tool) is None and installable(package):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Package lists older than the installed packages (a machine
        # whose image was updated since) make apt refuse the install.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True,
                       env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq",
                        "--no-install-recommends", package],
                       capture_output=True, env=env)
    return shutil.which(tool) is not None


def vagrant_project(tmp_path: Path) -> Path:
    """The Vagrantfile and what it names, copied: vagrant writes a
    .vagrant directory beside the Vagrantfile it reads."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "Vagrantfile", project)
    shutil.copy(REPO / "scripts/provision.sh", project / "scripts")
    return project


def vagrant_validate(project: Path, home: Path, arch: str = ""):
    # No provider is installed here, so its settings are not checked;
    # everything else in the Vagrantfile is.
    return subprocess.run(["vagrant", "validate", "--ignore-provider"],
                          cwd=project, capture_output=True, text=True,
                          env={**os.environ, "VAGRANT_HOME": str(home),
                               "RUNBOX_VM_ARCH": arch},
                          timeout=120)


def test_vagrantfile_is_valid(tmp_path):
    project = vagrant_project(tmp_path)
    if have("vagrant", "vagrant"):
        # As this host sees itself, and as each kind of attendee's would.
        for arch in ("", "amd64", "arm64"):
            result = vagrant_validate(project, tmp_path / "home", arch)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Vagrantfile validated successfully." in result.stdout
        wrong = vagrant_validate(project, tmp_path / "home", "sparc")
        assert wrong.returncode != 0
        assert "RUNBOX_VM_ARCH must be amd64 or arm64" in wrong.stderr
        # And it does check: a provisioning script that is not there.
        (project / "scripts/provision.sh").unlink()
        broken = vagrant_validate(project, tmp_path / "home")
        assert broken.returncode != 0
        assert "provision.sh" in broken.stdout + broken.stderr
    elif have("ruby", "ruby"):
        result = subprocess.run(["ruby", "-c", str(project / "Vagrantfile")],
                                capture_output=True, text=True)
        assert result.stdout.strip() == "Syntax OK", result.stderr
    else:
        pytest.skip("neither vagrant nor ruby is installed, and apt cannot "
                    "install them here (needs root and Debian's archive)")


def test_the_workshop_command_is_the_readme_s():
    assert WORKSHOP in (REPO / "Vagrantfile").read_text()
    readme = (REPO / "README.md").read_text()
    assert WORKSHOP in readme.splitlines()
    vagrantfile = (REPO / "Vagrantfile").read_text()
    for setting in ("cpus = 2", "memory = 2048",
                    'path: "scripts/provision.sh"'):
        assert setting in vagrantfile


def test_a_pinned_box_for_each_kind_of_host():
    # An amd64 box for amd64 hosts, an arm64 one for Apple Silicon; each
    # at a fixed version, so every attendee boots the same machine.
    vagrantfile = (REPO / "Vagrantfile").read_text()
    boxes = re.findall(
        r'"(amd64|arm64)" => \{ name: "([\w./-]+)", version: "([\d.]+)" \}',
        vagrantfile)
    assert {arch for arch, _, _ in boxes} == {"amd64", "arm64"}
    assert ("amd64", "debian/bookworm64") in {b[:2] for b in boxes}
    assert "config.vm.box_version = BOXES[arch][:version]" in vagrantfile
    assert "config.vm.box_architecture = arch" in vagrantfile


def tree_as_committed(dest: Path) -> None:
    """Copy what a clone would hold once the work tree is committed: the
    tracked and the new files, none that .gitignore leaves out.  A clone
    of HEAD would test the last commit, not the tree under test."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in git
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)


@needs_root
def test_provision_then_the_stage_command(tmp_path):
    repo, venv, state = tmp_path / "clone", tmp_path / "venv", \
        tmp_path / "state"
    tree_as_committed(repo)
    env = {**os.environ, "VENV": str(venv), "RUNBOX_ROOT": str(state)}
    try:
        first = subprocess.run(
            [str(repo / "scripts/provision.sh"), str(repo)], env=env,
            capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Ready: every stage can run here" in first.stdout
        assert first.stdout.splitlines()[-1] == (
            f"provision: ready: cd {repo} && sudo make VENV={venv} "
            f"RUNBOX_ROOT={state} stage3 CMD=sh")

        # Again: nothing to install, nothing to build.
        again = subprocess.run(
            [str(repo / "scripts/provision.sh"), str(repo)], env=env,
            capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "provision: installing" not in again.stdout
        assert "pip install" not in again.stdout

        stage = subprocess.run(
            ["make", "--no-print-directory", "-C", str(repo), "stage3",
             "OPTS=-q", "CMD=echo ok"],
            env=env, capture_output=True, text=True, timeout=120)
        assert stage.returncode == 0, stage.stderr
        assert stage.stdout == "ok\n"
        assert list((state / "containers").iterdir()) == []
    finally:
        for path in (repo, venv, state):
            shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_provision_refuses_to_run_as_another_user(tmp_path):
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "bash", str(REPO / "scripts/provision.sh"), str(REPO)],
        capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("provision: run it as root")


def make_diff(stage: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO),
                           "diff", f"STAGE={stage}"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_make_diff(n):
    old = next(REPO.glob(f"stages/0{n - 1}_*")).name
    new = next(REPO.glob(f"stages/0{n}_*")).name
    result = make_diff(str(n))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"--- a/stages/{old}/__main__.py" in lines
    assert f"+++ b/stages/{new}/__main__.py" in lines
    assert "\033[" not in result.stdout  # no colour into a pipe
    readme = (REPO / f"stages/{new}/README.md").read_text()
    assert f"See the lesson as a diff: `make diff STAGE={n}`" in readme


@pytest.mark.parametrize("stage", ["1", "6", "", "x"])
def test_make_diff_of_no_such_stage(stage):
    result = make_diff(stage)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "usage: make diff STAGE=N, N from 2 to 5")
