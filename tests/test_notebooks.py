"""The chapter notebooks as sources: one `parameters` cell, no outputs in git, no library
code, listed in the table of contents, a parameter profile for every build, figures with
captions and alt text, citations that exist. Executing them is the book build's job
(`make book`, checked by `make test-book`); one fast chapter is executed here too, to prove
the papermill path end to end."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from book_helpers import toc_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
MAX_CELL_LINES = 15  # cells stay short: helpers live in awm_lib

# code that belongs in the library, never in a chapter
LIBRARY_CODE = [
    (re.compile(r"\bclass\s+\w+\s*\([^)]*\bModule\b"), "defines an nn.Module"),
    (
        re.compile(r"^\s*def\s+(train|fit|forward|\w*loss\w*|\w*_step)\s*\(", re.M),
        "defines a training function/loss",
    ),
    (re.compile(r"\.backward\s*\("), "runs backpropagation"),
    (re.compile(r"\boptimizer\.step\s*\(|\bopt\.step\s*\("), "steps an optimizer"),
    (re.compile(r"^\s*for\s+\w+\s+in\s+.*(loader|epochs?)\b", re.M), "loops over epochs/batches"),
]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_with_one_parameters_cell_first(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    params = _parameters_cell(nb)
    assert params.cell_type == "code"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is params, "the parameters cell must be the first code cell"
    assert _assigned_names(params.source), "the parameters cell assigns no parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path):
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    assert "widgets" not in _read(path).metadata, "widget state belongs to the executed copy only"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_defines_no_library_code_and_cells_stay_short(path):
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        for pattern, what in LIBRARY_CODE:
            assert not pattern.search(cell.source), f"cell {i} {what}: move it into awm_lib"
        n_lines = len(cell.source.strip().splitlines())
        assert n_lines <= MAX_CELL_LINES, (
            f"cell {i} has {n_lines} lines (at most {MAX_CELL_LINES}): move code to awm_lib"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_figures_have_captions_and_alt_text(path):
    for i, cell in enumerate(_read(path).cells):
        meta = cell.get("metadata", {}).get("mystnb", {})
        if "figure" in meta or "image" in meta:
            assert meta.get("figure", {}).get("caption", "").strip(), f"cell {i}: figure without caption"
            assert meta.get("figure", {}).get("name", "").strip(), f"cell {i}: figure without a name"
            assert len(meta.get("image", {}).get("alt", "").strip()) >= 20, (
                f"cell {i}: figure without alt text"
            )
            # a figure cell must output only its figure: a trailing expression (the returned
            # Axes) would become a second output under the same figure name, and -W fails
            last = ast.parse(cell.source).body[-1]
            assert not isinstance(last, ast.Expr) or cell.source.rstrip().endswith(";"), (
                f"cell {i}: end the figure cell with ';' so only the figure is shown"
            )


def test_library_code_patterns_catch_what_they_should():
    bad = ["class Net(nn.Module):\n    pass", "def train(model):\n    pass", "loss.backward()",
           "def contrastive_loss(z):\n    pass", "for epoch in range(epochs):\n    pass"]
    good = ["viz.plot_curves(x, {'a': y})", "result = train.fit_or_load(cfg)", "model = build_model(cfg)"]
    for src in bad:
        assert any(p.search(src) for p, _ in LIBRARY_CODE), src
    for src in good:
        assert not any(p.search(src) for p, _ in LIBRARY_CODE), src


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    files = toc_files()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in files, f"{path.name} is not listed in _toc.yml"
    for f in files:
        candidates = [ROOT / f, ROOT / f"{f}.md", ROOT / f"{f}.ipynb"]
        assert any(c.is_file() for c in candidates), f"_toc.yml lists {f}, which does not exist"
    assert len(files) == len(set(files)), "a file is listed twice in _toc.yml"


def test_every_notebook_has_a_profile_entry_with_known_parameters():
    table = yaml.safe_load((ROOT / "notebooks" / "profiles.yml").read_text())
    assert {"cpu", "gpu"} <= set(table), "profiles.yml needs the cpu and gpu profiles"
    for profile, entries in table.items():
        entries = entries or {}
        for path in NOTEBOOKS:
            assert path.stem in entries, f"profile {profile!r} has no entry for {path.stem}"
            known = _assigned_names(_parameters_cell(_read(path)).source)
            unknown = set(entries[path.stem] or {}) - known
            assert not unknown, (
                f"profile {profile!r} sets {sorted(unknown)} not in {path.stem}'s parameters cell"
            )
        stale = set(entries) - set(IDS)
        assert not stale, f"profile {profile!r} names notebooks that do not exist: {sorted(stale)}"


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))
    texts = [p.read_text() for p in (ROOT / "book").glob("*.md")]
    texts += ["\n".join(c.source for c in _read(p).cells if c.cell_type == "markdown") for p in NOTEBOOKS]
    cited = set()
    for text in texts:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            cited |= {k.strip() for k in group.split(",")}
    assert cited, "no citations found at all"
    assert not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"


@pytest.mark.slow
def test_cost_chapter_runs_under_papermill_with_the_cpu_profile(tmp_path):
    """The real execution path of `make book`, on the (analytic, fast) cost chapter."""
    src = ROOT / "notebooks" / "02_tokenization_cost.ipynb"
    out = tmp_path / "02_tokenization_cost.ipynb"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebook.py"), str(src), str(out),
                           "--profile", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "backbone" in "".join(injected[0]["source"])
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # the chapter's figures
    text = "".join("".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "50201" in text  # the full mammogram's token count, computed in the chapter
