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
* ``default``: the project's own recipe, used in the book: ViT-S/14, crops of
  224 px, top-5 proposals + the anchor (6 tokens), multi-head pre-norm blocks,
  2-D RoPE of the box centres, repulsive loss on the projected embeddings.
* ``paper``: the reference implementation's recipe, point by point (ViT-B/14,
  448-px crops, k = 5 tokens counting the anchor, the sine code concatenated
  + 1-D RoPE, 3 single-head post-norm blocks, BN-MLP head, repulsive loss on
  block 3's outputs, AdamW at 1e-6 for everything, batch 4).
  :data:`PROJECT_DIFFERENCES` lists where ``default`` departs from it, and
  ``python -m awm_lib train --preset paper --print-config`` shows it.

Overrides use dotted keys and are type-checked against the dataclasses
(:mod:`awm_lib.config`, the library's one override parser), so a typo fails
loudly instead of being ignored::

    cfg = make_config("smoke", ["optim.lr_head=3e-4", "data.fold=2", "model.pooling=attention"])

Unknown keys and values of the wrong type raise :class:`awm_lib.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

from awm_lib.config import apply_overrides, from_dict, preset_from, to_dict
from awm_lib.errors import ConfigError
from awm_lib.features.backbones import default_ssl_checkpoint
from awm_lib.features.config import RESUME_IGNORE as _FEATURES_RESUME_IGNORE
from awm_lib.features.config import FeatureConfig
from awm_lib.losses import LossConfig
from awm_lib.model.backbone import ARCHITECTURES, BackboneConfig
from awm_lib.model.position import POSITION_ORIGIN
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
    roi_margin: float | None = None  # pixels (of the ORIGINAL image) added to max(w, h) when squaring a box
    roi_margin_mm: float | None = (
        None  # ... or millimetres (wins over roi_margin); both None: DEFAULT_MARGIN[dataset]
    )
    roi_min_overlap: float = 0.5  # roi_labels: overlap with a malignant lesion that makes a RoI "malignant"
    pad_rois: Literal["mask", "random", "repeat"] = (
        "mask"  # < topk proposals: mask the padding, fill with random
    )
    #   boxes (use with the oracle), or repeat kept proposals (the reference's random.choices)
    square_anchor: bool = False  # square the anchor too, side max(w, h) + margin (the reference)
    # the anchor suppresses proposals repeating it (ours); False: NMS among proposals only (reference)
    anchor_in_nms: bool = True
    roi_border: Literal["shift", "pad", "clip"] = (
        "shift"  # boxes crossing the border: moved inside (ours), padded black (reference)
    )
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
        for name in ("roi_margin", "roi_margin_mm"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


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
    features: FeatureConfig = field(
        default_factory=FeatureConfig
    )  # cached tokens of a frozen backbone (preset frozen)


#: The crop margin when neither data.roi_margin nor data.roi_margin_mm is given, per dataset.
#: VinDr-shaped data keep the reference's 40 px (about 3.4 mm at 0.085 mm per pixel); on
#: mini-MIAS (0.2 mm per pixel) 40 px would be 8 mm, so it keeps the reference's 3.4 mm.
DEFAULT_MARGIN: dict[str, tuple[str, float]] = {
    "vindr": ("px", 40.0),
    "synthetic": ("px", 40.0),
    "mias": ("mm", 3.4),
}

# Keys that may differ between a checkpoint and a resumed run without changing the result.
RESUME_IGNORE = (
    "data.root",
    "data.num_workers",
    "optim.device",
    "optim.progress",
    "optim.log_every",
    *_FEATURES_RESUME_IGNORE,
)


def _preset_smoke() -> TrainConfig:
    """Minutes on a laptop CPU: a 2-block, 64-wide random ViT on 56-px crops of 256-px images."""
    return TrainConfig(
        preset="smoke",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(name_or_path=None, random_arch="micro"),
            crop_size=56,
            topk=3,
            d_model=64,
            depth=1,
            heads=2,
            dropout=0.0,
            head_dropout=0.0,
        ),
        loss=LossConfig(repulsive_on="embeddings"),  # the project's choice (see PROJECT_DIFFERENCES)
        data=DataConfig(
            long_side=256,
            roi_margin=20.0,
            max_images=None,
            synthetic_n=160,
            synthetic_size=512,
            augment=False,
        ),
        optim=OptimConfig(epochs=2, batch_size=8, lr_backbone=1e-4, lr_head=1e-3, warmup_steps=2, patience=0),
        eval=EvalConfig(n_boot=200),
    )


def _preset_default() -> TrainConfig:
    """The project's recipe, used in the book: ViT-S/14 (DINOv2-small), 224-px crops, top-5 + anchor.

    Where it departs from the reference implementation: :data:`PROJECT_DIFFERENCES`.
    """
    return TrainConfig(
        preset="default",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(
                name_or_path="facebook/dinov2-small",
                random_arch="small",
                freeze_patch_embed=True,
                freeze_blocks=6,
            ),
            crop_size=224,
            topk=5,
            d_model=256,
            depth=2,
            heads=4,
        ),
        loss=LossConfig(repulsive_on="embeddings"),
        data=DataConfig(long_side=1024),
        optim=OptimConfig(epochs=20, batch_size=8),
    )


def _preset_paper() -> TrainConfig:
    """The reference implementation's recipe (SamyakSS83/attend-what-matters: model.py, data.py,
    train.py and its README's training command), point by point."""
    return TrainConfig(
        preset="paper",
        model=RoIClassifierConfig(
            # DINOv2 ViT-B/14; frozen: the patch embedding and blocks 0-2 (CLS / position tokens train)
            backbone=BackboneConfig(
                name_or_path="facebook/dinov2-base",
                random_arch="base",
                freeze_patch_embed=True,
                freeze_blocks=3,
                freeze_tokens=False,
            ),
            crop_size=448,
            topk=4,  # k = 5 tokens counting the anchor: the breast box + 4 proposals
            position="sinecat+rope1d",  # sine code -> Linear(256, 256), concatenated; 1-D RoPE over the index
            pos_dim=256,
            input_proj=False,
            d_model=1024,  # 768 (CLS) + 256 (box code), no input projection
            depth=3,
            heads=1,
            pre_norm=False,
            mlp="relu",  # 3 single-head post-norm blocks, Linear+ReLU MLP
            dropout=0.0,
            attn_dropout=0.25,  # the reference's dropout 0.25 acts on the attention weights ...
            head="mlp",
            head_hidden=256,
            head_dropout=0.25,  # ... and in the head: BN -> dropout -> 1024->256 -> ReLU -> 1
            pooling="anchor",
            init_std=None,  # anchor pooling; PyTorch's default init
        ),
        loss=LossConfig(
            pos_weight=10.0, repulsive_weight=0.3, repulsive_on="tokens", repulsive_include_anchor=False
        ),
        data=DataConfig(
            long_side=2048,
            roi_margin=40.0,  # side max(w, h) + 2 x 20 px of the original image
            square_anchor=True,
            anchor_in_nms=False,
            roi_border="pad",
            pad_rois="repeat",
        ),
        # AdamW at 1e-6 for everything (torch's default weight decay 0.01), batch 4, no schedule,
        # no clipping, fp32, up to 100 epochs with patience 5
        optim=OptimConfig(
            epochs=100,
            batch_size=4,
            accum_steps=1,
            lr_backbone=1e-6,
            lr_head=1e-6,
            weight_decay=0.01,
            warmup_steps=0,
            min_lr_ratio=1.0,
            grad_clip=None,
            amp=False,
            patience=5,
        ),
    )


#: Where the project's presets (``default``, ``smoke``) depart from the reference implementation
#: (``paper``): (what, the reference's choice, the project's choice). The method page of the book
#: states the same list.
PROJECT_DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    (
        "tokens per image",
        "k = 5 counting the anchor (model.topk=4)",
        "model.topk proposals + the anchor (default: 5 + 1)",
    ),
    (
        "anchor box",
        "squared like every box, side max(w, h) + 40 px (data.square_anchor=true)",
        "the breast box as it is (data.square_anchor=false)",
    ),
    (
        "NMS",
        "among the detector's boxes only (data.anchor_in_nms=false)",
        "the anchor joins NMS first and removes boxes repeating it",
    ),
    (
        "boxes at the border",
        "padded with black (data.roi_border=pad)",
        "moved inside the image (data.roi_border=shift)",
    ),
    (
        "fewer than k proposals",
        "repeat kept proposals (data.pad_rois=repeat)",
        "mask the padding out of attention (data.pad_rois=mask)",
    ),
    (
        "crop margin",
        "40 px of the original image",
        "40 px on VinDr-shaped data, 3.4 mm on mini-MIAS (DEFAULT_MARGIN)",
    ),
    (
        "position code",
        "sine code of (cx/W, cy/H, s/W, s/H) -> Linear(256, 256), concatenated, + 1-D RoPE over the index",
        "2-D RoPE of the box centres (model.position=rope2d): relative placement, no box size",
    ),
    ("width", "768 + 256 = 1024, no input projection", "a Linear from the backbone's width to d_model=256"),
    (
        "blocks",
        "3 single-head POST-norm blocks, MLP = one Linear + ReLU, dropout 0.25 on attention weights",
        "2 four-head PRE-norm blocks, GELU MLP of width 4d, dropout 0.1 on the residual branches",
    ),
    (
        "head",
        "BatchNorm -> dropout 0.25 -> Linear(1024, 256) -> ReLU -> Linear(256, 1)",
        "LayerNorm -> dropout 0.1 -> Linear(256, 1)",
    ),
    (
        "repulsive loss",
        "on block 3's outputs, anchor excluded (loss.repulsive_on=tokens)",
        "on the projected embeddings before the transformer, anchor excluded (loss.repulsive_on=embeddings)",
    ),
    (
        "backbone",
        "DINOv2 ViT-B/14, patch embedding + blocks 0-2 frozen",
        "DINOv2 ViT-S/14, embeddings + blocks 0-5 frozen",
    ),
    (
        "optimiser",
        "AdamW lr 1e-6 for everything, weight decay 0.01, batch 4, constant lr, fp32",
        "AdamW lr 1e-5 (backbone) / 1e-4 (rest), weight decay 0.05, batch 8, warmup + cosine, grad clip 1, "
        "bf16 on CUDA",
    ),
    ("early stopping", "patience 5 on the validation LOSS", "patience 5 on the validation ROC-AUC"),
    (
        "intensity",
        "the 16-bit crop / 65535, 3 channels, ImageNet mean/std",
        "the crop / (2^bits_stored - 1), 3 channels, ImageNet mean/std",
    ),
    (
        "augmentation",
        "per crop: random horizontal / vertical flips, ColorJitter 0.1",
        "per image: a random gamma and a small jitter of the proposal boxes (data.augment)",
    ),
    ("F1 threshold", "chosen on the TEST set by the public eval.py", "chosen on validation, applied to test"),
)

#: Where even the ``paper`` preset cannot, or does not, do what the reference does.
PAPER_PRESET_GAPS: tuple[str, ...] = (
    "crops come from the breast resized to data.long_side=2048 px, not from the full-resolution image",
    "intensities are scaled by the stored bit depth, not by 65535; augmentation is ours (gamma + box "
    "jitter), "
    "not the reference's flips and colour jitter",
    "the box code's side includes the 40 px margin (the reference normalises the detector box's side)",
    "the anchor is the whole breast crop, not the bounding box of the largest contour; "
    "boxes are sampled with anti-aliasing, not cut with PIL and resized",
    "early stopping watches the validation ROC-AUC, not the validation loss; "
    "the F1 threshold is chosen on validation, never on test",
    "the reference's alternative poolings exist as pooling='anchor_attention' (block 3's attention row of "
    "the "
    "anchor), 'mean' and 'cls' (our CLS token sits first, the reference's last)",
)


def _preset_frozen() -> TrainConfig:
    """A frozen backbone and cached RoI tokens: the RoI head trains in seconds on a CPU.

    Every RoI crop is embedded ONCE by the frozen backbone (``features.cached``, the shared
    cache of :mod:`awm_lib.features`); the same RoIClassifier (position codes, transformer,
    pooling, head) and losses then train on (B, K, D) tokens. Backbone: the project's own
    self-supervised checkpoint ``checkpoints/awm-dino-cpu`` when it is there, else a random
    ViT-S/14 (seed ``features.random_seed``), the honest baseline; every result records which.

    Why ViT-S/14 at 112 px (measured on this 2-core CPU, ``benchmarks/bench_features.py``,
    ``results/bench_features.json``): one 112-px crop is 65 tokens, a 224-px crop 257, so
    112 px costs 4.3x less (2.9 vs 12.3 GFLOP per crop; measured 8.7 vs 2.0 crops/s on one
    busy core, the same ~70% of the matmul peak per CPU-second) and fills the mini-MIAS cache
    (322 images x 6 RoIs) in minutes instead of a quarter of an hour on a busy CPU; a lesion box on mini-MIAS
    at ``long_side=1024`` is mostly 40-200 px, so 112 px keeps
    the lesion near its native resolution, and only the whole-breast anchor is shrunk more.
    The project's CPU self-supervised checkpoint (``pretrain --preset cpu-90min``) was trained
    on 112-px global crops, so 112 px is the resolution it knows. ViT-S rather than ViT-B:
    4x cheaper, and offline both are random anyway.
    """
    return TrainConfig(
        preset="frozen",
        model=RoIClassifierConfig(
            backbone=BackboneConfig(
                name_or_path=default_ssl_checkpoint(), random_arch="small", embedding="cls"
            ),
            crop_size=112,
            topk=5,
            d_model=128,
            depth=2,
            heads=4,
            dropout=0.1,
            head_dropout=0.1,
        ),
        loss=LossConfig(repulsive_on="embeddings"),
        data=DataConfig(long_side=1024, augment=False),  # a cached token is fixed: no augmentation
        # chosen on validation AUC only (scripts/select_frozen_preset.py,
        # results/frozen_preset_selection.json):
        # lr 1e-3 with batch 32 beat 3e-4 with batch 16 on the validation women of all 5 folds, in half the
        # steps
        optim=OptimConfig(
            epochs=30, batch_size=32, lr_backbone=0.0, lr_head=1e-3, warmup_steps=10, patience=10
        ),
        features=FeatureConfig(cached=True),
    )


PRESETS = {
    "smoke": _preset_smoke,
    "default": _preset_default,
    "paper": _preset_paper,
    "frozen": _preset_frozen,
}


def describe_config(cfg: TrainConfig) -> str:
    """The resolved configuration as text: a summary of the recipe, then every key (``--print-config``).

    Builds nothing (no backbone, no data): the backbone's width is that of its
    ``random_arch`` (the same as the hub checkpoint of that name).
    """
    m, bb, lc, d, o = cfg.model, cfg.model.backbone, cfg.loss, cfg.data, cfg.optim
    width = ARCHITECTURES[bb.random_arch]["hidden_size"] * (2 if bb.embedding == "cls+mean" else 1)
    code = m.pos_dim if m.position in ("sinecat", "sinecat+rope1d") else 0
    token_in = f"{width}" + (f" + {code} (box code)" if code else "")
    proj = f"Linear({width + code} -> {m.d_model})" if m.input_proj else "none"
    frozen = (["patch embedding"] if bb.freeze_patch_embed else []) + \
        ([f"blocks 0-{bb.freeze_blocks - 1}"] if bb.freeze_blocks else []) + \
        (["CLS/position tokens"] if bb.freeze_blocks and bb.freeze_tokens else [])
    features = getattr(cfg, "features", None)
    if o.lr_backbone == 0 or (features is not None and getattr(features, "cached", False)):
        frozen = [
            "all of it (" + ("cached tokens" if getattr(features, "cached", False) else "lr_backbone 0") + ")"
        ]
    if d.roi_margin_mm is not None:
        margin = f"{d.roi_margin_mm:g} mm"
    elif d.roi_margin is not None:
        margin = f"{d.roi_margin:g} px of the original image"
    else:
        unit, value = DEFAULT_MARGIN[d.dataset]
        margin = f"{value:g} {unit} (the {d.dataset} default)"
    if m.head == "mlp":
        head = (f"BatchNorm -> dropout {m.head_dropout:g} -> Linear({m.d_model} -> {m.head_hidden}) -> ReLU "
                f"-> Linear({m.head_hidden} -> 1)")
    else:
        head = f"LayerNorm -> dropout {m.head_dropout:g} -> Linear({m.d_model} -> 1)"
    lines = [
        f"preset {cfg.preset} "
        + ("(the reference implementation's recipe)" if cfg.preset == "paper" else "(the project's choices)"),
        f"  backbone      {bb.name_or_path or 'random ' + bb.random_arch} (width {width}), embedding "
        f"{bb.embedding}; "
        f"frozen: {', '.join(frozen) or 'nothing'}",
        f"  tokens        k = {m.topk + 1} per image: the anchor (breast box) + {m.topk} proposals",
        f"  boxes         square, side max(w, h) + {margin}; anchor "
        f"{'squared too' if d.square_anchor else 'not squared'}; "
        f"border: {d.roi_border}; NMS IoU {d.nms_iou:g} {'with' if d.anchor_in_nms else 'without'} the "
        "anchor; "
        f"padding: {d.pad_rois}",
        f"  crops         {m.crop_size} px, intensities in [0, 1], ImageNet mean/std",
        f"  position      {m.position}: {POSITION_ORIGIN[m.position]}",
        f"  token         {token_in} -> input projection {proj} -> width {m.d_model}",
        f"  transformer   {m.depth} x {'pre' if m.pre_norm else 'post'}-norm, {m.heads} head(s), "
        f"MLP {'Linear+ReLU' if m.mlp == 'relu' else 'Linear-GELU-Linear x' + format(m.mlp_ratio, 'g')}, "
        f"dropout {m.dropout:g} (residual) / {m.attn_dropout:g} (attention weights)",
        f"  pooling, head {m.pooling}; {head}",
        f"  loss          weighted BCE (pos_weight {lc.pos_weight:g}) + {lc.repulsive_weight:g} x repulsive "
        "on "
        f"{'the transformer outputs' if lc.repulsive_on == 'tokens' else 'the projected embeddings'}, "
        f"anchor {'included' if lc.repulsive_include_anchor else 'excluded'}"
        + (f" + {lc.supcon_weight:g} x SupCon" if lc.supcon_weight else "")
        + (f" + {lc.roi_supcon_weight:g} x RoI SupCon" if lc.roi_supcon_weight else ""),
        f"  optimiser     AdamW lr {o.lr_backbone:g} (backbone) / {o.lr_head:g} (rest), weight decay "
        f"{o.weight_decay:g}, "
        f"batch {o.batch_size} x accum {o.accum_steps}, warmup {o.warmup_steps}, epochs {o.epochs}, patience "
        f"{o.patience}",
    ]
    if cfg.preset == "paper":
        lines += ["  still not the reference's:"] + [f"    - {gap}" for gap in PAPER_PRESET_GAPS]
    lines += ["", json.dumps(to_dict(cfg), indent=2)]
    return "\n".join(lines)


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
    for prefix, check in (
        ("model.", cfg.model.validate),
        ("model.backbone.", cfg.model.backbone.validate),
        ("loss.", cfg.loss.validate),
    ):
        try:
            check()
        except ConfigError as e:  # name the full key, e.g. "model.topk=-3 ..." rather than "topk=-3 ..."
            msg = str(e)
            short = prefix.split(".")[-2] + "."
            if msg.startswith(short) and prefix != short:
                msg = msg[len(short):]
            raise ConfigError(msg if msg.startswith(prefix) else prefix + msg, e.path) from None
    cfg.features.validate()
    if cfg.features.cached and cfg.arch != "roi":
        raise ConfigError(
            "features.cached=true needs arch=roi (the full-image baseline has no RoI tokens), got "
            f"arch={cfg.arch}"
        )
    if cfg.features.cached and cfg.data.augment:
        raise ConfigError(
            "features.cached=true trains on fixed tokens: set data.augment=false (no gamma / box jitter)"
        )
    if cfg.model.crop_size % 14:
        raise ConfigError(
            f"model.crop_size={cfg.model.crop_size} must be a multiple of the ViT patch size 14 (e.g. 56, "
            "224, 448)"
        )
    return cfg


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of :func:`to_dict` (e.g. the config saved in a checkpoint), checked."""
    return validate(from_dict(TrainConfig, d))
