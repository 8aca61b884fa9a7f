"""The paper's ablation as one study: named configurations x datasets x folds/seeds.

The paper (Arora et al., ISBI 2026) builds its method up one piece at a time and
reports what each piece adds: RoI tokens instead of the whole image, a 2-D
position code for the boxes, a repulsive contrastive loss. We rerun that study
and add the experiment a referee asked for: swap the proposer for an oracle
(the lesion boxes themselves), random boxes, or the offline blob detector, and
plot classification against the proposer's **lesion recall**. If the classifier
only works with oracle boxes, the method depends on the detector.

Vocabulary
----------
* a **configuration** is a named list of ``--set`` overrides on top of a preset
  (:data:`CONFIGURATIONS`), e.g. ``roi-sine`` = ``model.position=sine``;
* a **scale** is the preset plus overrides for the hardware: ``cpu-smoke`` (a
  random micro ViT on 256-px images: minutes on a laptop, numbers that only show
  the pipeline works) and ``gpu`` (ViT-S/14, 224-px crops, 1024-px images);
* a **run** is one (dataset, configuration, fold or seed) trained by
  :func:`awm_lib.train.experiment.train` into
  ``runs/ablation/<dataset>/<configuration>/<fold0|seed0>/``.

Runs are resumable: a run folder with ``results.json`` is skipped (its config is
checked against the one asked for), a folder with checkpoints but no results is
resumed. So the study is one command that can be interrupted at any time.

Aggregation (:func:`aggregate_runs`)
------------------------------------
For each (dataset, configuration) the test predictions of all its runs are
**pooled** (mini-MIAS: out-of-fold, every image once per seed). On the pool:

* ``mean`` of each metric = the metric on the pooled predictions. AUC and
  sensitivity at FPR 0.1/0.3/0.5 use the pooled probabilities; F1 uses each
  run's own decision (its probability >= the threshold chosen on *its*
  validation split), so no threshold ever sees test data.
* ``ci_low`` / ``ci_high`` = percentile bootstrap 95% interval on the pool,
  resampling women (all images of a woman, from every run, together).
* ``sd`` = standard deviation over runs of each run's own point estimate (the
  fold-to-fold or seed-to-seed spread); ``run_mean`` = their mean. Scores of
  different folds are not calibrated alike, so the pooled AUC can sit below the
  mean per-fold AUC; both are kept.
* the overlay PNG shows the first run's model on a fixed test image (its first
  cancer with a located lesion) with the RoIs it was tested with.

The result file's schema (``results/ablation.json``) is fixed: the book's
ablation widget and results chapter read it (see :func:`make_record`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.io_utils import write_json_atomic
from awm_lib.train import checkpoint as ckpt
from awm_lib.train.config import RESUME_IGNORE, TrainConfig, make_config, to_dict
from awm_lib.train.evaluate import read_predictions
from awm_lib.train.experiment import CONFIG, read_results, train
from awm_lib.train.metrics import roc_auc, roc_curve, sensitivity_at_fpr

SCHEMA = 1
ABLATION_METRICS = ("auc", "f1", "sens@fpr0.1", "sens@fpr0.3", "sens@fpr0.5")
SSL_CHECKPOINT = "checkpoints/awm-dino-s14"  # written by `python -m awm_lib pretrain` (relative to the project)
RECALL_FILE = "lesion_recall.json"


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
_FULL = (*_ROI, "model.position=rope2d", *_REPULSIVE)  # the paper's method with the blob proposer

CONFIGURATIONS: dict[str, Configuration] = {c.name: c for c in [
    Configuration("baseline-full-image", ("arch=full_image", *_NO_CONTRAST),
                  "one ViT over the whole breast (all its tokens), BCE only"),
    Configuration("roi-nopos", (*_ROI, "model.position=none", *_NO_CONTRAST),
                  "RoI tokens + anchor, no position code, BCE only"),
    Configuration("roi-sine", (*_ROI, "model.position=sine", *_NO_CONTRAST),
                  "+ sine code of the box coordinates added to each token"),
    Configuration("roi-rope2d", (*_ROI, "model.position=rope2d", *_NO_CONTRAST),
                  "+ 2-D RoPE of the box centres instead of the sine code"),
    Configuration("roi-rope2d-repulsive", _FULL,
                  "+ repulsive loss between an image's RoI embeddings (the paper's method; blob proposer)"),
    Configuration("roi-rope2d-supcon", (*_ROI, "model.position=rope2d", "loss.repulsive_weight=0", "loss.supcon_weight=0",
                                        "loss.roi_supcon_weight=0.3", "loss.hard_negative_beta=1.0"),
                  "2-D RoPE + hard-negative supervised contrastive loss over RoIs (instead of the repulsive loss)"),
    Configuration("roi-rope2d-repulsive-supcon", (*_FULL, "loss.roi_supcon_weight=0.3", "loss.hard_negative_beta=1.0"),
                  "the paper's method + the hard-negative supervised contrastive loss over RoIs"),
    Configuration("proposer-oracle", (*_FULL, "data.proposer=oracle", "data.pad_rois=random"),
                  "the paper's method with the lesion boxes as proposals (random padding so the count leaks nothing)"),
    Configuration("proposer-random", (*_FULL, "data.proposer=random", "data.pad_rois=random"),
                  "the paper's method with seeded random boxes inside the breast as proposals"),
    Configuration("proposer-none", (*_FULL, "data.proposer=none"),
                  "the paper's method with no proposals: the anchor (whole breast crop) alone"),
    Configuration("backbone-ssl", (*_FULL, f"model.backbone.name_or_path={SSL_CHECKPOINT}",
                                   "model.backbone.allow_random_fallback=false"),
                  "the paper's method, backbone initialised from the project's self-supervised checkpoint",
                  backbone=SSL_CHECKPOINT),
    Configuration("backbone-dinov2-small", (*_FULL, "model.backbone.name_or_path=facebook/dinov2-small",
                                            "model.backbone.allow_random_fallback=false"),
                  "the paper's method, backbone = DINOv2 ViT-S/14 from the hub (needs the weights locally)",
                  backbone="facebook/dinov2-small"),
    Configuration("backbone-dinov2-base", (*_FULL, "model.backbone.name_or_path=facebook/dinov2-base",
                                           "model.backbone.allow_random_fallback=false"),
                  "the paper's method, backbone = DINOv2 ViT-B/14 from the hub (needs the weights locally)",
                  backbone="facebook/dinov2-base"),
]}

# What `--configs` defaults to: the ablation ladder, the proposer swap and the SSL init.
DEFAULT_CONFIGS = ("baseline-full-image", "roi-nopos", "roi-sine", "roi-rope2d", "roi-rope2d-repulsive",
                   "roi-rope2d-supcon", "proposer-oracle", "proposer-random", "backbone-ssl")


@dataclass(frozen=True)
class Scale:
    """A preset plus overrides sized for some hardware, and the default folds/seeds."""

    name: str
    preset: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    n_boot: int = 1000
    per_dataset: dict = field(default_factory=dict)  # dataset -> extra overrides


SCALES: dict[str, Scale] = {
    # random micro ViT, 256-px breast crops, 56-px RoI crops, 2 epochs: minutes per run on a CPU
    "cpu-smoke": Scale("cpu-smoke", "smoke", ("baseline.long_side=252", "optim.device=cpu"), seeds=(0,),
                       per_dataset={"synthetic": ("data.synthetic_n=160", "data.synthetic_size=512")}),
    # ViT-S/14 (random init unless the configuration loads weights), 224-px crops of 1024-px images
    # (the default preset freezes 6 blocks of a pretrained ViT; a random one must train all of them)
    "gpu": Scale("gpu", "default", ("model.backbone.name_or_path=none", "model.backbone.freeze_blocks=0",
                                    "model.backbone.freeze_patch_embed=false", "optim.epochs=15", "optim.patience=5",
                                    "optim.batch_size=32", "optim.warmup_steps=20", "eval.batch_size=64",
                                    "data.num_workers=8"), seeds=(0, 1, 2),
                 per_dataset={"synthetic": ("data.synthetic_n=6400", "data.synthetic_size=1024"),
                              "mias": ("data.augment=true",)}),
}


def config_for(configuration: str, dataset: str, scale: str, *, seed: int = 0, fold: int | None = None,
               root: str | None = None, extra: Sequence[str] = ()) -> TrainConfig:
    """The full :class:`TrainConfig` of one run of the study."""
    if configuration not in CONFIGURATIONS:
        raise ConfigError(f"unknown ablation configuration {configuration!r}; choose from {', '.join(CONFIGURATIONS)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose {' or '.join(SCALES)}")
    sc = SCALES[scale]
    over = [*sc.overrides, *sc.per_dataset.get(dataset, ()), *CONFIGURATIONS[configuration].overrides,
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
        return False, (f"the project's self-supervised checkpoint {name_or_path} does not exist; "
                       "make it with `python -m awm_lib pretrain --out checkpoints/awm-dino-s14` (GPU)")
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
# Planning and running
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


def plan_runs(dataset: str, configurations: Sequence[str], scale: str, *, seeds: Sequence[int], folds: Sequence[int] | None,
              runs_dir: str | Path, root: str | None = None, extra: Sequence[str] = ()) -> tuple[list[RunSpec], dict[str, str]]:
    """Every run of the grid, and the configurations skipped (name -> why)."""
    runs, skipped = [], {}
    fold_list: list[int | None] = list(folds) if dataset == "mias" else [None]
    if dataset == "mias" and not fold_list:
        raise ConfigError("mini-MIAS needs at least one fold (--folds 0,1,2,3,4)")
    for name in configurations:
        if name not in CONFIGURATIONS:
            raise ConfigError(f"unknown ablation configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}")
        ok, why = backbone_available(CONFIGURATIONS[name].backbone)
        if not ok:
            skipped[name] = why
            continue
        for fold in fold_list:
            for seed in seeds:
                cfg = config_for(name, dataset, scale, seed=seed, fold=fold, root=root, extra=extra)
                runs.append(RunSpec(dataset, name, seed, fold, Path(runs_dir) / dataset / name / run_label(fold, seed), cfg))
    return runs, skipped


def run_one(spec: RunSpec, *, command: str | None = None, progress: bool = False) -> tuple[dict, bool]:
    """Train one run unless it is finished; ``(results, trained_now)``.

    A finished run (``results.json``) made with another configuration raises
    :class:`~awm_lib.errors.CheckpointError` instead of being silently reused.
    """
    done = read_results(spec.run_dir)
    if done is not None:
        saved = json.loads((spec.run_dir / CONFIG).read_text())["config"]
        ckpt.check_config_compatible(saved, to_dict(spec.cfg), RESUME_IGNORE, what=f"finished run {spec.run_dir}")
        return done, False
    result = train(spec.cfg, spec.run_dir, resume=ckpt.has_checkpoint(spec.run_dir), progress=progress, command=command)
    return result.results, True


def lesion_recall_counts(cfg: TrainConfig) -> dict[str, list[int]] | None:
    """Per test image ``[found, n_lesions]``: located lesions hit by the RoIs the model saw.

    Only real proposals count (not the anchor, not padding); the hit rule is
    :func:`awm_lib.proposals.recall.hit_matrix` (box contains the lesion centre,
    IoU >= 0.1), on the final squared boxes mapped back to original pixels.
    ``None`` for the full-image baseline, which has no RoIs.
    """
    if cfg.arch == "full_image":
        return None
    from awm_lib.proposals.recall import hit_matrix
    from awm_lib.train.dataset import build_datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = build_datasets(cfg, progress=False, splits=("test",))["test"]
    out = {}
    for s, rec in zip(test.samples, test.records):
        prep = test.cache.get(s.path)
        H, W = prep.original_shape
        lesions = [les for les in s.lesions if (les.box[2] - les.box[0]) * (les.box[3] - les.box[1]) < 0.9 * H * W]
        boxes = np.asarray(rec["rois"], dtype=np.float64)[1 : 1 + rec["n_proposals"]].reshape(-1, 4)
        found = 0
        if lesions and len(boxes):
            found = int(hit_matrix(prep.boxes_to_original(boxes), lesions).any(0).sum())
        out[s.image_id] = [found, len(lesions)]
    return out


def ensure_recall(spec: RunSpec) -> dict | None:
    """The run's per-image lesion-recall counts, computed once and kept in the run folder."""
    path = spec.run_dir / RECALL_FILE
    if path.is_file():
        return json.loads(path.read_text())["per_image"]
    counts = lesion_recall_counts(spec.cfg)
    write_json_atomic(path, {"per_image": counts, "proposer": spec.cfg.data.proposer, "topk": spec.cfg.model.topk})
    return counts


# =====================================================================================
# Aggregation: pure functions of per-run predictions (unit-tested on constructed data)
# =====================================================================================
@dataclass
class RunPredictions:
    """What aggregation needs from one finished run."""

    y: np.ndarray  # (N,) test labels
    p: np.ndarray  # (N,) test probabilities
    threshold: float  # chosen on this run's validation split
    groups: np.ndarray  # (N,) patient of each test image (bootstrap unit)
    fold: int | None = None
    seed: int = 0


def pooled_point(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The ablation metrics on one pool: AUC / sensitivities from ``p``, F1 from the decisions ``pred``."""
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    out = {"auc": roc_auc(y, p), "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}
    for f in (0.1, 0.3, 0.5):
        out[f"sens@fpr{f}"] = sensitivity_at_fpr(y, p, f)
    return out


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def aggregate_runs(runs: Sequence[RunPredictions], *, n_boot: int = 1000, seed: int = 0, roc_points: int = 50) -> dict:
    """Pool the runs' test predictions; metrics with bootstrap CIs, sd over runs, a small ROC.

    Returns ``{metric: {"mean", "ci_low", "ci_high", "sd"}, "roc": {"fpr", "tpr"},
    "n_test", "n_test_pos"}`` (see the module docstring for the definitions).
    """
    if not runs:
        raise ValueError("nothing to aggregate: no finished runs")
    y = np.concatenate([r.y for r in runs]).astype(np.int64)
    p = np.concatenate([r.p for r in runs]).astype(np.float64)
    pred = np.concatenate([np.asarray(r.p) >= r.threshold for r in runs])
    groups = np.concatenate([np.asarray(r.groups, dtype=object).astype(str) for r in runs])
    point = pooled_point(y, p, pred)
    per_run = [pooled_point(np.asarray(r.y), np.asarray(r.p), np.asarray(r.p) >= r.threshold) for r in runs]

    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
    samples: dict[str, list[float]] = {k: [] for k in ABLATION_METRICS}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, uniq.size, size=uniq.size)])
        yb = y[idx]
        if yb.min() == yb.max():  # one class only: no AUC, no sensitivity at an FPR
            continue
        for k, v in pooled_point(yb, p[idx], pred[idx]).items():
            samples[k].append(v)
    out: dict = {}
    for k in ABLATION_METRICS:
        vals = np.asarray(samples[k], dtype=float)
        lo, hi = (np.quantile(vals, [0.025, 0.975]) if vals.size else (float("nan"), float("nan")))
        run_vals = np.array([r[k] for r in per_run], dtype=float)
        run_vals = run_vals[~np.isnan(run_vals)]
        sd = float(np.std(run_vals, ddof=1)) if run_vals.size > 1 else (0.0 if run_vals.size == 1 else float("nan"))
        out[k] = {"mean": _nan_to_none(point[k]), "ci_low": _nan_to_none(float(lo)), "ci_high": _nan_to_none(float(hi)),
                  "sd": _nan_to_none(sd), "run_mean": _nan_to_none(float(run_vals.mean()) if run_vals.size else float("nan"))}
    out["roc"] = small_roc(y, p, roc_points)
    out["n_test"] = int(y.size)
    out["n_test_pos"] = int(y.sum())
    out["per_run"] = [{"fold": r.fold, "seed": r.seed, **{k: _nan_to_none(v[k]) for k in ("auc", "f1")}} for r, v in zip(runs, per_run)]
    return out


def small_roc(y: np.ndarray, p: np.ndarray, n_points: int = 50) -> dict[str, list[float]]:
    """The ROC curve at ``n_points`` evenly spaced FPRs (top of each vertical step), for plotting."""
    if y.min() == y.max():
        return {"fpr": [], "tpr": []}
    fprs, tprs, _ = roc_curve(y, p)
    last = np.r_[np.flatnonzero(np.diff(fprs)), fprs.size - 1]  # highest TPR at each distinct FPR
    grid = np.linspace(0.0, 1.0, n_points)
    tpr = np.interp(grid, fprs[last], tprs[last])
    return {"fpr": [round(float(v), 4) for v in grid], "tpr": [round(float(v), 4) for v in tpr]}


def pooled_recall(per_run_counts: Sequence[dict[str, list[int]] | None]) -> float | None:
    """Lesion recall over the distinct test images of all runs (seeds share images: counted once)."""
    seen: dict[str, list[int]] = {}
    for counts in per_run_counts:
        if counts is None:
            return None
        seen.update(counts)
    n = sum(v[1] for v in seen.values())
    return sum(v[0] for v in seen.values()) / n if n else None


# =====================================================================================
# Records and the result file
# =====================================================================================
def settings_of(cfg: TrainConfig) -> dict:
    """The plain-value settings the widget's dropdowns filter on."""
    init = cfg.model.backbone.name_or_path
    init = "random" if init is None else ("ssl" if "awm-dino" in init else init)
    if cfg.arch == "full_image":
        return {"arch": "full_image", "proposer": "none", "topk": 0, "crop_size": cfg.baseline.long_side, "position": "none",
                "pooling": cfg.baseline.pooling, "loss": "bce", "contrastive_weight": 0.0, "backbone_init": init}
    lc = cfg.loss
    terms = ["bce"] + (["repulsive"] if lc.repulsive_weight > 0 else []) + (["supcon"] if lc.supcon_weight > 0 or lc.roi_supcon_weight > 0 else [])
    return {"arch": "roi", "proposer": cfg.data.proposer, "topk": cfg.model.topk, "crop_size": cfg.model.crop_size,
            "position": cfg.model.position, "pooling": cfg.model.pooling, "loss": "+".join(terms),
            "contrastive_weight": float(lc.repulsive_weight + lc.supcon_weight + lc.roi_supcon_weight), "backbone_init": init}


def study_command(dataset: str, configuration: str, scale: str, seeds: Sequence[int], folds: Sequence[int] | None,
                  root: str | None = None, extra: Sequence[str] = ()) -> str:
    """The command that reproduces one record."""
    parts = ["python", "-m", "awm_lib", "ablation", "--dataset", dataset, "--scale", scale, "--configs", configuration,
             "--seeds", ",".join(map(str, seeds))]
    if folds is not None:
        parts += ["--folds", ",".join(map(str, folds))]
    if root is not None:
        parts += ["--root", str(root)]
    for item in extra:
        parts += ["--set", item]
    return shlex.join(parts)


def make_record(dataset: str, configuration: str, scale: str, cfg: TrainConfig, agg: dict, *, lesion_recall: float | None,
                seeds: Sequence[int], folds: Sequence[int] | None, run_results: Sequence[dict], overlay: str | None,
                command: str) -> dict:
    """One ``records`` entry of ``results/ablation.json`` (the schema the book reads)."""
    devices = sorted({r.get("device", "?") for r in run_results})
    dates = sorted(r.get("date", "") for r in run_results)
    return {
        "dataset": dataset,
        "configuration": configuration,
        "scale": scale,
        "settings": settings_of(cfg),
        **{k: agg[k] for k in ABLATION_METRICS},
        "lesion_recall": lesion_recall,
        "n_test": agg["n_test"],
        "n_test_pos": agg["n_test_pos"],
        "seeds": sorted(set(seeds)),
        "folds": None if folds is None else sorted(set(folds)),
        "roc": agg["roc"],
        "example_overlay": overlay,
        "per_run": agg["per_run"],
        "command": command,
        "device": "; ".join(devices),
        "date": dates[-1] if dates else None,
        "versions": run_results[-1].get("versions") if run_results else None,
    }


NOTES = (
    "Each metric's 'mean' is the point estimate on the POOLED test predictions of all runs of a configuration "
    "(mini-MIAS: out-of-fold predictions of the 5-fold cross-validation by woman, each image once per seed; other "
    "datasets: the test split once per seed). AUC and sens@fpr use the pooled probabilities (scores of different folds "
    "are pooled as they are, without recalibration); F1 uses each run's decision at the threshold chosen on that run's "
    "validation split. 'ci_low'/'ci_high': percentile bootstrap 95% interval on the pool, resampling women. "
    "'sd' and 'run_mean': standard deviation and mean over runs (folds/seeds) of each run's own point estimate "
    "(pooling uncalibrated scores of different folds can make the pooled AUC lower than the mean per-fold AUC). 'lesion_recall': fraction of "
    "located lesions (all types) in the test images hit by at least one of the top-k RoIs the model saw (box contains "
    "the lesion centre and IoU >= 0.1; anchor and padding excluded); null for the full-image baseline. 'roc': pooled "
    "ROC at 50 evenly spaced FPRs."
)
CPU_SMOKE_NOTE = (
    " Records with scale 'cpu-smoke' were trained on a shared 2-core CPU with the 'smoke' preset: a RANDOMLY "
    "initialised 'micro' ViT (2 blocks, width 64), mini-MIAS 1024-px images downsampled to a 256-px breast crop, "
    "56-px RoI crops, top-3 proposals, 2 epochs. They are NOT comparable with the paper's numbers (pretrained "
    "DINOv2 on VinDr-Mammo) and say nothing about which component helps; they exist to make the book's ablation "
    "widget and the pipeline real. The GPU-scale study is `python -m awm_lib ablation --scale gpu ...`."
)


def write_results(path: str | Path, new_records: Sequence[dict], skipped: dict[str, str] | None = None, dataset: str | None = None) -> dict:
    """Merge ``new_records`` into the result file (same dataset+configuration+scale replaced), atomically."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() else {"schema": SCHEMA, "records": []}
    if old.get("schema") != SCHEMA:
        raise ConfigError(f"{path} has schema {old.get('schema')!r}, expected {SCHEMA}; move it away and rerun")
    key = lambda r: (r["dataset"], r["configuration"], r["scale"])  # noqa: E731
    replaced = {key(r) for r in new_records}
    records = [r for r in old["records"] if key(r) not in replaced] + list(new_records)
    records.sort(key=lambda r: (r["dataset"], r["scale"], list(CONFIGURATIONS).index(r["configuration"])
                                if r["configuration"] in CONFIGURATIONS else 999))
    skipped_all = [s for s in old.get("skipped", []) if not (dataset and s["dataset"] == dataset)]
    skipped_all += [{"dataset": dataset, "configuration": k, "reason": v} for k, v in (skipped or {}).items()]
    notes = NOTES + (CPU_SMOKE_NOTE if any(r["scale"] == "cpu-smoke" for r in records) else "")
    out = {"schema": SCHEMA, "notes": notes, "records": records, "skipped": skipped_all}
    write_json_atomic(path, out)
    return out


# =====================================================================================
# The whole study
# =====================================================================================
def _run_predictions(spec: RunSpec, patient_of: dict[str, str]) -> RunPredictions:
    res = read_results(spec.run_dir)
    ids, y, p = read_predictions(spec.run_dir / "predictions_test.csv")
    return RunPredictions(y=y, p=p, threshold=float(res["threshold"]), groups=np.array([patient_of.get(i, i) for i in ids]),
                          fold=spec.fold, seed=spec.seed)


def overlay_image(spec: RunSpec):
    """The fixed example image of a run's test split: its first cancer with a located lesion (by image id)."""
    from awm_lib.train.dataset import limit_samples, load_samples, split_samples

    d = spec.cfg.data
    samples = load_samples(d.dataset, d.root, synthetic_n=d.synthetic_n, synthetic_seed=d.synthetic_seed,
                           synthetic_size=d.synthetic_size, val_fraction=d.val_fraction, progress=False)
    test = limit_samples(split_samples(samples, d.dataset, fold=d.fold, val_fraction=d.val_fraction, seed=0)["test"], d.max_images)
    cands = sorted((s for s in test if s.label == 1 and s.lesions), key=lambda s: s.image_id)
    return cands[0] if cands else (sorted(test, key=lambda s: s.image_id)[0] if test else None)


def overlay_prediction(spec: RunSpec, sample):
    """The run's best model on ``sample`` with the RoIs it was TESTED with (from the RoI cache).

    Unlike :func:`awm_lib.train.inference.predict_image` (which proposes afresh and
    so cannot know the lesion boxes), this shows what the oracle/random/blob model
    really saw during evaluation.
    """
    import torch

    from awm_lib.train.dataset import build_datasets, collate
    from awm_lib.train.experiment import forward_batch, load_model
    from awm_lib.train.inference import ImagePrediction, _roi_weights

    model, cfg, step_dir = load_model(spec.run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = build_datasets(cfg, progress=False, splits=("test",))["test"]
    i = next(j for j, s in enumerate(test.samples) if s.image_id == sample.image_id)
    batch = collate([test[i]])
    rec = test.records[i]
    with torch.no_grad():
        if cfg.arch == "full_image":
            prob = float(torch.sigmoid(forward_batch(model, batch).float())[0])
            keep, weights, kind = [0], torch.ones(1), "full-image baseline (no RoIs)"
        else:
            out = model(batch["images"], batch["rois"], image_sizes=batch["image_sizes"], roi_mask=batch["roi_mask"],
                        return_attention=True)
            prob = float(torch.sigmoid(out.logits.float())[0])
            weights, kind = _roi_weights(out, cfg.model.pooling)
            keep = [j for j, v in enumerate(rec["valid"]) if v]
    prep = test.cache.get(sample.path)
    boxes = prep.boxes_to_original(np.asarray(rec["rois"], dtype=np.float64))
    rois = [{"rank": j, "kind": "anchor" if j == 0 else ("proposal" if j <= rec["n_proposals"] else "padding"),
             "box": [round(float(v), 1) for v in boxes[j]], "weight": round(float(weights[j]), 4)} for j in keep]
    threshold = (read_results(spec.run_dir) or {}).get("threshold")
    label = None if threshold is None else ("cancer" if prob >= threshold else "no cancer")
    return ImagePrediction(image=str(sample.path), probability=prob, label=label, threshold=threshold, rois=rois,
                           weight_kind=kind, n_proposals=rec["n_proposals"],
                           fallback_to_anchor=rec["n_proposals"] == 0 and cfg.arch == "roi",
                           checkpoint=str(step_dir), proposer=cfg.data.proposer)


def write_overlay(spec: RunSpec, out_png: Path, max_side: int = 512) -> Path | None:
    """Draw the run's RoIs and weights on its example test image (shrunk to ``max_side`` px)."""
    from PIL import Image

    from awm_lib.io_utils import atomic_path
    from awm_lib.train.inference import save_overlay

    sample = overlay_image(spec)
    if sample is None:
        return None
    save_overlay(overlay_prediction(spec, sample), out_png)
    with Image.open(out_png) as im:
        im.thumbnail((max_side, max_side))
        small = im.copy()
    with atomic_path(out_png) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return out_png


def run_study(dataset: str, configurations: Sequence[str], scale: str = "cpu-smoke", *, seeds: Sequence[int] | None = None,
              folds: Sequence[int] | None = (0, 1, 2, 3, 4), root: str | None = None, runs_dir: str | Path = "runs/ablation",
              out: str | Path = "results/ablation.json", overlays_dir: str | Path | None = "results/ablation_overlays",
              progress: bool = True, extra: Sequence[str] = (), n_boot: int | None = None, train_missing: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every run of the grid, then aggregate into ``out``. Returns the written file's contents.

    ``extra`` overrides go to every run; ``n_boot`` (default: the scale's) sets the pooled bootstrap.
    ``train_missing=False`` trains nothing and aggregates the runs already finished (e.g. after a
    time limit cut the grid short); each record's ``seeds``/``folds`` list what was really aggregated.
    """
    from tqdm.auto import tqdm

    from awm_lib.train.dataset import load_samples

    seeds = list(SCALES[scale].seeds if seeds is None else seeds)
    folds = list(folds) if dataset == "mias" else None
    specs, skipped = plan_runs(dataset, configurations, scale, seeds=seeds, folds=folds or [], runs_dir=runs_dir, root=root, extra=extra)
    for name, why in skipped.items():
        log(f"ablation: skipping {name}: {why}")
    # fold/seed-major order: every configuration gets its first fold before any gets its second,
    # so an interrupted study already has something for each row of the table
    order = sorted(range(len(specs)), key=lambda i: (specs[i].seed, -1 if specs[i].fold is None else specs[i].fold, i))
    todo = [specs[i] for i in order] if train_missing else []
    firsts = {s.configuration: s for s in reversed(specs)}  # the run whose model draws the overlay
    bar = tqdm(todo, desc=f"ablation {dataset} ({scale})", disable=not progress, unit="run")
    for spec in bar:
        bar.set_postfix_str(f"{spec.configuration}/{spec.label}")
        cmd = study_command(dataset, spec.configuration, scale, [spec.seed], None if spec.fold is None else [spec.fold], root, extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-backbone warning, once per run, is noise here
            run_one(spec, command=cmd)
        ensure_recall(spec)
        if overlays_dir is not None and spec is firsts[spec.configuration]:  # while its checkpoint is surely here
            _overlay_once(spec, overlay_path(overlays_dir, dataset, spec.configuration, scale), log)
    bar.close()
    unfinished = [s for s in specs if read_results(s.run_dir) is None]
    if unfinished:
        log(f"ablation: {len(unfinished)} of {len(specs)} runs are not finished and are left out of the aggregate")
    specs = [s for s in specs if s not in unfinished]

    d0 = specs[0].cfg.data if specs else None
    patient_of = {}
    if d0 is not None:
        samples = load_samples(d0.dataset, d0.root, synthetic_n=d0.synthetic_n, synthetic_seed=d0.synthetic_seed,
                               synthetic_size=d0.synthetic_size, val_fraction=d0.val_fraction, progress=False)
        patient_of = {s.image_id: s.patient_id for s in samples}
    records = []
    for name in dict.fromkeys(s.configuration for s in specs):
        mine = [s for s in specs if s.configuration == name]
        agg = aggregate_runs([_run_predictions(s, patient_of) for s in mine], n_boot=n_boot or SCALES[scale].n_boot)
        overlay = None
        if overlays_dir is not None:
            png = overlay_path(overlays_dir, dataset, name, scale)
            overlay = _overlay_once(mine[0], png, log)
        records.append(make_record(
            dataset, name, scale, mine[0].cfg, agg, lesion_recall=pooled_recall([ensure_recall(s) for s in mine]),
            seeds=[s.seed for s in mine], folds=None if folds is None else [s.fold for s in mine],
            run_results=[read_results(s.run_dir) for s in mine], overlay=overlay,
            command=study_command(dataset, name, scale, sorted({s.seed for s in mine}),
                                  None if folds is None else sorted({s.fold for s in mine}), root, extra),
        ))
    return write_results(out, records, skipped, dataset)


def overlay_path(overlays_dir: str | Path, dataset: str, configuration: str, scale: str) -> Path:
    """``<dir>/<dataset>-<configuration>.png`` (cpu-smoke) or ``...-<scale>.png`` (so scales never overwrite each other)."""
    return Path(overlays_dir) / f"{dataset}-{configuration}{'' if scale == 'cpu-smoke' else '-' + scale}.png"


def _overlay_once(spec: RunSpec, png: Path, log: Callable[[str], None]) -> str | None:
    """The overlay of ``spec`` at ``png`` (drawn unless it exists); None (and a message) if it cannot be drawn,
    e.g. for a run carried from another machine without its checkpoints."""
    if not png.is_file():
        try:
            if write_overlay(spec, png) is None:
                return None
        except (CheckpointError, OSError, StopIteration) as e:
            log(f"ablation: no example overlay for {spec.configuration} ({type(e).__name__}: {e})")
            return None
    return _relative(png)


def _relative(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(p)


def describe() -> str:
    """The configurations and scales, one per line (for ``--list``)."""
    lines = ["configurations:"]
    lines += [f"  {c.name:<28} {c.description}" for c in CONFIGURATIONS.values()]
    lines += ["scales:"]
    for s in SCALES.values():
        lines.append(f"  {s.name:<10} preset={s.preset} seeds={list(s.seeds)} overrides={' '.join(s.overrides)}")
    return "\n".join(lines)


__all__ = [
    "CONFIGURATIONS", "DEFAULT_CONFIGS", "SCALES", "Configuration", "Scale", "RunSpec", "RunPredictions",
    "config_for", "plan_runs", "run_one", "run_study", "aggregate_runs", "pooled_point", "pooled_recall",
    "small_roc", "make_record", "write_results", "settings_of", "lesion_recall_counts", "backbone_available",
    "describe",
]
