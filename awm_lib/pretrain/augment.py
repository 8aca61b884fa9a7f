"""Multi-crop views of breast tissue for self-distillation (DINO) pretraining.

DINO learns by asking a *student* network to predict, from one view of an
image, what a *teacher* network says about another view of the same image.
The views are the whole lesson: whatever differs between them (position,
scale, brightness, noise) the network learns to ignore; whatever they share
(the tissue) it learns to describe. So the views must be chosen for
mammograms, not for ImageNet photographs:

* **Where**: every crop is centred on a pixel of the breast mask, so no view
  is mostly black background. Two *global* crops see a large part of the
  breast; several *local* crops see small patches (a few lobules, a lesion's
  size). The student must match a local crop to the teacher's global view:
  "local-to-global correspondence", the source of DINO's localisation-aware
  features.
* **Geometry**: horizontal flip (left and right breasts are mirror images),
  small rotations and scale changes (positioning varies between exams).
  No vertical flips or large rotations: the pectoral muscle and nipple have a
  fixed place in an MLO view, and we want the features to know that.
* **Intensity**: what differs between scanners and films: gamma, the display
  window (contrast), sensor noise and blur. No colour jitter: the images are
  grey (we repeat the grey channel three times because DINOv2 takes RGB).

Everything is batched torch on whatever device the images live on: one
``F.grid_sample`` call cuts, scales, rotates and flips every crop of every
image at once (the crops of one image are stacked along the output's height,
so the image is never copied), and one grouped convolution blurs them all.

Shapes: source images ``(B, 1, H, W)`` in ``[0, 1]``, masks ``(B, H, W)``;
crops ``(n_views, B, 3, S, S)``; boxes ``(B, n_views, 4)`` xyxy source pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from awm_lib.errors import ConfigError, EmptyImageError

# DINOv2 was trained with ImageNet normalisation; continued pretraining of
# facebook/dinov2-* must feed it the same statistics, so we use them everywhere.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class MultiCropConfig:
    """How many views, how large, and how strongly they are augmented.

    Scales are the crop's AREA as a fraction of the breast's bounding-box area
    (the side is then capped by the box's shorter side so a crop fits the box).
    """

    n_global: int = 2
    n_local: int = 8
    global_size: int = 224  # output pixels; a multiple of the patch size (14)
    local_size: int = 98
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.02, 0.15)
    flip_p: float = 0.5
    max_rotation_deg: float = 10.0
    gamma: tuple[float, float] = (0.7, 1.4)  # log-uniform
    window: float = 0.1  # black point in [0, w], white point in [1 - w, 1]
    noise_std: tuple[float, float] = (0.0, 0.03)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # output pixels
    center_stride: int = 0  # grid stride for crop centres; 0 = about 64 positions per side

    def validate(self) -> None:
        if self.n_global < 1 or self.n_local < 0:
            raise ConfigError(f"need n_global >= 1 and n_local >= 0, got {self.n_global}, {self.n_local}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"{name} must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        if min(self.global_size, self.local_size) < 1:
            raise ConfigError("crop sizes must be positive")


@dataclass
class MultiCropViews:
    global_crops: torch.Tensor  # (n_global, B, 3, G, G), normalised
    local_crops: torch.Tensor  # (n_local, B, 3, L, L), normalised (n_local may be 0)
    global_boxes: torch.Tensor  # (B, n_global, 4) xyxy source pixels (before rotation)
    local_boxes: torch.Tensor  # (B, n_local, 4)


def mask_bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy box (pixel edges) of each mask. ``(B, H, W)`` bool -> ``(B, 4)`` float."""
    B, H, W = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (B, H), (B, W)
    if not bool(rows.any(dim=1).all()):
        raise EmptyImageError("a breast mask is empty; drop that image or fix its segmentation")
    r = torch.arange(H, device=masks.device)
    c = torch.arange(W, device=masks.device)
    y0 = torch.where(rows, r, H).amin(dim=1)
    y1 = torch.where(rows, r, -1).amax(dim=1) + 1
    x0 = torch.where(cols, c, W).amin(dim=1)
    x1 = torch.where(cols, c, -1).amax(dim=1) + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def sample_crop_boxes(
    masks: torch.Tensor,
    n: int,
    scale: tuple[float, float],
    stride: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` square boxes per image, each centred on a breast pixel and inside the breast's box.

    The side comes first (area fraction ``scale`` of the breast box, capped by
    its shorter side); then the centre is drawn uniformly among mask pixels
    (on a grid of step ``stride``) where a box of that side fits inside the
    breast box. Returns ``(B, n, 4)`` xyxy float pixels.
    """
    B, H, W = masks.shape
    dev = masks.device
    bbox = mask_bounding_boxes(masks)  # (B, 4)
    bw, bh = bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1]  # (B,)
    u = torch.rand(B, n, device=dev, generator=generator) * (scale[1] - scale[0]) + scale[0]
    side = torch.sqrt(u * (bw * bh)[:, None]).minimum(torch.minimum(bw, bh)[:, None])  # (B, n)
    side = side.clamp(min=2.0)

    stride = stride or max(1, max(H, W) // 64)
    ys = torch.arange(0, H, stride, device=dev)
    xs = torch.arange(0, W, stride, device=dev)
    small = masks[:, ys][:, :, xs]  # (B, h, w) mask on the grid
    cy = (ys.float() + 0.5)[None, None, :, None]  # pixel centres
    cx = (xs.float() + 0.5)[None, None, None, :]
    half = side[:, :, None, None] / 2
    x0, y0, x1, y1 = (bbox[:, i, None, None, None] for i in range(4))
    fits = (cx - half >= x0) & (cx + half <= x1) & (cy - half >= y0) & (cy + half <= y1)  # (B, n, h, w)
    weights = (fits & small[:, None]).flatten(2).float()  # (B, n, h*w)
    # fallbacks for awkward masks: tissue anywhere, then anywhere at all
    # (the box is shifted back inside the breast box below)
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, small.flatten(1)[:, None].float())
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, torch.ones_like(weights))
    idx = torch.multinomial(weights.view(B * n, -1), 1, generator=generator).view(B, n)
    ccx = (xs.float() + 0.5)[idx % len(xs)]
    ccy = (ys.float() + 0.5)[idx // len(xs)]
    half = side / 2
    ccx = torch.minimum(torch.maximum(ccx, bbox[:, 0, None] + half), bbox[:, 2, None] - half)
    ccy = torch.minimum(torch.maximum(ccy, bbox[:, 1, None] + half), bbox[:, 3, None] - half)
    return torch.stack([ccx - half, ccy - half, ccx + half, ccy + half], dim=-1)


def _crop_grid(
    boxes: torch.Tensor, H: int, W: int, size: int, angle: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Sampling grid for ``grid_sample``: ``(B, n, 4)`` boxes -> ``(B, n*size, size, 2)``.

    Each box becomes an affine map from the output square ``[-1, 1]^2`` to the
    source's normalised coordinates, with rotation ``angle`` (radians) about
    the box centre and a mirror where ``flip``. Rotation is done in pixel units
    so it stays a rotation when the source is not square.
    """
    B, n, _ = boxes.shape
    cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    half = (boxes[..., 2] - boxes[..., 0]) / 2  # (B, n) pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    f = 1.0 - 2.0 * flip.float()  # -1 mirrors the output's x axis
    sx, sy = half * 2 / W, half * 2 / H  # pixels -> normalised units
    theta = torch.stack(
        [
            torch.stack([sx * cos * f, -sx * sin, cx * 2 / W - 1], dim=-1),
            torch.stack([sy * sin * f, sy * cos, cy * 2 / H - 1], dim=-1),
        ],
        dim=-2,
    )  # (B, n, 2, 3)
    grid = F.affine_grid(theta.view(B * n, 2, 3), [B * n, 1, size, size], align_corners=False)
    return grid.view(B, n * size, size, 2)  # crops stacked along the height


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Blur each crop of ``(N, 1, S, S)`` with its own ``sigma`` ``(N,)``, separably.

    A Gaussian kernel of ``2r + 1`` taps is a weighted sum of ``2r + 1``
    shifted copies; the weights differ per crop, the shifts do not, so a short
    loop over taps blurs every crop at once.
    """
    r = max(1, math.ceil(3 * max_sigma))
    S_h, S_w = x.shape[-2:]
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.float().clamp(min=1e-3)[:, None] ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).to(x.dtype)[
        :, :, None, None, None
    ]  # (N, 2r+1, 1, 1, 1); sigma ~ 0: a delta
    p = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = sum(k[:, j] * p[..., j : j + S_w] for j in range(2 * r + 1))
    p = F.pad(x, (0, 0, r, r), mode="replicate")
    return sum(k[:, j] * p[..., j : j + S_h, :] for j in range(2 * r + 1))


def intensity_augment(
    x: torch.Tensor, cfg: MultiCropConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Window, gamma, blur and noise, each crop of ``(N, 1, S, S)`` in ``[0, 1]`` drawn independently."""
    N = x.shape[0]
    dev = x.device

    def U(lo: float, hi: float) -> torch.Tensor:  # (N, 1, 1, 1) uniform draws
        return (torch.rand(N, 1, 1, 1, device=dev, generator=generator) * (hi - lo) + lo).to(x.dtype)

    lo, hi = U(0, cfg.window), U(1 - cfg.window, 1)
    x = ((x - lo) / (hi - lo)).clamp(0, 1)  # a new display window
    g = torch.exp(U(math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))
    x = x.clamp_min(1e-6) ** g  # gamma: brighter or darker mid-tones
    if cfg.blur_p > 0:
        sigma = U(*cfg.blur_sigma).view(N)
        sigma = torch.where(
            torch.rand(N, device=dev, generator=generator) < cfg.blur_p, sigma, torch.zeros_like(sigma)
        )
        x = _gaussian_blur(x, sigma, cfg.blur_sigma[1])
    if cfg.noise_std[1] > 0:
        noise = torch.randn(x.shape, device=dev, generator=generator, dtype=x.dtype)
        x = x + U(*cfg.noise_std) * noise
    return x.clamp(0, 1)


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """Grey ``(..., 1, S, S)`` in ``[0, 1]`` -> ImageNet-normalised RGB ``(..., 3, S, S)``."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std  # broadcasting repeats the grey channel


def _views(
    images: torch.Tensor,
    masks: torch.Tensor,
    n: int,
    size: int,
    scale: tuple[float, float],
    cfg: MultiCropConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, H, W = images.shape
    dev = images.device
    boxes = sample_crop_boxes(masks, n, scale, cfg.center_stride, generator)  # (B, n, 4)
    angle = (torch.rand(B, n, device=dev, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation_deg)
    flip = torch.rand(B, n, device=dev, generator=generator) < cfg.flip_p
    grid = _crop_grid(boxes, H, W, size, angle, flip).to(images.dtype)
    crops = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B, 1, n*S, S)
    crops = crops.view(B, n, size, size).transpose(0, 1).reshape(n * B, 1, size, size)  # view-major
    crops = intensity_augment(crops, cfg, generator)
    return to_model_input(crops).view(n, B, 3, size, size), boxes


def multi_crop(
    images: torch.Tensor, masks: torch.Tensor, cfg: MultiCropConfig, generator: torch.Generator | None = None
) -> MultiCropViews:
    """Global and local augmented views of each image, all sampled inside its breast mask.

    ``images`` ``(B, 1, H, W)`` in ``[0, 1]`` (any float dtype), ``masks``
    ``(B, H, W)`` bool on the same device. ``generator`` (on that device)
    makes the draws reproducible.

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    cfg.validate()
    if images.ndim != 4 or images.shape[1] != 1 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ConfigError(
            f"expected images (B, 1, H, W) and masks (B, H, W), got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}"
        )
    g, gb = _views(images, masks, cfg.n_global, cfg.global_size, cfg.global_scale, cfg, generator)
    if cfg.n_local > 0:
        loc, lb = _views(images, masks, cfg.n_local, cfg.local_size, cfg.local_scale, cfg, generator)
    else:
        B = images.shape[0]
        loc = images.new_zeros(0, B, 3, cfg.local_size, cfg.local_size)
        lb = images.new_zeros(B, 0, 4)
    return MultiCropViews(global_crops=g, local_crops=loc, global_boxes=gb, local_boxes=lb)
