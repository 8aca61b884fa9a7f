"""Paired contrasts between two configurations of the ablation: ΔAUC and ΔF1 with a paired bootstrap.

Two configurations of one study are trained on the same folds and seeds, so they
are tested on the same women. Comparing their two marginal 95% intervals
("do they overlap?") throws that pairing away and is far too conservative: most
of each interval's width is which women happened to be in the test set, and that
is shared by both arms. The paired bootstrap keeps it shared::

    for b in 1..n_boot:
        draw the women with replacement (the same draw for both arms)
        Δ_b = metric(arm B on those women's images) - metric(arm A on the same images)
    95% interval of Δ = the 2.5% and 97.5% quantiles of Δ_b

Each arm is the POOL of its runs' test predictions (mini-MIAS: out-of-fold, every
image once per seed), exactly as in :mod:`~awm_lib.experiments.ablation_aggregate`;
AUC uses the pooled probabilities, F1 each run's decision at the threshold chosen
on its own validation split. A contrast "resolves" a difference when its interval
excludes 0 (:func:`resolved`).

Everything here is a pure function of :class:`~awm_lib.experiments.ablation_aggregate.RunPredictions`
and is unit-tested on constructed data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from awm_lib.experiments.ablation_aggregate import RunPredictions
from awm_lib.train.metrics import roc_auc

CONTRAST_METRICS = ("auc", "f1")


def _pool(runs: Sequence[RunPredictions]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y = np.concatenate([np.asarray(r.y) for r in runs]).astype(np.int64)
    p = np.concatenate([np.asarray(r.p) for r in runs]).astype(np.float64)
    pred = np.concatenate([np.asarray(r.p) >= r.threshold for r in runs])
    groups = np.concatenate([np.asarray(r.groups, dtype=object).astype(str) for r in runs])
    return y, p, pred, groups


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _metrics(y, p, pred) -> dict[str, float]:
    return {"auc": roc_auc(y, p), "f1": _f1(y, pred)}


def paired_contrast(arm_a: Sequence[RunPredictions], arm_b: Sequence[RunPredictions], *, n_boot: int = 2000,
                    seed: int = 0) -> dict:
    """B minus A on the same women: ``{"auc": {"mean", "ci_low", "ci_high"}, "f1": {...}, "n_women",
    "n_boot"}``.

    ``mean`` is the difference of the pooled point estimates; the interval is the
    percentile interval of the paired bootstrap (women drawn once per resample, for
    both arms). Women present in only one arm are left out of both, so the two arms
    are always compared on the same images; ``n_women`` says how many were shared.
    Resamples with one class only (no AUC) are skipped. Raises ``ValueError`` when
    the arms share no woman.
    """
    ya, pa, da, ga = _pool(arm_a)
    yb, pb, db, gb = _pool(arm_b)
    shared = np.intersect1d(np.unique(ga), np.unique(gb))
    if shared.size == 0:
        raise ValueError("the two arms share no test woman: they were not tested on the same data")
    keep_a, keep_b = np.isin(ga, shared), np.isin(gb, shared)
    ya, pa, da, ga = ya[keep_a], pa[keep_a], da[keep_a], ga[keep_a]
    yb, pb, db, gb = yb[keep_b], pb[keep_b], db[keep_b], gb[keep_b]
    point_a, point_b = _metrics(ya, pa, da), _metrics(yb, pb, db)

    ia = np.searchsorted(shared, ga)  # woman index of every pooled prediction
    ib = np.searchsorted(shared, gb)
    members_a = [np.flatnonzero(ia == w) for w in range(shared.size)]
    members_b = [np.flatnonzero(ib == w) for w in range(shared.size)]
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {k: [] for k in CONTRAST_METRICS}
    for _ in range(n_boot):
        draw = rng.integers(0, shared.size, size=shared.size)
        sa = np.concatenate([members_a[w] for w in draw])
        sb = np.concatenate([members_b[w] for w in draw])
        if ya[sa].min() == ya[sa].max() or yb[sb].min() == yb[sb].max():
            continue
        ma, mb = _metrics(ya[sa], pa[sa], da[sa]), _metrics(yb[sb], pb[sb], db[sb])
        for k in CONTRAST_METRICS:
            deltas[k].append(mb[k] - ma[k])
    out: dict = {"n_women": int(shared.size), "n_boot": int(n_boot)}
    for k in CONTRAST_METRICS:
        d = point_b[k] - point_a[k]
        vals = np.asarray(deltas[k], dtype=float)
        vals = vals[~np.isnan(vals)]
        if vals.size == 0 or d != d:
            out[k] = {"mean": None if d != d else float(d), "ci_low": None, "ci_high": None}
            continue
        lo, hi = np.quantile(vals, [0.025, 0.975])
        out[k] = {"mean": float(d), "ci_low": float(lo), "ci_high": float(hi)}
    return out


def resolved(delta: dict | None) -> bool | None:
    """Whether a contrast's 95% interval excludes 0 (None when it has no interval)."""
    if not delta or delta.get("ci_low") is None or delta.get("ci_high") is None:
        return None
    return delta["ci_low"] > 0 or delta["ci_high"] < 0


def make_contrast_record(dataset: str, scale: str, name: str, factor: str, a: str, b: str, paired: dict, *,
                         claim: str | None = None, description: str = "") -> dict:
    """One entry of the results file's top-level ``contrasts`` list (differences are fractions, B minus A)."""
    return {
        "dataset": dataset,
        "scale": scale,
        "name": name,
        "factor": factor,
        "from": a,
        "to": b,
        "claim": claim,
        "description": description,
        "d_auc": paired["auc"],
        "d_f1": paired["f1"],
        "n_women": paired["n_women"],
        "n_boot": paired["n_boot"],
        "method": "paired bootstrap over women (both arms resampled together), 95% percentile interval",
    }
