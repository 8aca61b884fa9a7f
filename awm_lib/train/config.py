"""The training configuration: one dataclass tree, three presets, ``--set key=value`` overrides.

:class:`TrainConfig` nests everything a run depends on::

    TrainConfig
      model: RoIClassifierConfig   (awm_lib.model: backbone, crop_size, RoI transformer, pooling)
      loss:  LossConfig            (awm_lib.losses: BCE weight, repulsive / contrastive terms)
      data:  DataConfig            (dataset, preprocessing size, proposer, topk, folds)
      optim: OptimConfig           (AdamW, schedule, batch, accumulation, early stopping)
      eval:  EvalConfig            (threshold criterion, bootstrap)
      arch, baseline               "roi" (default) or the "full_image" ViT baseline and its settings

Presets:

* ``smoke``: a tiny random backbone on small images; the whole run, data
  preparation included, finishes in a few minutes on a 2-core CPU. For tests,
  CI and "does it run at all".
* ``default``: the cheaper setting used in the book: ViT-S/14, crops of 224 px,
  top-5 proposals + the anchor.
* ``paper``: the paper's setting: ViT-B/14, crops of 448 px, top-5 + anchor.

Overrides use dotted keys and are type-checked against the dataclasses
(:mod:`awm_lib.config`, the library's one override parser), so a typo fails
loudly instead of being ignored::

    cfg = make_config("smoke", ["optim.lr_head=3e-4", "data.fold=2", "model.pooling=attention"])

Unknown keys and values of the wrong type raise :class:`awm_lib.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from awm_lib.config import apply_overrides, from_dict, preset_from, to_dict
from awm_lib.errors import ConfigError
from awm_lib.losses import LossConfig
from awm_lib.model.backbone import BackboneConfig
from awm_lib.model.roi_transformer import RoIClassifierConfig

# =====================================================================================
# The training configuration
# =====================================================================================
DATASETS = ("synthetic", "mias", "vindr")


@dataclass
class DataConfig:
    dataset: Literal["synthetic", "mias", "vindr"] = "synthetic"
    root: str | None = None  # None: the default location (synthetic: generated on demand)
    long_side: int = 1024  # the preprocessing cache's long side (pixels of the breast crop)
    proposer: str = "blob"  # blob (default), oracle, random, none, ... (awm_lib.proposals)
    nms_iou: float = 0.5  # NMS between proposals (how many are kept is model.topk)
    roi_margin: float = 40.0  # pixels (of the ORIGINAL image) added around each proposal when squaring it
    roi_min_overlap: float = 0.5  # roi_labels: overlap with a malignant lesion that makes a RoI "malignant"
    pad_rois: Literal["mask", "random"] = "mask"  # < topk proposals: mask the padding, or fill with random boxes (use with the oracle)
    max_images: int | None = None  # keep at most this many images per split (stratified), for quick runs
    fold: int = 0  # mini-MIAS: the test fold (5-fold cross-validation by woman)
    n_folds: int = 5
    val_fraction: float = 0.2  # mini-MIAS: share of the training women carved out for validation
    synthetic_n: int = 400  # synthetic: images to generate (split train/val/test by the generator)
    synthetic_size: int = 1024  # synthetic: image height in pixels
    synthetic_seed: int = 0
    augment: bool = True  # random intensity gamma + small RoI jitter on training images
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)

    def __post_init__(self):
        if self.long_side < 32:
            raise ValueError("long_side must be at least 32 pixels")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"fold must be in 0..{self.n_folds - 1}")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be between 0 and 1")


@dataclass
class OptimConfig:
    epochs: int = 20
    max_steps: int | None = None  # stop after this many optimizer steps (None: epochs decide)
    batch_size: int = 8  # images per process per micro-batch
    accum_steps: int = 1  # micro-batches per optimizer step (effective batch = batch_size * accum * world)
    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0
    amp: bool = True  # bf16 autocast on CUDA; CPU always runs fp32
    eval_every: int = 0  # validate every N optimizer steps; 0 = at the end of every epoch
    patience: int = 5  # stop after this many validations without a better val AUC; 0 = never
    ckpt_every: int = 0  # extra checkpoints every N steps (0: at every validation only)
    keep_last: int = 2
    log_every: int = 1
    deterministic: bool = True  # torch.use_deterministic_algorithms(warn_only=True)
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    progress: bool = True  # tqdm bars

    def __post_init__(self):
        for name in ("epochs", "batch_size", "accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr_backbone < 0 or self.lr_head <= 0:
            raise ValueError("learning rates must be positive (lr_backbone may be 0 to freeze it)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")


@dataclass
class EvalConfig:
    threshold_criterion: Literal["f1", "youden"] = "f1"  # chosen on validation, applied to test
    n_boot: int = 1000  # bootstrap resamples for the 95% intervals
    boot_by_patient: bool = True  # resample women, not images
    batch_size: int = 16


@dataclass
class BaselineConfig:
    """The full-image ViT baseline (``arch="full_image"``); its backbone is ``model.backbone``."""

    long_side: int = 518  # pixels of the breast's long side fed to the ViT (all its tokens)
    pooling: Literal["cls", "mean"] = "cls"
    head_dropout: float = 0.1


@dataclass
class TrainConfig:
    preset: str = "default"
    seed: int = 0
    arch: Literal["roi", "full_image"] = "roi"  # the RoI classifier, or the full-image ViT baseline
    model: RoIClassifierConfig = field(default_factory=RoIClassifierConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)


# Keys that may differ between a checkpoint and a resumed run without changing the result.
RESUME_IGNORE = ("data.root", "data.num_workers", "optim.device", "optim.progress", "optim.log_every")


def _preset_smoke() -> TrainConfig:
    """Minutes on a laptop CPU: a 2-block, 64-wide random ViT on 56-px crops of 256-px images."""
    return TrainConfig(
        preset="smoke",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(name_or_path=None, random_arch="micro"),
            crop_size=56, topk=3, d_model=64, depth=1, heads=2, dropout=0.0, head_dropout=0.0,
        ),
        data=DataConfig(long_side=256, roi_margin=20.0, max_images=None, synthetic_n=160, synthetic_size=512, augment=False),
        optim=OptimConfig(epochs=2, batch_size=8, lr_backbone=1e-4, lr_head=1e-3, warmup_steps=2, patience=0),
        eval=EvalConfig(n_boot=200),
    )


def _preset_default() -> TrainConfig:
    """The book's setting: ViT-S/14 (DINOv2-small), 224-px crops, top-5 + anchor."""
    return TrainConfig(
        preset="default",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(name_or_path="facebook/dinov2-small", random_arch="small", freeze_patch_embed=True, freeze_blocks=6),
            crop_size=224, topk=5, d_model=256, depth=2, heads=4,
        ),
        data=DataConfig(long_side=1024),
        optim=OptimConfig(epochs=20, batch_size=8),
    )


def _preset_paper() -> TrainConfig:
    """The paper's setting: ViT-B/14 (DINOv2-base), 448-px crops, top-5 + anchor."""
    return TrainConfig(
        preset="paper",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(name_or_path="facebook/dinov2-base", random_arch="base", freeze_patch_embed=True),
            crop_size=448, topk=5, d_model=256, depth=2, heads=4,
        ),
        data=DataConfig(long_side=2048, roi_margin=40.0),
        optim=OptimConfig(epochs=30, batch_size=4, accum_steps=2),
    )


PRESETS = {"smoke": _preset_smoke, "default": _preset_default, "paper": _preset_paper}


def make_config(preset: str = "default", overrides: list[str] | None = None, **data_fields) -> TrainConfig:
    """A preset, then ``data`` fields given as keywords (dataset=..., root=...), then overrides."""
    cfg = preset_from(PRESETS, preset)
    if data_fields:
        try:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_fields))
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from e
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every value's type (a round trip through :func:`from_dict`) and each section's rules."""
    from_dict(TrainConfig, to_dict(cfg))
    cfg.model.validate()
    cfg.model.backbone.validate()
    cfg.loss.validate()
    if cfg.model.crop_size % 14:
        raise ConfigError(f"model.crop_size={cfg.model.crop_size} must be a multiple of the ViT patch size 14 (e.g. 56, 224, 448)")
    return cfg


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of :func:`to_dict` (e.g. the config saved in a checkpoint), checked."""
    return validate(from_dict(TrainConfig, d))
