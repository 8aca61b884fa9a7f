"""What the paper's detector really proposed: an analysis of its published boxes.

``../shared/data/awm-gdino-vindr`` holds the paper's own Grounding DINO output
for the 4,000 VinDr-Mammo test images (the top 50 of 900 queries per image, in
pixels of the breast-cropped image) and the cancer labels. No images, so every
question is about the boxes themselves:

- **Sizes.** Box 0 is (nearly always) the whole breast, so sizes are measured
  relative to it: ``sqrt(area / area_0)`` (1 = as large as the breast).
- **Scores.** How confident is the detector, box 0 versus the rest?
- **Selection.** What survives a selection in the style of the reference: box 0
  (the detector's whole-breast box) standing in for the anchor, greedy NMS at IoU
  0.5, top 5 (via :func:`awm_lib.proposals.select.select_rois`). The reference
  itself takes the breast's contour box as the anchor (there are no images here),
  runs NMS among the detector's boxes only and keeps 4 of them (its k = 5 counts
  the anchor): ``SelectConfig(topk=4, anchor_in_nms=False, square_anchor=True)``.
- **Coverage and tokens.** How much of the breast do the 5 square RoIs (side
  ``max(w, h) + 40``) cover, and how many ViT/14 tokens do ``1 + 5`` crops of
  448 or 224 px cost compared with the whole breast crop at full resolution?
- **Signal.** Do the detector's own scores separate cancer from non-cancer?
  ROC-AUC with a 95% bootstrap CI that resamples *studies* (one woman's four
  images move together, so the interval is not too narrow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from awm_lib import paths
from awm_lib.errors import DatasetNotFoundError
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.boxes import box_area, cxcywh_to_xyxy
from awm_lib.proposals.select import SelectConfig, coverage, select_rois

PATCH = 14  # DINOv2 patch size


def load_gdino_vindr(root: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(boxes, images)``: the top-50 table with xyxy columns, and one row per image with ``cancer``."""
    root = Path(root) if root is not None else paths.gdino_vindr_root()
    props, test = root / "proposals_top50.csv.gz", root / "test.csv"
    for f in (props, test):
        if not f.is_file():
            raise DatasetNotFoundError(
                f"missing {f.name}; expected the awm-gdino-vindr folder (see its README)", root
            )
    boxes = pd.read_csv(props)
    images = pd.read_csv(test)
    ids = images["im_path"].str.replace(".dicom", "", regex=False).str.split("/", expand=True)
    images["study_id"], images["image_id"] = ids[0], ids[1]
    xyxy = cxcywh_to_xyxy(boxes[["cx", "cy", "w", "h"]].to_numpy(np.float32)).numpy()
    boxes[["x1", "y1", "x2", "y2"]] = xyxy
    boxes = boxes.sort_values(["image_id", "rank"]).reset_index(drop=True)
    return boxes, images


def per_image(boxes: pd.DataFrame):
    """Yield ``(image_id, Proposals)`` with rank order preserved (rank 0 first)."""
    for image_id, g in boxes.groupby("image_id", sort=False):
        yield (
            image_id,
            Proposals(g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32), g["score"].to_numpy(np.float32)),
        )


def bootstrap_auc(y, score, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """ROC-AUC and a percentile 95% CI from ``n_boot`` resamples of ``groups`` (default: rows)."""
    from sklearn.metrics import roc_auc_score

    y, score = np.asarray(y), np.asarray(score, dtype=float)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        if y[idx].min() != y[idx].max():
            aucs.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5]) if aucs else (float("nan"), float("nan"))
    return {"auc": float(roc_auc_score(y, score)), "ci95": [float(lo), float(hi)], "n_boot": len(aucs)}


def _q(x, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict:
    x = np.asarray(x, dtype=float)
    return {f"q{int(q * 100):02d}": float(np.quantile(x, q)) for q in qs} | {"mean": float(x.mean())}


def analyse(root: str | Path | None = None, topk: int = 5, iou_threshold: float = 0.5, margin: float = 40.0,
            n_boot: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """The whole analysis as one JSON-ready dict (see the module docstring).

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """
    from tqdm.auto import tqdm

    boxes, images = load_gdino_vindr(root)
    cfg = SelectConfig(topk=topk, iou_threshold=iou_threshold, margin=margin, border="clip", pad="anchor")
    rows, rel_all = [], []
    groups = list(per_image(boxes))
    for image_id, p in tqdm(groups, disable=not progress, desc="gdino-vindr"):
        anchor = p.boxes[0]
        a0 = float(box_area(anchor[None])[0])
        rel = torch.sqrt(box_area(p.boxes[1:]) / max(a0, 1e-6))  # (N-1,)
        rel_all.append(rel.numpy())
        H = int(np.ceil(float(torch.maximum(p.boxes[:, 3].max(), anchor[3]))))
        W = int(np.ceil(float(torch.maximum(p.boxes[:, 2].max(), anchor[2]))))
        sel = select_rois(p.take(torch.arange(1, len(p))), (H, W), anchor, cfg)
        kept = sel.rois[1 : 1 + sel.n_kept]
        bw, bh = float(anchor[2] - anchor[0]), float(anchor[3] - anchor[1])
        rows.append(
            {
                "image_id": image_id,
                "anchor_score": float(p.scores[0]),
                "max_other_score": float(p.scores[1:].max()) if len(p) > 1 else 0.0,
                "mean_top_score": float(sel.scores[1 : 1 + sel.n_kept].mean()) if sel.n_kept else 0.0,
                "n_kept": sel.n_kept,
                "kept_rel_size": float(torch.sqrt(box_area(sel.raw) / max(a0, 1e-6)).median())
                if sel.n_kept
                else float("nan"),
                "coverage": coverage(kept, anchor),
                "breast_w": bw,
                "breast_h": bh,
                "full_tokens": (bh / PATCH) * (bw / PATCH),
            }
        )
    df = pd.DataFrame(rows).merge(images[["image_id", "study_id", "cancer"]], on="image_id", how="inner")
    rel_all = np.concatenate(rel_all)
    out = {
        "n_images": int(len(df)),
        "n_cancer": int(df["cancer"].sum()),
        "anchor_score": _q(df["anchor_score"]),
        "other_scores": _q(boxes.loc[boxes["rank"] > 0, "score"]),
        "rel_size_all_boxes": _q(rel_all) | {"frac_over_0.5": float((rel_all > 0.5).mean())},
        "selection": {"topk": topk, "iou_threshold": iou_threshold, "margin": margin,
                      "n_kept": _q(df["n_kept"]), "frac_padded_images": float((df["n_kept"] < topk).mean()),
                      "kept_rel_size_median": _q(df["kept_rel_size"].dropna())},
        "coverage_of_breast": _q(df["coverage"]),
        "breast_crop_px": {"w": _q(df["breast_w"]), "h": _q(df["breast_h"])},
    }
    tokens = {"full_image_tokens": _q(df["full_tokens"])}
    for s in (448, 224):
        t = (topk + 1) * (s // PATCH) ** 2
        tokens[f"rois_{s}px_tokens"] = t
        tokens[f"ratio_rois_{s}_over_full_median"] = float(t / df["full_tokens"].median())
    out["tokens"] = tokens
    out["auc_cancer"] = {
        name: bootstrap_auc(df["cancer"], df[name], df["study_id"], n_boot=n_boot, seed=seed)
        for name in ("max_other_score", "mean_top_score", "anchor_score")
    }
    return out
