"""Three reference proposers for ablations: the oracle, random boxes, and none.

- :class:`OracleProposer` returns the ground-truth lesion boxes (optionally
  jittered, seeded): the best a detector could do, so "oracle vs blob vs
  Grounding DINO" measures how much the RoI step costs.
- :class:`RandomProposer` returns seeded random boxes inside the breast: the
  floor every real proposer must beat.
- :class:`NoProposer` returns nothing: only the full-breast anchor remains, so
  the model degenerates to a single whole-breast crop.

All randomness comes from a ``torch.Generator`` seeded with ``seed`` mixed with
a fingerprint of the input, so the same image always gets the same boxes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from awm_lib.errors import ProposalError
from awm_lib.proposals.base import BaseProposer, Proposals, breast_mask, check_image, mask_box
from awm_lib.proposals.boxes import as_boxes, clip_boxes


def _generator(seed: int, *arrays) -> torch.Generator:
    """A generator seeded by ``seed`` and a CRC of small summaries of ``arrays``."""
    h = zlib.crc32(np.asarray([a.shape for a in arrays] if arrays else [0]).tobytes())
    for a in arrays:
        h = zlib.crc32(np.ascontiguousarray(a[::16, ::16] if a.ndim == 2 else a).tobytes(), h)
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + h) % (2**63))


@dataclass
class OracleProposer(BaseProposer):
    """Ground-truth boxes, jittered by ``jitter`` x box size (0 = exact), score 1."""

    jitter: float = 0.0
    seed: int = 0
    name: str = "oracle"
    needs_ground_truth = True

    def propose(self, image, mask=None, gt_boxes=None) -> Proposals:
        if gt_boxes is None:
            raise ProposalError(
                "the oracle proposer needs the ground-truth boxes: propose(image, gt_boxes=...)"
            )
        img, _ = check_image(image, mask)
        H, W = img.shape
        b = as_boxes(gt_boxes)
        if self.jitter > 0 and len(b):
            g = _generator(self.seed, b.numpy())
            wh = (b[:, 2:] - b[:, :2]).clamp(min=1)  # (N, 2)
            shift = torch.randn(len(b), 2, generator=g) * self.jitter * wh
            scale = torch.exp(torch.randn(len(b), 2, generator=g) * self.jitter)
            c = (b[:, :2] + b[:, 2:]) / 2 + shift
            half = wh * scale / 2
            b = torch.cat([c - half, c + half], dim=1)
        b = clip_boxes(b, W, H)
        return Proposals(b, torch.ones(len(b)), ["lesion"] * len(b), (H, W))

    def propose_batch(self, images, masks=None, gt_boxes=None) -> list[Proposals]:
        masks = [None] * len(images) if masks is None else masks
        gt_boxes = [None] * len(images) if gt_boxes is None else gt_boxes
        return [self.propose(i, m, g) for i, m, g in zip(images, masks, gt_boxes)]


@dataclass
class RandomProposer(BaseProposer):
    """``n_boxes`` random squares centred on breast pixels, sides log-uniform in
    ``[min_frac, max_frac]`` x the breast's shorter side, random scores."""

    n_boxes: int = 20
    min_frac: float = 0.05
    max_frac: float = 0.4
    seed: int = 0
    name: str = "random"

    def _propose(self, image: np.ndarray, mask: np.ndarray | None) -> Proposals:
        H, W = image.shape
        if mask is None:
            mask = breast_mask(image)
        g = _generator(self.seed, image, mask)
        ys, xs = np.nonzero(mask)  # breast pixels
        x0, y0, x1, y1 = mask_box(mask)
        short = min(x1 - x0, y1 - y0)
        pick = torch.randint(len(xs), (self.n_boxes,), generator=g).numpy()
        cx = torch.from_numpy(xs[pick].astype(np.float32)) + 0.5
        cy = torch.from_numpy(ys[pick].astype(np.float32)) + 0.5
        lo, hi = np.log(self.min_frac * short), np.log(self.max_frac * short)
        side = torch.exp(lo + (hi - lo) * torch.rand(self.n_boxes, generator=g))
        b = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], -1)
        return Proposals(
            clip_boxes(b, W, H), torch.rand(self.n_boxes, generator=g), ["random"] * self.n_boxes
        )


@dataclass
class NoProposer(BaseProposer):
    """No boxes at all: after selection only the anchor (and padding) remains."""

    name: str = "none"

    def _propose(self, image: np.ndarray, mask: np.ndarray | None) -> Proposals:
        return Proposals.empty()
