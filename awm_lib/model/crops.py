"""Cut every RoI out of every image in ONE batched sampling call, on the GPU.

The reference implementation crops each box on the CPU with PIL, per image,
every epoch. Here all ``B x K`` crops come from one ``F.grid_sample`` per
pyramid level, on the device the images already live on.

Geometry (``align_corners=False`` convention): pixel ``i`` covers the interval
``[i, i+1)`` and its centre is ``i + 0.5``. A box ``(x1, y1, x2, y2)`` is cut
into an ``S x S`` grid of cells and output pixel ``j`` samples the image at the
cell centre ``x1 + (j + 0.5) * (x2 - x1) / S``. So a box that lies on the pixel
grid, cropped at its own size, reproduces the pixels exactly.

Anti-aliasing. Shrinking a 2000-pixel anchor box to 224 pixels by sampling one
point per output pixel would skip ~9 of every 10 pixels (aliasing: a fine
texture turns into a false coarse one). The right value of an output pixel is
the AVERAGE of the image over its cell. We get it the way GPUs filter textures
(mipmapping): build an average-pooled pyramid (level ``l`` = means of
``2^l x 2^l`` blocks), sample every level at the same points, and for each box
blend the two levels whose block size brackets the box's scale
``max(w, h) / S``. When the scale is a power of two and the box is aligned
with the blocks this is exactly the area average; in between it is a smooth
blend. The pyramid costs 1/3 of one image; each level costs one
``grid_sample`` of ``B x K x S x S`` points, tiny next to the ViT.

Outside the image we read zeros (the background of a mammogram). The crop is
replicated to 3 channels and normalised with the mean/std the ViT expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from awm_lib.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(images: torch.Tensor, boxes: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"images must be (B, 1|3, H, W), got {tuple(images.shape)}")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != images.shape[0]:
        raise ConfigError(
            f"boxes must be (B, K, 4) xyxy with B={images.shape[0]}, got {tuple(boxes.shape)}"
        )


def _sample_grid(boxes: torch.Tensor, out_h: int, out_w: int, height: int, width: int) -> torch.Tensor:
    """Cell-centre sampling points of every box, in grid_sample's [-1, 1] units.

    boxes (B, K, 4) xyxy pixels -> grid (B, K*out_h, out_w, 2); the K crops are
    stacked along the grid's height so that ONE grid_sample per image serves
    all its boxes without copying the image K times.
    """
    b, k, _ = boxes.shape
    x1, y1, x2, y2 = boxes.unbind(-1)  # each (B, K)
    t_x = (torch.arange(out_w, device=boxes.device, dtype=boxes.dtype) + 0.5) / out_w  # (W',)
    t_y = (torch.arange(out_h, device=boxes.device, dtype=boxes.dtype) + 0.5) / out_h  # (H',)
    xs = x1[..., None] + (x2 - x1)[..., None] * t_x  # (B, K, W') pixels
    ys = y1[..., None] + (y2 - y1)[..., None] * t_y  # (B, K, H') pixels
    xs = 2.0 * xs / width - 1.0  # pixel -> [-1, 1] (align_corners=False)
    ys = 2.0 * ys / height - 1.0
    gx = xs[:, :, None, :].expand(b, k, out_h, out_w)
    gy = ys[:, :, :, None].expand(b, k, out_h, out_w)
    return torch.stack([gx, gy], dim=-1).reshape(b, k * out_h, out_w, 2)


def sample_boxes(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out_size: tuple[int, int],
    antialias: bool = True,
    max_value: float = 1.0,
) -> torch.Tensor:
    """Resample each box of each image onto an ``out_h x out_w`` grid (no normalisation).

    images (B, C, H, W) any float/int dtype; boxes (B, K, 4) xyxy pixels.
    Returns (B, K, C, out_h, out_w) float32 in the images' units divided by ``max_value``.
    """
    _check(images, boxes)
    out_h, out_w = out_size
    b, c, h, w = images.shape
    k = boxes.shape[1]
    x = images.float()
    if max_value != 1.0:
        x = x / max_value
    boxes = boxes.float()

    # How many 2x poolings could a box within the image need? Depends on shapes only
    # (no look at the box values: no host-device sync, friendly to torch.compile).
    levels = 0
    if antialias:
        levels = math.ceil(math.log2(max(h / out_h, w / out_w, 1.0)))
    m = 2**levels
    if h % m or w % m:  # pad so every level has exact 2^l blocks (edge-replicated, masked below)
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
    ph, pw = x.shape[-2:]
    grid = _sample_grid(boxes, out_h, out_w, ph, pw)  # (B, K*H', W', 2), same for every level

    def sample(level_img: torch.Tensor) -> torch.Tensor:
        out = F.grid_sample(level_img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.view(b, c, k, out_h, out_w).transpose(1, 2)  # (B, K, C, H', W')

    # Levels read edge-replicated values; the image's own extent is applied once, here:
    # `inside` is what bilinear sampling with zero padding would give for an all-ones
    # image (1 inside, 0 beyond one pixel outside, a linear ramp across the edge).
    # So coarse levels never blend the zero background into pixels near the edge.
    u = (grid[..., 0] + 1) * pw / 2 - 0.5  # pixel-centre coordinates of each point
    v = (grid[..., 1] + 1) * ph / 2 - 0.5
    inside = (u + 1).clamp(0, 1) * (w - u).clamp(0, 1) * (v + 1).clamp(0, 1) * (h - v).clamp(0, 1)
    inside = inside.view(b, k, 1, out_h, out_w)  # (B, K, 1, H', W')

    crops = sample(x)
    if not levels:
        return crops * inside
    # Continuous pyramid level of each box: log2 of its shrink factor, clamped.
    scale = torch.maximum((boxes[..., 2] - boxes[..., 0]) / out_w, (boxes[..., 3] - boxes[..., 1]) / out_h)
    lam = torch.log2(scale.clamp_min(1.0)).clamp(max=levels)  # (B, K) in [0, levels]
    out = crops * (1.0 - lam).clamp(min=0.0)[..., None, None, None]
    for lvl in range(1, levels + 1):
        x = F.avg_pool2d(x, 2)  # level lvl: means of 2^lvl x 2^lvl blocks
        weight = (1.0 - (lam - lvl).abs()).clamp(min=0.0)  # hat function: linear blend of levels
        out = out + sample(x) * weight[..., None, None, None]
    return out * inside


def normalise(crops: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(..., 1|3, S, S) in [0, 1] -> (..., 3, S, S) replicated to RGB and standardised."""
    if crops.shape[-3] == 1:
        crops = crops.expand(*crops.shape[:-3], 3, *crops.shape[-2:])
    mean_t = torch.as_tensor(mean, dtype=crops.dtype, device=crops.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=crops.dtype, device=crops.device).view(3, 1, 1)
    return (crops - mean_t) / std_t


def extract_rois(
    images: torch.Tensor,
    boxes: torch.Tensor,
    crop_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    antialias: bool = True,
    max_value: float = 1.0,
) -> torch.Tensor:
    """images (B, 1|3, H, W), boxes (B, K, 4) xyxy pixels -> crops (B, K, 3, S, S).

    ``images`` are intensities in [0, 1] (the data layer's normalised 16-bit
    pixels) or raw counts with ``max_value`` (e.g. 65535 or 4095) to divide by.
    Any box works (square ones are the proposer's job); parts outside the image
    are zeros before normalisation.

    Explained in the book: chapter 4, *Where does the model look?*
    (``notebooks/04_attention_visualisation.ipynb``).
    """
    crops = sample_boxes(images, boxes, (crop_size, crop_size), antialias=antialias, max_value=max_value)
    return normalise(crops, mean, std)  # (B, K, 3, S, S)
