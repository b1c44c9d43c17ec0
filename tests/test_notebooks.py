"""The notebooks: each one runs top to bottom in a fresh kernel.

A notebook asserts what it shows (PID 1, the limits in the cgroup files,
the capability sets), so one that runs to its end still tells the truth.
Each runs in a kernel started from this interpreter, through a kernelspec
written for the test, so that whatever Jupyter setup the host has is not
used; the kernel's runtime files, IPython's profile and its temporary files
go to the test's own directories, and the containers' state to the test's
RUNBOX_ROOT, where the conftest checks that nothing is left.
"""

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, STAGES, needs_root

NOTEBOOKS = REPO / "notebooks"
KERNEL = "runbox-test"
# A cell may build the escape lab or run a container for a few seconds;
# none should take anywhere near this long.
CELL_TIMEOUT = 120


def notebook_paths():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_one_notebook_per_stage():
    assert [p.stem for p in notebook_paths()] == [
        s.name for s in STAGES.values()]


def test_notebooks_are_built_from_their_sources():
    result = subprocess.run([sys.executable, NOTEBOOKS / "build.py",
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.fixture
def kernel(tmp_path, monkeypatch, state_root, image_root):
    """A kernelspec for this interpreter, and the kernel's directories.

    Yields the kernel's TMPDIR, which the notebook must leave empty.  The
    images are the host's (read only); the containers' state is the test's.
    """
    pytest.importorskip("nbclient", reason="needs the notebooks extra: "
                        "pip install -e '.[notebooks]' (make venv does)")
    spec = tmp_path / "jupyter/kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": "runbox tests", "language": "python"}))
    for name, path in [("JUPYTER_PATH", tmp_path / "jupyter"),
                       ("JUPYTER_RUNTIME_DIR", tmp_path / "runtime"),
                       ("IPYTHONDIR", tmp_path / "ipython"),
                       ("TMPDIR", tmp_path / "tmp")]:
        path.mkdir(exist_ok=True)
        monkeypatch.setenv(name, str(path))
    (state_root / "images").symlink_to(image_root.parent.parent)
    yield tmp_path / "tmp"


@needs_root
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs(path, kernel):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as exc:
        # The kernel colours its tracebacks; a test log wants plain text.
        failure = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if failure:
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
    assert list(kernel.iterdir()) == [], "the notebook left temporary files"
