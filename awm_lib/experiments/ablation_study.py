"""The ablation study's definition: named configurations, hardware scales, and the grid of runs.

Vocabulary
----------
* a **configuration** is a named list of ``--set`` overrides on top of a preset
  (:data:`CONFIGURATIONS`), e.g. ``roi-sine`` = ``model.position=sine``;
* a **scale** is the preset plus overrides for the hardware: ``cpu-smoke`` (a
  random micro ViT on 256-px images: minutes on a laptop, numbers that only show
  the pipeline works), ``cpu-frozen`` (the ``frozen`` preset: crops embedded once
  by a frozen ViT-S/14 and cached, the RoI head trained on the tokens: 5 folds x 5
  seeds on a CPU) and ``gpu`` (ViT-S/14 fine-tuned, 224-px crops, 1024-px images);
  a scale may redefine a configuration (``Scale.replace``: the frozen scale's
  full-image baseline is the whole breast at 224 px through the same frozen ViT);
* a **run** is one (dataset, configuration, fold or seed) trained by
  :func:`awm_lib.train.experiment.train` into
  ``runs/ablation/<dataset>/<configuration>/<fold0|seed0>/``.

:func:`config_for` turns one run into its :class:`TrainConfig`, :func:`plan_runs`
lists every run of a grid (:class:`RunSpec`), skipping configurations whose
backbone weights are not available here (:func:`backbone_available`). Running
them is :mod:`awm_lib.experiments.ablation`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from awm_lib import paths
from awm_lib.config import did_you_mean
from awm_lib.errors import ConfigError
from awm_lib.train.config import TrainConfig, make_config

SSL_CHECKPOINT = (
    "checkpoints/awm-dino-s14"  # written by `python -m awm_lib pretrain` (relative to the project)
)


# =====================================================================================
# The study definition
# =====================================================================================
@dataclass(frozen=True)
class Configuration:
    """One row of the ablation table: overrides applied on top of the scale's preset."""

    name: str
    overrides: tuple[str, ...]
    description: str
    backbone: str | None = None  # weights this configuration needs (None: the scale's random init)


_ROI = ("arch=roi",)
_NO_CONTRAST = ("loss.repulsive_weight=0", "loss.supcon_weight=0", "loss.roi_supcon_weight=0")
_REPULSIVE = ("loss.repulsive_weight=0.3", "loss.supcon_weight=0", "loss.roi_supcon_weight=0")
# the reference implementation's position code (DAB-DETR sine code of the box -> Linear, concatenated, + 1-D
# RoPE
# over the index) and its repulsive term (on the RoI transformer's outputs, anchor excluded)
_PAPER_POS = ("model.position=sinecat+rope1d",)
_PAPER_REPULSIVE = (*_REPULSIVE, "loss.repulsive_on=tokens")
_FULL = (
    *_ROI,
    *_PAPER_POS,
    *_PAPER_REPULSIVE,
)  # the paper's method (as the reference codes it) with the blob proposer
# the project's variant of the repulsive term: on the projected RoI embeddings, before the transformer
_OUR_REPULSIVE = (*_REPULSIVE, "loss.repulsive_on=embeddings")
PAPER_METHOD = "roi-paper"  # the configuration that is "the paper's method"

CONFIGURATIONS: dict[str, Configuration] = {
    c.name: c
    for c in [
        Configuration(
            "baseline-full-image",
            ("arch=full_image", *_NO_CONTRAST),
            "one ViT over the whole breast (all its tokens), BCE only",
        ),
        Configuration(
            "roi-nopos",
            (*_ROI, "model.position=none", *_NO_CONTRAST),
            "RoI tokens + anchor, no position code, BCE only",
        ),
        Configuration(
            "roi-sine",
            (*_ROI, "model.position=sine", *_NO_CONTRAST),
            "+ sine code of the box coordinates added to each token",
        ),
        Configuration(
            "roi-rope2d",
            (*_ROI, "model.position=rope2d", *_NO_CONTRAST),
            "+ 2-D RoPE of the box centres instead of the sine code",
        ),
        Configuration(
            "roi-sinecat-rope1d",
            (*_ROI, *_PAPER_POS, *_NO_CONTRAST),
            "the reference's position code: sine code of the box -> Linear, concatenated to each token, "
            "+ 1-D RoPE over the detector rank",
        ),
        Configuration(
            PAPER_METHOD,
            _FULL,
            "the paper's method as the reference codes it: its position code + the repulsive loss on the "
            "RoI transformer's outputs (blob proposer)",
        ),
        Configuration(
            "roi-rope2d-repulsive",
            (*_ROI, "model.position=rope2d", *_OUR_REPULSIVE),
            "the project's variant: 2-D RoPE + the repulsive loss on the RoI embeddings before the "
            "transformer",
        ),
        Configuration(
            "roi-rope2d-supcon",
            (
                *_ROI,
                "model.position=rope2d",
                "loss.repulsive_weight=0",
                "loss.supcon_weight=0",
                "loss.roi_supcon_weight=0.3",
                "loss.hard_negative_beta=1.0",
            ),
            "2-D RoPE + hard-negative supervised contrastive loss over RoIs (instead of the repulsive loss)",
        ),
        Configuration(
            "roi-rope2d-repulsive-supcon",
            (
                *_ROI,
                "model.position=rope2d",
                *_OUR_REPULSIVE,
                "loss.roi_supcon_weight=0.3",
                "loss.hard_negative_beta=1.0",
            ),
            "the project's variant + the hard-negative supervised contrastive loss over RoIs",
        ),
        Configuration(
            "proposer-blob",
            (*_FULL, "data.pad_rois=random"),
            "the paper's method with random padding: the blob arm of the random / oracle contrasts, padded "
            "like them (data.pad_rois is part of what a one-factor contrast holds fixed)",
        ),
        Configuration(
            "proposer-oracle",
            (*_FULL, "data.proposer=oracle", "data.pad_rois=random"),
            "the paper's method with the lesion boxes as proposals (random padding so the count leaks "
            "nothing)",
        ),
        Configuration(
            "proposer-oracle-k1",
            (*_FULL, "data.proposer=oracle", "data.pad_rois=random", "model.topk=1"),
            "the paper's method with ONE proposal, the lesion box (random box without a lesion): a perfect "
            "detector at k = 1, no filler RoIs (k chosen on validation folds only: "
            "results/frozen_k_selection.json)",
        ),
        Configuration(
            "proposer-random",
            (*_FULL, "data.proposer=random", "data.pad_rois=random"),
            "the paper's method with seeded random boxes inside the breast as proposals",
        ),
        Configuration(
            "proposer-none",
            (*_FULL, "data.proposer=none"),
            "the paper's method with no proposals: the anchor (whole breast crop) alone",
        ),
        Configuration(
            "backbone-ssl",
            (
                *_FULL,
                f"model.backbone.name_or_path={SSL_CHECKPOINT}",
                "model.backbone.allow_random_fallback=false",
            ),
            "the paper's method, backbone = the project's self-supervised checkpoint",
            backbone=SSL_CHECKPOINT,
        ),
        Configuration(
            "backbone-dinov2-small",
            (
                *_FULL,
                "model.backbone.name_or_path=facebook/dinov2-small",
                "model.backbone.allow_random_fallback=false",
            ),
            "the paper's method, backbone = DINOv2 ViT-S/14 from the hub (needs the weights locally)",
            backbone="facebook/dinov2-small",
        ),
        Configuration(
            "backbone-dinov2-base",
            (
                *_FULL,
                "model.backbone.name_or_path=facebook/dinov2-base",
                "model.backbone.allow_random_fallback=false",
            ),
            "the paper's method, backbone = DINOv2 ViT-B/14 from the hub (needs the weights locally)",
            backbone="facebook/dinov2-base",
        ),
    ]
}

@dataclass(frozen=True)
class Contrast:
    """A paired comparison of two configurations (``b`` minus ``a``), written to the results file's
    ``contrasts``.

    ``claim`` names the paper's claim it tests (the ``factor`` of
    :data:`awm_lib.book.results.PAPER_ABLATION`: ``"position"``, ``"loss"``, ``"method"``), if any.
    """

    name: str
    factor: str
    a: str
    b: str
    claim: str | None = None
    description: str = ""


#: Every paired contrast of the study; one is computed when both of its configurations were run.
CONTRASTS: tuple[Contrast, ...] = (
    Contrast(
        "method",
        "method",
        "baseline-full-image",
        PAPER_METHOD,
        "method",
        "RoI tokens (the paper's method) vs one ViT over the whole low-resolution breast",
    ),
    Contrast(
        "position: reference code",
        "position",
        "roi-nopos",
        "roi-sinecat-rope1d",
        "position",
        "the reference's position code (sine -> Linear, concatenated, + 1-D RoPE) vs none",
    ),
    Contrast(
        "position: sine",
        "position",
        "roi-nopos",
        "roi-sine",
        None,
        "a sine code of the boxes added to each token vs none",
    ),
    Contrast(
        "position: rope2d",
        "position",
        "roi-nopos",
        "roi-rope2d",
        None,
        "the project's 2-D RoPE of the box centres vs none",
    ),
    Contrast(
        "loss: repulsive (reference)",
        "loss",
        "roi-sinecat-rope1d",
        PAPER_METHOD,
        "loss",
        "BCE + the reference's repulsive term (on the transformer's outputs) vs BCE",
    ),
    Contrast(
        "loss: repulsive (ours)",
        "loss",
        "roi-rope2d",
        "roi-rope2d-repulsive",
        None,
        "BCE + the repulsive term on the RoI embeddings vs BCE, with 2-D RoPE",
    ),
    Contrast(
        "loss: supcon",
        "loss",
        "roi-rope2d",
        "roi-rope2d-supcon",
        None,
        "BCE + hard-negative supervised contrastive (ours) vs BCE",
    ),
    Contrast(
        "loss: repulsive + supcon",
        "loss",
        "roi-rope2d-repulsive",
        "roi-rope2d-repulsive-supcon",
        None,
        "adding the supervised contrastive term to the repulsive loss",
    ),
    Contrast(
        "proposer: none -> blob",
        "proposer",
        "proposer-none",
        PAPER_METHOD,
        None,
        "blob proposals vs the anchor alone",
    ),
    Contrast(
        "proposer: random -> blob",
        "proposer",
        "proposer-random",
        "proposer-blob",
        None,
        "blob proposals vs random boxes in the breast (both padded with random boxes)",
    ),
    Contrast(
        "proposer: blob -> oracle",
        "proposer",
        "proposer-blob",
        "proposer-oracle",
        None,
        "the lesion boxes themselves vs blob proposals (both padded with random boxes)",
    ),
    Contrast(
        "k: 5 -> 1 (oracle)",
        "topk",
        "proposer-oracle",
        "proposer-oracle-k1",
        None,
        "one lesion box vs the lesion box plus four random filler boxes (oracle proposals)",
    ),
    Contrast(
        "backbone: ssl",
        "backbone_init",
        PAPER_METHOD,
        "backbone-ssl",
        None,
        "the project's self-supervised backbone vs the random one",
    ),
)

# What `--configs` defaults to: the ablation ladder, the proposer swap and the SSL init.
DEFAULT_CONFIGS = (
    "baseline-full-image",
    "roi-nopos",
    "roi-sine",
    "roi-rope2d",
    "roi-sinecat-rope1d",
    PAPER_METHOD,
    "roi-rope2d-repulsive",
    "roi-rope2d-supcon",
    "proposer-blob",
    "proposer-oracle",
    "proposer-random",
    "proposer-none",
    "backbone-ssl",
)


@dataclass(frozen=True)
class Scale:
    """A preset plus overrides sized for some hardware, and the default folds/seeds."""

    name: str
    preset: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    n_boot: int = 1000
    per_dataset: dict = field(default_factory=dict)  # dataset -> extra overrides
    # configuration -> Configuration that replaces the study's definition at this scale
    # (e.g. the full-image baseline of a frozen-feature scale, or another SSL checkpoint)
    replace: dict = field(default_factory=dict)
    description: str = ""
    # backbone weights, first available wins (resolve_backbone); () = the preset's / the overrides' backbone.
    # Used by configurations that do not name their own backbone; every record states which one it used.
    backbones: tuple[str, ...] = ()

    def configuration(self, name: str) -> Configuration:
        if name not in CONFIGURATIONS:
            raise ConfigError(
                f"unknown ablation configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}"
                f"{did_you_mean(name, CONFIGURATIONS)}"
            )
        return self.replace.get(name, CONFIGURATIONS[name])


SSL_CPU_CHECKPOINT = (
    "checkpoints/awm-dino-cpu"  # the project's CPU-pretrained checkpoint (the pretraining issue)
)
_FROZEN_BASELINE = Configuration(
    "baseline-full-image",
    (
        "arch=roi",
        "data.proposer=none",
        "model.topk=0",
        "model.crop_size=224",
        "model.position=none",
        *_NO_CONTRAST,
    ),
    "the whole breast resized to 224 px (256 patch tokens) through the same frozen ViT, its embedding "
    "classified by "
    "the same head: a full-image, low-resolution model, BCE only",
)
_FROZEN_SSL = Configuration(
    "backbone-ssl",
    (
        *_FULL,
        f"model.backbone.name_or_path={SSL_CPU_CHECKPOINT}",
        "model.backbone.allow_random_fallback=false",
    ),
    "the paper's method, crops embedded by the project's CPU self-supervised checkpoint",
    backbone=SSL_CPU_CHECKPOINT,
)

#: The GPU scale's backbone, first available wins: DINOv2 ViT-S/14 from the hub (cached, or the hub
#: reachable), else the project's self-supervised checkpoint, else (nothing found) a random ViT-S/14.
GPU_BACKBONES = ("facebook/dinov2-small", SSL_CPU_CHECKPOINT)


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub answers (never when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        import urllib.request

        urllib.request.urlopen(
            "https://huggingface.co/api/models/facebook/dinov2-small", timeout=timeout
        ).close()
    except Exception:  # noqa: BLE001 - no network, no DNS, a proxy refusing: not reachable
        return False
    return True


@functools.cache
def resolve_backbone(candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` whose weights can be loaded here, or None (random init).

    A local folder counts when it exists (relative paths: from the project root); a hub
    id when it is in the local Hugging Face cache or the hub is reachable. The answer
    is cached for the process, so every run of one grid uses the same backbone.
    """
    for name in candidates:
        local = Path(name) if Path(name).is_absolute() else paths.PROJECT_ROOT / name
        if name.startswith(("checkpoints/", "/", ".")):
            if (local / "config.json").is_file():
                return name
            continue
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(name, "config.json"), str):
                return name
        except Exception:  # noqa: BLE001 - any hub trouble means "not in the cache"
            pass
        if hub_reachable():
            return name
    return None


SCALES: dict[str, Scale] = {
    # random micro ViT, 256-px breast crops, 56-px RoI crops, 2 epochs: minutes per run on a CPU
    "cpu-smoke": Scale(
        "cpu-smoke",
        "smoke",
        ("baseline.long_side=252", "optim.device=cpu"),
        seeds=(0,),
        per_dataset={"synthetic": ("data.synthetic_n=160", "data.synthetic_size=512")},
    ),
    # ViT-S/14, 224-px crops of 1024-px images; weights: GPU_BACKBONES (DINOv2 from the hub, else the
    # project's SSL checkpoint, else random init); every backbone is fine-tuned whole, so that backbone
    # contrasts change the weights only
    "gpu": Scale(
        "gpu",
        "default",
        (
            "model.backbone.name_or_path=none",
            "model.backbone.freeze_blocks=0",
            "model.backbone.freeze_patch_embed=false",
            "optim.epochs=15",
            "optim.patience=5",
            "optim.batch_size=32",
            "optim.warmup_steps=20",
            "eval.batch_size=64",
            "data.num_workers=8",
        ),
        seeds=(0, 1, 2),
        per_dataset={
            "synthetic": ("data.synthetic_n=6400", "data.synthetic_size=1024"),
            "mias": ("data.augment=true",),
        },
        backbones=GPU_BACKBONES,
    ),
    # the `frozen` preset: every RoI crop embedded once by a frozen, randomly initialised ViT-S/14 (pinned
    # here, so
    # that a checkpoint appearing later never changes a finished run) and cached; the RoI head trains on the
    # tokens in seconds, so 5 folds x 5 seeds fit on a CPU. Settings are the preset's, chosen before any test
    # fold.
    # The optimiser is pinned here (batches of 64, head lr 1e-3, up to 40 epochs, early stopping on validation
    # AUC):
    # fixed for compute before any test fold was seen (a run's cost on a shared CPU is per step), and pinned
    # so
    # that a later change of the preset never mixes two settings in one grid.
    "cpu-frozen": Scale(
        "cpu-frozen",
        "frozen",
        (
            "model.backbone.name_or_path=none",
            "optim.device=cpu",
            "eval.n_boot=100",
            "features.threads=1",
            "optim.batch_size=64",
            "optim.lr_head=1e-3",
            "optim.epochs=40",
            "optim.patience=10",
            "optim.warmup_steps=10",
            "eval.batch_size=64",
        ),
        seeds=(0, 1, 2, 3, 4),
        n_boot=2000,
        per_dataset={"synthetic": ("data.synthetic_n=1000", "data.synthetic_size=1024")},
        replace={"baseline-full-image": _FROZEN_BASELINE, "backbone-ssl": _FROZEN_SSL},
    ),
}


def config_for(configuration: str, dataset: str, scale: str, *, seed: int = 0, fold: int | None = None,
               root: str | None = None, extra: Sequence[str] = ()) -> TrainConfig:
    """The full :class:`TrainConfig` of one run of the study."""
    if configuration not in CONFIGURATIONS:
        raise ConfigError(
            f"unknown ablation configuration {configuration!r}; choose from {', '.join(CONFIGURATIONS)}"
            f"{did_you_mean(configuration, CONFIGURATIONS)}"
        )
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose {', '.join(SCALES)}{did_you_mean(scale, SCALES)}")
    sc = SCALES[scale]
    conf = sc.configuration(configuration)
    weights: list[str] = []
    if sc.backbones and conf.backbone is None:
        name = resolve_backbone(sc.backbones)
        if name is not None:  # loaded or nothing: a failed load must not fall back to random weights silently
            weights = [f"model.backbone.name_or_path={name}", "model.backbone.allow_random_fallback=false"]
    over = [*sc.overrides, *sc.per_dataset.get(dataset, ()), *weights, *conf.overrides,
            f"seed={seed}", *(() if fold is None else (f"data.fold={fold}",)), *extra]
    data_fields = {"dataset": dataset} if root is None else {"dataset": dataset, "root": str(root)}
    return make_config(sc.preset, over, **data_fields)


def backbone_available(name_or_path: str | None) -> tuple[bool, str]:
    """Can these weights be loaded here? ``(ok, reason when not)``; never downloads anything."""
    if name_or_path is None:
        return True, ""
    local = Path(name_or_path)
    if not local.is_absolute():
        local = paths.PROJECT_ROOT / local
    if local.is_dir():
        return True, ""
    if name_or_path.startswith(("checkpoints/", "/", ".")):
        return False, (
            f"the project's self-supervised checkpoint {name_or_path} does not exist; "
            f"make it with `python -m awm_lib pretrain --out {name_or_path}`, then rerun the same command"
        )
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
            return True, ""
    except Exception:  # noqa: BLE001 - any hub trouble means "not available here"
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False, (f"{name_or_path} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                       f"download it once with network access (huggingface-cli download {name_or_path})")
    return True, ""  # the hub may be reachable: the backbone will download it


# =====================================================================================
# Planning
# =====================================================================================
@dataclass
class RunSpec:
    dataset: str
    configuration: str
    seed: int
    fold: int | None
    run_dir: Path
    cfg: TrainConfig

    @property
    def label(self) -> str:
        return run_label(self.fold, self.seed)


def run_label(fold: int | None, seed: int) -> str:
    """The run folder's name: ``fold2`` (seed 0) / ``fold2-seed1`` on mini-MIAS, ``seed1`` elsewhere."""
    if fold is None:
        return f"seed{seed}"
    return f"fold{fold}" if seed == 0 else f"fold{fold}-seed{seed}"


def plan_runs(
    dataset: str,
    configurations: Sequence[str],
    scale: str,
    *,
    seeds: Sequence[int],
    folds: Sequence[int] | None,
    runs_dir: str | Path,
    root: str | None = None,
    extra: Sequence[str] = (),
) -> tuple[list[RunSpec], dict[str, str]]:
    """Every run of the grid, and the configurations skipped (name -> why)."""
    runs, skipped = [], {}
    fold_list: list[int | None] = list(folds) if dataset == "mias" else [None]
    if dataset == "mias" and not fold_list:
        raise ConfigError("mini-MIAS needs at least one fold (--folds 0,1,2,3,4)")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose {', '.join(SCALES)}{did_you_mean(scale, SCALES)}")
    for name in configurations:
        ok, why = backbone_available(SCALES[scale].configuration(name).backbone)
        if not ok:
            skipped[name] = why
            continue
        for fold in fold_list:
            for seed in seeds:
                cfg = config_for(name, dataset, scale, seed=seed, fold=fold, root=root, extra=extra)
                runs.append(
                    RunSpec(
                        dataset,
                        name,
                        seed,
                        fold,
                        Path(runs_dir) / dataset / name / run_label(fold, seed),
                        cfg,
                    )
                )
    return runs, skipped


def describe() -> str:
    """The configurations and scales, one per line (for ``--list``)."""
    lines = ["configurations:"]
    lines += [f"  {c.name:<28} {c.description}" for c in CONFIGURATIONS.values()]
    lines += ["scales:"]
    for s in SCALES.values():
        weights = f" backbone=first of {list(s.backbones)}, else random" if s.backbones else ""
        lines.append(
            f"  {s.name:<10} preset={s.preset} seeds={list(s.seeds)} "
            f"overrides={' '.join(s.overrides)}{weights}"
        )
    return "\n".join(lines)
