"""Records of the ablation study and its result file, ``results/ablation.json``.

One record per (dataset, configuration, scale) (:func:`make_record`): the
configuration's plain-value settings (:func:`settings_of`), the aggregated
metrics, lesion recall, how many runs were pooled (``n_runs``), which backbone
produced it (``backbone``), the command that reproduces it (:func:`study_command`)
and provenance. Beside the records, a top-level ``contrasts`` list holds the
paired comparisons of :mod:`~awm_lib.experiments.ablation_contrasts` (one per
(dataset, scale, contrast name)). :func:`write_results` merges new records and
contrasts into the file atomically.

The schema is defined HERE, once (:data:`SCHEMA`, :data:`METRICS`): the book's
reader (:mod:`awm_lib.book.results.file`) imports it from this module. Schema 2
added ``n_runs`` and ``backbone`` to every record and the ``contrasts`` list;
:func:`upgrade` turns a schema-1 file into schema 2 (no contrasts: those need the
runs' predictions, so rerun the study to get them).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from awm_lib.errors import ConfigError
from awm_lib.experiments.ablation_aggregate import ABLATION_METRICS
from awm_lib.experiments.ablation_study import CONFIGURATIONS, CONTRASTS
from awm_lib.io_utils import write_json_atomic
from awm_lib.train.config import TrainConfig

SCHEMA = 2
METRICS = (
    ABLATION_METRICS  # the metrics of every record, each {"mean", "ci_low", "ci_high", "sd", "run_mean"}
)


def backbone_of(cfg: TrainConfig) -> str:
    """Which weights produced a record: a path / hub name, or ``random:<arch>`` (random init)."""
    b = cfg.model.backbone
    if b.name_or_path is not None:
        return str(b.name_or_path)
    return (
        f"random:{b.random_arch}:{cfg.features.random_seed}"
        if cfg.features.cached
        else f"random:{b.random_arch}"
    )


def settings_of(cfg: TrainConfig) -> dict:
    """The plain-value settings the widget's dropdowns filter on, and the ones a one-factor contrast holds
    fixed.

    Besides the widget's keys: ``pad_rois`` (how images with fewer than k proposals are
    filled: it decides what an oracle or random proposer can leak) and ``repulsive_on``
    (where the repulsive term acts; "none" without one).
    """
    init = cfg.model.backbone.name_or_path
    init = "random" if init is None else ("ssl" if "awm-dino" in init else init)
    if cfg.arch == "full_image":
        return {
            "arch": "full_image",
            "proposer": "none",
            "topk": 0,
            "crop_size": cfg.baseline.long_side,
            "position": "none",
            "pooling": cfg.baseline.pooling,
            "loss": "bce",
            "contrastive_weight": 0.0,
            "backbone_init": init,
            "pad_rois": "none",
            "repulsive_on": "none",
        }
    lc = cfg.loss
    terms = (
        ["bce"]
        + (["repulsive"] if lc.repulsive_weight > 0 else [])
        + (["supcon"] if lc.supcon_weight > 0 or lc.roi_supcon_weight > 0 else [])
    )
    return {
        "arch": "roi",
        "proposer": cfg.data.proposer,
        "topk": cfg.model.topk,
        "crop_size": cfg.model.crop_size,
        "position": cfg.model.position,
        "pooling": cfg.model.pooling,
        "loss": "+".join(terms),
        "contrastive_weight": float(lc.repulsive_weight + lc.supcon_weight + lc.roi_supcon_weight),
        "backbone_init": init,
        "pad_rois": cfg.data.pad_rois,
        "repulsive_on": lc.repulsive_on if lc.repulsive_weight > 0 else "none",
    }


#: The settings a one-factor contrast must hold fixed (the record's ``settings``, arch aside).
CONTRAST_KEYS = (
    "proposer",
    "topk",
    "crop_size",
    "position",
    "pooling",
    "loss",
    "contrastive_weight",
    "backbone_init",
    "pad_rois",
    "repulsive_on",
)


def settings_differences(a: dict, b: dict) -> list[str]:
    """The :data:`CONTRAST_KEYS` on which two records' settings differ; a loss's weight and where its
    repulsive term acts count as part of ``loss`` when the loss terms differ."""
    diff = [k for k in CONTRAST_KEYS if a.get(k) != b.get(k)]
    if "loss" in diff:
        diff = [k for k in diff if k not in ("contrastive_weight", "repulsive_on")]
    return diff


def study_command(
    dataset: str,
    configuration: str,
    scale: str,
    seeds: Sequence[int],
    folds: Sequence[int] | None,
    root: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The command that reproduces one record."""
    parts = [
        "python",
        "-m",
        "awm_lib",
        "ablation",
        "--dataset",
        dataset,
        "--scale",
        scale,
        "--configs",
        configuration,
        "--seeds",
        ",".join(map(str, seeds)),
    ]
    if folds is not None:
        parts += ["--folds", ",".join(map(str, folds))]
    if root is not None:
        parts += ["--root", str(root)]
    for item in extra:
        parts += ["--set", item]
    return shlex.join(parts)


def make_record(
    dataset: str,
    configuration: str,
    scale: str,
    cfg: TrainConfig,
    agg: dict,
    *,
    lesion_recall: float | None,
    seeds: Sequence[int],
    folds: Sequence[int] | None,
    run_results: Sequence[dict],
    overlay: str | None,
    command: str,
) -> dict:
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
        "n_runs": len(agg["per_run"]),
        "backbone": backbone_of(cfg),
        "roc": agg["roc"],
        "example_overlay": overlay,
        "per_run": agg["per_run"],
        "command": command,
        "device": "; ".join(devices),
        "date": dates[-1] if dates else None,
        "versions": run_results[-1].get("versions") if run_results else None,
    }


NOTES = (
    "Each metric's 'mean' is the point estimate on the POOLED test predictions of all runs of a "
    "configuration "
    "(mini-MIAS: out-of-fold predictions of the 5-fold cross-validation by woman, each image once per seed; "
    "other "
    "datasets: the test split once per seed). AUC and sens@fpr use the pooled probabilities (scores of "
    "different folds "
    "are pooled as they are, without recalibration); F1 uses each run's decision at the threshold chosen on "
    "that run's "
    "validation split. 'ci_low'/'ci_high': percentile bootstrap 95% interval on the pool, resampling women. "
    "'sd' and 'run_mean': standard deviation and mean over runs (folds/seeds) of each run's own point "
    "estimate "
    "(pooling uncalibrated scores of different folds can make the pooled AUC lower than the mean per-fold "
    "AUC). 'lesion_recall': fraction of "
    "located lesions (all types) in the test images hit by at least one of the top-k RoIs the model saw (box "
    "contains "
    "the lesion centre and IoU >= 0.1; anchor and padding excluded); null for the full-image baseline. "
    "'roc': "
    "pooled "
    "ROC at 50 evenly spaced FPRs. 'n_runs': runs pooled (folds x seeds); 'backbone': the weights that "
    "embedded "
    "the crops ('random:<arch>' = random initialisation). 'contrasts': paired comparisons of two "
    "configurations "
    "of one dataset and scale ('to' minus 'from', fractions): 'd_auc'/'d_f1' are the differences of the "
    "pooled "
    "estimates with a 95% percentile interval from a paired bootstrap that draws women with replacement ONCE "
    "per "
    "resample for both arms; a difference is resolved when its interval excludes 0."
)
CPU_SMOKE_NOTE = (
    " Records with scale 'cpu-smoke' were trained on a shared 2-core CPU with the 'smoke' preset: a RANDOMLY "
    "initialised 'micro' ViT (2 blocks, width 64), mini-MIAS 1024-px images downsampled to a 256-px breast "
    "crop, "
    "56-px RoI crops, top-3 proposals, 2 epochs. They are NOT comparable with the paper's numbers "
    "(pretrained "
    "DINOv2 on VinDr-Mammo) and say nothing about which component helps; they exist to make the book's "
    "ablation "
    "widget and the pipeline real. The GPU-scale study is `python -m awm_lib ablation --scale gpu ...`."
)
CPU_FROZEN_NOTE = (
    " Records with scale 'cpu-frozen' were trained on a shared 2-core CPU with the 'frozen' preset: "
    "every RoI crop embedded ONCE by a frozen backbone (see each record's 'backbone'; 'random:...' is a "
    "randomly initialised ViT, not DINOv2) and cached, then the position code, RoI transformer, pooling, "
    "heads and losses trained on the cached (B, K, D) tokens; the backbone is never fine-tuned. Model "
    "settings are the preset's; the optimiser is pinned by the scale (batch 64, head lr 1e-3, up to 40 "
    "epochs, early stopping on validation AUC); all were fixed before any test fold was seen, except "
    "'proposer-oracle-k1', added after the other records had been read: its k = 1 was chosen on "
    "validation folds only (results/frozen_k_selection.json, which also discloses the test-fold "
    "diagnostic that prompted it). The "
    "full-image baseline at this scale is the whole breast resized to 224 px through the same frozen "
    "ViT. They measure the paper's ablation at CPU scale, NOT the paper's numbers (a fine-tuned "
    "pretrained DINOv2 on VinDr-Mammo)."
)
SCALE_NOTES = {"cpu-smoke": CPU_SMOKE_NOTE, "cpu-frozen": CPU_FROZEN_NOTE}


def upgrade(obj: dict) -> dict:
    """A results file of an older schema, brought to :data:`SCHEMA` (raises ConfigError if it cannot be)."""
    if obj.get("schema") == 1:
        records = []
        for r in obj.get("records", []):
            init = (r.get("settings") or {}).get("backbone_init", "random")
            micro = r.get("scale") == "cpu-smoke"
            records.append(
                {
                    **r,
                    "n_runs": r.get("n_runs", len(r.get("per_run") or []) or 1),
                    "backbone": r.get("backbone") or ("random:micro" if micro and init == "random" else init),
                }
            )
        obj = {**obj, "schema": 2, "records": records, "contrasts": obj.get("contrasts", [])}
    if obj.get("schema") != SCHEMA:
        raise ConfigError(
            f"results file has schema {obj.get('schema')!r}, expected {SCHEMA}; move it away and rerun"
        )
    return obj


def write_results(
    path: str | Path,
    new_records: Sequence[dict],
    skipped: dict[str, str] | None = None,
    dataset: str | None = None,
    contrasts: Sequence[dict] = (),
    extra: dict | None = None,
) -> dict:
    """Merge ``new_records`` (same dataset+configuration+scale replaced) and ``contrasts`` (same
    dataset+scale+name replaced) into the result file, atomically. ``extra``: more top-level
    entries, each a list of dicts with ``dataset``, ``scale`` and (optionally) ``configuration``
    keys, merged the same way (e.g. ``by_lesion_size``, :mod:`~awm_lib.experiments.lesion_size`)."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() else {"schema": SCHEMA, "records": []}
    try:
        old = upgrade(old)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    key = lambda r: (r["dataset"], r["configuration"], r["scale"])  # noqa: E731
    replaced = {key(r) for r in new_records}
    records = [r for r in old["records"] if key(r) not in replaced] + list(new_records)
    records.sort(key=lambda r: (r["dataset"], r["scale"], list(CONFIGURATIONS).index(r["configuration"])
                                if r["configuration"] in CONFIGURATIONS else 999))
    skipped_all = [s for s in old.get("skipped", []) if not (dataset and s["dataset"] == dataset)]
    skipped_all += [{"dataset": dataset, "configuration": k, "reason": v} for k, v in (skipped or {}).items()]
    ckey = lambda c: (c["dataset"], c["scale"], c["name"])  # noqa: E731
    new_keys = {ckey(c) for c in contrasts}
    contrasts_all = [c for c in old.get("contrasts", []) if ckey(c) not in new_keys] + list(contrasts)
    contrasts_all.sort(key=lambda c: (c["dataset"], c["scale"], _contrast_order(c["name"])))
    notes = NOTES + "".join(
        note for scale, note in SCALE_NOTES.items() if any(r["scale"] == scale for r in records)
    )
    out = {
        "schema": SCHEMA,
        "notes": notes,
        "records": records,
        "contrasts": contrasts_all,
        "skipped": skipped_all,
    }
    for name, entries in (extra or {}).items():
        ekey = lambda e: (e["dataset"], e["scale"], e.get("configuration"))  # noqa: E731
        replaced_e = {ekey(e) for e in entries}
        out[name] = [e for e in old.get(name, []) if ekey(e) not in replaced_e] + list(entries)
    for name, value in old.items():  # keep what this call did not touch
        out.setdefault(name, value)
    write_json_atomic(path, out)
    return out


def _contrast_order(name: str) -> int:
    names = [c.name for c in CONTRASTS]
    return names.index(name) if name in names else len(names)
