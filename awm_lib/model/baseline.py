"""The baseline the paper argues against: one ViT over the WHOLE breast, all tokens.

The same backbone reads the breast region resized so its long side is
``long_side`` pixels (aspect ratio kept), zero-padded to a multiple of the
patch size; DINOv2 interpolates its position embeddings to that grid. A
3514 x 2800 mammogram at full resolution is 50,201 tokens, and attention cost
grows with the square of that: this model is what the RoI classifier's cost and
accuracy are compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from awm_lib.errors import ConfigError
from awm_lib.model.backbone import Backbone, BackboneConfig, build_backbone
from awm_lib.model.crops import normalise, sample_boxes


@dataclass
class FullImageConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    long_side: int = 518  # pixels of the breast's long side fed to the ViT
    pooling: str = "cls"  # "cls" | "mean" (of the patch tokens)
    head_dropout: float = 0.1
    max_value: float = 1.0

    def validate(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"pooling={self.pooling!r}; choose 'cls' or 'mean'")
        if self.long_side <= 0:
            raise ConfigError(f"long_side={self.long_side} must be positive")


def canvas_boxes(
    boxes: torch.Tensor, long_side: int, patch_size: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Sampling boxes that put each breast box, scaled to ``long_side``, top-left on a shared canvas.

    boxes (B, 4) xyxy pixels -> (B, 4) sampling boxes and the canvas (h, w), a
    multiple of ``patch_size``. Each image keeps its aspect ratio; the canvas is
    as large as the largest scaled breast, the rest is zero padding.
    """
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    scale = long_side / torch.maximum(bw, bh).clamp_min(1e-6)  # (B,) output px per input px
    hmax = float((bh * scale).max())  # one host sync: the canvas size sets the token count
    wmax = float((bw * scale).max())
    ch = max(patch_size, math.ceil(round(hmax, 3) / patch_size) * patch_size)
    cw = max(patch_size, math.ceil(round(wmax, 3) / patch_size) * patch_size)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    sample = torch.stack([x1, y1, x1 + cw / scale, y1 + ch / scale], dim=-1)  # (B, 4)
    return sample, (ch, cw)


class FullImageClassifier(nn.Module):
    """Backbone over the whole (resized) breast -> CLS or mean token -> logit."""

    def __init__(self, cfg: FullImageConfig, backbone: Backbone | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        d = self.backbone.hidden_size
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Dropout(cfg.head_dropout), nn.Linear(d, 1))
        nn.init.trunc_normal_(self.head[-1].weight, std=0.02)
        nn.init.zeros_(self.head[-1].bias)

    def prepare(self, images: torch.Tensor, breast_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 1, H, W) in [0, 1] -> (B, 3, h, w) normalised ViT input, h, w multiples of 14."""
        b, _, h, w = images.shape
        if breast_boxes is None:
            breast_boxes = images.new_tensor([[0.0, 0.0, w, h]]).float().expand(b, 4)
        boxes, size = canvas_boxes(breast_boxes.float(), self.cfg.long_side, self.backbone.patch_size)
        # Zero outside the breast box: only the breast is shown, the canvas pads it.
        x = sample_boxes(images, boxes[:, None], size, max_value=self.cfg.max_value)[:, 0]  # (B, C, h, w)
        bw = breast_boxes[:, 2] - breast_boxes[:, 0]
        bh = breast_boxes[:, 3] - breast_boxes[:, 1]
        scale = self.cfg.long_side / torch.maximum(bw, bh).clamp_min(1e-6)
        ys = torch.arange(size[0], device=x.device) + 0.5
        xs = torch.arange(size[1], device=x.device) + 0.5
        inside = (ys[None, :, None] <= (bh * scale)[:, None, None]) & (
            xs[None, None, :] <= (bw * scale)[:, None, None]
        )  # (B, h, w)
        x = x * inside[:, None].to(x.dtype)
        cfg = self.backbone.cfg
        return normalise(x, cfg.pixel_mean, cfg.pixel_std)

    def forward(self, images: torch.Tensor, breast_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 1, H, W), breast_boxes (B, 4) xyxy or None (whole image) -> logits (B,)."""
        pixels = self.prepare(images, breast_boxes)
        tokens = self.backbone.forward_tokens(pixels)
        pooled = tokens.cls if self.cfg.pooling == "cls" else tokens.patches.mean(dim=1)
        return self.head(pooled).squeeze(-1)

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens the ViT sees for a breast box of ``height x width`` pixels (CLS, registers included)."""
        s = self.cfg.long_side / max(height, width)
        p = self.backbone.patch_size
        return math.ceil(round(height * s, 3) / p) * math.ceil(round(width * s, 3) / p) + 1 + self.backbone.num_registers
