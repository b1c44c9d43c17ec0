"""Images: name rules, rootfs lookup, safe tarball import, busybox build."""

import builtins
import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from runbox import images
from runbox.errors import RunboxError

REPO = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: chroot(2) and keeping archive owners")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh state root, so no test touches /var/lib/runbox."""
    state = tmp_path / "state"
    monkeypatch.setenv("RUNBOX_ROOT", str(state))
    return state


def tree(top: Path) -> set[str]:
    """Every path under top, links not followed."""
    return {str(p.relative_to(top)) for p in top.rglob("*")}


# -- names and lookup -------------------------------------------------------

@pytest.mark.parametrize("name", ["busybox", "alpine3.19", "my_img-1", "0"])
def test_valid_names(name):
    assert images.validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Busybox", "-x", ".hidden", "a b", "..", "a/b", "x" * 129])
def test_invalid_names(name):
    with pytest.raises(RunboxError) as err:
        images.validate_name(name)
    assert str(err.value).startswith(f"invalid image name {name!r}: ")
    assert err.value.exit_code == 125


def test_default_image_missing(root):
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs(None)
    assert str(err.value) == (
        f"rootfs 'busybox' not found in {root / 'images'}:"
        " run 'make rootfs' to build it")
    assert err.value.exit_code == 125


def test_other_image_missing(root):
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs("alpine")
    assert str(err.value) == (
        f"rootfs 'alpine' not found in {root / 'images'}: import it with"
        " 'runbox import TARBALL alpine'")


def test_image_by_name(root):
    rootfs = root / "images" / "busybox" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    assert images.resolve_rootfs(None) == rootfs
    assert images.resolve_rootfs("busybox") == rootfs
    assert images.list_images() == [("busybox", rootfs)]


def test_directory_missing(root, tmp_path):
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs(str(tmp_path / "x" / "y"))
    assert str(err.value) == f"rootfs {tmp_path / 'x' / 'y'} does not exist"
    assert err.value.exit_code == 125


def test_directory_is_a_file(root, tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs(str(tmp_path / "f"))
    assert str(err.value) == f"rootfs {tmp_path / 'f'} is not a directory"


def test_directory_without_bin_or_usr(root, tmp_path):
    (tmp_path / "img" / "rootfs" / "usr").mkdir(parents=True)
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs(str(tmp_path / "img"))
    assert str(err.value) == (
        f"rootfs {tmp_path / 'img'} has no bin or usr directory, so it is"
        f" not a root filesystem; did you mean {tmp_path / 'img/rootfs'}?")


def test_relative_directory(root, tmp_path, monkeypatch):
    (tmp_path / "mine" / "bin").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    # With a slash it is a path; without one it names an image, even when
    # a directory of that name is here, so it can never shadow an image.
    assert images.resolve_rootfs("./mine/") == tmp_path / "mine"
    with pytest.raises(RunboxError) as caught:
        images.resolve_rootfs("mine")
    assert str(caught.value).startswith("rootfs 'mine' not found in")


@pytest.mark.parametrize("given", ["/", "/..", "/./", "link"])
def test_host_root_refused(root, tmp_path, monkeypatch, given):
    # / has bin and usr like any rootfs; only its identity gives it away,
    # however it is spelled.
    (tmp_path / "link").symlink_to("/")
    monkeypatch.chdir(tmp_path)
    rootfs = "./link" if given == "link" else given
    with pytest.raises(RunboxError) as err:
        images.resolve_rootfs(rootfs)
    assert str(err.value) == (
        f"rootfs {Path(rootfs).absolute()} is the host's own root: give an"
        " image or a rootfs directory")
    assert err.value.exit_code == 125


# -- tarball import ---------------------------------------------------------

def add(tar, name, kind=tarfile.REGTYPE, data=b"", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE
                          else 0o644)
    for key, value in attrs.items():
        setattr(info, key, value)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.fixture
def token():
    """A unique file name, so a check on the host's / proves something.

    Were extraction to follow the archive's links on the host, it would
    write this name into /usr/lib or /; the file is removed and the test
    fails.
    """
    name = f"runbox-test-{uuid.uuid4().hex}"
    yield name
    leaks = [p for p in (Path("/usr/lib", name), Path("/", name))
             if os.path.lexists(p)]
    for path in leaks:
        path.unlink()
    assert leaks == [], "the import wrote outside the image"


def good_tarball(path: Path, token: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "./", tarfile.DIRTYPE)
        add(tar, "usr", tarfile.DIRTYPE)
        add(tar, "usr/lib", tarfile.DIRTYPE)
        add(tar, "bin", tarfile.DIRTYPE)
        add(tar, "bin/tool", data=b"#!/bin/sh\n", mode=0o755)
        add(tar, "bin/su", data=b"setuid", mode=0o4755, uid=0, gid=0)
        add(tar, "home/user/notes", data=b"hi\n", mode=0o600,
            uid=1234, gid=4321, uname="nosuchuser", gname="nosuchgroup")
        # Merged-/usr style: an absolute symlink, then a member through it.
        add(tar, "lib", tarfile.SYMTYPE, linkname="/usr/lib")
        add(tar, f"lib/{token}", data=b"lib\n")
        add(tar, f"/{token}", data=b"absolute\n")
        add(tar, "bin/tool2", tarfile.LNKTYPE, linkname="/bin/tool")
        add(tar, "dev", tarfile.DIRTYPE)
        add(tar, "dev/null", tarfile.CHRTYPE, mode=0o666,
            devmajor=1, devminor=3)
    return path


@needs_root
def test_import(root, tmp_path, token):
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    before = tree(tmp_path)
    rootfs = images.import_tarball(tarball, "good")
    for host in (Path("/usr/lib", token), Path("/", token)):
        assert not os.path.lexists(host)
    assert rootfs == root / "images/good/rootfs"

    # Nothing outside the rootfs but the image's source record.
    outside = {p for p in tree(tmp_path) - before
               if not p.startswith("state/images/good/rootfs")}
    assert outside == {"state", "state/images", "state/images/good",
                       "state/images/good/source"}

    su = os.stat(rootfs / "bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755
    notes = os.stat(rootfs / "home/user/notes")
    assert (notes.st_uid, notes.st_gid) == (1234, 4321)
    assert stat.S_IMODE(notes.st_mode) == 0o600
    assert os.readlink(rootfs / "lib") == "/usr/lib"
    assert (rootfs / "usr/lib" / token).read_text() == "lib\n"
    assert (rootfs / token).read_text() == "absolute\n"
    assert os.stat(rootfs / "bin/tool2").st_ino == \
        os.stat(rootfs / "bin/tool").st_ino
    assert os.listdir(rootfs / "dev") == []
    assert (root / "images/good/source").read_text() == \
        f"Imported-From: {tarball}\n"
    assert images.resolve_rootfs("good") == rootfs


@needs_root
@pytest.mark.parametrize("member, kind, linkname", [
    ("../escape", tarfile.REGTYPE, ""),
    ("bin/../../escape", tarfile.REGTYPE, ""),
    ("/../escape", tarfile.REGTYPE, ""),
    ("bin/passwd", tarfile.LNKTYPE, "../../etc/passwd"),
    ("bin/shadow", tarfile.LNKTYPE, "/../etc/shadow"),
])
def test_import_refuses_escapes(root, tmp_path, member, kind, linkname):
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as tar:
        add(tar, "bin", tarfile.DIRTYPE)
        add(tar, member, kind, data=b"evil\n", linkname=linkname)
    before = tree(tmp_path)
    with pytest.raises(RunboxError) as err:
        images.import_tarball(tarball, "evil")
    assert str(err.value) == (
        f"importing {tarball}: member {member!r} points outside the image;"
        " refusing the archive")
    # No half-made image, no build leftovers, no empty image directory.
    assert tree(tmp_path) - before == {"state", "state/images"}
    assert images.list_images() == []


REG, DIR, SYM, LNK = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                      tarfile.LNKTYPE)


@needs_root
@pytest.mark.parametrize("members, reason", [
    ([("lnk", SYM, "/nonexistent"), ("lnk/x", REG, "")],
     "member 'lnk/x' goes through the link 'lnk' (to '/nonexistent'),"
     " which leads to no directory"),
    ([("etc", DIR, ""), ("etc/hostname", REG, ""),
      ("lnk", SYM, "/etc/hostname"), ("lnk/x", REG, "")],
     "member 'lnk/x' goes through the link 'lnk' (to '/etc/hostname'),"
     " which leads to no directory"),
    ([("f", REG, ""), ("f/x", REG, "")],
     "member 'f/x' goes through 'f', which is not a directory"),
    ([("x", LNK, "etc/hostname")],
     "hard link 'x' points to 'etc/hostname', which the archive has not"
     " created"),
    ([("a", LNK, "b"), ("b", REG, "")],
     "hard link 'a' points to 'b', which the archive has not created"),
    ([("x", LNK, "bin")],
     "hard link 'x' points to the directory 'bin'"),
    ([("bin", SYM, "/usr/bin")],
     "member 'bin' would replace the directory 'bin'"),
], ids=["dangling-link", "link-to-file", "through-file", "hard-link-absent",
        "hard-link-forward", "hard-link-to-dir", "dir-replaced"])
def test_import_refusals_name_member_and_reason(root, tmp_path, members,
                                                reason):
    tarball = tmp_path / "odd.tar"
    with tarfile.open(tarball, "w") as tar:
        add(tar, "bin", DIR)
        for name, kind, linkname in members:
            add(tar, name, kind, linkname=linkname)
    with pytest.raises(RunboxError) as err:
        images.import_tarball(tarball, "odd")
    assert str(err.value) == (
        f"importing {tarball}: {reason}; refusing the archive")
    assert not (root / "images/odd").exists()


@needs_root
def test_import_later_member_replaces_earlier(root, tmp_path):
    tarball = tmp_path / "dup.tar"
    with tarfile.open(tarball, "w") as tar:
        add(tar, "bin", DIR)
        add(tar, "etc", DIR)
        add(tar, "etc/hostname", data=b"image\n")
        # Written through, the link would rewrite etc/hostname.
        add(tar, "hosts", SYM, linkname="/etc/hostname")
        add(tar, "hosts", data=b"file\n")
        # Truncated in place, the file would change under its hard link.
        add(tar, "bin/tool", data=b"tool\n")
        add(tar, "bin/tool2", LNK, linkname="bin/tool")
        add(tar, "bin/tool2", data=b"other\n")
        add(tar, "bin/tool", LNK, linkname="./bin/tool")
        add(tar, "opt", SYM, linkname="/etc")
        add(tar, "opt", DIR, mode=0o750)
        # A hard link to a symlink is a second name for the link itself.
        add(tar, "sh", SYM, linkname="/bin/tool")
        add(tar, "sh2", LNK, linkname="sh")
    rootfs = images.import_tarball(tarball, "dup")
    assert (rootfs / "etc/hostname").read_text() == "image\n"
    assert (rootfs / "hosts").read_text() == "file\n"
    assert not (rootfs / "hosts").is_symlink()
    assert (rootfs / "bin/tool").read_text() == "tool\n"
    assert (rootfs / "bin/tool2").read_text() == "other\n"
    opt = os.lstat(rootfs / "opt")
    assert stat.S_ISDIR(opt.st_mode) and stat.S_IMODE(opt.st_mode) == 0o750
    assert os.readlink(rootfs / "sh2") == "/bin/tool"
    assert os.lstat(rootfs / "sh2").st_ino == os.lstat(rootfs / "sh").st_ino


@needs_root
def test_import_force_replaces(root, tmp_path, token):
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    first = images.import_tarball(tarball, "img")
    (first / "marker").write_text("")
    with pytest.raises(RunboxError, match="already exists.*--force"):
        images.import_tarball(tarball, "img")
    assert images.import_tarball(tarball, "img", force=True) == first
    assert not (first / "marker").exists()
    assert sorted(os.listdir(root / "images/img")) == ["rootfs", "source"]


@needs_root
def test_import_not_a_rootfs(root, tmp_path):
    tarball = tmp_path / "src.tar"
    with tarfile.open(tarball, "w") as tar:
        add(tar, "README", data=b"source code\n")
    with pytest.raises(RunboxError) as err:
        images.import_tarball(tarball, "src")
    assert str(err.value) == (
        f"{tarball} holds no bin or usr directory, so it is not a root"
        " filesystem")
    assert images.list_images() == []


@needs_root
@pytest.mark.parametrize("data, reason", [
    (None, "does not exist"),
    (b"", "not a tar archive (empty file)"),
    (b"not a tar archive\n" * 100, "not a tar archive (invalid header)"),
    (gzip.compress(b"source code\n" * 100),
     "not a tar archive (invalid header)"),
    (b"\x1f\x8b and then no gzip", "not a tar archive (not a gzip file)"),
    ("dir", "Is a directory"),
], ids=["missing", "empty", "text", "gzip-of-text", "bad-gzip", "directory"])
def test_import_bad_tarballs(root, tmp_path, data, reason):
    tarball = tmp_path / "bad.tar"
    if data == "dir":
        tarball.mkdir()
    elif data is not None:
        tarball.write_bytes(data)
    with pytest.raises(RunboxError) as err:
        images.import_tarball(tarball, "x")
    if data is None:
        assert str(err.value) == f"tarball {tarball} does not exist"
    else:
        assert str(err.value) == f"importing {tarball}: {reason}"
    assert err.value.exit_code == 125
    assert not (root / "images/x").exists()


def test_import_bad_name(root, tmp_path):
    with pytest.raises(RunboxError, match="^invalid image name 'A'"):
        images.import_tarball(tmp_path / "x.tar", "A")


@needs_root
@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_import_passes_no_deprecated_default(root, tmp_path, token):
    # Python 3.12 and 3.13 warn when extractall() gets no filter; the
    # forked extracting child inherits this test's filters, so a warning
    # there fails the import.
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    rootfs = images.import_tarball(tarball, "good")
    assert stat.S_IMODE(os.stat(rootfs / "bin/su").st_mode) == 0o4755


# What Python 3.11.0 to 3.11.3 lack: tarfile's extraction filters.
FILTER_NAMES = [
    "FilterError", "AbsolutePathError", "OutsideDestinationError",
    "SpecialFileError", "AbsoluteLinkError", "LinkOutsideDestinationError",
    "fully_trusted_filter", "tar_filter", "data_filter"]

OLD_TARFILE = f"""
import sys, tarfile
from pathlib import Path
real = tarfile.TarFile.extractall
def extractall(self, path=".", members=None, *, numeric_owner=False):
    # 3.11.2's signature; its extraction trusts every member.
    return real(self, path, members, numeric_owner=numeric_owner,
                filter="fully_trusted")
tarfile.TarFile.extractall = extractall
for name in {FILTER_NAMES!r}:
    delattr(tarfile, name)
from runbox import images
print(images.import_tarball(Path(sys.argv[1]), "old"))
"""


@needs_root
@pytest.mark.skipif(not hasattr(tarfile, "fully_trusted_filter"),
                    reason="this Python has no tar filters: every import"
                    " test already runs without them")
def test_import_on_python_without_tar_filters(root, tmp_path, token):
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    proc = subprocess.run(
        [sys.executable, "-c", OLD_TARFILE, str(tarball)], cwd=REPO,
        capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(root)})
    assert proc.stderr == ""
    rootfs = root / "images/old/rootfs"
    assert proc.stdout == f"{rootfs}\n"
    assert stat.S_IMODE(os.stat(rootfs / "bin/su").st_mode) == 0o4755


SYSTEM_PYTHON = Path("/usr/bin/python3")


@needs_root
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3")
def test_import_with_system_python(root, tmp_path, token):
    # The distribution's own interpreter, often older than the venv's:
    # Debian 12 has 3.11.2, which has no tar filters.  runbox.images
    # needs nothing outside the standard library.
    recent = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"
         ], capture_output=True, text=True, check=True).stdout
    if recent != "True\n":
        pytest.skip("/usr/bin/python3 is older than 3.11")
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-m", "runbox.images", "import", str(tarball),
         "sys"], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(root), "PYTHONPATH": str(REPO)})
    assert proc.stderr == ""
    rootfs = root / "images/sys/rootfs"
    assert proc.stdout == f"{rootfs}\n"
    assert stat.S_IMODE(os.stat(rootfs / "bin/su").st_mode) == 0o4755
    assert os.stat(rootfs / "bin/tool2").st_ino == \
        os.stat(rootfs / "bin/tool").st_ino


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def leftovers(image: Path) -> dict[str, Path]:
    """Work directories of a dead build, a live one and an old version."""
    made = {"dead": image / f".build-{dead_pid()}-abcd1234",
            "dead-import": image / f".import-{dead_pid()}-abcd1234",
            "old-version": image / ".build-x1y2z3_4",
            "live": image / f".import-{os.getpid()}-abcd1234"}
    for path in made.values():
        (path / "rootfs/bin").mkdir(parents=True)
    return made


@needs_root
def test_import_removes_dead_builds_leftovers(root, tmp_path, token):
    image = root / "images/good"
    made = leftovers(image)
    images.import_tarball(good_tarball(tmp_path / "good.tar.gz", token),
                          "good")
    assert sorted(os.listdir(image)) == [
        made["live"].name, "rootfs", "source"]


@needs_root
def test_interrupted_import_leaves_nothing(root, tmp_path, token,
                                           monkeypatch):
    # Ctrl-C while the child extracts: the child is killed and reaped
    # before its directory is removed.
    children = []

    def fork():
        pid = real_fork()
        children.append(pid)
        return pid

    def interrupted(file, *args, **kwargs):
        opened = builtins.open(file, *args, **kwargs)
        if isinstance(file, int):  # the pipe from the extracting child
            opened.close()
            raise KeyboardInterrupt
        return opened

    real_fork = os.fork
    monkeypatch.setattr(os, "fork", fork)
    from runbox import tarimport

    monkeypatch.setattr(tarimport, "open", interrupted, raising=False)
    tarball = good_tarball(tmp_path / "good.tar.gz", token)
    with pytest.raises(KeyboardInterrupt):
        images.import_tarball(tarball, "good")
    assert os.listdir(root / "images") == []
    assert len(children) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(children[0], os.WNOHANG)


def test_remove_image(root):
    (root / "images/a/rootfs/bin").mkdir(parents=True)
    (root / "images/b/rootfs/bin").mkdir(parents=True)
    images.remove_image("a")
    assert [name for name, _ in images.list_images()] == ["b"]
    assert sorted(os.listdir(root / "images")) == ["b"]
    with pytest.raises(RunboxError) as err:
        images.remove_image("a")
    assert str(err.value) == f"image 'a' not found in {root / 'images'}"


# -- busybox ----------------------------------------------------------------

def test_busybox_needs_apt(root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunboxError) as err:
        images.build_busybox()
    assert str(err.value).startswith(
        "building the busybox rootfs needs apt-get (a Debian or Ubuntu host)")


def test_busybox_download_retries_after_update(root, tmp_path, monkeypatch):
    # A stand-in apt-get that always fails to find the package, as on a
    # host without package lists, and records what it was asked.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "apt-get").write_text(
        "#!/bin/sh\n"
        f"echo \"$1\" >> {tmp_path}/calls\n"
        "[ \"$1\" = update ] && exit 0\n"
        "echo 'E: Unable to locate package busybox-static' >&2\n"
        "exit 100\n")
    (fake / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(RunboxError) as err:
        images.build_busybox()
    assert str(err.value) == ("apt-get download failed: E: Unable to locate"
                              " package busybox-static")
    assert (tmp_path / "calls").read_text() == "download\nupdate\ndownload\n"
    assert not (root / "images/busybox").exists()


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """apt-get and dpkg-deb that exist and would fail if ever run."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for tool in ("apt-get", "dpkg-deb"):
        (fake / tool).write_text("#!/bin/sh\nexit 100\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))


def test_interrupted_busybox_build_leaves_nothing(root, fake_apt,
                                                  monkeypatch):
    def interrupted(work):
        (work / "busybox.deb").write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(images, "_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        images.build_busybox()
    assert os.listdir(root / "images") == []


def test_busybox_build_removes_dead_builds_leftovers(root, fake_apt):
    image = root / "images/busybox"
    made = leftovers(image)
    with pytest.raises(RunboxError, match="^apt-get update failed"):
        images.build_busybox()
    # The failed build removed its own work; the live build keeps its.
    assert os.listdir(image) == [made["live"].name]


def test_existing_busybox_removes_dead_builds_leftovers(root, fake_apt):
    # A build killed after another had finished: the next build finds
    # the image there and has only the sweeping to do.
    image = root / "images/busybox"
    (image / "rootfs/bin").mkdir(parents=True)
    made = leftovers(image)
    assert images.build_busybox() == image / "rootfs"
    assert sorted(os.listdir(image)) == [made["live"].name, "rootfs"]


@pytest.mark.skipif(shutil.which("apt-get") is None,
                    reason="needs apt-get to download busybox-static")
@needs_root
def test_build_busybox(root):
    rootfs = images.build_busybox()
    assert rootfs == root / "images/busybox/rootfs"
    assert os.access(rootfs / "bin/busybox", os.X_OK)
    assert os.readlink(rootfs / "bin/sh") == "/bin/busybox"
    assert os.readlink(rootfs / "usr/bin/wc") == "/bin/busybox"
    assert (rootfs / "etc/passwd").read_text().splitlines() == [
        "root:x:0:0:root:/root:/bin/sh",
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"]
    for name in ("hostname", "hosts", "resolv.conf", "group"):
        assert (rootfs / "etc" / name).is_file()
    assert stat.S_IMODE(os.stat(rootfs / "tmp").st_mode) == 0o1777
    source = (root / "images/busybox/source").read_text()
    assert source.startswith("Package: busybox-static\nVersion: ")

    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "echo ok"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n"

    # A second call finds the image and leaves it alone.
    mtime = os.stat(rootfs).st_mtime_ns
    assert images.build_busybox() == rootfs
    assert os.stat(rootfs).st_mtime_ns == mtime
    assert sorted(os.listdir(root / "images/busybox")) == ["rootfs", "source"]


# -- command line -----------------------------------------------------------

def test_cli_list(root, capsys):
    (root / "images/one/rootfs/usr").mkdir(parents=True)
    assert images.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out == f"{'one':<20} {root / 'images/one/rootfs'}\n"


def test_cli_error_is_one_line(root):
    proc = subprocess.run(
        [sys.executable, "-m", "runbox.images", "import", "/nonexistent.tar",
         "Bad"], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(root)})
    assert proc.returncode == 125
    assert proc.stdout == ""
    assert proc.stderr.startswith("runbox: invalid image name 'Bad': ")
    assert proc.stderr.count("\n") == 1


def test_cli_bad_usage_exits_125(root, capsys):
    assert images.main(["frobnicate"]) == 125
    err = capsys.readouterr().err
    assert err.startswith("usage: ")
    assert err.splitlines()[-1].startswith("runbox: argument command: ")


@needs_root
def test_cli_not_a_tarball_is_one_line(root, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a tar archive\n" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "runbox.images", "import", str(junk), "x"],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "RUNBOX_ROOT": str(root)})
    assert proc.returncode == 125
    assert proc.stdout == ""
    assert proc.stderr == (
        f"runbox: importing {junk}: not a tar archive (invalid header)\n")
