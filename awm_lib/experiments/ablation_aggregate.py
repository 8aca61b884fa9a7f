"""Aggregation of an ablation configuration's runs: pure functions of per-run test predictions.

For each (dataset, configuration) the test predictions of all its runs are
**pooled** (mini-MIAS: out-of-fold, every image once per seed). On the pool
(:func:`aggregate_runs`):

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

Also here: the small ROC stored with each record (:func:`small_roc`) and the
pooled lesion recall of the proposer (:func:`pooled_recall`). Everything is
unit-tested on constructed data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from awm_lib.train.metrics import roc_auc, roc_curve, sensitivity_at_fpr

ABLATION_METRICS = ("auc", "f1", "sens@fpr0.1", "sens@fpr0.3", "sens@fpr0.5")


@dataclass
class RunPredictions:
    """What aggregation needs from one finished run."""

    y: np.ndarray  # (N,) test labels
    p: np.ndarray  # (N,) test probabilities
    threshold: float  # chosen on this run's validation split
    groups: np.ndarray  # (N,) patient of each test image (bootstrap unit)
    fold: int | None = None
    seed: int = 0
    ids: np.ndarray | None = None  # (N,) image id of each test prediction (for per-image analyses)


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


def aggregate_runs(
    runs: Sequence[RunPredictions], *, n_boot: int = 1000, seed: int = 0, roc_points: int = 50
) -> dict:
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
        sd = (
            float(np.std(run_vals, ddof=1))
            if run_vals.size > 1
            else (0.0 if run_vals.size == 1 else float("nan"))
        )
        out[k] = {
            "mean": _nan_to_none(point[k]),
            "ci_low": _nan_to_none(float(lo)),
            "ci_high": _nan_to_none(float(hi)),
            "sd": _nan_to_none(sd),
            "run_mean": _nan_to_none(float(run_vals.mean()) if run_vals.size else float("nan")),
        }
    out["roc"] = small_roc(y, p, roc_points)
    out["n_test"] = int(y.size)
    out["n_test_pos"] = int(y.sum())
    out["per_run"] = [
        {"fold": r.fold, "seed": r.seed, **{k: _nan_to_none(v[k]) for k in ("auc", "f1")}}
        for r, v in zip(runs, per_run)
    ]
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
