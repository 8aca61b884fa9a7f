"""The paper's ablation as one study: named configurations x datasets x folds/seeds.

The paper (Arora et al., ISBI 2026) builds its method up one piece at a time and
reports what each piece adds: RoI tokens instead of the whole image, a 2-D
position code for the boxes, a repulsive contrastive loss. We rerun that study
and add the experiment a referee asked for: swap the proposer for an oracle
(the lesion boxes themselves), random boxes, or the offline blob detector, and
plot classification against the proposer's **lesion recall**. If the classifier
only works with oracle boxes, the method depends on the detector.

This module runs the study (:func:`run_one`, :func:`run_study`) and measures
each run's lesion recall (:func:`lesion_recall_counts`). The pieces it uses:

* :mod:`~awm_lib.experiments.ablation_study` -- configurations, scales, the grid of runs;
* :mod:`~awm_lib.experiments.ablation_aggregate` -- pooled metrics with bootstrap CIs;
* :mod:`~awm_lib.experiments.ablation_contrasts` -- paired contrasts of two configurations;
* :mod:`~awm_lib.experiments.ablation_records` -- records and ``results/ablation.json``;
* :mod:`~awm_lib.experiments.ablation_overlays` -- the example overlay of each record.

Their public names are re-exported here, so ``from awm_lib.experiments.ablation
import ...`` reaches all of them.

Runs are resumable: a run folder with ``results.json`` is skipped (its config is
checked against the one asked for), a folder with checkpoints but no results is
resumed. So the study is one command that can be interrupted at any time.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from awm_lib import paths  # noqa: F401 - tests reach awm_lib.paths through this module
from awm_lib.experiments.ablation_aggregate import (  # noqa: F401 - re-exported
    ABLATION_METRICS,
    RunPredictions,
    aggregate_runs,
    pooled_point,
    pooled_recall,
    small_roc,
)
from awm_lib.experiments.ablation_contrasts import (  # noqa: F401 - re-exported
    make_contrast_record,
    paired_contrast,
    resolved,
)
from awm_lib.experiments.ablation_overlays import (  # noqa: F401 - re-exported
    _overlay_once,
    overlay_image,
    overlay_path,
    overlay_prediction,
    write_overlay,
)
from awm_lib.experiments.ablation_records import (  # noqa: F401 - re-exported
    CPU_SMOKE_NOTE,
    NOTES,
    SCHEMA,
    make_record,
    settings_differences,
    settings_of,
    study_command,
    write_results,
)
from awm_lib.experiments.ablation_study import (  # noqa: F401 - re-exported
    CONFIGURATIONS,
    CONTRASTS,
    DEFAULT_CONFIGS,
    SCALES,
    SSL_CHECKPOINT,
    Configuration,
    Contrast,
    RunSpec,
    Scale,
    backbone_available,
    config_for,
    describe,
    plan_runs,
    run_label,
)
from awm_lib.experiments.lesion_size import auc_by_size, lesion_size_mm
from awm_lib.io_utils import write_json_atomic
from awm_lib.proposals.recall import hit_matrix
from awm_lib.train import checkpoint as ckpt
from awm_lib.train.config import RESUME_IGNORE, TrainConfig, to_dict
from awm_lib.train.dataset import build_datasets, load_samples
from awm_lib.train.evaluate import read_predictions
from awm_lib.train.experiment import CONFIG, read_results, train

RECALL_FILE = "lesion_recall.json"


# =====================================================================================
# Running
# =====================================================================================
def run_one(spec: RunSpec, *, command: str | None = None, progress: bool = False) -> tuple[dict, bool]:
    """Train one run unless it is finished; ``(results, trained_now)``.

    A finished run (``results.json``) made with another configuration raises
    :class:`~awm_lib.errors.CheckpointError` instead of being silently reused.
    """
    done = read_results(spec.run_dir)
    if done is not None:
        saved = json.loads((spec.run_dir / CONFIG).read_text())["config"]
        ckpt.check_config_compatible(
            saved, to_dict(spec.cfg), RESUME_IGNORE, what=f"finished run {spec.run_dir}"
        )
        return done, False
    result = train(
        spec.cfg, spec.run_dir, resume=ckpt.has_checkpoint(spec.run_dir), progress=progress, command=command
    )
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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = build_datasets(cfg, progress=False, splits=("test",))["test"]
    out = {}
    for s, rec in zip(test.samples, test.records):
        prep = test.cache.get(s.path)
        H, W = prep.original_shape
        lesions = [
            les for les in s.lesions if (les.box[2] - les.box[0]) * (les.box[3] - les.box[1]) < 0.9 * H * W
        ]
        boxes = np.asarray(rec["rois"], dtype=np.float64)[1 : 1 + rec["n_proposals"]].reshape(-1, 4)
        found = 0
        if lesions and len(boxes):
            found = int(hit_matrix(prep.boxes_to_original(boxes), lesions).any(0).sum())
        out[s.image_id] = [found, len(lesions)]
    return out


_RECALL_MEMO: dict[str, dict | None] = {}


def _recall_key(cfg: TrainConfig) -> str:
    """What the recall counts depend on: the data settings and top-k (and the seed for random boxes)."""
    data = to_dict(cfg.data)
    return json.dumps(
        [cfg.arch, data, cfg.model.topk, cfg.seed if cfg.data.proposer == "random" else None], sort_keys=True
    )


def ensure_recall(spec: RunSpec) -> dict | None:
    """The run's per-image lesion-recall counts, computed once and kept in the run folder.

    Runs that differ only in the model, the loss or the seed share their test RoIs, so
    the counts are computed once per process for them (a memo keyed on the data settings).
    """
    path = spec.run_dir / RECALL_FILE
    if path.is_file():
        return json.loads(path.read_text())["per_image"]
    key = _recall_key(spec.cfg)
    if key not in _RECALL_MEMO:
        _RECALL_MEMO[key] = lesion_recall_counts(spec.cfg)
    counts = _RECALL_MEMO[key]
    write_json_atomic(
        path, {"per_image": counts, "proposer": spec.cfg.data.proposer, "topk": spec.cfg.model.topk}
    )
    return counts


# =====================================================================================
# The whole study
# =====================================================================================
def run_predictions(
    run_dir: str | Path, patient_of: dict[str, str], *, fold: int | None = None, seed: int = 0
) -> RunPredictions:
    """A finished run's test predictions, threshold (chosen on its validation split) and the woman of each
    image."""
    run_dir = Path(run_dir)
    res = read_results(run_dir)
    if res is None:
        raise FileNotFoundError(f"{run_dir} holds no finished run (no results.json)")
    ids, y, p = read_predictions(run_dir / "predictions_test.csv")
    return RunPredictions(
        y=y,
        p=p,
        threshold=float(res["threshold"]),
        groups=np.array([patient_of.get(i, i) for i in ids]),
        fold=fold,
        seed=seed,
        ids=np.asarray(ids),
    )


def _run_predictions(spec: RunSpec, patient_of: dict[str, str]) -> RunPredictions:
    return run_predictions(spec.run_dir, patient_of, fold=spec.fold, seed=spec.seed)


def run_study(
    dataset: str,
    configurations: Sequence[str],
    scale: str = "cpu-smoke",
    *,
    seeds: Sequence[int] | None = None,
    folds: Sequence[int] | None = (0, 1, 2, 3, 4),
    root: str | None = None,
    runs_dir: str | Path = "runs/ablation",
    out: str | Path = "results/ablation.json",
    overlays_dir: str | Path | None = "results/ablation_overlays",
    progress: bool = True,
    extra: Sequence[str] = (),
    n_boot: int | None = None,
    train_missing: bool = True,
    log: Callable[[str], None] = print,
    time_limit_s: float | None = None,
) -> dict:
    """Run (or resume) every run of the grid, then aggregate into ``out``. Returns the written file's
    contents.

    ``extra`` overrides go to every run; ``n_boot`` (default: the scale's) sets the pooled bootstrap.
    ``train_missing=False`` trains nothing and aggregates the runs already finished (e.g. after a
    time limit cut the grid short); each record's ``seeds``/``folds`` list what was really aggregated.
    ``time_limit_s``: start no new run after this many seconds (the one running finishes), then
    aggregate; rerunning the same call goes on where it stopped.
    """
    import time

    t0 = time.monotonic()
    from tqdm.auto import tqdm

    seeds = list(SCALES[scale].seeds if seeds is None else seeds)
    folds = list(folds) if dataset == "mias" else None
    specs, skipped = plan_runs(
        dataset,
        configurations,
        scale,
        seeds=seeds,
        folds=folds or [],
        runs_dir=runs_dir,
        root=root,
        extra=extra,
    )
    for name, why in skipped.items():
        log(f"ablation: skipping {name}: {why}")
    # fold/seed-major order: every configuration gets its first fold before any gets its second,
    # so an interrupted study already has something for each row of the table
    order = sorted(
        range(len(specs)), key=lambda i: (specs[i].seed, -1 if specs[i].fold is None else specs[i].fold, i)
    )
    todo = [specs[i] for i in order] if train_missing else []
    firsts = {s.configuration: s for s in reversed(specs)}  # the run whose model draws the overlay
    bar = tqdm(todo, desc=f"ablation {dataset} ({scale})", disable=not progress, unit="run")
    for spec in bar:
        if (
            time_limit_s is not None
            and time.monotonic() - t0 > time_limit_s
            and read_results(spec.run_dir) is None
        ):
            log(
                f"ablation: time limit ({time_limit_s / 60:.0f} min) reached; rerun the same command to go on"
            )
            break
        bar.set_postfix_str(f"{spec.configuration}/{spec.label}")
        cmd = study_command(
            dataset,
            spec.configuration,
            scale,
            [spec.seed],
            None if spec.fold is None else [spec.fold],
            root,
            extra,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-backbone warning, once per run, is noise here
            run_one(spec, command=cmd)
        ensure_recall(spec)
        if (
            overlays_dir is not None and spec is firsts[spec.configuration]
        ):  # while its checkpoint is surely here
            _overlay_once(spec, overlay_path(overlays_dir, dataset, spec.configuration, scale), log)
    bar.close()
    unfinished = [s for s in specs if read_results(s.run_dir) is None]
    if unfinished:
        log(
            f"ablation: {len(unfinished)} of {len(specs)} runs are not finished and are left out of the "
            "aggregate"
        )
    specs = [s for s in specs if s not in unfinished]

    d0 = specs[0].cfg.data if specs else None
    patient_of, sizes = {}, {}
    if d0 is not None:
        samples = load_samples(
            d0.dataset,
            d0.root,
            synthetic_n=d0.synthetic_n,
            synthetic_seed=d0.synthetic_seed,
            synthetic_size=d0.synthetic_size,
            val_fraction=d0.val_fraction,
            progress=False,
        )
        patient_of = {s.image_id: s.patient_id for s in samples}
        sizes = {s.image_id: lesion_size_mm(s, dataset) for s in samples}
    records, arms = [], {}
    for name in dict.fromkeys(s.configuration for s in specs):
        mine = [s for s in specs if s.configuration == name]
        arms[name] = [_run_predictions(s, patient_of) for s in mine]
        agg = aggregate_runs(arms[name], n_boot=n_boot or SCALES[scale].n_boot)
        overlay = None
        if overlays_dir is not None:
            png = overlay_path(overlays_dir, dataset, name, scale)
            overlay = _overlay_once(mine[0], png, log)
        records.append(
            make_record(
                dataset,
                name,
                scale,
                mine[0].cfg,
                agg,
                lesion_recall=pooled_recall([ensure_recall(s) for s in mine]),
                seeds=[s.seed for s in mine],
                folds=None if folds is None else [s.fold for s in mine],
                run_results=[read_results(s.run_dir) for s in mine],
                overlay=overlay,
                command=study_command(
                    dataset,
                    name,
                    scale,
                    sorted({s.seed for s in mine}),
                    None if folds is None else sorted({s.fold for s in mine}),
                    root,
                    extra,
                ),
            )
        )
    pairs = study_contrasts(
        dataset,
        scale,
        arms,
        seeds=seeds,
        folds=folds,
        runs_dir=runs_dir,
        root=root,
        extra=extra,
        patient_of=patient_of,
        n_boot=n_boot or SCALES[scale].n_boot,
        log=log,
    )
    by_size = []
    if d0 is not None and any(v is not None for v in sizes.values()):
        for name, runs in arms.items():
            if name in {s.configuration for s in specs} and all(r.ids is not None for r in runs):
                by_size.append({"dataset": dataset, "scale": scale, "configuration": name,
                                **auc_by_size(runs, sizes, n_boot=n_boot or SCALES[scale].n_boot)})
    return write_results(out, records, skipped, dataset, contrasts=pairs, extra={"by_lesion_size": by_size})


def study_contrasts(
    dataset: str,
    scale: str,
    arms: dict[str, list[RunPredictions]],
    *,
    seeds: Sequence[int],
    folds: Sequence[int] | None,
    runs_dir: str | Path,
    root: str | None,
    extra: Sequence[str],
    patient_of: dict[str, str],
    n_boot: int,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """The paired contrasts (:data:`CONTRASTS`) with at least one arm in ``arms``.

    The other arm, when this call did not run it, is read from its finished runs
    in ``runs_dir`` (same folds and seeds); a contrast whose arm has unfinished or
    missing runs is left out, with a line in the log.
    """
    out = []
    for c in CONTRASTS:
        if c.a not in arms and c.b not in arms:
            continue
        if c.factor != "method" and not settings_differences(
            *(settings_of(config_for(n, dataset, scale, root=root, extra=extra)) for n in (c.a, c.b))
        ):
            # e.g. the gpu scale offline with the SSL checkpoint present: its default backbone IS the
            # checkpoint, so "ssl vs random" would compare a configuration with itself
            log(f"ablation: contrast {c.name!r} left out: {c.a} and {c.b} are the same settings here")
            continue
        pair = []
        for name in (c.a, c.b):
            if name not in arms:
                specs, _ = plan_runs(
                    dataset,
                    [name],
                    scale,
                    seeds=seeds,
                    folds=folds or [],
                    runs_dir=runs_dir,
                    root=root,
                    extra=extra,
                )
                if not specs or any(read_results(s.run_dir) is None for s in specs):
                    break
                arms[name] = [_run_predictions(s, patient_of) for s in specs]
            pair.append(arms[name])
        if len(pair) < 2:
            log(
                f"ablation: contrast {c.name!r} left out: {c.a} or {c.b} has no finished runs at these "
                "folds/seeds"
            )
            continue
        paired = paired_contrast(pair[0], pair[1], n_boot=n_boot, seed=0)
        out.append(make_contrast_record(dataset, scale, c.name, c.factor, c.a, c.b, paired, claim=c.claim,
                                        description=c.description))
    return out


__all__ = [
    "CONFIGURATIONS", "DEFAULT_CONFIGS", "SCALES", "Configuration", "Scale", "RunSpec", "RunPredictions",
    "config_for", "plan_runs", "run_one", "run_study", "aggregate_runs", "pooled_point", "pooled_recall",
    "small_roc", "make_record", "write_results", "settings_of", "lesion_recall_counts", "backbone_available",
    "describe", "CONTRASTS", "Contrast", "paired_contrast", "study_contrasts", "resolved", "run_predictions",
]
