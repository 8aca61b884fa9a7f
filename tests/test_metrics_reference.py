"""The metrics agree to 1e-12 with the values the hand-written implementation gave.

``tests/data/metrics_predictions.csv`` holds the validation and test predictions
of a real (smoke-scale) mini-MIAS run, with each image's woman. The values in
``tests/data/metrics_reference.json`` were computed from it by
``awm_lib/train/metrics.py`` as it was before its curve maths moved to
``sklearn.metrics`` (the file records the commit). The same checks run on the
probabilities rounded to two decimals, which creates many tied scores.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from awm_lib.train import metrics as M

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "metrics_reference.json").read_text())
TOL = 1e-12


def _load(split: str, decimals: int | None):
    with open(DATA / "metrics_predictions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["prob"]) for r in rows])
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p, np.array([r["patient_id"] for r in rows])


def _same(a, b, where=""):
    if isinstance(b, dict):
        assert set(a) == set(b), where
        for k in b:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    elif b is None:  # +inf (the first ROC threshold)
        assert a == math.inf, where
    elif isinstance(b, float) and math.isnan(b):
        assert math.isnan(a), where
    else:
        assert abs(float(a) - b) <= TOL, f"{where}: {a!r} vs {b!r}"


CASES = {"as_saved": None, "rounded_2dp": 2}


@pytest.fixture(params=list(CASES))
def case(request):
    name = request.param
    val, test = _load("val", CASES[name]), _load("test", CASES[name])
    return REF["reference"][name], val, test


def test_the_fixture_is_a_real_run_with_women_and_ties():
    y, p, g = _load("test", None)
    assert len(y) == 66 and 0 < y.sum() < len(y) and len(set(g)) < len(g)  # two films per woman
    _, p2, _ = _load("test", 2)
    assert len(set(p2)) < len(p2)  # the rounded case has tied scores


def test_auc_and_roc_curve_agree(case):
    ref, (yv, pv, _), (yt, pt, _) = case
    _same(M.roc_auc(yv, pv), ref["roc_auc_val"], "auc val")
    _same(M.roc_auc(yt, pt), ref["roc_auc_test"], "auc test")
    fpr, tpr, thr = M.roc_curve(yt, pt)
    _same(
        {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}, ref["roc_curve_test"], "roc"
    )


def test_sensitivity_at_fpr_agrees(case):
    ref, _, (yt, pt, _) = case
    for f, v in ref["sens_at_fpr_test"].items():
        _same(M.sensitivity_at_fpr(yt, pt, float(f)), v, f"sens@{f}")


def test_validation_thresholds_agree(case):
    ref, (yv, pv, _), _ = case
    for crit in ("f1", "youden"):
        _same(M.choose_threshold(yv, pv, crit), ref[f"threshold_{crit}"], crit)


def test_point_metrics_and_bootstrap_agree(case):
    ref, _, (yt, pt, gt) = case
    t = ref["threshold_f1"]
    _same(M.point_metrics(yt, pt, t), ref["point_metrics_test"], "point")
    _same(
        M.bootstrap_metrics(yt, pt, t, n_boot=200, seed=0, groups=gt),
        ref["bootstrap_women_test"],
        "boot women",
    )
    _same(M.bootstrap_metrics(yt, pt, t, n_boot=200, seed=1), ref["bootstrap_images_test"], "boot images")
