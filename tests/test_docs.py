"""The READMEs show make's real output: its error lines name the Makefile
line of each stage's recipe, which moves whenever the Makefile changes."""

import re
from pathlib import Path

from conftest import REPO

DOCS = [REPO / "README.md", *sorted(REPO.glob("stages/*/README.md"))]


def recipe_lines() -> dict[str, int]:
    """stageN: the line of its recipe, as make reports it."""
    lines = (REPO / "Makefile").read_text().splitlines()
    found = {}
    for i, line in enumerate(lines):
        m = re.match(r"(stage\d):", line)
        if m:
            found[m.group(1)] = i + 2  # the recipe is the next line
    return found


def test_make_error_lines_in_the_docs_are_real():
    real = recipe_lines()
    quoted = []
    for doc in DOCS:
        for m in re.finditer(r"Makefile:(\d+): (stage\d)", doc.read_text()):
            quoted.append((Path(doc).relative_to(REPO), m.group(2),
                           int(m.group(1))))
    assert quoted
    wrong = [q for q in quoted if real[q[1]] != q[2]]
    assert wrong == [], f"make reports {real}"
