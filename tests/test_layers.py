"""The library's layering, read from the source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` in ``awm_lib`` counts, including the ones
inside functions. The layers, lowest first (a module may import its own layer's
package and any lower layer, never a higher one; packages that share a layer do
not import each other)::

    foundation   awm_lib (the version), errors, paths, io_utils, config, device, optim
    data
    proposals
    model        (model.cost: the analytic token / FLOP accounting bench and the book use)
    features     cached RoI tokens from a frozen backbone
    losses
    train, pretrain        (siblings: both use the foundation's config parser, optimiser
                            groups, schedule and device choice, never each other)
    experiments, bench     (the ablation study; the throughput benchmark)
    book         figures, widgets, results tables: nothing below imports it
    cli          one module per command (may use the book)
    __main__     ``python -m awm_lib`` runs the cli

The same table is written in ``awm_lib/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import awm_lib

ROOT = Path(awm_lib.__file__).parent

# The layer of each top-level part of the library (a module ``awm_lib.X`` or a package ``awm_lib.X.*``).
LAYERS: dict[str, int] = {
    "": 0, "errors": 0, "paths": 0, "io_utils": 0, "config": 0, "device": 0, "optim": 0,
    "data": 1,
    "proposals": 2,
    "model": 3,
    "features": 4,
    "losses": 5,
    "train": 6, "pretrain": 6,
    "experiments": 7, "bench": 7,
    "book": 8,
    "cli": 9,
    "__main__": 10,
}


def module_files() -> dict[str, Path]:
    """``{"awm_lib.train.loop": path, "awm_lib.train": path/__init__.py, ...}``."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("awm_lib", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``awm_lib`` modules that ``name`` imports anywhere in its file (resolved, relative ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from awm_lib.train import loop`` imports the module awm_lib.train.loop
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for t in targets:
            if t == "awm_lib" or t.startswith("awm_lib."):
                while t not in known and "." in t:  # ``import awm_lib.x.y`` of a name, not a module
                    t = t.rpartition(".")[0]
                if t != name:
                    found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def part_of(module: str) -> str:
    """``awm_lib.train.loop`` -> ``train``; ``awm_lib`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_every_part_of_the_library_has_a_layer():
    parts = {part_of(m) for m in module_files()}
    assert parts - set(LAYERS) == set(), (
        "give the new module or package a layer in LAYERS (and awm_lib/__init__.py)"
    )


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_import_cycle_between_the_parts_of_the_library():
    parts: dict[str, set[str]] = {}
    for m, targets in import_graph().items():
        parts.setdefault(part_of(m), set()).update(part_of(t) for t in targets if part_of(t) != part_of(m))
    cycle = find_cycle(parts)
    assert cycle is None, " -> ".join(p or "awm_lib" for p in cycle or [])


def test_only_the_book_and_the_cli_import_the_book():
    offenders = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        for t in targets
        if part_of(t) == "book" and part_of(m) not in ("book", "cli")
    )
    assert offenders == [], "\n".join(offenders)


def test_no_import_goes_up_or_sideways_between_layers():
    offenders = sorted(
        f"{m} (layer {LAYERS[part_of(m)]}) imports {t} (layer {LAYERS[part_of(t)]})"
        for m, targets in import_graph().items()
        for t in targets
        if part_of(t) != part_of(m)
        and LAYERS.get(part_of(t), 99) >= LAYERS.get(part_of(m), -1)
        and not LAYERS.get(part_of(t))
        == LAYERS.get(part_of(m))
        == 0  # the foundation's modules use each other
    )
    assert offenders == [], "\n".join(offenders)


def test_library_imports_sit_at_the_top_of_each_module():
    """A module's dependencies are visible at its top. The CLI imports inside its functions, so that
    ``python -m awm_lib --help`` does not wait for torch; elsewhere an import inside a function needs a
    ``# lazy import: <why>`` comment on its line."""
    inside = []
    for name, path in module_files().items():
        if part_of(name) == "cli":
            continue
        src = path.read_text(encoding="utf-8")
        lines = src.splitlines()
        for fn in ast.walk(ast.parse(src)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and "awm_lib" in ast.unparse(node) \
                            and "# lazy import:" not in lines[node.lineno - 1]:
                        inside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert inside == [], "move these to the top of their module:\n" + "\n".join(inside)


def test_the_layer_table_is_the_one_the_library_documents():
    doc = awm_lib.__doc__
    for part in LAYERS:
        if part and not part.startswith("__"):
            assert part in doc, f"awm_lib/__init__.py does not place {part!r} in its layers"


def test_the_checker_sees_imports_inside_functions_relative_imports_and_cycles(tmp_path):
    (tmp_path / "pkg").mkdir()
    src = tmp_path / "pkg" / "a.py"
    src.write_text(
        "import os\n\ndef f():\n    from awm_lib.book import viz\n    from . import b\n    import "
        "awm_lib.train.loop\n"
    )
    known = {
        "awm_lib.book",
        "awm_lib.book.viz",
        "awm_lib.train",
        "awm_lib.train.loop",
        "awm_lib.pkg.b",
        "awm_lib.pkg.a",
    }
    assert imports_of("awm_lib.pkg.a", src, known) == {
        "awm_lib.book.viz",
        "awm_lib.pkg.b",
        "awm_lib.train.loop",
    }
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_covers_the_library():
    graph = import_graph()
    assert len(graph) > 80  # it really read the library
    assert "awm_lib.train.checkpoint" in graph["awm_lib.train.loop"]  # a plain top-level import
