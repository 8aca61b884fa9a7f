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
A fine-scale DoG on a higher-resolution image finds the specks, measured in
*local* standard deviations (dense, textured tissue is full of bright dots and
must not look like a cluster); the specks are counted per window and each dense
window becomes a box fitted to its own specks (centroid +- ``calc_box_std``
standard deviations), see :meth:`BlobProposer._clusters`.

Scores: a mass's score is its DoG contrast divided by the breast's robust
intensity spread (so scores compare across images); a cluster's is the Poisson
z-score of its speck count against the breast's average speck density. The two
are not comparable, so by default they are not mixed by score: every
``calc_every``-th rank is *reserved* for the next significant cluster
(:func:`_interleave`; ``calc_every=0`` falls back to ranking
``cluster_weight * z`` together with the masses).

Speed: the search runs on the breast's bounding box only, every downsampled
level is computed once (:class:`_Levels`), and box sums use running sums
(:func:`box_mean`). All sizes are fractions of the image's longer side, so the
same settings work at 1024 or 2048 pixels. The defaults were chosen on half of
mini-MIAS (the women with odd pair numbers) and checked on the other half and
on synthetic images (``results/proposer_recall.json``), never per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from awm_lib.data.breast import otsu_threshold
from awm_lib.proposals.base import BaseProposer, Proposals, breast_mask
from awm_lib.proposals.boxes import nms

VERSION = 2  # bump whenever the proposer's output changes (RoI caches key on settings())


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


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size x size`` window (odd ``size``), edges replicated, in O(1) per pixel.

    Running sums (an integral image, one axis at a time so float32 stays accurate):
    the sum over a window is the difference of two cumulative sums.
    """
    r = size // 2
    p = F.pad(x, (r + 1, r, r + 1, r), mode="replicate")
    p[..., 0, :] = 0  # the extra leading row/column turns the cumsum into an exclusive one
    p[..., :, 0] = 0
    c = p.cumsum(-1)
    rows = c[..., :, size:] - c[..., :, :-size]  # (.., H + size, W) window sums along x
    c = rows.cumsum(-2)
    return (c[..., size:, :] - c[..., :-size, :]) / (size * size)


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
    return F.avg_pool2d(x, factor, factor)  # several times faster than a reshape + mean on one core


@dataclass
class BlobProposer(BaseProposer):
    """Multi-scale DoG masses + speck-density calcification clusters (see module docstring).

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """

    work_size: int = 512  # longer side of the working image for masses (pixels)
    sigmas: tuple = (0.006, 0.009, 0.013, 0.019, 0.027, 0.038, 0.054)  # x longer side
    ratio: float = 2.0  # surround blur = ratio * sigma
    edge_ratio: float = 10.0  # Hessian eigenvalue ratio above which a maximum is an edge
    box_scale: float = 2.5  # box half-side = box_scale * sigma
    per_scale: int = 12  # maxima kept per scale before merging
    max_boxes: int = 50  # boxes returned
    nms_iou: float = 0.1  # internal NMS between scales
    min_contrast: float = 0.05  # drop masses weaker than this (in robust-spread units)
    calc: bool = True  # look for calcification clusters too
    calc_size: int = 1024  # longer side of the working image for specks
    calc_sigma: float = 0.0007  # speck scale, x longer side (~0.7 px at 1024)
    calc_threshold: float = 3.0  # speck = DoG this many local standard deviations above the median
    calc_local: float = 0.06  # window of that local standard deviation, x longer side
    calc_window: float = 0.04  # cluster neighbourhood, x longer side
    calc_min_count: int = 3  # specks needed for a cluster
    cluster_weight: float = 0.05  # x Poisson z-score of the speck count (when calc_every == 0)
    calc_box_std: float = 2.0  # cluster box half-side = this x the specks' standard deviation
    calc_min_half: float = 0.004  # ... but at least this, x longer side (~0.8 mm at 0.2 mm/px)
    calc_every: int = 3  # rank interleaving: every calc_every-th proposal is a cluster (0: mix by score)
    calc_min_z: float = 2.0  # clusters less significant than this never get a reserved rank
    pectoral: bool = True  # ignore blobs on the pectoral muscle (MLO views), see _pectoral_mask
    name: str = "blob"

    def settings(self) -> dict:
        """The dataclass fields plus ``version``: caches keyed on settings must not outlive a code change."""
        return {**super().settings(), "version": VERSION}

    def _propose(self, image: np.ndarray, mask: np.ndarray | None) -> Proposals:
        if mask is None:
            mask = breast_mask(image)
        H, W = image.shape
        long_side = max(H, W)
        # work on the breast's bounding box only (often half the image): the crop starts on a
        # multiple of ALIGN pixels so every pyramid level sees the same pixel blocks as without it
        x0, y0, x1, y1 = _crop_box(mask, ALIGN)
        img = torch.from_numpy(np.array(image[y0:y1, x0:x1], dtype=np.float32))[None, None]  # (1, 1, h, w)
        msk = torch.from_numpy(np.array(mask[y0:y1, x0:x1], dtype=np.float32))[None, None]
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        props = self._search(img, msk, long_side)
        props.boxes = props.boxes + shift
        return props

    def _search(self, img, msk, long_side) -> Proposals:
        levels = _Levels(img, msk)
        boxes, scores = self._masses(levels, long_side)
        keep = nms(boxes, scores, self.nms_iou)[: self.max_boxes]
        boxes, scores = boxes[keep], scores[keep]
        if not self.calc:
            return Proposals(boxes, scores, ["mass"] * len(scores))
        cb, cz = self._clusters(levels, long_side)
        ck = nms(cb, cz, self.nms_iou)[: self.max_boxes]
        cb, cz = cb[ck], cz[ck]
        if self.calc_every <= 0:  # one ranking by score
            b, sc = torch.cat([boxes, cb]), torch.cat([scores, self.cluster_weight * cz])
            lab = ["mass"] * len(scores) + ["calcification"] * len(cz)
            keep = nms(b, sc, self.nms_iou)[: self.max_boxes]
            return Proposals(b[keep], sc[keep], [lab[i] for i in keep.tolist()])
        return _interleave(boxes, scores, cb, cz, self.calc_every, self.calc_min_z, self.max_boxes)

    # --- masses -------------------------------------------------------------
    def _masses(self, levels, long_side):
        f0 = max(1, round(long_side / self.work_size))  # image -> working scale
        im, m = levels.get(f0)
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
        return torch.cat(boxes), torch.cat(scores)

    # --- calcification clusters ---------------------------------------------
    def _clusters(self, levels, long_side):
        """Dense groups of bright specks: ``(boxes (N, 4), z-scores (N,))`` in image pixels.

        1. *Specks*: a fine DoG (``calc_sigma`` vs 3x that), divided by the DoG's
           local standard deviation over a ``calc_local`` window (a local z-score:
           dense, textured tissue makes many bright dots and must not look like
           a cluster), kept where it is a 3x3 maximum above ``calc_threshold``.
        2. *Density*: specks are counted on a grid of cells of half a window;
           a window is 2x2 cells (stride one cell). Besides the count we sum the
           specks' positions and squared positions (sparse ``bincount``s: there
           are only hundreds of specks), so each window's box is centred on its
           specks' centroid and sized by their spread, not by the window.
        3. *Significance*: the count's Poisson z-score against the breast's
           average speck density.
        """
        f0 = max(1, round(long_side / self.calc_size))
        im, m = levels.get(f0)
        sigma = max(0.7, self.calc_sigma * long_side / f0)
        dog = blur(im, sigma) - blur(im, 3 * sigma)  # specks are far from the skin: no mask needed
        inside = erode(m, 9) > 0.5  # mask eroded by 4 px
        vals = dog[inside][::7]  # a subsample is plenty for two robust statistics
        if vals.numel() < 100:
            return torch.zeros(0, 4), torch.zeros(0)
        med = vals.median()
        mad = (vals - med).abs().median().clamp(min=1e-6) * 1.4826
        k = max(3, int(round(self.calc_local * long_side / f0)) | 1)  # odd window
        local_sd = box_mean((dog - med) ** 2, k).sqrt().clamp(min=float(mad))
        z = (dog - med) / local_sd
        specks = (z > self.calc_threshold) & inside & (dog == local_max(dog))  # one count per speck
        yx = specks[0, 0].nonzero().float()  # (S, 2) speck rows, columns
        if yx.shape[0] < self.calc_min_count:
            return torch.zeros(0, 4), torch.zeros(0)
        h, w = specks.shape[-2:]
        cell = max(2, int(round(self.calc_window * long_side / f0 / 2)))
        gh, gw = -(-h // cell), -(-w // cell)
        flat = (yx[:, 0] // cell) * gw + yx[:, 1] // cell  # (S,) cell index of each speck
        ys, xs = yx[:, 0] + 0.5, yx[:, 1] + 0.5  # pixel centres
        weights = [torch.ones_like(xs), xs, ys, xs**2, ys**2]
        cells = torch.stack([torch.bincount(flat.long(), wt, gh * gw) for wt in weights])  # (5, gh*gw)
        cells = cells.reshape(1, 5, gh, gw)
        sums = F.avg_pool2d(F.pad(cells, (0, 1, 0, 1)), 2, 1) * 4  # sums over 2x2 cells
        count = sums[:, :1]
        peak = (count == local_max(count)) & (count >= self.calc_min_count)
        idx = peak.flatten().nonzero().reshape(-1)
        if idx.numel() == 0:
            return torch.zeros(0, 4), torch.zeros(0)
        s = sums.flatten(2)[0][:, idx]  # (5, n)
        n = s[0]
        mx, my = s[1] / n, s[2] / n
        sx = (s[3] / n - mx**2).clamp(min=0).sqrt()
        sy = (s[4] / n - my**2).clamp(min=0).sqrt()
        min_half = self.calc_min_half * long_side / f0
        hx = (self.calc_box_std * sx).clamp(min=min_half)
        hy = (self.calc_box_std * sy).clamp(min=min_half)
        boxes = torch.stack([mx - hx, my - hy, mx + hx, my + hy], -1) * f0  # back to image pixels
        lam = yx.shape[0] * (2 * cell) ** 2 / inside.sum().clamp(min=1)
        return boxes, (n - lam) / lam.clamp(min=0.5).sqrt()


class _Levels:
    """The image and mask averaged over ``f x f`` blocks, computed once per factor.

    A coarser level is made from the finest cached level whose factor divides
    it (block means of block means), so the full-size image is read only once.
    """

    def __init__(self, img: torch.Tensor, msk: torch.Tensor):
        self.cache = {1: (img, msk)}

    def get(self, f: int) -> tuple[torch.Tensor, torch.Tensor]:
        if f not in self.cache:
            base = max(g for g in self.cache if f % g == 0)
            im, m = self.cache[base]
            self.cache[f] = (downsample(im, f // base), downsample(m, f // base))
        im, m = self.cache[f]
        return im, (m > 0.5).float()


ALIGN = 64  # crop alignment (pixels): a multiple of every pyramid factor used on 2048-px images


def _crop_box(mask: np.ndarray, align: int, pad: int = 32) -> tuple[int, int, int, int]:
    """The mask's bounding box grown by ``pad`` pixels, its start rounded down to ``align``."""
    H, W = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0 = max(0, (int(cols[0]) - pad) // align * align)
    y0 = max(0, (int(rows[0]) - pad) // align * align)
    return x0, y0, min(W, int(cols[-1]) + 1 + pad), min(H, int(rows[-1]) + 1 + pad)


def _interleave(mb, ms, cb, cz, every: int, min_z: float, max_boxes: int) -> Proposals:
    """Merge masses and clusters by a fixed rank pattern (their scores are not comparable).

    A mass's contrast and a cluster's Poisson z-score measure different things,
    so instead of weighting one against the other we *reserve ranks*: positions
    ``every, 2 * every, ...`` (1-based) go to the clusters with ``z >= min_z``,
    best first, and all other positions to the masses, best first (when one
    list runs out the other fills the rest). The returned scores are the
    masses' contrasts and the clusters' ``z / 10``, made non-increasing along
    this order (a running minimum minus a tiny rank step), so sorting by score
    reproduces the order.
    """
    strong = cz >= min_z
    order_c = [("calcification", i) for i in torch.nonzero(strong).reshape(-1).tolist()]
    weak = [("calcification", i) for i in torch.nonzero(~strong).reshape(-1).tolist()]
    order_m = [("mass", i) for i in range(len(ms))]
    merged = []
    while (order_m or order_c) and len(merged) < max_boxes:
        take_c = order_c and ((len(merged) + 1) % every == 0 or not order_m)
        merged.append(order_c.pop(0) if take_c else order_m.pop(0))
    merged = (merged + weak)[:max_boxes]
    if not merged:
        return Proposals.empty()
    boxes = torch.stack([mb[i] if k == "mass" else cb[i] for k, i in merged])
    raw = torch.tensor([float(ms[i]) if k == "mass" else float(cz[i]) / 10 for k, i in merged])
    scores = torch.cummin(raw, 0).values - 1e-6 * torch.arange(len(raw), dtype=torch.float32)
    return Proposals(boxes, scores, [k for k, _ in merged])


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
    bright = region & (small > otsu_threshold(vals, bins=64))
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
