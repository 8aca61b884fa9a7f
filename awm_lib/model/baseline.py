"""The baseline the paper argues against: one ViT over the WHOLE breast, all tokens.

The same backbone reads the breast region resized so its long side is
``long_side`` pixels (aspect ratio kept), zero-padded to a multiple of the
patch size; DINOv2 interpolates its position embeddings to that grid. A
3514 x 2800 mammogram at full resolution is 50,201 tokens, and attention cost
grows with the square of that: this model is what the RoI classifier's cost and
accuracy are compared with.

A batch shares one canvas, as large as its largest breast. So that a
prediction never depends on the other images of its batch, each image gets
exactly what it would get alone (:meth:`FullImageClassifier.encode`): the
position embeddings interpolated to ITS OWN patch grid (placed top-left), and
the canvas's padding tokens masked out of attention (as keys) and of mean
pooling. Alone, an image's canvas is its own grid and nothing is masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.model.backbone import Backbone, BackboneConfig, build_backbone
from awm_lib.model.crops import normalise, sample_boxes
from awm_lib.model.pretrained import PretrainedModel


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


class FullImageClassifier(PretrainedModel, nn.Module):
    """Backbone over the whole (resized) breast -> CLS or mean token -> logit.

    ``save_pretrained`` / ``from_pretrained`` as :class:`awm_lib.model.roi_transformer.RoIClassifier`.
    """

    MODEL_TYPE = "awm-full-image-classifier"
    CONFIG_CLASS = FullImageConfig

    @classmethod
    def config_from_training_run(cls, run_config: dict) -> dict:
        if run_config.get("arch") != "full_image":
            raise CheckpointError(
                f"this run trained the {run_config.get('arch', 'roi')!r} model, not the full-image baseline"
            )
        b = run_config["baseline"]  # how awm_lib.train.experiment.build_model makes the baseline's config
        return {
            "backbone": run_config["model"]["backbone"],
            "long_side": b["long_side"],
            "pooling": b["pooling"],
            "head_dropout": b["head_dropout"],
        }

    def __init__(self, cfg: FullImageConfig, backbone: Backbone | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        d = self.backbone.hidden_size
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Dropout(cfg.head_dropout), nn.Linear(d, 1))
        nn.init.trunc_normal_(self.head[-1].weight, std=0.02)
        nn.init.zeros_(self.head[-1].bias)

    def prepare(
        self, images: torch.Tensor, breast_boxes: torch.Tensor | None = None, return_grids: bool = False
    ):
        """images (B, 1, H, W) in [0, 1] -> (B, 3, h, w) normalised ViT input, h, w multiples of 14.

        ``return_grids=True`` also returns each image's own patch grid (B, 2) as
        (rows, cols): the part of the shared canvas that is its breast.
        """
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
        pixels = normalise(x, cfg.pixel_mean, cfg.pixel_std)
        if not return_grids:
            return pixels
        p = self.backbone.patch_size
        rows = torch.ceil(torch.round(bh * scale, decimals=3) / p).clamp(1, size[0] // p)
        cols = torch.ceil(torch.round(bw * scale, decimals=3) / p).clamp(1, size[1] // p)
        return pixels, torch.stack([rows, cols], dim=-1).long()  # (B, 2)

    def encode(
        self, pixels: torch.Tensor, grids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backbone over a padded batch, each image as if alone.

        pixels (B, 3, h, w) canvas; grids (B, 2) each image's own (rows, cols) of
        patches, top-left. Returns cls (B, C), patches (B, P, C) on the canvas grid,
        and valid (B, P) bool (False: padding, masked out of attention).
        """
        model = self.backbone.model
        emb = model.embeddings
        b = pixels.shape[0]
        p = self.backbone.patch_size
        gh, gw = pixels.shape[-2] // p, pixels.shape[-1] // p
        patches = emb.patch_embeddings(pixels)  # (B, P, C)
        c = patches.shape[-1]
        r = torch.arange(gh, device=pixels.device)[:, None]
        q = torch.arange(gw, device=pixels.device)[None, :]
        valid = ((r < grids[:, 0, None, None]) & (q < grids[:, 1, None, None])).flatten(1)  # (B, P)
        pos = patches.new_zeros(b, 1 + gh * gw, c)
        for rows, cols in {tuple(g) for g in grids.tolist()}:  # one interpolation per distinct grid
            own = emb.interpolate_pos_encoding(patches.new_empty(1, 1 + rows * cols, c), rows * p, cols * p)
            on_canvas = patches.new_zeros(1, gh, gw, c)
            on_canvas[:, :rows, :cols] = own[:, 1:].reshape(1, rows, cols, c)
            same = (grids[:, 0] == rows) & (grids[:, 1] == cols)
            pos[same] = torch.cat([own[:, :1], on_canvas.flatten(1, 2)], dim=1).to(pos.dtype)
        x = (
            torch.cat([emb.cls_token.expand(b, -1, -1).to(patches.dtype), patches], dim=1) + pos
        )  # (B, 1+P, C)
        keep = torch.cat([valid.new_ones(b, 1), valid], dim=1)
        registers = getattr(emb, "register_tokens", None)
        if registers is not None:
            x = torch.cat([x[:, :1], registers.expand(b, -1, -1).to(x.dtype), x[:, 1:]], dim=1)
            keep = torch.cat([keep[:, :1], keep.new_ones(b, registers.shape[1]), keep[:, 1:]], dim=1)
        x = emb.dropout(x)
        from transformers.masking_utils import create_bidirectional_mask

        mask = None if bool(keep.all()) else create_bidirectional_mask(
            config=model.config, inputs_embeds=x, attention_mask=keep.long()
        )
        hidden = model.layernorm(model.encoder(x, attention_mask=mask).last_hidden_state)  # (B, 1+R+P, C)
        return hidden[:, 0], hidden[:, 1 + self.backbone.num_registers :], valid

    def forward(self, images: torch.Tensor, breast_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 1, H, W), breast_boxes (B, 4) xyxy or None (whole image) -> logits (B,)."""
        pixels, grids = self.prepare(images, breast_boxes, return_grids=True)
        cls, patches, valid = self.encode(pixels, grids)
        if self.cfg.pooling == "cls":
            pooled = cls
        else:  # the mean of the image's own patches only
            w = valid.to(patches.dtype)[..., None]  # (B, P, 1)
            pooled = (patches * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self.head(pooled).squeeze(-1)

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens the ViT sees for a breast box of ``height x width`` pixels (CLS, registers included)."""
        s = self.cfg.long_side / max(height, width)
        p = self.backbone.patch_size
        return (
            math.ceil(round(height * s, 3) / p) * math.ceil(round(width * s, 3) / p)
            + 1
            + self.backbone.num_registers
        )
