"""Small plotting helpers for the book, so notebook cells stay two to five lines.

Each function draws one kind of figure on a Matplotlib axis (a new one if
``ax`` is None) and returns the axis, so a chapter can combine them:

>>> fig, axes = subplots(1, 2)                       # doctest: +SKIP
>>> show_mammogram(img, boxes=rois, ax=axes[0])      # doctest: +SKIP
>>> plot_curves(x, {"tokens": y}, ax=axes[1])        # doctest: +SKIP

Conventions: images are 2-D arrays (H, W) in [0, 1] (dark background, bright
tissue) or (H, W, 3); boxes are ``xyxy`` in pixels of the image shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

from awm_lib.errors import DataError

__all__ = [
    "PALETTE",
    "use_book_style",
    "subplots",
    "show_mammogram",
    "show_heatmap",
    "show_grid",
    "plot_curves",
    "plot_bars",
    "plot_roc",
    "hline",
    "vline",
    "human_bytes",
    "human_count",
    "ImageShapeError",
]


class ImageShapeError(DataError):
    """An array given as an image has a shape that cannot be shown."""

# Colour-blind-safe (Okabe-Ito) palette: boxes, curves and bars share it.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def use_book_style(dpi: int = 100) -> None:
    """Readable defaults for every figure of the book (call once per chapter)."""
    plt.rcParams.update({
        "figure.dpi": dpi,
        "savefig.dpi": dpi,
        "figure.figsize": (6.4, 4.0),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": plt.cycler(color=PALETTE),
        "legend.frameon": False,
        "font.size": 10,
    })


def subplots(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.0, **kw):
    """``plt.subplots`` with a size per panel (inches) instead of per figure."""
    kw.setdefault("squeeze", True)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw
    )
    return fig, axes


def _ax(ax: Axes | None, **kw) -> Axes:
    if ax is not None:
        return ax
    _, ax = subplots(**kw)
    return ax


def show_mammogram(img, boxes=None, labels: Sequence[str] | None = None,
                   scores: Sequence[float] | None = None, ax: Axes | None = None,
                   title: str | None = None, colors: Sequence[str] | None = None,
                   linewidth: float = 1.5, cmap: str = "gray", size: float = 5.0) -> Axes:
    """Show a mammogram (grey image) with optional ``xyxy`` boxes, labels and scores.

    ``img`` may be a NumPy array or a torch tensor of shape (H, W), (1, H, W),
    (3, H, W) or (H, W, 3).
    """
    arr = _to_numpy_image(img)
    ax = _ax(ax, width=size * arr.shape[1] / max(arr.shape[0], 1), height=size)
    if arr.ndim == 3:
        ax.imshow(arr)
    else:  # grey: fixed range so a faint image stays faint (no per-image stretch)
        vmax = 255.0 if arr.dtype == np.uint8 else max(1.0, float(arr.max()))
        ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if boxes is not None:
        colors = list(colors) if colors is not None else PALETTE
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
            c = colors[i % len(colors)]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c, linewidth=linewidth))
            text = []
            if labels is not None and i < len(labels):
                text.append(str(labels[i]))
            if scores is not None and i < len(scores):
                text.append(f"{float(scores[i]):.2f}")
            if text:
                ax.text(x0, y0, " ".join(text), color="white", fontsize=8, va="bottom",
                        bbox={"facecolor": c, "edgecolor": "none", "pad": 1.0, "alpha": 0.8})
    return ax


def show_heatmap(img, heat, alpha: float = 0.45, ax: Axes | None = None, title: str | None = None,
                 cmap: str = "inferno", boxes=None, colorbar: bool = False) -> Axes:
    """Overlay a heat map (any (h, w) array, stretched to the image) on a grey image."""
    arr = _to_numpy_image(img)
    ax = show_mammogram(arr, boxes=boxes, ax=ax, title=title)
    h, w = arr.shape[:2]
    im = ax.imshow(np.asarray(heat, dtype=float), cmap=cmap, alpha=alpha, extent=(0, w, h, 0),
                   interpolation="bilinear")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def show_grid(images, titles: Sequence[str] | None = None, boxes: Sequence | None = None,
              ncols: int = 4, size: float = 3.0):
    """Several mammograms side by side (``boxes[i]``: the ``xyxy`` boxes of image i); returns the figure."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = subplots(nrows, ncols, width=size, height=size * 1.25, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        show_mammogram(images[i], boxes=None if boxes is None else boxes[i], ax=ax,
                       title=None if titles is None else titles[i])
    return fig


def plot_curves(x, curves: Mapping[str, Sequence[float]], xlabel: str = "", ylabel: str = "",
                title: str | None = None, logx: bool = False, logy: bool = False,
                ax: Axes | None = None, marker: str | None = "o", styles: Mapping[str, str] | None = None,
                xticks: Sequence[float] | None = None) -> Axes:
    """One line per entry of ``curves`` (label -> y values), all against the same ``x``.

    ``xticks``: put the x ticks exactly there, labelled with plain numbers (useful on
    a log axis, whose default labels are powers of ten).
    """
    ax = _ax(ax)
    styles = styles or {}
    for label, y in curves.items():
        ax.plot(x, y, styles.get(label, "-"), marker=marker, markersize=4, label=label)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{t:g}" for t in xticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    return ax


def plot_bars(labels: Sequence[str], values: Sequence[float] | Mapping[str, Sequence[float]],
              ylabel: str = "", title: str | None = None, logy: bool = False, ax: Axes | None = None,
              annotate: str | None = "{:,.0f}", horizontal: bool = False) -> Axes:
    """Bars for one series (a list) or grouped bars for several (a dict label -> values)."""
    ax = _ax(ax)
    series = values if isinstance(values, Mapping) else {"": values}
    n = len(series)
    width = 0.8 / n
    pos = np.arange(len(labels), dtype=float)
    for j, (name, vals) in enumerate(series.items()):
        offs = pos - 0.4 + width * (j + 0.5)
        bars = (ax.barh if horizontal else ax.bar)(offs, list(vals), width, label=name or None,
                                                   color=PALETTE[j % len(PALETTE)])
        if annotate:
            ax.bar_label(bars, labels=[annotate.format(v) for v in vals], fontsize=8, padding=2)
    if horizontal:
        ax.set_yticks(pos, labels)
        ax.set_xlabel(ylabel)
        ax.set_xscale("log" if logy else "linear")
        ax.invert_yaxis()
    else:
        ax.set_xticks(pos, labels)
        ax.set_ylabel(ylabel)
        ax.set_yscale("log" if logy else "linear")
    if title:
        ax.set_title(title)
    if n > 1:
        ax.legend()
    return ax


def plot_roc(fpr, tpr, auc: float | None = None, label: str = "model", ax: Axes | None = None,
             title: str | None = None) -> Axes:
    """A ROC curve with the chance diagonal; call again with the same ``ax`` to compare models."""
    ax = _ax(ax, width=4.5, height=4.5)
    name = label if auc is None else f"{label} (AUC {auc:.3f})"
    ax.plot(fpr, tpr, label=name)
    if not any(line.get_label() == "chance" for line in ax.get_lines()):
        ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (sensitivity)")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right")
    return ax


def hline(ax: Axes, y: float, text: str = "", color: str = "grey", style: str = "--") -> Axes:
    """A labelled horizontal reference line (e.g. a GPU's memory)."""
    ax.axhline(y, color=color, linestyle=style, linewidth=1)
    if text:
        ax.annotate(
            text, xy=(0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color=color
        )
    return ax


def vline(ax: Axes, x: float, text: str = "", color: str = "grey", style: str = "--") -> Axes:
    """A labelled vertical reference line (e.g. the tokens of a full mammogram)."""
    ax.axvline(x, color=color, linestyle=style, linewidth=1)
    if text:
        ax.annotate(text, xy=(x, 0.98), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    ha="right", fontsize=8, color=color)
    return ax


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``: sizes for axis labels and tables."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    """``50201 -> '50.2k'``, ``3.05e14 -> '305T'``: counts for labels."""
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _to_numpy_image(img) -> np.ndarray:
    if hasattr(img, "detach"):  # a torch tensor, without importing torch here
        img = img.detach().cpu().float().numpy()
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ImageShapeError(
            f"expected an image of shape (H, W), (C, H, W) or (H, W, C), got shape {arr.shape}; pass one "
            "grey "
            "or RGB image"
        )
    return arr
