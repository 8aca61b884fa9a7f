"""The conda environment and the pip project list the same pinned dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject_reqs(extras: tuple[str, ...] = ("book", "dev", "jpeg")) -> dict[str, str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in extras:
        reqs += proj["optional-dependencies"][extra]
    return dict(_norm(r) for r in reqs)


def _conda_pip_reqs() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml must have exactly one pip: section"
    return dict(_norm(r) for r in pip_lists[0] if not r.startswith("-e"))


def test_environment_yml_matches_pyproject():
    py, conda = _pyproject_reqs(), _conda_pip_reqs()
    assert py == conda, (
        f"only in pyproject: {sorted(set(py.items()) - set(conda.items()))}; "
        f"only in environment.yml: {sorted(set(conda.items()) - set(py.items()))}"
    )


def test_every_dependency_is_pinned_exactly():
    for name, spec in _pyproject_reqs(("book", "dev", "jpeg")).items():
        assert spec.startswith("=="), f"{name} is not pinned: {spec!r}"


def test_environment_installs_the_project_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip


def test_jupyter_book_is_1x():
    spec = _pyproject_reqs()["jupyter-book"]
    assert spec.startswith("==1."), "Jupyter Book 2.x is a different tool (myst.yml); the book needs 1.x"


def test_makefile_installs_the_extras_the_tests_need():
    # the DICOM tests exercise JPEG 2000 through the optional `jpeg` extra
    assert '-e ".[book,dev,jpeg]"' in (ROOT / "Makefile").read_text()


def test_ci_calls_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_live_book_is_installable_and_tested():
    # JupyterLab is in the book extra (environment.yml follows: test above), `make lab` opens the
    # chapters with the project's kernel, and CI runs the browser test of chapter 7
    assert _pyproject_reqs(("book",))["jupyterlab"].startswith("==")
    assert _pyproject_reqs(("dev",))["selenium"].startswith("==")
    makefile = (ROOT / "Makefile").read_text()
    assert "\nlab: " in makefile and "--config=scripts/jupyter_lab_config.py" in makefile
    assert "make lab" in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test-lab" in ci and "chromium-driver" in ci
