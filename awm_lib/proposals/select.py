"""From raw proposals to the ``topk + 1`` RoIs the model sees (the same for every proposer).

The recipe, in order (the reference implementation's, made explicit):

1. **Clean up.** Boxes are clipped to the image; a box that ends up smaller than
   ``min_size`` pixels on a side (e.g. it lay wholly outside the image) is
   dropped and counted in ``n_dropped``.
2. **Anchor + NMS.** With ``anchor_in_nms`` (ours, the default) the
   full-breast *anchor* box enters greedy NMS first with an infinite score, so
   it always survives and removes proposals that merely repeat it (IoU >
   ``iou_threshold``); other duplicates are removed the same way. The reference
   runs NMS among the detector's boxes only (``anchor_in_nms=False``), so a
   detector box around the whole breast stays beside the anchor.
3. **Top-k.** The ``topk`` highest-scoring survivors are kept.
4. **Square with a margin.** Each kept box becomes a square of side
   ``max(w, h) + margin`` around its centre (reference: margin = 40 px, 20 on
   each side), and the border is handled by ``border`` (``"shift"`` inside,
   ``"clip"``, or ``"pad"`` = leave it and let the cropper pad with black, as
   the reference's crop does). ``square_anchor`` squares the anchor the same
   way (the reference squares every box, anchor included); the squared anchor
   is never moved or clipped, the cropper pads it.
5. **Pad.** If fewer than ``topk`` survive (a clean breast, an empty proposals
   file, ``topk`` larger than the number of proposals), the rest are filled
   deterministically: ``pad="random"`` draws squares inside the anchor with a
   ``torch.Generator`` seeded by ``seed`` (never an unseeded random choice);
   their side is drawn independently of the kept boxes (log-uniform, 5-40% of
   the anchor's shorter side, plus the margin), so a filler's size says
   nothing about what was kept (with the oracle: whether a lesion exists).
   ``pad="repeat"`` repeats kept proposals chosen with the same generator (the
   reference's ``random.choices``; the anchor if none was kept);
   ``pad="anchor"`` repeats the anchor. Padded rows have score 0 and
   ``valid == False`` so the model can mask them out; ``n_padded`` counts them.

The result always has exactly ``topk + 1`` rows, anchor first. Note ``topk``
counts proposals; the reference's ``k`` counts the anchor too (its k = 5 is
``topk = 4`` here).

**The margin is physical.** The reference's 40 px were pixels of VinDr-Mammo
images (about 0.085 mm per pixel), i.e. about 3.4 mm of context. On mini-MIAS
(0.2 mm per pixel) the same 40 px are 8 mm, so a small lesion's square is mostly
margin: a 3 mm lesion (15 px) in a 55 px square has IoU 0.07 with its own box
and can never count as found. ``SelectConfig(margin_mm=3.4, pixel_mm=0.2)``
keeps the reference's *physical* margin at any resolution (``margin_px`` is
``margin_mm / pixel_mm``); without ``margin_mm`` the pixel ``margin`` is used,
as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from awm_lib.errors import ConfigError, ProposalError
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.boxes import (
    BORDER_MODES,
    as_boxes,
    box_area,
    clip_boxes,
    fit_to_image,
    nms,
    square_with_margin,
)

ANCHOR_SCORE = 1.0  # the anchor is not a detection; it gets a fixed score
REFERENCE_MARGIN_MM = 3.4  # the reference's 40 px at VinDr-Mammo's ~0.085 mm per pixel
PIXEL_MM = {"mias": 0.2, "vindr": 0.085}  # typical pixel sizes (mm) of the datasets' images
PAD_MODES = ("random", "repeat", "anchor")


@dataclass
class SelectConfig:
    topk: int = 5
    iou_threshold: float = 0.5
    margin: float = 40.0  # pixels added to max(w, h)
    square: bool = True
    border: str = "shift"  # "shift" | "clip" | "pad"
    pad: str = "random"  # "random" | "anchor"
    seed: int = 0
    min_size: float = 1.0  # boxes thinner than this (after clipping) are dropped
    margin_mm: float | None = None  # if set: margin in millimetres (needs pixel_mm), overrides margin
    pixel_mm: float | None = None  # the image's pixel size in millimetres
    square_anchor: bool = False  # square the anchor too, side max(w, h) + margin (the reference's rule)
    anchor_in_nms: bool = True  # the anchor suppresses proposals that repeat it (ours); False: the reference
    filler_frac: tuple[float, float] = (
        0.05,
        0.4,
    )  # pad="random": side range, fraction of the anchor's shorter side

    def __post_init__(self):
        if self.topk < 0:
            raise ConfigError(f"topk must be >= 0, got {self.topk}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.margin < 0:
            raise ConfigError(f"margin must be >= 0, got {self.margin}")
        if self.margin_mm is not None:
            if self.margin_mm < 0:
                raise ConfigError(f"margin_mm must be >= 0, got {self.margin_mm}")
            if self.pixel_mm is None or self.pixel_mm <= 0:
                raise ConfigError(f"margin_mm needs a positive pixel_mm (mm per pixel), got {self.pixel_mm}")
        if self.border not in BORDER_MODES:
            raise ConfigError(f"border must be one of {BORDER_MODES}, got {self.border!r}")
        if self.pad not in PAD_MODES:
            raise ConfigError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        lo, hi = self.filler_frac
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"filler_frac must satisfy 0 < lo <= hi <= 1, got {self.filler_frac}")

    @property
    def margin_px(self) -> float:
        """The margin in pixels: ``margin_mm / pixel_mm`` when given, else ``margin``."""
        return self.margin if self.margin_mm is None else self.margin_mm / self.pixel_mm


@dataclass
class Selection:
    """The ``topk + 1`` RoIs of one image, anchor first.

    ``rois`` ``(K+1, 4)`` xyxy pixels, ``scores`` ``(K+1,)``, ``valid`` ``(K+1,)``
    (False for padded rows), ``n_padded`` padded rows, ``n_dropped`` input boxes
    dropped for lying outside the image, ``raw`` the kept boxes before squaring.
    """

    rois: torch.Tensor  # (K+1, 4)
    scores: torch.Tensor  # (K+1,)
    valid: torch.Tensor  # (K+1,) bool
    n_padded: int
    n_dropped: int
    raw: torch.Tensor  # (n_kept, 4) kept proposals before squaring, best first

    @property
    def n_kept(self) -> int:
        return int(self.raw.shape[0])

    @property
    def anchor(self) -> torch.Tensor:
        return self.rois[0]


def select_rois(
    proposals: Proposals,
    image_size: tuple[int, int],
    anchor=None,
    cfg: SelectConfig | None = None,
) -> Selection:
    """Apply the recipe in the module docstring to one image's proposals.

    ``image_size`` is ``(H, W)``; ``anchor`` the breast box ``xyxy`` (default: the
    whole image).

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """
    cfg = cfg or SelectConfig()
    H, W = int(image_size[0]), int(image_size[1])
    if H <= 0 or W <= 0:
        raise ProposalError(f"image size must be positive, got {(H, W)}")
    anchor_box = (
        torch.tensor([[0.0, 0.0, W, H]])
        if anchor is None
        else clip_boxes(torch.as_tensor(anchor, dtype=torch.float32).reshape(1, 4), W, H)
    )
    if (anchor_box[0, 2] - anchor_box[0, 0]) < 1 or (anchor_box[0, 3] - anchor_box[0, 1]) < 1:
        raise ProposalError(f"anchor box {anchor} lies outside the {W}x{H} image")

    # 1. clip, drop boxes that were (almost) wholly outside
    boxes = clip_boxes(proposals.boxes, W, H)
    scores = proposals.scores
    wide = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    n_dropped = int((~wide).sum())
    boxes, scores = boxes[wide], scores[wide]

    # 2. the anchor joins NMS with an infinite score, so it is kept first (ours),
    #    or NMS runs among the proposals alone (the reference)
    if cfg.anchor_in_nms:
        all_boxes = torch.cat([anchor_box, boxes])
        all_scores = torch.cat([torch.tensor([float("inf")]), scores])
        keep = nms(all_boxes, all_scores, cfg.iou_threshold)
        keep = keep[keep != 0] - 1  # drop the anchor itself, back to indices into `boxes`
    else:
        keep = nms(boxes, scores, cfg.iou_threshold) if len(boxes) else torch.zeros(0, dtype=torch.long)

    # 3. top-k
    keep = keep[: cfg.topk]
    raw, kept_scores = boxes[keep], scores[keep]

    # 4. square with a margin, handle the border
    rois = square_with_margin(raw, cfg.margin_px) if cfg.square else raw.clone()
    rois = fit_to_image(rois, W, H, cfg.border)

    # 5. pad deterministically
    n_pad = cfg.topk - rois.shape[0]
    pad_boxes = _padding(n_pad, anchor_box[0], rois, cfg, W, H)
    anchor_roi = square_with_margin(anchor_box, cfg.margin_px) if cfg.square_anchor else anchor_box
    rois = torch.cat([anchor_roi, rois, pad_boxes])  # (K+1, 4)
    out_scores = torch.cat([torch.tensor([ANCHOR_SCORE]), kept_scores, torch.zeros(n_pad)])
    valid = torch.ones(cfg.topk + 1, dtype=torch.bool)
    valid[1 + raw.shape[0] :] = False
    return Selection(rois.float(), out_scores.float(), valid, n_pad, n_dropped, raw)


def _padding(
    n: int, anchor: torch.Tensor, kept: torch.Tensor, cfg: SelectConfig, W: int, H: int
) -> torch.Tensor:
    """``n`` filler boxes: seeded random squares inside the anchor, repeated kept boxes, or anchor copies.

    Random fillers never look at ``kept``: their sides are drawn log-uniformly
    from ``cfg.filler_frac`` of the anchor's shorter side (plus the margin), so
    with the oracle proposer a filler's size cannot reveal the lesions' sizes.
    """
    if n <= 0:
        return torch.zeros(0, 4)
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.pad == "anchor" or (cfg.pad == "repeat" and kept.shape[0] == 0):
        return anchor.reshape(1, 4).repeat(n, 1)
    if cfg.pad == "repeat":  # the reference: random.choices among the kept proposals (seeded here)
        return kept[torch.randint(kept.shape[0], (n,), generator=g)].clone()
    aw, ah = float(anchor[2] - anchor[0]), float(anchor[3] - anchor[1])
    lo, hi = (math.log(f * min(aw, ah)) for f in cfg.filler_frac)
    side = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))  # (n,) independent of `kept`
    side = (side + (cfg.margin_px if cfg.square else 0.0)).clamp(max=min(aw, ah))
    u = torch.rand(n, 2, generator=g)  # (n, 2) centres as fractions of the anchor
    cx = anchor[0] + side / 2 + u[:, 0] * (aw - side).clamp(min=0.0)
    cy = anchor[1] + side / 2 + u[:, 1] * (ah - side).clamp(min=0.0)
    boxes = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=-1)
    return fit_to_image(boxes, W, H, "shift")


def select_batch(
    proposals: list[Proposals],
    image_sizes: list[tuple[int, int]],
    anchors: list | None = None,
    cfg: SelectConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select for a batch: ``rois (B, K+1, 4)``, ``scores (B, K+1)``, ``valid (B, K+1)``."""
    anchors = [None] * len(proposals) if anchors is None else anchors
    sel = [select_rois(p, s, a, cfg) for p, s, a in zip(proposals, image_sizes, anchors)]
    if not sel:
        k = (cfg or SelectConfig()).topk + 1
        return torch.zeros(0, k, 4), torch.zeros(0, k), torch.zeros(0, k, dtype=torch.bool)
    return (
        torch.stack([s.rois for s in sel]),
        torch.stack([s.scores for s in sel]),
        torch.stack([s.valid for s in sel]),
    )


def coverage(rois, anchor, grid: int = 256) -> float:
    """Fraction of the anchor box covered by the union of ``rois`` (rasterised on a grid)."""
    a = torch.as_tensor(anchor, dtype=torch.float32).reshape(4)
    r = as_boxes(rois)
    aw, ah = float(a[2] - a[0]), float(a[3] - a[1])
    if aw <= 0 or ah <= 0 or box_area(a.reshape(1, 4))[0] == 0:
        return 0.0
    xs = a[0] + (torch.arange(grid) + 0.5) * aw / grid  # (G,)
    ys = a[1] + (torch.arange(grid) + 0.5) * ah / grid  # (G,)
    inx = (r[:, None, 0] <= xs) & (xs <= r[:, None, 2])  # (N, G)
    iny = (r[:, None, 1] <= ys) & (ys <= r[:, None, 3])  # (N, G)
    covered = (iny[:, :, None] & inx[:, None, :]).any(0)  # (G, G)
    return float(covered.float().mean())
