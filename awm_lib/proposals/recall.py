"""How often do the proposals find the lesion? Recall at k and FROC.

**The hit rule.** A lesion is *found* by a box when the box contains the
lesion's centre AND the box overlaps the lesion's box with IoU >= 0.1
(``min_iou``). The centre condition asks for the right place; the loose IoU
condition asks for a roughly right size (a box the size of the whole breast
contains every centre but is no help, and fails the IoU for all but the largest
lesions). When a lesion has no explicit centre, its box centre is used.

**Recall at k**: the fraction of lesions found by at least one of an image's
first ``k`` proposals (sorted by score, after NMS). The anchor and padded boxes
are *not* proposals and never count, unless the caller passes them in.

**FROC** (free-response ROC): sweep a score threshold ``t``; sensitivity is the
fraction of lesions found by a box with score >= ``t``; false positives are
boxes with score >= ``t`` that find no lesion, averaged over all images
(lesion-free images included). It shows the price, in wrong boxes per image,
of each level of sensitivity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from awm_lib.data.types import Lesion
from awm_lib.proposals.boxes import as_boxes, box_iou, contains_points

MIN_IOU = 0.1


@dataclass
class ImageResult:
    """One image's proposals (best first) and its lesions, ready for scoring."""

    image_id: str
    boxes: torch.Tensor  # (N, 4) xyxy, sorted by score, highest first
    scores: torch.Tensor  # (N,)
    lesions: Sequence[Lesion] = field(default_factory=tuple)

    def __post_init__(self):
        self.boxes = as_boxes(self.boxes)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)


def lesion_centres(lesions: Sequence[Lesion]) -> torch.Tensor:
    """``(M, 2)`` centres: the given centre, else the middle of the lesion box."""
    pts = []
    for les in lesions:
        if les.center is not None:
            pts.append(les.center)
        else:
            x1, y1, x2, y2 = les.box
            pts.append(((x1 + x2) / 2, (y1 + y2) / 2))
    return torch.tensor(pts, dtype=torch.float32).reshape(-1, 2)


def hit_matrix(boxes, lesions: Sequence[Lesion], min_iou: float = MIN_IOU) -> torch.Tensor:
    """``(N, M)`` bool: box ``i`` finds lesion ``j`` (contains its centre and IoU >= ``min_iou``)."""
    b = as_boxes(boxes)
    if len(lesions) == 0 or b.shape[0] == 0:
        return torch.zeros(b.shape[0], len(lesions), dtype=torch.bool)
    lb = torch.tensor([les.box for les in lesions], dtype=torch.float32)
    return contains_points(b, lesion_centres(lesions)) & (box_iou(b, lb) >= min_iou)


def first_hit_rank(res: ImageResult, min_iou: float = MIN_IOU) -> torch.Tensor:
    """``(M,)`` for each lesion, the 1-based rank of the first box that finds it (inf if none)."""
    hits = hit_matrix(res.boxes, res.lesions, min_iou)  # (N, M)
    ranks = torch.arange(1, hits.shape[0] + 1, dtype=torch.float32)[:, None].expand_as(hits)
    big = torch.full_like(ranks, float("inf"))
    return (
        torch.where(hits, ranks, big).min(0).values
        if hits.shape[0]
        else torch.full((hits.shape[1],), float("inf"))
    )


def recall_at_k(results: Sequence[ImageResult], ks=(1, 5, 10), min_iou: float = MIN_IOU) -> dict:
    """``{"recall@k": fraction, ..., "n_lesions": M, "found@k": count}`` over all lesions.

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """
    ranks = _all_ranks(results, min_iou)
    out: dict = {}
    for k in ks:
        found = int((ranks <= k).sum())
        out[f"recall@{k}"] = found / len(ranks) if len(ranks) else float("nan")
        out[f"found@{k}"] = found
    out["n_lesions"] = int(len(ranks))
    return out


def recall_by_group(
    results: Sequence[ImageResult],
    group: Callable[[Lesion], str],
    ks=(1, 5, 10),
    min_iou: float = MIN_IOU,
) -> dict[str, dict]:
    """Recall at k separately for each value of ``group(lesion)`` (e.g. type, size bin)."""
    ranks = _all_ranks(results, min_iou)
    keys = [group(les) for r in results for les in r.lesions]
    out = {}
    for g in sorted(set(keys)):
        sel = torch.tensor([k == g for k in keys])
        rg = ranks[sel]
        d = {f"recall@{k}": float((rg <= k).float().mean()) for k in ks}
        d["n_lesions"] = int(sel.sum())
        out[g] = d
    return out


def size_bin(lesion: Lesion, edges=(20.0, 50.0)) -> str:
    """``"small"``/``"medium"``/``"large"`` by the lesion's radius (half the longer box side), pixels."""
    x1, y1, x2, y2 = lesion.box
    r = lesion.radius if lesion.radius is not None else max(x2 - x1, y2 - y1) / 2
    names = ("small", "medium", "large")
    for name, edge in zip(names, edges):
        if r < edge:
            return f"{name} (r<{edge:g})"
    return f"{names[len(edges)]} (r>={edges[-1]:g})"


def froc(results: Sequence[ImageResult], thresholds=None, min_iou: float = MIN_IOU) -> dict:
    """FROC points: ``{"threshold": [...], "sensitivity": [...], "fp_per_image": [...]}``.

    Default thresholds: every distinct score, highest first (so the curve is exact).

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """
    n_img = max(1, len(results))
    n_les = sum(len(r.lesions) for r in results)
    box_scores, box_is_tp, les_best = [], [], []
    for r in results:
        hits = hit_matrix(r.boxes, r.lesions, min_iou)  # (N, M)
        box_scores.append(r.scores)
        box_is_tp.append(hits.any(1))
        s = r.scores[:, None].expand_as(hits)
        best = (
            torch.where(hits, s, torch.full_like(s, -float("inf"))).max(0).values
            if hits.shape[0]
            else torch.full((hits.shape[1],), -float("inf"))
        )
        les_best.append(best)  # (M,) best score of a box finding each lesion
    scores = torch.cat(box_scores) if box_scores else torch.zeros(0)
    is_tp = torch.cat(box_is_tp) if box_is_tp else torch.zeros(0, dtype=torch.bool)
    best = torch.cat(les_best) if les_best else torch.zeros(0)
    if thresholds is None:
        thresholds = torch.unique(scores).flip(0).tolist()
    sens, fps = [], []
    for t in thresholds:
        sens.append(float((best >= t).sum()) / n_les if n_les else float("nan"))
        fps.append(float(((scores >= t) & ~is_tp).sum()) / n_img)
    return {"threshold": [float(t) for t in thresholds], "sensitivity": sens, "fp_per_image": fps}


def sensitivity_at_fp(curve: dict, fp_levels=(0.5, 1, 2, 4, 8)) -> dict[str, float]:
    """Best sensitivity reached with at most ``fp`` false positives per image, for each level."""
    fps = np.asarray(curve["fp_per_image"])
    sens = np.asarray(curve["sensitivity"])
    out = {}
    for fp in fp_levels:
        ok = fps <= fp
        out[f"sens@{fp:g}fp"] = float(sens[ok].max()) if ok.any() else 0.0
    return out


def _all_ranks(results: Sequence[ImageResult], min_iou: float) -> torch.Tensor:
    ranks = [first_hit_rank(r, min_iou) for r in results if len(r.lesions)]
    return torch.cat(ranks) if ranks else torch.zeros(0)
