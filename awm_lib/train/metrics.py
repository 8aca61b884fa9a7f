"""Classification metrics the way clinical statisticians report them.

Everything here works on two 1-D arrays: ``y`` (0/1 ground truth per image) and
``p`` (the model's probability of cancer per image). Nothing depends on the model.

The rules this module enforces:

* **ROC-AUC** is threshold-free: the probability that a random cancer scores
  higher than a random non-cancer (ties count one half, the Mann-Whitney U
  statistic). Equal to the area under the ROC curve.
* **Thresholds are chosen on validation, never on test.** :func:`choose_threshold`
  takes the *validation* labels and scores and returns a number; every
  threshold-dependent metric (:func:`point_metrics`, :func:`bootstrap_metrics`)
  takes that number as a required argument. Tuning the threshold on the test set
  would inflate F1 by a few points for free; the API makes it hard to do by accident.
* **Sensitivity at a fixed false-positive rate** (the paper's ``R@0.1`` ... columns)
  is read off the ROC curve by linear interpolation. At an FPR where the curve
  has a vertical step (several positives tied in score with no negative between
  them) we take the *top* of the step: the best sensitivity a threshold reaches
  at that FPR. Between ROC points the interpolated value is what a randomised
  mix of the two neighbouring thresholds achieves.
* **Uncertainty**: percentile bootstrap 95% intervals, resampling images (or whole
  patients when ``groups`` is given, because two views of one woman are not
  independent), seeded so the interval is reproducible.

The metrics dictionary has exactly the keys of :data:`METRIC_KEYS`, each mapped to
``{"mean", "ci_low", "ci_high"}`` where ``mean`` is the point estimate on the full
set (the format of ``results/ablation.json``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import rankdata

FPR_POINTS = (0.1, 0.3, 0.5)
METRIC_KEYS = ("auc", "f1", "sens@fpr0.1", "sens@fpr0.3", "sens@fpr0.5", "specificity", "accuracy")


def _as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {p.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or inf")
    return y, p


# --- threshold-free ------------------------------------------------------------------
def roc_auc(y, p) -> float:
    """Area under the ROC curve via ranks (Mann-Whitney U); NaN if one class is absent."""
    y, p = _as_arrays(y, p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)  # ties get their average rank -> count one half
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` from (0, 0) to (1, 1).

    Point ``i`` is "predict cancer when p >= thresholds[i]"; the first point uses
    threshold +inf (nothing predicted positive). Both rates are non-decreasing.
    """
    y, p = _as_arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    # the last index of each run of tied scores: a threshold cannot split a tie
    last_of_tie = np.r_[np.flatnonzero(np.diff(p_sorted)), y.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    n_pos, n_neg = max(int(y.sum()), 1), max(int(y.size - y.sum()), 1)
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, p_sorted[last_of_tie]]
    return fpr, tpr, thresholds


def _interp_sensitivity(fprs: np.ndarray, tprs: np.ndarray, fpr: float) -> float:
    # keep, for each distinct FPR, the highest TPR (the top of a vertical step)
    last = np.r_[np.flatnonzero(np.diff(fprs)), fprs.size - 1]
    return float(np.interp(fpr, fprs[last], tprs[last]))


def sensitivity_at_fpr(y, p, fpr: float) -> float:
    """Sensitivity (TPR) at a given false-positive rate, interpolated on the ROC curve.

    On a vertical step of the curve the top is used (see the module docstring).
    NaN if one class is absent.
    """
    y_arr, _ = _as_arrays(y, p)
    if y_arr.sum() == 0 or y_arr.sum() == y_arr.size:
        return float("nan")
    fprs, tprs, _ = roc_curve(y, p)
    return _interp_sensitivity(fprs, tprs, fpr)


# --- thresholds ---------------------------------------------------------------------
def choose_threshold(y_val, p_val, criterion: str = "f1") -> float:
    """The decision threshold, chosen on VALIDATION data.

    Candidates are the distinct validation scores (``predict cancer when p >= t``).
    ``criterion="f1"`` maximises F1; ``"youden"`` maximises sensitivity +
    specificity - 1. Ties go to the higher threshold (fewer false alarms).
    Pass the returned number to :func:`point_metrics` / :func:`bootstrap_metrics`
    for the test set.
    """
    y, p = _as_arrays(y_val, p_val)
    if y.size == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    fprs, tprs, thresholds = roc_curve(y, p)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tp, fp = tprs * n_pos, fprs * n_neg
    if criterion == "f1":
        fn = n_pos - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    elif criterion == "youden":
        score = tprs - fprs
    else:
        raise ValueError(f"unknown threshold criterion {criterion!r}: use 'f1' or 'youden'")
    score[0] = -np.inf  # threshold +inf predicts nothing positive: never useful
    best = int(np.argmax(score))  # first maximum = highest threshold among ties
    return float(thresholds[best])


def confusion_at(y, p, threshold: float) -> dict[str, int]:
    """Counts of true/false positives/negatives when predicting ``p >= threshold``."""
    y, p = _as_arrays(y, p)
    pred = p >= threshold
    return {
        "tp": int((pred & (y == 1)).sum()),
        "fp": int((pred & (y == 0)).sum()),
        "tn": int((~pred & (y == 0)).sum()),
        "fn": int((~pred & (y == 1)).sum()),
    }


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def point_metrics(y, p, threshold: float) -> dict[str, float]:
    """Every metric of :data:`METRIC_KEYS` as one number, for a fixed threshold.

    F1 is 0 when there is no true positive (the usual convention).
    """
    y, p = _as_arrays(y, p)
    c = confusion_at(y, p, threshold)
    f1_den = 2 * c["tp"] + c["fp"] + c["fn"]
    out = {"auc": roc_auc(y, p), "f1": _ratio(2 * c["tp"], f1_den) if c["tp"] else 0.0}
    both_classes = 0 < y.sum() < y.size
    fprs, tprs, _ = roc_curve(y, p)
    for f in FPR_POINTS:
        out[f"sens@fpr{f}"] = _interp_sensitivity(fprs, tprs, f) if both_classes else float("nan")
    out["specificity"] = _ratio(c["tn"], c["tn"] + c["fp"])
    out["accuracy"] = _ratio(c["tp"] + c["tn"], sum(c.values()))
    return out


# --- uncertainty ----------------------------------------------------------------------
def _bootstrap_indices(n: int, rng: np.random.Generator, groups: np.ndarray | None) -> np.ndarray:
    """One bootstrap resample: image indices, or all images of resampled groups."""
    if groups is None:
        return rng.integers(0, n, size=n)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
    picked = rng.integers(0, uniq.size, size=uniq.size)
    return np.concatenate([members[g] for g in picked])


def bootstrap_metrics(
    y,
    p,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    groups=None,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Point estimates with percentile bootstrap ``1 - alpha`` intervals.

    Returns ``{key: {"mean": point estimate on the full set, "ci_low", "ci_high"}}``
    for every key of :data:`METRIC_KEYS`. ``groups`` (e.g. patient ids, one per
    image) resamples whole patients instead of images. Resamples where a metric
    is undefined (e.g. no cancer drawn, so no AUC) are left out of that metric's
    interval. ``n_boot=0`` gives NaN intervals.
    """
    y, p = _as_arrays(y, p)
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and groups.shape[0] != y.size:
        raise ValueError(f"groups has {groups.shape[0]} entries for {y.size} images")
    point = point_metrics(y, p, threshold)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in METRIC_KEYS}
    for _ in range(n_boot):
        idx = _bootstrap_indices(y.size, rng, groups)
        for k, v in point_metrics(y[idx], p[idx], threshold).items():
            if not math.isnan(v):
                samples[k].append(v)
    out = {}
    for k in METRIC_KEYS:
        vals = np.asarray(samples[k])
        if vals.size:
            lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
        else:
            lo = hi = float("nan")
        out[k] = {"mean": float(point[k]), "ci_low": float(lo), "ci_high": float(hi)}
    if n_boot and len(samples["auc"]) < 0.9 * n_boot:
        warnings.warn(
            f"only {len(samples['auc'])} of {n_boot} bootstrap resamples had both classes; "
            "the AUC interval is unreliable (too few cancers in this set)",
            stacklevel=2,
        )
    return out


def evaluate_with_validation_threshold(
    y_val, p_val, y_test, p_test, n_boot: int = 1000, seed: int = 0, groups_test=None, criterion: str = "f1"
) -> tuple[dict[str, dict[str, float]], float]:
    """The whole protocol in one call: threshold from validation, metrics on test.

    Returns ``(metrics, threshold)``.
    """
    t = choose_threshold(y_val, p_val, criterion=criterion)
    return bootstrap_metrics(y_test, p_test, t, n_boot=n_boot, seed=seed, groups=groups_test), t
