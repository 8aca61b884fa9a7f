"""Boxes: the one module that knows about box formats, overlaps and NMS.

Every box in the library is ``xyxy`` -- ``(x1, y1, x2, y2)`` in float pixels of
the image it belongs to, with ``x`` the column and ``y`` the row, origin at the
top-left corner. The reference implementation's files store ``cx cy w h``
instead; :func:`cxcywh_to_xyxy` and :func:`xyxy_to_cxcywh` are the only places
where that conversion happens (convert at the edges, never in the middle).

All functions take anything :func:`torch.as_tensor` understands (lists, numpy
arrays, tensors) of shape ``(N, 4)`` and return ``float32`` tensors.

A box's area is ``w * h`` with ``w = x2 - x1`` (continuous coordinates, no
"+1" pixel convention): the box ``(0, 0, 10, 10)`` covers 100 pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from awm_lib.errors import ProposalError

BORDER_MODES = ("clip", "shift", "pad")


def as_boxes(boxes) -> torch.Tensor:
    """``boxes`` as a ``(N, 4)`` float32 tensor; an empty input gives ``(0, 4)``.

    Raises :class:`ProposalError` for a wrong shape or non-finite values.
    """
    if isinstance(boxes, np.ndarray) and not boxes.flags.writeable:
        boxes = boxes.copy()  # e.g. a pandas column: torch warns on read-only memory
    t = torch.as_tensor(boxes, dtype=torch.float32)
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ProposalError(f"boxes must have shape (N, 4), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ProposalError("boxes contain NaN or inf values; drop those rows before selection")
    return t


def cxcywh_to_xyxy(boxes) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``: ``x1 = cx - w/2``, ``x2 = cx + w/2``."""
    b = as_boxes(boxes)
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``, the inverse of :func:`cxcywh_to_xyxy`."""
    b = as_boxes(boxes)
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes) -> torch.Tensor:
    """Areas ``(N,)``; a degenerate box (``x2 <= x1``) has area 0."""
    b = as_boxes(boxes)
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def box_intersection(a, b) -> torch.Tensor:
    """Pairwise intersection areas ``(N, M)``."""
    a, b = as_boxes(a), as_boxes(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a, b) -> torch.Tensor:
    """Pairwise intersection-over-union ``(N, M)``; 0 where both boxes are empty."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes, scores, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    Walk the boxes from the highest score down; keep a box unless it overlaps an
    already kept box with IoU **strictly greater** than ``iou_threshold``.
    Ties in score keep the original order (a stable sort), so the result is
    deterministic.
    """
    b = as_boxes(boxes)
    s = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    if s.shape[0] != b.shape[0]:
        raise ProposalError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(s, descending=True, stable=True).indices
    iou = box_iou(b[order], b[order])  # (N, N), small N: a few hundred at most
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def square_with_margin(boxes, margin: float = 40.0) -> torch.Tensor:
    """Square boxes around the same centres with side ``max(w, h) + margin``.

    This is the reference implementation's crop rule: a square crop keeps the
    lesion's aspect ratio when it is resized for the ViT, and the margin keeps
    some surrounding tissue for context (``margin`` is in pixels of the image).
    """
    cx, cy, w, h = xyxy_to_cxcywh(boxes).unbind(-1)
    half = (torch.maximum(w, h) + margin) / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)


def clip_boxes(boxes, width: float, height: float) -> torch.Tensor:
    """Clip every coordinate into ``[0, width] x [0, height]`` (a box may become empty)."""
    b = as_boxes(boxes).clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, width)
    b[:, 1::2] = b[:, 1::2].clamp(0, height)
    return b


def shift_inside(boxes, width: float, height: float) -> torch.Tensor:
    """Move boxes (keeping their size) so they lie inside the image.

    A box larger than the image along one axis cannot fit: it is clipped along
    that axis instead. Shifting keeps a square crop square, so nothing is
    distorted when it is resized for the ViT.
    """
    b = as_boxes(boxes).clone()
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        shift = (-b[:, lo]).clamp(min=0) - (b[:, hi] - size).clamp(min=0)
        fits = (b[:, hi] - b[:, lo]) <= size
        b[:, lo] = torch.where(fits, b[:, lo] + shift, b[:, lo].clamp(0, size))
        b[:, hi] = torch.where(fits, b[:, hi] + shift, b[:, hi].clamp(0, size))
    return b


def fit_to_image(boxes, width: float, height: float, mode: str = "shift") -> torch.Tensor:
    """Handle boxes that cross the image border.

    - ``"clip"``: cut the box at the border (it may stop being square);
    - ``"shift"``: move it inside, keeping its size (clip only if it is larger
      than the image);
    - ``"pad"``: leave it as it is; whoever crops it pads the outside with zeros
      (black, like the background of a mammogram).
    """
    if mode == "clip":
        return clip_boxes(boxes, width, height)
    if mode == "shift":
        return shift_inside(boxes, width, height)
    if mode == "pad":
        return as_boxes(boxes).clone()
    raise ProposalError(f"unknown border mode {mode!r}; use one of {BORDER_MODES}")


def contains_points(boxes, points) -> torch.Tensor:
    """``(N, M)`` bool: box ``i`` contains point ``j`` (borders included)."""
    b = as_boxes(boxes)
    p = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
    x, y = p[None, :, 0], p[None, :, 1]
    return (b[:, None, 0] <= x) & (x <= b[:, None, 2]) & (b[:, None, 1] <= y) & (y <= b[:, None, 3])


def scale_boxes(boxes, sx: float, sy: float | None = None) -> torch.Tensor:
    """Multiply x coordinates by ``sx`` and y coordinates by ``sy`` (default ``sx``)."""
    sy = sx if sy is None else sy
    return as_boxes(boxes) * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
