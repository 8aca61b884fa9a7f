"""Figures (and the small bits of bookkeeping behind them) for the RoI-selection chapter.

The chapter asks two questions of every proposer: *where* do its boxes go (drawn
on the mammogram), and *how often* is the lesion among the top ``k``
(recall at k, FROC, split by lesion type and size). A third part looks at the
boxes the paper's own Grounding DINO produced on VinDr-Mammo.

Plotting helpers draw on a Matplotlib axis (a new one if ``ax`` is None) and
return it; the few helpers that compute (``propose_samples``, ``recall_curve``,
``missed_lesions``, ``vindr_box_table``, ``vindr_selection_table``) only
arrange what :mod:`awm_lib.proposals` computes, so the chapter never
re-implements the method. Boxes are ``xyxy`` pixels of the image shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from awm_lib.book import viz
from awm_lib.book.data_figures import _zoom
from awm_lib.data.breast import segment_breast
from awm_lib.data.image import load_image
from awm_lib.data.types import located
from awm_lib.proposals.gdino_vindr import per_image
from awm_lib.proposals.recall import ImageResult, first_hit_rank, recall_at_k
from awm_lib.proposals.select import SelectConfig, coverage, select_rois

ANCHOR_COLOUR = viz.PALETTE[0]  # blue
ROI_COLOUR = viz.PALETTE[2]  # green
PAD_COLOUR = "#9E9E9E"  # grey
LESION_COLOUR = viz.PALETTE[3]  # vermillion


# --------------------------------------------------------------------------- boxes on an image
def _box(ax: Axes, b, colour: str, style: str = "-", lw: float = 1.5, text: str | None = None,
         alpha: float = 1.0, text_below: bool = False, text_inside: bool = False) -> None:
    x0, y0, x1, y1 = (float(v) for v in b)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style,
                           linewidth=lw, alpha=alpha))
    if text:
        t = ax.text(x0, y1 if text_below else y0, text, color="white", fontsize=7,
                    va="top" if (text_below or text_inside) else "bottom", clip_on=True,
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8, "alpha": 0.85})
        t.set_in_layout(False)


def show_selection(image, selection, lesions: Sequence = (), ax: Axes | None = None,
                   title: str | None = None, size: float = 4.0, scores: bool = True) -> Axes:
    """A :class:`~awm_lib.proposals.select.Selection` on its image.

    The anchor (rank 0) is dashed blue, kept RoIs green with ``rank:score``,
    padded rows dotted grey, and ground-truth lesions (``Lesion`` records or
    ``xyxy`` boxes) red, labelled below their box.
    """
    ax = viz.show_mammogram(image, ax=ax, title=title, size=size)
    for les in lesions:
        _box(ax, getattr(les, "box", les), LESION_COLOUR, lw=1.2, text="lesion", text_below=True)
    rois, sc, valid = selection.rois.tolist(), selection.scores.tolist(), selection.valid.tolist()
    for i, (b, s, ok) in enumerate(zip(rois, sc, valid)):
        if i == 0:
            _box(ax, b, ANCHOR_COLOUR, "--", 2.0, "0 anchor", text_inside=True)
        elif ok:
            _box(ax, b, ROI_COLOUR, "-", 1.5, f"{i}:{s:.2f}" if scores else str(i))
        else:
            _box(ax, b, PAD_COLOUR, ":", 1.2, f"{i} pad")
    return ax


def show_proposals(image, proposals, n: int | None = None, ax: Axes | None = None,
                   title: str | None = None, size: float = 4.0, colour: str = viz.PALETTE[1]) -> Axes:
    """The raw proposals (the first ``n``, best first) as thin boxes; darker = higher score."""
    ax = viz.show_mammogram(image, ax=ax, title=title, size=size)
    boxes = proposals.boxes[: n or len(proposals)].tolist()
    scores = np.asarray(proposals.scores[: len(boxes)], dtype=float)
    rel = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-9) if len(scores) else scores
    for b, r in zip(boxes, rel):
        _box(ax, b, colour, "-", 1.0, alpha=0.35 + 0.65 * float(r))
    return ax


# --------------------------------------------------------------------------- recall bookkeeping
def propose_samples(
    samples, proposer, select_cfg, max_k: int = 20, progress: bool = True
) -> list[ImageResult]:
    """Run ``proposer`` + selection on each sample; keep up to ``max_k`` RoIs (anchor and padding dropped).

    The same loop as ``awm_lib.cli.propose_cmd.evaluate`` (lesions without a
    position are left out), but returning the per-image results so a chapter
    can draw curves and find the misses.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    cfg = replace(select_cfg, topk=max(max_k, select_cfg.topk))
    out = []
    for s in tqdm(samples, disable=not progress, desc=f"propose[{proposer.name}]"):
        pixels = load_image(s.path).pixels
        lesions = located(s, pixels.shape)
        crop = segment_breast(pixels)
        kw = {"gt_boxes": [les.box for les in lesions]} if proposer.needs_ground_truth else {}
        sel = select_rois(proposer.propose(pixels, crop.full_mask(), **kw), pixels.shape, crop.box, cfg)
        out.append(
            ImageResult(s.image_id, sel.rois[1 : 1 + sel.n_kept], sel.scores[1 : 1 + sel.n_kept], lesions)
        )
    return out


def recall_curve(results: Sequence[ImageResult], ks: Sequence[int]) -> list[float]:
    """Recall at each ``k`` in ``ks`` (images without lesions are ignored)."""
    with_lesions = [r for r in results if len(r.lesions)]
    rec = recall_at_k(with_lesions, ks=tuple(ks))
    return [rec[f"recall@{k}"] for k in ks]


def missed_lesions(results: Sequence[ImageResult], k: int) -> pd.DataFrame:
    """One row per lesion NOT found among the first ``k`` RoIs: image, kind, radius, first-hit rank."""
    rows = []
    for r in results:
        if not len(r.lesions):
            continue
        for les, rank in zip(r.lesions, first_hit_rank(r).tolist()):
            if rank > k:
                x0, y0, x1, y1 = les.box
                radius = les.radius if les.radius is not None else max(x1 - x0, y1 - y0) / 2
                rows.append({"image_id": r.image_id, "kind": les.kind, "radius_px": float(radius),
                             "first_hit_rank": rank, "box": tuple(les.box)})
    return pd.DataFrame(rows, columns=["image_id", "kind", "radius_px", "first_hit_rank", "box"])


def image_level_found(results: Sequence[ImageResult], labels: Mapping[str, int], k: int) -> pd.DataFrame:
    """Per image with lesions: is at least one lesion among the first ``k`` RoIs? With its label."""
    rows = [{"image_id": r.image_id, "label": int(labels[r.image_id]),
             "found": bool((first_hit_rank(r) <= k).any())} for r in results if len(r.lesions)]
    return pd.DataFrame(rows, columns=["image_id", "label", "found"])


def load_recall_results(path: str | Path) -> pd.DataFrame:
    """``results/proposer_recall.json`` as a table (one row per run) with its provenance columns."""
    runs = json.loads(Path(path).read_text())["runs"]
    cols = ["dataset", "proposer", "n_images", "n_lesions", "recall@1", "recall@5", "recall@10"]
    df = pd.DataFrame([{c: run.get(c) for c in cols} | {"date": run.get("date"), "device": run.get("device")}
                       for run in runs.values()], index=list(runs))
    return df


# --------------------------------------------------------------------------- recall figures
def plot_recall_at_k(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], topk: int | None = None,
                     target: float | None = None, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Recall@k against k, one line per proposer (``name -> (ks, recalls)``)."""
    ax = viz._ax(ax)
    for name, (ks, rec) in curves.items():
        ax.plot(list(ks), list(rec), marker="o", markersize=3, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (RoIs kept after NMS)")
    ax.set_ylabel("lesion recall at k")
    if topk is not None:
        viz.vline(ax, topk, f"paper: top-{topk}")
    if target is not None:
        viz.hline(ax, target, f"{target:.2f}")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right")
    return ax


def plot_froc(curves: Mapping[str, Mapping], ax: Axes | None = None, max_fp: float | None = None,
              title: str | None = None) -> Axes:
    """FROC: sensitivity against false positives per image, one step line per proposer.

    ``curves`` maps a name to :func:`awm_lib.proposals.recall.froc`'s dict.
    """
    ax = viz._ax(ax)
    for name, c in curves.items():
        fp, sens = np.asarray(c["fp_per_image"], float), np.asarray(c["sensitivity"], float)
        ax.step(np.r_[0.0, fp], np.r_[0.0, sens], where="post", label=name)
    ax.set_xscale("symlog", linthresh=0.1)
    if max_fp is not None:
        ax.set_xlim(0, max_fp)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive boxes per image")
    ax.set_ylabel("sensitivity (lesions found)")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left")
    return ax


def plot_recall_by_group(groups: Mapping[str, Mapping[str, Mapping]], k: int = 5, ax: Axes | None = None,
                         title: str | None = None) -> Axes:
    """Grouped bars of recall@k per lesion group (``proposer -> recall_by_group(...)``), n in the labels."""
    ax = viz._ax(ax)
    names = sorted({g for d in groups.values() for g in d})
    first = next(iter(groups.values()))
    labels = [f"{g}\n(n={first[g]['n_lesions']})" if g in first else g for g in names]
    values = {p: [d.get(g, {}).get(f"recall@{k}", float("nan")) for g in names] for p, d in groups.items()}
    viz.plot_bars(labels, values, f"recall@{k}", ax=ax, annotate="{:.2f}")
    ax.set_ylim(0, 1.15)
    if title:
        ax.set_title(title)
    return ax


def show_misses(images, lesion_boxes, rois, titles: Sequence[str] | None = None, context: float = 2.0,
                ncols: int = 4, size: float = 2.6):
    """Close-ups of missed lesions: the lesion box (red) and the kept RoIs (green) that fall in the window."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    fig, axes = viz.subplots(-(-n // ncols), ncols, width=size, height=size * 1.1, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        img = np.asarray(images[i], dtype=np.float32)
        patch, box = _zoom(img, lesion_boxes[i], context)
        off = np.asarray(lesion_boxes[i], float)[:2] - box[0, :2]  # window origin in image pixels
        viz.show_mammogram(patch, ax=ax, title=None if titles is None else titles[i])
        for b in np.asarray(rois[i], float).reshape(-1, 4):
            _box(ax, b - np.r_[off, off], ROI_COLOUR, "-", 1.0)
        _box(ax, box[0], LESION_COLOUR, "-", 1.5)
        ax.set_xlim(0, patch.shape[1])
        ax.set_ylim(patch.shape[0], 0)
    return fig


# --------------------------------------------------------------------------- the paper's VinDr boxes
def vindr_box_table(boxes: pd.DataFrame) -> pd.DataFrame:
    """Per box (rank > 0): ``rel_size`` = sqrt(area / area of box 0 of its image), ``score``, ``rank``."""
    area = (boxes["x2"] - boxes["x1"]).clip(lower=0) * (boxes["y2"] - boxes["y1"]).clip(lower=0)
    anchor_area = area.groupby(boxes["image_id"]).transform("first")  # rows are sorted by rank
    out = boxes.loc[boxes["rank"] > 0, ["image_id", "rank", "score"]].copy()
    out["rel_size"] = np.sqrt(area[boxes["rank"] > 0] / anchor_area[boxes["rank"] > 0].clip(lower=1e-6))
    return out.reset_index(drop=True)


def vindr_selection_table(boxes: pd.DataFrame, n_images: int | None = None, topk: int = 5,
                          iou_threshold: float = 0.5, margin: float = 40.0, seed: int = 0) -> pd.DataFrame:
    """Per image: the reference selection (box 0 = anchor, NMS, top-k, squares) and its breast coverage.

    Uses the same recipe as :func:`awm_lib.proposals.gdino_vindr.analyse`, on
    ``n_images`` images drawn at random (seeded), or all of them.
    """
    ids = boxes["image_id"].unique()
    if n_images is not None and n_images < len(ids):
        ids = np.random.default_rng(seed).choice(ids, n_images, replace=False)
    cfg = SelectConfig(topk=topk, iou_threshold=iou_threshold, margin=margin, border="clip", pad="anchor")
    rows = []
    for image_id, p in per_image(boxes[boxes["image_id"].isin(set(ids))]):
        anchor = p.boxes[0]
        size = (int(np.ceil(float(p.boxes[:, 3].max()))), int(np.ceil(float(p.boxes[:, 2].max()))))
        sel = select_rois(p.take(torch.arange(1, len(p))), size, anchor, cfg)
        rows.append({"image_id": image_id, "n_kept": sel.n_kept,
                     "coverage": coverage(sel.rois[1 : 1 + sel.n_kept], anchor)})
    return pd.DataFrame(rows)


def plot_hist(values: Mapping[str, Sequence[float]], xlabel: str, bins: int = 40, logx: bool = False,
              ax: Axes | None = None, title: str | None = None, density: bool = True,
              clip_quantile: float | None = None) -> Axes:
    """Overlaid histograms, one per entry (label -> values); log-spaced bins when ``logx``.

    With ``density`` each group's bars sum to 1 (a fraction per bin), so a group of
    4,000 values and one of 200,000 can be compared on the same axis, linear or log.
    ``clip_quantile`` (e.g. 0.995) ends the bins at that quantile, so a few
    outliers do not squeeze the histogram; values beyond it are counted in the last bin.
    """
    ax = viz._ax(ax)
    allv = np.concatenate([np.asarray(v, float) for v in values.values()])
    allv = allv[np.isfinite(allv)]
    if clip_quantile is not None:
        top = float(np.quantile(allv, clip_quantile))
        values = {k: np.minimum(np.asarray(v, float), top) for k, v in values.items()}
        allv = np.minimum(allv, top)
    if logx:
        lo = max(float(allv[allv > 0].min()), 1e-6)
        edges = np.geomspace(lo, float(allv.max()), bins + 1)
    else:
        edges = np.linspace(float(allv.min()), float(allv.max()), bins + 1)
    for name, v in values.items():
        v = np.asarray(v, float)
        w = np.full(len(v), 1.0 / max(len(v), 1)) if density else None  # each group sums to 1
        ax.hist(v, bins=edges, weights=w, histtype="stepfilled", alpha=0.45, label=name)
    ax.set_xscale("log" if logx else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction per bin" if density else "count")
    if title:
        ax.set_title(title)
    if len(values) > 1:
        ax.legend()
    return ax


def show_vindr_image(proposals, selection, ax: Axes | None = None, title: str | None = None,
                     n_raw: int = 50, size: float = 4.0) -> Axes:
    """One VinDr image's boxes on a blank canvas the size of its breast crop (no image is published):
    the first ``n_raw`` raw boxes faint orange, the selected squares green, box 0 (anchor) blue."""
    H = float(max(proposals.boxes[:, 3].max(), selection.rois[:, 3].max()))
    W = float(max(proposals.boxes[:, 2].max(), selection.rois[:, 2].max()))
    ax = viz._ax(ax, width=size * W / H + 0.5, height=size)
    ax.set_facecolor("#111111")
    for b in proposals.boxes[1:n_raw].tolist():
        _box(ax, b, viz.PALETTE[1], "-", 0.7, alpha=0.4)
    show = selection.rois[: 1 + selection.n_kept].tolist()
    for i, b in enumerate(show):
        _box(ax, b, ANCHOR_COLOUR if i == 0 else ROI_COLOUR, "--" if i == 0 else "-", 2.0 if i == 0 else 1.5,
             "0 anchor" if i == 0 else f"{i}:{float(selection.scores[i]):.2f}", text_inside=i == 0)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_aspect("equal")
    ax.grid(False)
    ax.set_xlabel("x (px of the breast crop)")
    if title:
        ax.set_title(title)
    return ax


__all__ = [
    "show_selection", "show_proposals", "propose_samples", "recall_curve", "missed_lesions",
    "image_level_found", "load_recall_results", "plot_recall_at_k", "plot_froc", "plot_recall_by_group",
    "show_misses", "vindr_box_table", "vindr_selection_table", "plot_hist", "show_vindr_image",
]


def select_for(proposer, pixels, lesions=(), cfg=None, crop=None):
    """Propose on ``pixels`` (the oracle gets the ``lesions``' boxes) and select RoIs inside the breast."""
    crop = crop if crop is not None else segment_breast(pixels)
    kw = {"gt_boxes": [getattr(les, "box", les) for les in lesions]} if proposer.needs_ground_truth else {}
    return select_rois(proposer.propose(pixels, crop.full_mask(), **kw), pixels.shape, crop.box, cfg)


__all__ += ["select_for"]
