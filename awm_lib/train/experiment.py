"""One call per experiment: build everything from a :class:`TrainConfig`, train, evaluate.

:func:`train` is what ``python -m awm_lib train`` and the ablation runner call::

    from awm_lib.train.config import make_config
    from awm_lib.train.experiment import train

    cfg = make_config("smoke", ["data.fold=0"], dataset="mias")
    result = train(cfg, "runs/mias-f0")
    result.metrics["auc"]     # {"mean": ..., "ci_low": ..., "ci_high": ...}

A run folder holds::

    config.json             the full configuration + command, seed, device, date, versions
    metrics.jsonl           the training log (one JSON object per step / validation)
    checkpoints/            see awm_lib.train.checkpoint
    predictions_val.csv     image_id,label,prob with the best checkpoint
    predictions_test.csv
    results.json            auc, f1, sens@fpr0.1/0.3/0.5, specificity, accuracy (each with a
                            bootstrap 95% CI), the validation threshold, n_test, and the run record

The test split is touched exactly once, after training, with the checkpoint
that was best on validation and the threshold chosen on validation.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from awm_lib.device import choose_device
from awm_lib.errors import ConfigError
from awm_lib.features.extract import torch_threads
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.losses import compute_loss, weighted_bce
from awm_lib.model.backbone import RandomBackboneWarning
from awm_lib.model.baseline import FullImageClassifier, FullImageConfig
from awm_lib.model.roi_transformer import RoIClassifier
from awm_lib.train import checkpoint as ckpt
from awm_lib.train.config import RESUME_IGNORE, TrainConfig, config_from_dict, to_dict
from awm_lib.train.dataset import MammoRoIDataset, build_datasets, collate
from awm_lib.train.distributed import DistInfo, single_process
from awm_lib.train.evaluate import metrics_from_predictions, predict_probabilities, save_predictions
from awm_lib.train.loop import FitResult, fit, seed_everything
from awm_lib.train.metrics import METRIC_KEYS
from awm_lib.train.run_folder import check_run_folder, cleanup_on_failure, remove_run_files
from awm_lib.train.tokens import (
    collate_tokens,
    forward_token_batch,
    token_classifier,
    token_datasets,
)

RESULTS = "results.json"
CONFIG = "config.json"


@dataclass
class TrainResult:
    out_dir: Path
    fit: FitResult | None
    results: dict  # the contents of results.json

    @property
    def metrics(self) -> dict:
        return {k: self.results[k] for k in METRIC_KEYS}


def build_model(cfg: TrainConfig, *, quiet_random: bool = False) -> torch.nn.Module:
    """The RoI classifier of ``cfg.model`` (or, with ``arch="full_image"``, the baseline).

    ``quiet_random`` silences the random-backbone warning (for models whose
    weights are about to be loaded from a checkpoint).
    """
    log = logging.getLogger("awm_lib.model.backbone")
    disabled = log.disabled
    with warnings.catch_warnings():
        if quiet_random:
            warnings.simplefilter("ignore", RandomBackboneWarning)
            log.disabled = True
        try:
            if cfg.arch == "full_image":
                b = cfg.baseline
                return FullImageClassifier(FullImageConfig(backbone=cfg.model.backbone, long_side=b.long_side,
                                                           pooling=b.pooling, head_dropout=b.head_dropout))
            if cfg.features.cached:  # the same classifier, reading cached tokens of the frozen backbone
                return token_classifier(cfg)
            return RoIClassifier(cfg.model)
        finally:
            log.disabled = disabled


def loss_fn_for(cfg: TrainConfig):
    """``loss_fn(output, batch) -> (total, parts)`` for :func:`awm_lib.train.loop.fit`."""

    def loss_fn(output, batch):
        if cfg.arch == "full_image":  # no RoI embeddings: the classification term only
            bce = weighted_bce(output, batch["labels"], cfg.loss.pos_weight)
            return bce, {"bce": bce.detach()}
        total, parts = compute_loss(output, batch, cfg.loss)
        parts.pop("total", None)
        return total, parts

    return loss_fn


def forward_batch(model, batch: dict):
    """The model on a collated batch (padding-aware): the RoI classifier, or the
    full-image baseline on each image's real extent (the anchor box), or the RoI
    classifier on cached tokens (``features.cached``)."""
    if "tokens" in batch:
        return forward_token_batch(ckpt.unwrap(model), batch)
    if isinstance(ckpt.unwrap(model), FullImageClassifier):
        return model(batch["images"], batch["rois"][:, 0])  # (B,) logits
    return model(
        batch["images"], batch["rois"], image_sizes=batch.get("image_sizes"), roi_mask=batch.get("roi_mask")
    )


def _datasets(
    cfg: TrainConfig, dist: DistInfo, progress: bool, splits=("train", "val", "test")
) -> dict[str, MammoRoIDataset]:
    # the main process fills the caches first; the others then only read them
    if not dist.is_main:
        dist.barrier()
    ds = build_datasets(cfg, progress=progress and dist.is_main, splits=splits)
    if cfg.features.cached:  # every RoI crop embedded once by the frozen backbone (shared cache)
        ds = token_datasets(cfg, ds, progress=progress and dist.is_main)
    if dist.is_main:
        dist.barrier()
    return ds


def collate_for(cfg: TrainConfig):
    """The batch collation of ``cfg``: images, or cached tokens."""
    return collate_tokens if cfg.features.cached else collate


def backbone_record(cfg: TrainConfig, datasets: dict | None = None, model=None) -> dict:
    """Which backbone produced a result: the feature cache's record (name, weights hash,
    crop size) for cached tokens, else the model's backbone source."""
    if datasets is not None and getattr(datasets.get("test"), "backbone", None):
        return dict(datasets["test"].backbone)
    bb = getattr(ckpt.unwrap(model), "backbone", None) if model is not None else None
    return {"name": cfg.model.backbone.name_or_path or f"random-{cfg.model.backbone.random_arch}",
            "source": getattr(bb, "source", None), "pretrained": bool(getattr(bb, "is_pretrained", False)),
            "crop_size": cfg.model.crop_size}


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dist: DistInfo | None = None,
    command: str | list[str] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (resuming if asked), then evaluate on the test split.

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it) is given, and a run that fails before its first
    checkpoint leaves no folder behind (see :mod:`awm_lib.train.run_folder`).
    """
    dist = dist or single_process()
    out_dir = Path(out_dir)
    check_run_folder(out_dir, resume=resume, overwrite=overwrite)
    if overwrite and dist.is_main:
        remove_run_files(out_dir)
    dist.barrier()
    with cleanup_on_failure(out_dir, enabled=dist.is_main):
        return _train(cfg, out_dir, resume=resume, progress=progress, dist=dist, command=command)


def _train(cfg: TrainConfig, out_dir: Path, *, resume: bool, progress: bool, dist: DistInfo,
           command: str | list[str] | None) -> TrainResult:
    seed_everything(cfg.seed, cfg.optim.deterministic)
    device = choose_device(cfg.optim.device) if dist.world_size == 1 else dist.device
    record = run_record(command, seed=cfg.seed, device=device)
    config_dict = to_dict(cfg)
    if cfg.features.cached and dist.world_size > 1:
        raise ConfigError(
            "features.cached=true trains in one process (seconds on a CPU); run it without torchrun"
        )
    if resume and ckpt.has_checkpoint(out_dir):  # refuse a mismatched resume before touching anything
        ckpt.load_checkpoint(out_dir, which="last", expected_config=config_dict, ignore=RESUME_IGNORE)
    if dist.is_main:
        write_json_atomic(out_dir / CONFIG, {**record, "config": config_dict})
    ds = _datasets(cfg, dist, progress)
    torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_model(cfg)
    o = cfg.optim if progress else _no_progress(cfg.optim)
    # on cached tokens every matmul is tiny: one thread is fastest (2-core CPU: ~20x faster than two)
    with torch_threads(cfg.features.train_threads if cfg.features.cached else None):
        result = fit(
            model, ds["train"], ds["val"], o, out_dir,
            loss_fn=loss_fn_for(cfg), forward_fn=forward_batch, collate_fn=collate_for(cfg), seed=cfg.seed,
            run_config=config_dict, resume=resume, resume_ignore=RESUME_IGNORE,
            num_workers=cfg.data.num_workers, dist=dist,
        )
        results = evaluate_checkpoint(
            out_dir, cfg, datasets=ds, model=ckpt.unwrap(model), dist=dist, progress=progress, record=record
        )
    if dist.is_main:
        results["train"] = {"steps": result.state.step, "best_val_auc": result.state.best_metric,
                            "best_step": result.state.best_step, "stopped_early": result.state.stopped_early}
        write_json_atomic(out_dir / RESULTS, results)
    dist.barrier()
    return TrainResult(out_dir, result, results)


def _no_progress(o):
    from dataclasses import replace

    return replace(o, progress=False)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    cfg: TrainConfig | None = None,
    *,
    datasets: dict[str, MammoRoIDataset] | None = None,
    model: torch.nn.Module | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
    record: dict | None = None,
    save_dir: str | os.PathLike | None = None,
) -> dict:
    """Metrics of a checkpoint's best model: threshold on ``val``, metrics with CIs on ``test``.

    ``cfg`` defaults to the checkpoint's own configuration; pass one with other
    ``data`` settings to evaluate on another dataset. A model whose configuration
    differs from the checkpoint's is refused (:class:`~awm_lib.errors.CheckpointError`).
    Predictions are written to ``save_dir`` (default: the run folder, when
    ``checkpoint`` is one).
    """
    dist = dist or single_process()
    ck = ckpt.load_checkpoint(checkpoint, which="best")
    saved = config_from_dict(ck.config)
    cfg = cfg or saved
    now = to_dict(cfg)
    input_of = lambda c: {k: (c.get("features") or {}).get(k) for k in ("cached", "random_seed")}  # noqa: E731
    ckpt.check_config_compatible(
        {**{k: ck.config.get(k) for k in ("arch", "model", "baseline")}, "features": input_of(ck.config)},
        {**{k: now[k] for k in ("arch", "model", "baseline")}, "features": input_of(now)},
        what="model configuration",
    )
    device = choose_device(cfg.optim.device) if dist.world_size == 1 else dist.device
    if model is None:
        model = build_model(cfg, quiet_random=True)
    ckpt.load_weights(model, ck.path)
    model.to(device)
    if datasets is None:
        datasets = _datasets(cfg, dist, progress, splits=("val", "test"))
    preds = {}
    for split in ("val", "test"):
        ids, labels, probs = predict_probabilities(
            model,
            datasets[split],
            batch_size=cfg.eval.batch_size,
            device=device,
            forward_fn=forward_batch,
            collate_fn=collate_for(cfg),
            amp=cfg.optim.amp,
            dist=dist,
            num_workers=cfg.data.num_workers,
            progress=progress and dist.is_main,
        )
        preds[split] = (ids, labels, probs)
    if save_dir is None and (Path(checkpoint) / ckpt.CKPT_DIR).is_dir():
        save_dir = checkpoint
    if save_dir is not None and dist.is_main:
        for split, (ids, labels, probs) in preds.items():
            save_predictions(Path(save_dir) / f"predictions_{split}.csv", ids, labels, probs)
    test_ds = datasets["test"]
    groups = [s.patient_id for s in test_ds.samples] if cfg.eval.boot_by_patient else None
    summary = metrics_from_predictions(
        preds["val"][1:], preds["test"][1:], criterion=cfg.eval.threshold_criterion,
        n_boot=cfg.eval.n_boot, seed=cfg.seed, groups_test=groups,
    )
    record = record or run_record(seed=cfg.seed, device=device)
    return _nan_to_none({
        **summary.pop("metrics"),
        **summary,
        "dataset": cfg.data.dataset,
        "fold": cfg.data.fold if cfg.data.dataset == "mias" else None,
        "checkpoint": str(ck.path),
        "checkpoint_step": ck.step,
        "backbone": backbone_record(cfg, datasets, model),
        "seeds": [cfg.seed],
        **{k: record[k] for k in ("command", "device", "date", "versions")},
    })


def _nan_to_none(obj):
    """NaN (an undefined metric, e.g. AUC without cancers) becomes JSON null."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def read_results(out_dir: str | os.PathLike) -> dict | None:
    path = Path(out_dir) / RESULTS
    return json.loads(path.read_text()) if path.is_file() else None


def mean_over_runs(results: list[dict]) -> dict:
    """Mean and sd over folds or seeds of each metric's point estimate (for tables)."""
    out = {}
    for k in METRIC_KEYS:
        vals = np.array([r[k]["mean"] for r in results], dtype=float)
        out[k] = {
            "mean": float(np.nanmean(vals)),
            "sd": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "n": len(vals),
        }
    return out
