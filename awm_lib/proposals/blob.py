"""A training-free proposer: bright compact blobs and clusters of bright specks.

No detector weights are available offline, so the default proposer is classic
image analysis, vectorised in torch on the CPU:

**Masses** look like bright, compact, roughly round regions brighter than the
tissue around them. A *difference of Gaussians* (DoG) measures exactly that:
blur the image a little (``sigma``) and a lot (``ratio * sigma``) and subtract;
the result is large where a region of radius about ``sqrt(2) * sigma`` is
brighter than its surround. We do it at several ``sigma`` (a scale space), on a
*pyramid* (each large ``sigma`` is computed on a proportionally smaller image,
so every blur uses a short kernel and the whole thing is fast), and keep the
local maxima. Two details matter on mammograms:

- blurs are *normalised by the mask* (``blur(I * m) / blur(m)``), so the black
  background outside the breast does not create a fake contrast at the skin;
- a DoG also answers along straight edges (the pectoral muscle, the skin line);
  the 2x2 Hessian at the maximum separates blobs (two large curvatures) from
  edges (one), the test SIFT uses (``edge_ratio``).

In an MLO view the pectoral muscle is the brightest "blob" of all; it is found
(a bright region at the top chest-wall corner, :func:`_pectoral_mask`) and
taken out of the mask before the search.

**Calcification clusters** are groups of tiny (0.1-1 mm) very bright specks.
A fine-scale DoG on a higher-resolution image finds the specks (responses many
robust standard deviations above the breast's typical value); a box filter then
counts specks per neighbourhood and the densest places become cluster boxes.

Scores: a mass's score is its DoG contrast divided by the breast's robust
intensity spread (so scores compare across images); a cluster's score is
``cluster_weight`` times the Poisson z-score of the speck count against the
breast's average speck density. All sizes are
fractions of the image's longer side, so the same settings work at 1024 or
2048 pixels; the defaults were chosen on mini-MIAS (see the book's proposer
chapter), never per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from awm_lib.proposals.base import BaseProposer, Proposals, breast_mask
from awm_lib.proposals.boxes import nms


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ``ceil(3 sigma)``."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _conv1d_last(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Correlate the last axis of ``x`` with the odd kernel ``k`` (zero padding).

    A loop of shifted, scaled adds: on one CPU core this is several times faster
    than ``F.conv2d`` with a ``1 x K`` kernel on a single-channel image.
    """
    r = (len(k) - 1) // 2
    n = x.shape[-1]
    p = F.pad(x, (r, r))
    out = p[..., 0:n] * float(k[0])
    for i in range(1, len(k)):
        out.add_(p[..., i : i + n], alpha=float(k[i]))
    return out


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``(N, 1, H, W)``, zero padding (rows, then columns)."""
    k = gaussian_kernel(sigma)
    x = _conv1d_last(x, k)
    return _conv1d_last(x.transpose(-1, -2), k).transpose(-1, -2)


def local_max(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """``size x size`` maximum filter (separable, shifted views), padding with -inf."""
    r = size // 2
    p = F.pad(x, (r, r, r, r), value=-float("inf"))
    h, w = x.shape[-2:]
    m = p[..., :, 0:w]
    for i in range(1, size):
        m = torch.maximum(m, p[..., :, i : i + w])
    out = m[..., 0:h, :]
    for i in range(1, size):
        out = torch.maximum(out, m[..., i : i + h, :])
    return out


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion of a 0/1 float mask by a ``size x size`` square (outside counts as 0)."""
    return 1 - local_max(1 - mask, size).clamp(min=0)


def masked_blur(img: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur of the breast only: ``blur(img * mask) / blur(mask)`` (normalised convolution)."""
    both = blur(torch.cat([img * mask, mask]), sigma)  # (2, 1, H, W), one call for both
    return both[:1] / both[1:].clamp(min=1e-3)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over ``factor x factor`` blocks (edge blocks padded by replication)."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    n, c, H, W = x.shape
    return x.reshape(n, c, H // factor, factor, W // factor, factor).mean((3, 5))


@dataclass
class BlobProposer(BaseProposer):
    """Multi-scale DoG masses + speck-density calcification clusters (see module docstring)."""

    work_size: int = 512  # longer side of the working image for masses (pixels)
    sigmas: tuple = (0.006, 0.009, 0.013, 0.019, 0.027, 0.038, 0.054)  # x longer side
    ratio: float = 2.0  # surround blur = ratio * sigma
    edge_ratio: float = 10.0  # Hessian eigenvalue ratio above which a maximum is an edge
    box_scale: float = 2.0  # box half-side = box_scale * sigma
    per_scale: int = 12  # maxima kept per scale before merging
    max_boxes: int = 50  # boxes returned
    nms_iou: float = 0.1  # internal NMS between scales
    min_contrast: float = 0.05  # drop masses weaker than this (in robust-spread units)
    calc: bool = True  # look for calcification clusters too
    calc_size: int = 1024  # longer side of the working image for specks
    calc_sigma: float = 0.0007  # speck scale, x longer side (~0.7 px at 1024)
    calc_threshold: float = 5.0  # speck = DoG above median + this many robust stds
    calc_window: float = 0.06  # cluster neighbourhood, x longer side
    calc_min_count: int = 3  # specks needed for a cluster
    cluster_weight: float = 0.05  # x Poisson z-score of the speck count
    pectoral: bool = True  # ignore blobs on the pectoral muscle (MLO views), see _pectoral_mask
    name: str = "blob"

    def _propose(self, image: np.ndarray, mask: np.ndarray | None) -> Proposals:
        if mask is None:
            mask = breast_mask(image)
        H, W = image.shape
        img = torch.from_numpy(np.array(image, dtype=np.float32))[None, None]  # (1, 1, H, W)
        msk = torch.from_numpy(np.array(mask, dtype=np.float32))[None, None]
        boxes, scores, labels = self._masses(img, msk, max(H, W))
        if self.calc:
            cb, cs = self._clusters(img, msk, max(H, W))
            boxes, scores = torch.cat([boxes, cb]), torch.cat([scores, cs])
            labels = labels + ["calcification"] * len(cs)
        keep = nms(boxes, scores, self.nms_iou)[: self.max_boxes]
        return Proposals(boxes[keep], scores[keep], [labels[i] for i in keep.tolist()])

    # --- masses -------------------------------------------------------------
    def _masses(self, img, msk, long_side):
        f0 = max(1, round(long_side / self.work_size))  # image -> working scale
        im, m = downsample(img, f0), (downsample(msk, f0) > 0.5).float()
        spread = _robust_spread(im, m)
        if self.pectoral:
            m = m * (1 - _pectoral_mask(im, m))  # the muscle is not breast tissue
        boxes, scores = [], []
        for s in self.sigmas:
            sigma = s * long_side / f0  # in working pixels
            f = 1
            while sigma / (2 * f) >= 1.5:  # pyramid level: keep the blur kernel short
                f *= 2
            iml, ml = downsample(im, f), (downsample(m, f) > 0.5).float()
            sl = sigma / f
            fine = masked_blur(iml, ml, sl)
            dog = (fine - masked_blur(iml, ml, self.ratio * sl)) / spread  # (1, 1, h, w)
            dog = torch.where(ml > 0, dog, torch.full_like(dog, -1e9))
            peak = (dog == local_max(dog)) & (dog > self.min_contrast)
            peak &= ~_edge_like(fine, self.edge_ratio)
            vals = torch.where(peak, dog, torch.full_like(dog, -1e9)).flatten()
            top = torch.topk(vals, min(self.per_scale, vals.numel()))
            ok = top.values > -1e8
            idx, val = top.indices[ok], top.values[ok]
            w = dog.shape[-1]
            cx = ((idx % w).float() + 0.5) * f * f0  # back to image pixels
            cy = ((idx // w).float() + 0.5) * f * f0
            half = self.box_scale * sigma * f0
            boxes.append(torch.stack([cx - half, cy - half, cx + half, cy + half], -1))
            scores.append(val)
        boxes, scores = torch.cat(boxes), torch.cat(scores)
        return boxes, scores, ["mass"] * len(scores)

    # --- calcification clusters ---------------------------------------------
    def _clusters(self, img, msk, long_side):
        f0 = max(1, round(long_side / self.calc_size))
        im, m = downsample(img, f0), (downsample(msk, f0) > 0.5).float()
        sigma = max(0.7, self.calc_sigma * long_side / f0)
        dog = blur(im, sigma) - blur(im, 3 * sigma)  # specks are far from the skin: no mask needed
        inside = erode(m, 9) > 0.5  # mask eroded by 4 px
        vals = dog[inside][::7]  # a subsample is plenty for two robust statistics
        if vals.numel() < 100:
            return torch.zeros(0, 4), torch.zeros(0)
        med = vals.median()
        mad = (vals - med).abs().median().clamp(min=1e-6) * 1.4826
        specks = ((dog > med + self.calc_threshold * mad) & inside).float()
        specks = specks * (dog == local_max(dog)).float()  # one count per speck
        # count specks per cell (half a window), then per 2x2 cells (one window)
        cell = max(2, int(round(self.calc_window * long_side / f0 / 2)))
        cells = F.avg_pool2d(specks, cell, cell, ceil_mode=True) * cell * cell  # (1, 1, h', w')
        count = F.avg_pool2d(F.pad(cells, (0, 1, 0, 1)), 2, 1) * 4  # specks in 2x2 cells
        peak = (count == local_max(count)) & (count >= self.calc_min_count)
        idx = peak.flatten().nonzero().reshape(-1)
        if idx.numel() == 0:
            return torch.zeros(0, 4), torch.zeros(0)
        n = count.flatten()[idx]
        w = count.shape[-1]
        cx = ((idx % w).float() + 1.0) * cell * f0  # a 2x2-cell window's centre
        cy = ((idx // w).float() + 1.0) * cell * f0
        half = cell * f0
        boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], -1)
        # significance of the count against the breast's average speck density
        lam = specks.sum() * (2 * cell) ** 2 / inside.sum().clamp(min=1)
        z = (n - lam) / lam.clamp(min=0.5).sqrt()
        return boxes, self.cluster_weight * z


def _pectoral_mask(im: torch.Tensor, m: torch.Tensor, grid: int = 128) -> torch.Tensor:
    """The pectoral muscle of an MLO view as a 0/1 mask (all zeros when none is found).

    In an MLO view the muscle is a bright triangle in the top corner on the
    chest-wall side; it is brighter than the tissue next to it and its straight
    edge is the strongest "blob" a DoG finds. We threshold the top half of the
    chest side at Otsu's level and keep the bright component that touches the
    top edge of the breast on the chest wall. It must be a modest part of the
    breast (< 35%), otherwise it is dense tissue (or a CC view) and we keep it.
    """
    from scipy import ndimage

    h, w = im.shape[-2:]
    f = max(1, round(max(h, w) / grid))
    small = downsample(im, f)[0, 0].numpy()
    ms = (downsample(m, f)[0, 0] > 0.5).numpy()
    if ms.sum() < 50:
        return torch.zeros_like(m)
    cols = np.flatnonzero(ms.any(0))
    strip = max(1, (cols[-1] - cols[0] + 1) // 10)
    left = ms[:, cols[0] : cols[0] + strip].sum() >= ms[:, cols[-1] - strip + 1 : cols[-1] + 1].sum()
    if not left:  # work with the chest wall on the left
        small, ms = small[:, ::-1], ms[:, ::-1]
        cols = np.flatnonzero(ms.any(0))
    c0, wb = cols[0], cols[-1] - cols[0] + 1
    rows = np.flatnonzero(ms.any(1))
    top, height = rows[0], rows[-1] - rows[0] + 1
    region = np.zeros_like(ms)
    region[top : top + height // 2, c0 : c0 + max(2, wb // 2)] = True
    region &= ms
    vals = small[region]
    if vals.size < 20:
        return torch.zeros_like(m)
    bright = region & (small > _otsu(vals))
    lab, _ = ndimage.label(bright)
    corner = lab[top : top + 3, c0 : c0 + 3].max()  # the component at the top chest-wall corner
    if corner == 0:
        return torch.zeros_like(m)
    pect = lab == corner
    if pect.sum() > 0.35 * ms.sum():
        return torch.zeros_like(m)
    pect = ndimage.binary_dilation(pect, iterations=2)
    if not left:
        pect = pect[:, ::-1]
    big = torch.from_numpy(np.ascontiguousarray(pect)).float()[None, None]
    big = big.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :h, :w]
    return F.pad(big, (0, w - big.shape[-1], 0, h - big.shape[-2]))


def _otsu(vals: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the grey level that best separates two classes of ``vals``."""
    hist, edges = np.histogram(vals, bins=bins)
    p = hist / max(1, hist.sum())
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * mids)
    between = (mu[-1] * w0 - mu) ** 2 / np.clip(w0 * (1 - w0), 1e-12, None)
    return float(mids[np.argmax(between)])


def _robust_spread(im: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """1.4826 x median absolute deviation of the breast's pixels (a noise-robust std)."""
    vals = im[m > 0][::3]
    if vals.numel() < 2:
        return torch.tensor(1.0)
    med = vals.median()
    return ((vals - med).abs().median() * 1.4826).clamp(min=1e-3)


def _edge_like(L: torch.Tensor, edge_ratio: float) -> torch.Tensor:
    """True where the blurred image ``L`` curves along one direction only (an edge, not a blob).

    With the Hessian ``[[Lxx, Lxy], [Lxy, Lyy]]``, a blob has two large
    eigenvalues of the same sign; ``tr^2 / det`` is small for a blob and large
    (or ``det <= 0``) for an edge. Reject when ``tr^2 / det > (r + 1)^2 / r``.
    """
    p = F.pad(L, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    lxx = p[..., 1:-1, 2:] - 2 * c + p[..., 1:-1, :-2]
    lyy = p[..., 2:, 1:-1] - 2 * c + p[..., :-2, 1:-1]
    lxy = (p[..., 2:, 2:] - p[..., 2:, :-2] - p[..., :-2, 2:] + p[..., :-2, :-2]) / 4
    tr, det = lxx + lyy, lxx * lyy - lxy**2
    limit = (edge_ratio + 1) ** 2 / edge_ratio
    return (det <= 0) | (tr**2 > limit * det)
