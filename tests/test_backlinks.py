"""Back-links from the library to the book (as d2l does): a docstring names the chapter that explains it.

A back-link reads ``Explained in the book: chapter N, *Title* (``notebooks/NN_name.ipynb``).``
This test keeps each one true: the notebook exists, its number is N and its title is Title,
and every chapter is named by at least one library function.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import awm_lib

ROOT = Path(awm_lib.__file__).parent
NOTEBOOKS = ROOT.parent / "notebooks"
# (a docstring may wrap the line anywhere)
LINK = re.compile(
    r"Explained\s+in\s+the\s+book:\s+chapter\s+(\d+),\s+\*(.+?)\*\s+\(``notebooks/(\S+?\.ipynb)``\)\.", re.S
)


def _title(notebook: Path) -> str:
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown" and (m := re.search(r"^# (.+)$", "".join(cell["source"]), re.M)):
            return m.group(1).strip()
    return ""


def _links() -> list[tuple[str, int, str, str]]:
    return [
        (str(p.relative_to(ROOT)), int(n), " ".join(title.split()), nb)
        for p in sorted(ROOT.rglob("*.py"))
        for n, title, nb in LINK.findall(p.read_text(encoding="utf-8"))
    ]


def test_every_back_link_names_a_real_chapter_by_its_number_and_title():
    links = _links()
    assert len(links) >= 20
    for where, n, title, nb in links:
        path = NOTEBOOKS / nb
        assert path.is_file(), f"{where}: no {path}"
        assert nb.startswith(f"{n:02d}_"), f"{where}: chapter {n} is not {nb}"
        assert title == _title(path).split(":")[0].strip(), (
            f"{where}: {nb} is titled {_title(path)!r}, not {title!r}"
        )


def test_every_chapter_is_named_by_the_library():
    named = {nb for _, _, _, nb in _links()}
    assert named == {p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
