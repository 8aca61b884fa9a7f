"""Helpers shared by the notebook-source tests and the built-book tests."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files() -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (the root first), in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


# --- what a reader must never see on a built page ---------------------------------------------
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.M)
_TABLE_RULE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
NAN_CELLS = {"nan", "<na>", "nat"}


class _TextScan(HTMLParser):
    """Collects the text of every <p> (outside <code>/<pre>) and of every table cell."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.cells: list[str] = []
        self._p: list[str] | None = None
        self._cell: list[str] | None = None
        self._code = 0

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            self._p = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("code", "pre"):
            self._code += 1

    def handle_endtag(self, tag):
        if tag == "p" and self._p is not None:
            self.paragraphs.append("".join(self._p))
            self._p = None
        elif tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("code", "pre"):
            self._code = max(0, self._code - 1)

    def handle_data(self, data):
        if self._p is not None and not self._code:
            self._p.append(data)
        if self._cell is not None:
            self._cell.append(data)


def page_problems(html: str) -> list[str]:
    """Raw Markdown tables inside a paragraph (text rows ``| a | b |`` or a ``|---|`` rule) and NaN table
    cells."""
    scan = _TextScan()
    scan.feed(html)
    out = []
    for text in scan.paragraphs:
        rows = _TABLE_ROW.findall(text)
        if _TABLE_RULE.search(text) or len(rows) >= 2:
            out.append(f"raw markdown table in a paragraph: {text.strip()[:120]!r}")
    out += [f"NaN table cell: {c!r}" for c in scan.cells if c.lower() in NAN_CELLS]
    return out
