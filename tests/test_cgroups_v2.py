"""cgroup v2's rules, against a fake cgroup2 tree.

This host's controllers live in v1, so the v2 code cannot write a real v2
file here; `make test` runs the real-container tests of test_cgroups.py in
a VM with a pure cgroup v2 kernel too.  Here the fake stands in for the
filesystem alone: files appear as cgroup2 makes them, and writes are
recorded in order.
"""

import errno
import shutil
from pathlib import Path

import pytest

from runbox import cgroups, libc
from runbox.errors import RunboxError
from runbox.spec import Cpu, Memory, Pids, Resources

FILES = {"memory": ["memory.max", "memory.swap.max", "memory.events"],
         "cpu": ["cpu.max"], "pids": ["pids.max"]}


class FakeCgroup2:
    """A directory tree that behaves like cgroup2 for runbox's writes."""

    def __init__(self, root: Path, controllers: str, monkeypatch) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        self.refuse: dict[tuple[str, str], int] = {}
        root.mkdir()
        (root / "cgroup.controllers").write_text(controllers + "\n")
        self._files(root, controllers.split())
        monkeypatch.setattr(libc, "write_file", self.write_file)
        monkeypatch.setattr(libc, "mkdir", self.mkdir)
        monkeypatch.setattr(libc, "rmdir", self.rmdir)

    def _files(self, d: Path, enabled: list[str]) -> None:
        for name in ("cgroup.procs", "cgroup.subtree_control",
                     "cgroup.kill"):
            (d / name).write_text("")
        for controller in enabled:
            for name in FILES.get(controller, []):
                (d / name).write_text("max\n")

    def mkdir(self, path: str, mode: int = 0o777, *, why=None) -> None:
        d = Path(path)
        d.mkdir()
        parent = (d.parent / "cgroup.subtree_control").read_text().split()
        (d / "cgroup.controllers").write_text(" ".join(parent) + "\n")
        self._files(d, parent)

    def rmdir(self, path: str, *, why=None) -> None:
        shutil.rmtree(path)

    def write_file(self, path: str, text: str, *, why=None) -> None:
        p = Path(path)
        rel = str(p.relative_to(self.root))
        if (rel, text) in self.refuse:
            err = self.refuse[rel, text]
            raise OSError(err, "write: " + errno.errorcode[err], path)
        self.writes.append((rel, text))
        if p.name == "cgroup.subtree_control":
            have = p.read_text().split()
            p.write_text(" ".join(have + [text.lstrip("+")]))
        elif p.name == "cgroup.procs":
            p.write_text(p.read_text() + text + "\n")
        else:
            p.write_text(text + "\n")

    def layout(self) -> cgroups.Layout:
        controllers = (self.root / "cgroup.controllers").read_text().split()
        return cgroups.Layout("v2", self.root, set(controllers))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    # A host without swap: memory.swap.max is still written, since it
    # exists, and nothing depends on the real host's /proc/swaps.
    monkeypatch.setattr(cgroups, "_swap_in_use", lambda: False)
    return lambda controllers="cpuset cpu io memory pids": FakeCgroup2(
        tmp_path / "cg", controllers, monkeypatch)


ALL = Resources(Memory(32 << 20, 32 << 20), Cpu(50_000), Pids(16))


def test_limits_are_written_top_down_into_a_leaf(fake):
    # C15: enable top-down, the container in a leaf, the v2 files.
    tree = fake()
    cg = cgroups.Cgroup(tree.layout(), "abc")
    cg.create(ALL)
    cg.add(4242)
    assert tree.writes == [
        ("cgroup.subtree_control", "+cpu"),
        ("cgroup.subtree_control", "+memory"),
        ("cgroup.subtree_control", "+pids"),
        ("runbox/cgroup.subtree_control", "+cpu"),
        ("runbox/cgroup.subtree_control", "+memory"),
        ("runbox/cgroup.subtree_control", "+pids"),
        ("runbox/abc/memory.max", str(32 << 20)),
        ("runbox/abc/memory.swap.max", "0"),
        ("runbox/abc/cpu.max", "50000 100000"),
        ("runbox/abc/pids.max", "16"),
        ("runbox/abc/cgroup.procs", "4242"),
    ]
    # No internal processes: runbox/ itself never holds one.
    assert (tree.root / "runbox/cgroup.procs").read_text() == ""


def test_controllers_already_enabled_are_left_alone(fake):
    tree = fake()
    (tree.root / "cgroup.subtree_control").write_text("cpu memory pids")
    cgroups.Cgroup(tree.layout(), "abc").create(ALL)
    assert not [w for w in tree.writes if w[0] == "cgroup.subtree_control"]


def test_missing_controller_is_an_error_not_unlimited(fake):
    # C15: no memory controller offered: refuse, and make nothing.
    tree = fake("cpu pids")
    cg = cgroups.Cgroup(tree.layout(), "abc")
    with pytest.raises(RunboxError) as caught:
        cg.create(Resources(memory=Memory(32 << 20, 32 << 20)))
    assert caught.value.exit_code == 125
    assert str(caught.value).startswith("memory controller not available")
    assert not (tree.root / "runbox/abc").exists()


def test_controller_that_cannot_be_enabled(fake):
    # C15: the parent refuses to enable it (EBUSY, EPERM...): an error
    # naming the controller, and the half-made cgroup is gone again.
    tree = fake()
    tree.refuse["cgroup.subtree_control", "+memory"] = errno.EBUSY
    cg = cgroups.Cgroup(tree.layout(), "abc")
    with pytest.raises(RunboxError) as caught:
        cg.create(ALL)
    assert str(caught.value) == (
        f"memory controller not available: enabling it in {tree.root} "
        "failed: Device or resource busy")
    assert not (tree.root / "runbox/abc").exists()


def test_unwanted_controller_may_fail_to_enable(fake):
    tree = fake()
    tree.refuse["cgroup.subtree_control", "+cpu"] = errno.EINVAL
    cgroups.Cgroup(tree.layout(), "abc").create(
        Resources(pids=Pids(5)))
    assert ("runbox/abc/pids.max", "5") in tree.writes


def test_unlimited_swap_writes_no_swap_limit(fake):
    tree = fake()
    cgroups.Cgroup(tree.layout(), "abc").create(
        Resources(memory=Memory(64 << 20, -1)))
    assert [w for w in tree.writes if "swap" in w[0]] == []


def test_swap_limit_without_accounting_is_refused(fake, monkeypatch):
    # C17's kind: with swap on and no memory.swap.max, the limit could be
    # escaped; refuse rather than run unlimited.
    tree = fake()
    monkeypatch.setattr(cgroups, "_swap_in_use", lambda: True)
    real_files = tree._files

    def no_swap_file(d, enabled):
        real_files(d, enabled)
        (d / "memory.swap.max").unlink(missing_ok=True)

    tree._files = no_swap_file
    with pytest.raises(RunboxError) as caught:
        cgroups.Cgroup(tree.layout(), "abc").create(ALL)
    assert "no swap accounting" in str(caught.value)


def test_oom_kill_is_read_from_memory_events(fake):
    tree = fake()
    cg = cgroups.Cgroup(tree.layout(), "abc")
    cg.create(ALL)
    (tree.root / "runbox/abc/memory.events").write_text(
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cg.oom_kills() == 1


def test_kill_uses_cgroup_kill(fake):
    tree = fake()
    cg = cgroups.Cgroup(tree.layout(), "abc")
    cg.create(None)
    cg.add(4242)
    tree.writes.clear()
    cg.kill_all()
    assert tree.writes == [("runbox/abc/cgroup.kill", "1")]


def test_hybrid_detection_uses_v1_where_controllers_live(tmp_path):
    # C14: a tmpfs at the root means v1; a cgroup2 mount beside it makes
    # it hybrid, and controllers in v1 are never used from v2.  The fake
    # root is on /dev/shm, a tmpfs, so statfs answers as on a real host.
    shm = Path("/dev/shm")
    if libc.statfs(str(shm)) != libc.TMPFS_MAGIC:
        pytest.skip("/dev/shm is not a tmpfs here")
    root = Path(shutil.os.path.join(shm, f"runbox-test-{tmp_path.name}"))
    (root / "unified").mkdir(parents=True)
    try:
        (root / "unified/cgroup.controllers").write_text("memory hugetlb\n")
        mountinfo = "\n".join([
            f"32 31 0:29 / {root}/memory rw - cgroup cgroup rw,memory",
            f"33 31 0:30 / {root}/pids rw - cgroup cgroup rw,pids",
            f"34 31 0:31 / {root}/cpu,cpuacct rw - cgroup cgroup "
            "rw,cpu,cpuacct",
            f"41 31 0:38 / {root}/unified rw - cgroup2 cgroup2 rw",
            "50 20 0:40 / /elsewhere rw - cgroup cgroup rw,memory",
        ])
        lay = cgroups.detect(str(root), mountinfo)
        assert lay.mode == "hybrid"
        assert lay.v1_roots == {"memory": root / "memory",
                                "pids": root / "pids",
                                "cpu": root / "cpu,cpuacct"}
        assert lay.v2_controllers == {"hugetlb"}
        assert lay.version_of("memory") == 1
    finally:
        shutil.rmtree(root)


def test_unknown_filesystem_is_an_error(tmp_path):
    with pytest.raises(RunboxError) as caught:
        cgroups.detect(str(tmp_path))
    assert str(caught.value).startswith(f"no cgroup filesystem at {tmp_path}")
