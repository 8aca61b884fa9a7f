"""Classification metrics the way clinical statisticians report them.

Everything here works on two 1-D arrays: ``y`` (0/1 ground truth per image) and
``p`` (the model's probability of cancer per image). Nothing depends on the model.

The rules this module enforces:

* **The curve maths is scikit-learn's** (``sklearn.metrics.roc_auc_score``,
  ``roc_curve``, ``precision_recall_curve``), the implementation the field uses.
  This module keeps only what scikit-learn lacks: sensitivity at a fixed FPR,
  the threshold chosen on validation, and the bootstrap that resamples women.
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
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

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
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); NaN if one class is absent."""
    y, p = _as_arrays(y, p)
    if y.sum() == 0 or y.sum() == y.size:
        return float("nan")
    return float(skm.roc_auc_score(y, p))


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` from (0, 0) to (1, 1): ``sklearn.metrics.roc_curve``
    with every point kept (``drop_intermediate=False``).

    Point ``i`` is "predict cancer when p >= thresholds[i]"; the first point uses
    threshold +inf (nothing predicted positive). Both rates are non-decreasing.
    With one class absent its rate is 0 everywhere (instead of scikit-learn's NaN).
    """
    y, p = _as_arrays(y, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    return np.nan_to_num(fpr, nan=0.0), np.nan_to_num(tpr, nan=0.0), thresholds


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
    if criterion == "f1":
        if y.sum() == 0:  # no cancer: F1 is 0 at every threshold; take the highest
            return float(p.max())
        precision, recall, thresholds = skm.precision_recall_curve(y, p, drop_intermediate=False)
        precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    elif criterion == "youden":
        fprs, tprs, thresholds = roc_curve(y, p)
        score, thresholds = (tprs - fprs)[1:], thresholds[1:]  # +inf predicts nothing positive: never useful
    else:
        raise ValueError(f"unknown threshold criterion {criterion!r}: use 'f1' or 'youden'")
    # ties (within rounding) go to the highest threshold: fewer false alarms
    best = np.flatnonzero(score >= np.max(score) - 1e-12)
    return float(np.max(thresholds[best]))


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

    F1 is 0 when there is no true positive (the usual convention). One ROC curve
    serves the AUC (``sklearn.metrics.auc``, the trapezoid: equal to the rank AUC,
    ties counting one half) and the sensitivities, so a bootstrap resample costs
    one ``roc_curve``.
    """
    y, p = _as_arrays(y, p)
    c = confusion_at(y, p, threshold)
    f1_den = 2 * c["tp"] + c["fp"] + c["fn"]
    both_classes = 0 < y.sum() < y.size
    fprs, tprs, _ = roc_curve(y, p)
    out = {"auc": float(skm.auc(fprs, tprs)) if both_classes else float("nan"),
           "f1": _ratio(2 * c["tp"], f1_den) if c["tp"] else 0.0}
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
