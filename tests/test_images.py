"""Images: name rules, rootfs lookup, safe tarball import, busybox build."""

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
        " 'python3 -m runbox.images import TARBALL alpine'")


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
    ("bin/passwd", tarfile.LNKTYPE, "../../etc/passwd"),
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
    # No half-made image and no build leftovers, only its empty directory.
    assert tree(tmp_path) - before == {
        "state", "state/images", "state/images/evil"}
    assert images.list_images() == []


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
def test_import_bad_tarballs(root, tmp_path):
    missing = tmp_path / "missing.tar"
    with pytest.raises(RunboxError) as err:
        images.import_tarball(missing, "x")
    assert str(err.value) == f"tarball {missing} does not exist"
    (tmp_path / "junk.tar").write_bytes(b"not a tar archive\n" * 100)
    with pytest.raises(RunboxError) as err:
        images.import_tarball(tmp_path / "junk.tar", "x")
    assert str(err.value).startswith(
        f"{tmp_path / 'junk.tar'} is not a readable tar archive: ")
    assert err.value.exit_code == 125


def test_import_bad_name(root, tmp_path):
    with pytest.raises(RunboxError, match="^invalid image name 'A'"):
        images.import_tarball(tmp_path / "x.tar", "A")


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
    assert os.listdir(root / "images/busybox") == []


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
