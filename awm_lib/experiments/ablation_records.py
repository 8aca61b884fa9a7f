"""Records of the ablation study and its result file, ``results/ablation.json``.

One record per (dataset, configuration, scale) (:func:`make_record`): the
configuration's plain-value settings (:func:`settings_of`), the aggregated
metrics, lesion recall, the command that reproduces it (:func:`study_command`)
and provenance. :func:`write_results` merges new records into the file
atomically. The schema is fixed: the book's ablation widget and results chapter
read it (:mod:`awm_lib.book.results`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from awm_lib.errors import ConfigError
from awm_lib.experiments.ablation_aggregate import ABLATION_METRICS
from awm_lib.experiments.ablation_study import CONFIGURATIONS
from awm_lib.io_utils import write_json_atomic
from awm_lib.train.config import TrainConfig

SCHEMA = 1


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
