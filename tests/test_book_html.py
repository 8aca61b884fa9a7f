"""Checks on the BUILT book (`make book` first; run with `make test-book`, i.e. `pytest -m book`).

* every chapter of _toc.yml has a page, every <img> it references exists and has alt text,
  every notebook figure has a caption;
* every notebook was executed by papermill with the build's profile, without errors;
* pages whose notebook made widgets embed the widget state;
* a tiny book with an ipywidgets slider, built with this book's own configuration, embeds
  the state AND draws the slider in headless Chromium (offline: the renderer ships with
  the book);
* headless Chromium draws the figures of the cost chapter (and of the ablation chapter
  once it exists): screenshots are not blank and carry the figures' colours.

Chromium: Debian's `chromium` (`apt-get install -y chromium`).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import numpy as np
import pytest
import yaml
from book_helpers import page_problems, toc_files
from PIL import Image

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SRC = ROOT / "build" / "book-src"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Okabe-Ito colours of awm_lib.book.viz.PALETTE used by the first curves/bars of a figure
FIGURE_COLOURS = {"blue": (0x00, 0x72, 0xB2), "orange": (0xE6, 0x9F, 0x00)}


# --- helpers ------------------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects <img> attributes, <figure>/<figcaption> counts and <script> types of one page."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.figures = 0
        self.figcaptions = 0
        self.script_types: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "figure":
            self.figures += 1
        elif tag == "figcaption":
            self.figcaptions += 1
        elif tag == "script":
            self.script_types.append(a.get("type") or "")


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def chromium() -> str:
    exe = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    assert exe, "headless Chromium is needed: apt-get update && apt-get install -y chromium"
    return exe


@functools.cache
def _server(root: str) -> str:
    """Serve ``root`` on 127.0.0.1 (a free port) for the rest of the session; return its URL."""
    handler = functools.partial(_QuietHandler, directory=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


def screenshot(url: str, out: Path, width: int = 1280, height: int = 4000) -> np.ndarray:
    """Open ``url`` in headless Chromium, let its scripts run, return the screenshot as (H, W, 3)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
               f"--screenshot={out}", f"--window-size={width},{height}", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-1500:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels lie within ``tol`` (per channel) of ``rgb``."""
    return int((np.abs(img.astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def distinct_colours(img: np.ndarray) -> int:
    q = img.reshape(-1, 3).astype(np.int32) // 8  # 5-bit bins: ignore faint dithering
    return len(np.unique((q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]))


def executed_notebooks() -> list[Path]:
    return sorted((SRC / "notebooks").glob("[0-9]*.ipynb"))


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built():
    assert (HTML / "index.html").exists(), "no built book: run `make book` first"
    return HTML


# --- structure ------------------------------------------------------------------------------
def test_every_chapter_has_a_page(built):
    for f in toc_files():
        assert (built / f"{f}.html").is_file(), f"_toc.yml lists {f} but the book has no {f}.html"
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (built / "notebooks" / f"{nb.stem}.html").is_file(), f"no page for {nb.name}"


def test_every_image_exists_and_has_alt_text(built):
    pages = sorted(built.rglob("*.html"))
    assert pages
    n_images = 0
    for page in pages:
        for img in parse(page).images:
            src = img.get("src", "")
            if not src or urlparse(src).scheme in ("http", "https", "data"):
                continue
            target = (page.parent / unquote(urlparse(src).path)).resolve()
            assert target.is_file(), f"{page.relative_to(built)} shows {src}, which is missing"
            assert (img.get("alt") or "").strip(), (
                f"{page.relative_to(built)}: <img src={src}> has no alt text"
            )
            n_images += 1
    assert n_images > 0


def test_notebook_figures_have_captions_on_the_page(built):
    for nb_path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        n_fig = sum("figure" in c.get("metadata", {}).get("mystnb", {}) for c in nb.cells)
        page = parse(built / "notebooks" / f"{nb_path.stem}.html")
        assert page.figcaptions >= n_fig, (
            f"{nb_path.stem}: {n_fig} captioned figures, {page.figcaptions} on the page"
        )
        figure_imgs = [i for i in page.images if "_images/" in i.get("src", "")]
        assert len(figure_imgs) >= n_fig, f"{nb_path.stem}: figures missing from the page"


def test_every_notebook_ran_under_papermill_with_the_build_profile(built):
    profiles = [p.name.removeprefix(".profile-") for p in SRC.glob(".profile-*")]
    assert len(profiles) == 1, f"expected one .profile-* marker in {SRC}, found {profiles}"
    table = yaml.safe_load((ROOT / "notebooks" / "profiles.yml").read_text())[profiles[0]] or {}
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        done = SRC / "notebooks" / nb_path.name
        assert done.is_file(), f"{nb_path.name} was not executed into {done}"
        nb = json.loads(done.read_text())
        assert nb["metadata"]["papermill"]["exception"] in (None, False), f"{nb_path.name} raised"
        assert nb["metadata"]["papermill"]["parameters"] == (table.get(nb_path.stem) or {})
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", (
                    f"{nb_path.name}: {out.get('ename')}: {out.get('evalue')}"
                )


def test_pages_with_widgets_embed_the_widget_state(built):
    for done in executed_notebooks():
        nb = json.loads(done.read_text())
        views = [o["data"][WIDGET_VIEW]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
                 if WIDGET_VIEW in o.get("data", {})]
        is_ablation = done.stem.startswith("07_")
        if not views and not is_ablation:
            continue
        assert views, f"{done.stem}: the ablation chapter shows no widget"
        html = (built / "notebooks" / f"{done.stem}.html").read_text()
        assert f'type="{WIDGET_STATE}"' in html, f"{done.stem}: widget state is not embedded in the page"
        state = nb["metadata"]["widgets"][WIDGET_STATE]["state"]
        assert set(views) <= set(state), f"{done.stem}: a widget view has no stored state"
        assert all(v in html for v in views)


# --- ipywidgets: state embedded and drawn, on a tiny book with this book's configuration ------
SLIDER_COLOUR = (0xFF, 0x00, 0xFF)


def _slider_book(tmp: Path) -> Path:
    nbs = tmp / "notebooks"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A slider"),
        nbformat.v4.new_code_cell("value = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\n"
            "widgets.IntSlider(value=value, min=0, max=10, description='strength',\n"
            "                  style={'handle_color': '#ff00ff'})"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbs / "slider.ipynb")
    src = tmp / "src"
    (src / "notebooks").mkdir(parents=True)
    # the same executor as `make book` (no profile entry: the notebook's defaults)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebook.py"), str(nbs / "slider.ipynb"),
                    str(src / "notebooks" / "slider.ipynb"), "--profile", "cpu"], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "book", src / "book")
    (src / "_toc.yml").write_text("format: jb-book\nroot: notebooks/slider\n")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(src),
            "--path-output",
            str(tmp / "out"),
            "-W",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "out" / "_build" / "html"


def test_ipywidgets_slider_state_is_embedded_and_drawn_offline(tmp_path):
    html_root = _slider_book(tmp_path)
    executed = json.loads((tmp_path / "src" / "notebooks" / "slider.ipynb").read_text())
    state = executed["metadata"]["widgets"][WIDGET_STATE]["state"]
    sliders = [s["state"] for s in state.values() if s["model_name"] == "IntSliderModel"]
    assert len(sliders) == 1 and sliders[0]["value"] == 3 and sliders[0]["description"] == "strength"

    html = (html_root / "notebooks" / "slider.html").read_text()
    page = parse(html_root / "notebooks" / "slider.html")
    assert WIDGET_STATE in page.script_types and WIDGET_VIEW in page.script_types
    assert "IntSliderModel" in html
    assert "_static/widgets/html-manager-embed.js" in html, "the widget renderer must come with the book"
    assert (html_root / "_static" / "widgets" / "html-manager-embed.js").is_file()

    img = screenshot(f"{_server(str(html_root))}/notebooks/slider.html", tmp_path / "slider.png", height=900)
    # the magenta handle exists only if the embedded state was rendered into a live slider
    assert colour_pixels(img, SLIDER_COLOUR, tol=30) > 50, "the slider was not drawn"


# --- figures drawn in a real browser ---------------------------------------------------------
def _assert_figures_drawn(img: np.ndarray, name: str, min_pixels: int = 1000):
    assert img.std() > 10, f"{name}: the page screenshot is blank"
    assert distinct_colours(img) > 200, f"{name}: too few colours for a page with figures"
    for colour, rgb in FIGURE_COLOURS.items():
        n = colour_pixels(img, rgb)
        assert n >= min_pixels, f"{name}: only {n} {colour} pixels: the figures were not drawn"


def test_cost_chapter_figures_are_drawn_in_chromium(built, tmp_path):
    url = f"{_server(str(built))}/notebooks/02_tokenization_cost.html"
    img = screenshot(url, tmp_path / "cost.png", height=9000)
    _assert_figures_drawn(img, "cost chapter")
    # control: the same page without its figure files draws none of those colours
    ctrl = tmp_path / "ctrl"
    shutil.copytree(built, ctrl, ignore=shutil.ignore_patterns("_images"))
    bare = screenshot(f"{_server(str(ctrl))}/notebooks/02_tokenization_cost.html", tmp_path / "bare.png",
                      height=9000)
    assert colour_pixels(bare, FIGURE_COLOURS["orange"]) < colour_pixels(img, FIGURE_COLOURS["orange"]) / 10


def test_ablation_chapter_is_drawn_in_chromium(built, tmp_path):
    pages = sorted((built / "notebooks").glob("07_*.html"))
    if not pages:  # the ablation chapter has not landed yet: nothing to draw, nothing to check
        assert not list((ROOT / "notebooks").glob("07_*.ipynb"))
        return
    for page in pages:
        img = screenshot(
            f"{_server(str(built))}/notebooks/{page.name}", tmp_path / f"{page.stem}.png", height=6000
        )
        _assert_figures_drawn(img, page.stem, min_pixels=500)
        # widgets drawn: ipywidgets' own controls (class widget-*) become visible DOM; their
        # slider/dropdown chrome is grey, so check the rendered page differs from a page
        # whose widget renderer is missing
        ctrl = tmp_path / f"ctrl-{page.stem}"
        shutil.copytree(built, ctrl)
        (ctrl / "_static" / "widgets" / "html-manager-embed.js").write_text("")
        bare = screenshot(f"{_server(str(ctrl))}/notebooks/{page.name}", tmp_path / f"{page.stem}-bare.png",
                          height=6000)
        assert np.abs(img.astype(int) - bare.astype(int)).max(axis=-1).astype(bool).sum() > 2000, (
            f"{page.stem}: the widgets were not drawn"
        )


def test_no_page_shows_a_raw_markdown_table_or_a_nan_cell(built):
    pages = sorted(built.rglob("*.html"))
    problems = {p.relative_to(built).as_posix(): page_problems(p.read_text(encoding="utf-8")) for p in pages}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"pages with raw markdown tables or NaN cells: {problems}"
