"""Metrics against values computed by hand on a tiny set, plus edge cases.

The hand set (sorted by score, 4 cancers and 5 non-cancers)::

    p: 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 0.1
    y:  1   1   0   1   0   0   1   0   0

AUC: each cancer counts the non-cancers scored below it: 5 + 5 + 4 + 2 = 16 of
4 * 5 = 20 pairs -> 0.8.
ROC points (FPR, TPR) for thresholds 0.9 ... 0.1:
(0,.25) (0,.5) (.2,.5) (.2,.75) (.4,.75) (.6,.75) (.6,1) (.8,1) (1,1).
Sensitivity at FPR 0.1: between (0, .5) [top of the vertical step at 0] and
(.2, .75) -> .625; at 0.3: .75; at 0.5: between (.4,.75) and (.6,1) -> .875.
F1 per threshold: .4, .667, .571, .75, .667, .6, .727, .667, .615 -> best at 0.6
(TP 3, FP 1, FN 1: F1 = 6/8), where specificity = 4/5 and accuracy = 7/9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from awm_lib.train.metrics import (
    METRIC_KEYS,
    _bootstrap_indices,
    bootstrap_metrics,
    choose_threshold,
    confusion_at,
    evaluate_with_validation_threshold,
    point_metrics,
    roc_auc,
    roc_curve,
    sensitivity_at_fpr,
)

P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0])
# shuffle so nothing relies on the input being sorted
_perm = np.array([4, 0, 8, 2, 6, 1, 7, 3, 5])
P, Y = P[_perm], Y[_perm]


def test_auc_by_hand():
    assert roc_auc(Y, P) == pytest.approx(0.8)


def test_roc_curve_by_hand():
    fpr, tpr, thr = roc_curve(Y, P)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.2, 0.2, 0.4, 0.6, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1, 1, 1])
    assert thr[0] == np.inf and thr[1] == 0.9 and thr[-1] == 0.1


@pytest.mark.parametrize("fpr,expected", [(0.1, 0.625), (0.3, 0.75), (0.5, 0.875), (0.0, 0.5), (1.0, 1.0)])
def test_sensitivity_at_fpr_by_hand(fpr, expected):
    assert sensitivity_at_fpr(Y, P, fpr) == pytest.approx(expected)


def test_threshold_f1_specificity_accuracy_by_hand():
    t = choose_threshold(Y, P)
    assert t == pytest.approx(0.6)
    assert confusion_at(Y, P, t) == {"tp": 3, "fp": 1, "tn": 4, "fn": 1}
    m = point_metrics(Y, P, t)
    assert set(m) == set(METRIC_KEYS)
    assert m["f1"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.8)
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["sens@fpr0.1"] == pytest.approx(0.625)


def test_youden_threshold_by_hand():
    # TPR - FPR per threshold: .25 .5 .3 .55 .35 .15 .4 .2 0 -> best at 0.6 again
    assert choose_threshold(Y, P, criterion="youden") == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown threshold criterion"):
        choose_threshold(Y, P, criterion="accuracy")


def test_threshold_comes_from_validation_not_test():
    # validation prefers t = 0.6; on a test set that would prefer another threshold
    # the metrics must still use 0.6
    y_test = np.array([1, 1, 0, 0])
    p_test = np.array([0.55, 0.9, 0.58, 0.1])
    metrics, t = evaluate_with_validation_threshold(Y, P, y_test, p_test, n_boot=0)
    assert t == pytest.approx(0.6)
    # at 0.6 only the 0.9 cancer is found: TP 1, FN 1, FP 0 -> F1 = 2/3
    assert metrics["f1"]["mean"] == pytest.approx(2 / 3)
    # the test-optimal threshold (0.55) would have given F1 = 0.8
    assert point_metrics(y_test, p_test, choose_threshold(y_test, p_test))["f1"] == pytest.approx(0.8)


def test_auc_with_ties_counts_half_and_matches_sklearn():
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_perfect_and_inverted_classifiers():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = point_metrics(y, p, choose_threshold(y, p))
    assert m["auc"] == 1.0 and m["f1"] == 1.0 and m["accuracy"] == 1.0 and m["specificity"] == 1.0
    assert all(m[f"sens@fpr{f}"] == 1.0 for f in (0.1, 0.3, 0.5))
    assert roc_auc(y, 1 - p) == 0.0
    assert sensitivity_at_fpr(y, 1 - p, 0.5) == 0.0


def test_random_classifier_is_near_chance():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    p = rng.random(4000)
    assert abs(roc_auc(y, p) - 0.5) < 0.03
    # a random classifier's ROC is the diagonal: sensitivity ~= FPR
    for f in (0.1, 0.3, 0.5):
        assert abs(sensitivity_at_fpr(y, p, f) - f) < 0.04


def test_single_class_gives_nan_not_crash():
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    m = point_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.25)
    assert math.isnan(m["auc"]) and math.isnan(m["sens@fpr0.1"])
    assert m["specificity"] == pytest.approx(2 / 3) and m["f1"] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.5, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.5, float("nan")])


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    a = bootstrap_metrics(y, p, 0.5, n_boot=200, seed=3)
    b = bootstrap_metrics(y, p, 0.5, n_boot=200, seed=3)
    c = bootstrap_metrics(y, p, 0.5, n_boot=200, seed=4)
    assert a == b and a != c
    assert list(a) == list(METRIC_KEYS)
    for k, v in a.items():
        assert set(v) == {"mean", "ci_low", "ci_high"}
        assert v["ci_low"] <= v["mean"] <= v["ci_high"], k
        assert v["ci_low"] < v["ci_high"], k


def test_bootstrap_of_perfect_classifier_has_degenerate_interval():
    y = np.array([0, 1] * 10)
    p = y * 0.8 + 0.1
    m = bootstrap_metrics(y, p, 0.5, n_boot=50, seed=0)
    assert m["auc"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    m0 = bootstrap_metrics(y, p, 0.5, n_boot=0)
    assert m0["auc"]["mean"] == 1.0 and math.isnan(m0["auc"]["ci_low"])


def test_bootstrap_by_patient_keeps_a_patients_images_together():
    groups = np.array(["a", "a", "b", "b", "b", "c"])
    idx = _bootstrap_indices(6, np.random.default_rng(0), groups)
    drawn = groups[idx]
    for g in "abc":
        # a patient is drawn whole, so its count is a multiple of its size
        assert (drawn == g).sum() % (groups == g).sum() == 0
    with pytest.raises(ValueError, match="groups"):
        bootstrap_metrics([0, 1], [0.1, 0.9], 0.5, groups=["a"])
