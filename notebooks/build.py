"""Build the notebooks from their sources, notebooks/src/NN_name.py.

A source is Python in the "percent" format that editors such as VS Code,
PyCharm and jupytext read as cells:

    # %% [markdown]     a markdown cell; each line is a comment, "# " cut
    # %%                a code cell
    # %% [answer]       the answer to an exercise: a code cell that
                        JupyterLab shows collapsed, so a reader tries first

The sources are what a reviewer reads and what a change is made in; the
.ipynb files are made from them, with no outputs, for Jupyter to open and
for the tests to run.  The cell ids are the cells' numbers, so a rebuild
changes only what the source changed.

    python notebooks/build.py           write every notebook
    python notebooks/build.py --check   exit 1 if a notebook's cells are
                                        not its source's (outputs are not
                                        compared: running one is fine)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
MARKER = "# %%"

METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)",
                   "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def parse(text: str) -> list[tuple[str, str]]:
    """The (kind, source) of each cell: kind is code, markdown or answer."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(MARKER):
            kind = line[len(MARKER):].strip().strip("[]") or "code"
            if kind not in ("code", "markdown", "answer"):
                raise ValueError(f"unknown cell kind {line!r}")
            cells.append((kind, []))
        elif cells:
            if cells[-1][0] == "markdown" and line.startswith("#"):
                line = line[2:] if line.startswith("# ") else line[1:]
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first cell: {line!r}")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def cell(number: int, kind: str, source: str) -> dict:
    lines = source.splitlines(keepends=True)
    if kind == "markdown":
        return {"cell_type": "markdown", "id": f"cell-{number:02d}",
                "metadata": {}, "source": lines}
    metadata: dict = {}
    if kind == "answer":
        metadata = {"jupyter": {"source_hidden": True}, "tags": ["answer"]}
    return {"cell_type": "code", "execution_count": None,
            "id": f"cell-{number:02d}", "metadata": metadata,
            "outputs": [], "source": lines}


def notebook(source: Path) -> dict:
    cells = [cell(i, kind, text)
             for i, (kind, text) in enumerate(parse(source.read_text()), 1)]
    return {"cells": cells, "metadata": METADATA, "nbformat": 4,
            "nbformat_minor": 5}


def dumps(nb: dict) -> str:
    """As nbformat writes a notebook, so that Jupyter's saves diff small."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def target(source: Path) -> Path:
    return HERE / f"{source.stem}.ipynb"


def cells_of(nb: dict) -> list[tuple[str, str]]:
    """What --check compares: each cell's type and text."""
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def stale() -> list[Path]:
    """The notebooks whose cells differ from their sources'."""
    found = []
    for source in sorted(SOURCES.glob("*.py")):
        path = target(source)
        if not path.exists() or cells_of(json.loads(path.read_text())) \
                != cells_of(notebook(source)):
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = stale()
        for path in found:
            print(f"{path.relative_to(HERE.parent)} differs from its "
                  "source: run python notebooks/build.py", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    for source in sorted(SOURCES.glob("*.py")):
        target(source).write_text(dumps(notebook(source)))
        print(target(source).relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
