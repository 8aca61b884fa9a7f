"""What the benchmark runs: named configurations, the models they build, their analytic FLOPs.

Every configuration is one row of the comparison the paper's efficiency claim
rests on. The full-image rows feed the WHOLE breast to one ViT (tens of
thousands of tokens); the RoI rows feed ``topk + 1`` small crops (a few
thousand). "fast" rows run the way this library trains; "reference" rows run
the same model the way the public implementation does (fp32, batch 4, every
DICOM decoded, breast-cropped and every RoI cropped with PIL on the CPU, per
item, every epoch).

FLOPs come from :mod:`awm_lib.model.cost` (the tokenization chapter's arithmetic),
never from a profiler: MFU is "useful model FLOPs per second / measured peak",
so work the implementation wastes (padding, recomputation) does not count.
The RoI transformer on top of the backbone is counted with the same helpers
(it is ~0.1% of the total).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from awm_lib.config import did_you_mean
from awm_lib.errors import ConfigError
from awm_lib.model import cost
from awm_lib.model.backbone import (
    ARCHITECTURES,
    BackboneConfig,
    RandomBackboneWarning,
    build_backbone,
)
from awm_lib.model.baseline import FullImageClassifier, FullImageConfig
from awm_lib.model.roi_transformer import RoIClassifier, RoIClassifierConfig

MODELS = ("roi", "full")
PATHS = ("fast", "reference")
DATA = ("device", "cache", "dicom")
MODES = ("train", "infer")
COMPILE_MODES = (None, "default", "max-autotune", "reduce-overhead")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration.

    model: ``"roi"`` (RoI classifier) or ``"full"`` (one ViT over the whole breast).
    arch: backbone size, a key of :data:`awm_lib.model.backbone.ARCHITECTURES`
        (random weights: speed does not depend on their values).
    image_size: (H, W) of the images the model receives (the cached breast,
        padded to a fixed canvas so every step has the same shapes).
    long_side: full-image model only: the ViT input's long side in pixels.
    path: ``"fast"`` (batched GPU crops, bf16, fused optimizer, optional
        compile) or ``"reference"`` (fp32, per-item CPU decoding and cropping).
    data: ``"device"`` (synthetic tensors already on the device: model only),
        ``"cache"`` (a DataLoader reading the preprocessing cache: end to end,
        also measured model-only for the ratio) or ``"dicom"`` (reference:
        decode every DICOM per item).
    mode: ``"train"`` (forward and full training step) or ``"infer"`` (forward
        only, with the blob proposer run on every image in the loader).
    """

    name: str
    model: str = "roi"
    arch: str = "small"
    crop_size: int = 224
    topk: int = 5
    image_size: tuple[int, int] = (1024, 1024)
    long_side: int = 518
    batch_size: int = 64
    precision: str = "bf16"
    path: str = "fast"
    data: str = "device"
    mode: str = "train"
    compile: str | None = None
    workers: int = 8
    n_images: int = 16  # distinct source images generated for the data-backed modes
    note: str = ""

    def validate(self) -> None:
        for field, allowed in (("model", MODELS), ("path", PATHS), ("data", DATA), ("mode", MODES),
                               ("compile", COMPILE_MODES), ("precision", ("bf16", "fp32"))):
            if getattr(self, field) not in allowed:
                raise ConfigError(
                    f"bench config {self.name!r}: {field}={getattr(self, field)!r}; choose one of {allowed}"
                )
        if self.arch not in ARCHITECTURES:
            raise ConfigError(
                f"bench config {self.name!r}: arch={self.arch!r}; choose one of {sorted(ARCHITECTURES)}"
            )
        if self.path == "reference" and (self.data != "dicom" or self.model != "roi"):
            raise ConfigError(
                f"bench config {self.name!r}: the reference path is the RoI model reading DICOMs"
            )
        if self.mode == "infer" and (self.data != "cache" or self.model != "roi"):
            raise ConfigError(
                f"bench config {self.name!r}: inference mode runs the RoI model on cached images"
            )
        if self.batch_size < 1 or self.workers < 0:
            raise ConfigError(f"bench config {self.name!r}: batch_size must be >= 1 and workers >= 0")

    @property
    def num_crops(self) -> int:
        return self.topk + 1

    @property
    def run_name(self) -> str:
        """The key of this run in the results file (compiled variants are kept apart)."""
        return self.name if self.compile is None else f"{self.name}+compile={self.compile}"


_FULL = (3514, 2800)  # a full-field mammogram (VinDr size, 50,201 ViT-B/14 tokens)
_PAPER = dict(arch="base", crop_size=448, topk=5, image_size=(2048, 2048))
_DEFAULT = dict(arch="small", crop_size=224, topk=5, image_size=(1024, 1024))

#: The configurations at GPU scale (``--all`` runs them in this order).
CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in [
        BenchConfig("full-518", model="full", arch="base", image_size=_FULL, long_side=518, batch_size=32),
        BenchConfig("full-1036", model="full", arch="base", image_size=_FULL, long_side=1036, batch_size=8),
        BenchConfig("full-2072", model="full", arch="base", image_size=_FULL, long_side=2072, batch_size=2),
        BenchConfig(
            "full-3514",
            model="full",
            arch="base",
            image_size=_FULL,
            long_side=3514,
            batch_size=1,
            note="the whole 3514x2800 mammogram, one image per step (the issue's first row)",
        ),
        BenchConfig(
            "paper-b1", **_PAPER, batch_size=1, note="paper setting, one image per step (launch-bound)"
        ),
        BenchConfig(
            "paper", **_PAPER, batch_size=16, note="paper setting: ViT-B/14, 5 RoIs + anchor, 448 px"
        ),
        BenchConfig(
            "paper-e2e", **_PAPER, batch_size=16, data="cache", note="paper setting, data from the cache"
        ),
        BenchConfig(
            "reference",
            **_PAPER,
            batch_size=4,
            precision="fp32",
            path="reference",
            data="dicom",
            note="paper setting the public implementation's way",
        ),
        BenchConfig("default-b1", **_DEFAULT, batch_size=1, note="our default, one image per step"),
        BenchConfig(
            "default", **_DEFAULT, batch_size=128, note="our default: ViT-S/14, 5 RoIs + anchor, 224 px"
        ),
        BenchConfig(
            "default-e2e", **_DEFAULT, batch_size=128, data="cache", note="our default, data from the cache"
        ),
        BenchConfig(
            "default-infer",
            **_DEFAULT,
            batch_size=128,
            data="cache",
            mode="infer",
            workers=14,
            note="inference with the blob proposer run on every image in the loader",
        ),
        BenchConfig(
            "reference-default",
            **_DEFAULT,
            batch_size=4,
            precision="fp32",
            path="reference",
            data="dicom",
            note="our default model the public implementation's way",
        ),
    ]
}


def get_config(name: str) -> BenchConfig:
    if name not in CONFIGS:
        raise ConfigError(
            f"unknown bench config {name!r}; choose from {', '.join(CONFIGS)}{did_you_mean(name, CONFIGS)}"
        )
    return CONFIGS[name]


def tiny(cfg: BenchConfig, image_side: int = 128, batch_size: int = 2) -> BenchConfig:
    """The same configuration at smoke scale (micro backbone, small images and crops) for CPU tests."""
    crop = 28 if cfg.model == "roi" else cfg.crop_size
    long_side = 56 if cfg.model == "full" else cfg.long_side
    return dataclasses.replace(cfg, arch="micro", crop_size=crop, topk=min(cfg.topk, 3),
                               image_size=(image_side, image_side), long_side=long_side,
                               batch_size=batch_size, workers=0, n_images=4)


# --- models ------------------------------------------------------------------------------
def backbone_config(cfg: BenchConfig) -> BackboneConfig:
    """Random weights, SDPA attention, everything trainable (so training FLOPs = 3x forward)."""
    return BackboneConfig(name_or_path=None, random_arch=cfg.arch, attn_implementation="sdpa")


def build_model(cfg: BenchConfig):
    """The model of ``cfg`` with random weights (the benchmark measures speed, not accuracy)."""
    import logging

    log = logging.getLogger("awm_lib.model.backbone")
    level = log.level
    log.setLevel(logging.ERROR)  # random weights are the point here: no loud warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomBackboneWarning)
            backbone = build_backbone(backbone_config(cfg))
    finally:
        log.setLevel(level)
    if cfg.model == "full":
        return FullImageClassifier(
            FullImageConfig(backbone=backbone.cfg, long_side=cfg.long_side), backbone=backbone
        )
    mcfg = RoIClassifierConfig(backbone=backbone.cfg, crop_size=cfg.crop_size, topk=cfg.topk)
    return RoIClassifier(mcfg, backbone=backbone)


# --- analytic FLOPs --------------------------------------------------------------------------
def vit_spec(backbone) -> cost.ViTSpec:
    """A :class:`awm_lib.model.cost.ViTSpec` describing a built :class:`~awm_lib.model.backbone.Backbone`."""
    mc = backbone.model.config
    return cost.ViTSpec(
        name=f"ViT-{backbone.cfg.random_arch}/{mc.patch_size}"
        if not backbone.is_pretrained
        else str(backbone.source),
        embed_dim=mc.hidden_size,
        depth=mc.num_hidden_layers,
        num_heads=mc.num_attention_heads,
        patch_size=mc.patch_size,
        mlp_ratio=mc.intermediate_size / mc.hidden_size,
        in_chans=mc.num_channels,
    )


def roi_forward_flops(model, batch_size: int) -> dict[str, float]:
    """Forward FLOPs of a :class:`~awm_lib.model.roi_transformer.RoIClassifier` step.

    Backbone: :func:`awm_lib.model.cost.roi_path_forward_flops` (``topk + 1`` crops,
    each its own sequence). Head: projection, the RoI transformer blocks on
    ``K`` tokens and the final linear layer, with the same helpers.
    """
    mc = model.cfg
    k = mc.topk + 1
    spec = vit_spec(model.backbone)
    backbone = cost.roi_path_forward_flops(spec, k, mc.crop_size).total
    head = (cost.linear_flops(k, model.backbone.embed_dim, mc.d_model)
            + mc.depth * cost.transformer_layer_flops(k, mc.d_model, mc.mlp_ratio).total
            + cost.linear_flops(1, mc.d_model, 1))
    return {
        "backbone": batch_size * backbone,
        "head": batch_size * head,
        "total": batch_size * (backbone + head),
        "tokens_per_image": cost.roi_path_tokens(k, mc.crop_size, spec.patch_size),
    }


def full_forward_flops(model, canvas: tuple[int, int], batch_size: int) -> dict[str, float]:
    """Forward FLOPs of a :class:`~awm_lib.model.baseline.FullImageClassifier` on a ``canvas`` (h, w)."""
    spec = vit_spec(model.backbone)
    h, w = canvas
    backbone = cost.vit_forward_flops(spec, h, w).total
    head = cost.linear_flops(1, model.backbone.hidden_size, 1)
    return {
        "backbone": batch_size * backbone,
        "head": batch_size * head,
        "total": batch_size * (backbone + head),
        "tokens_per_image": cost.num_tokens(h, w, spec.patch_size),
    }


def full_canvas(cfg: BenchConfig, patch_size: int = 14) -> tuple[int, int]:
    """The (h, w) pixels the full-image ViT sees for a whole ``image_size`` breast (as the model pads)."""
    import math

    h, w = cfg.image_size
    s = cfg.long_side / max(h, w)
    return (max(patch_size, math.ceil(round(h * s, 3) / patch_size) * patch_size),
            max(patch_size, math.ceil(round(w * s, 3) / patch_size) * patch_size))
