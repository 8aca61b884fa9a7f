"""Lesion recall@k and FROC on constructed cases (hit = contains centre AND IoU >= 0.1)."""

import pytest
import torch

from awm_lib.data.types import Lesion
from awm_lib.proposals.recall import (
    ImageResult,
    first_hit_rank,
    froc,
    hit_matrix,
    recall_at_k,
    recall_by_group,
    sensitivity_at_fp,
    size_bin,
)


def lesion(x, y, r, kind="CIRC"):
    return Lesion(box=(x - r, y - r, x + r, y + r), kind=kind, malignant=False, center=(x, y), radius=r)


def test_hit_rule_needs_centre_and_iou():
    les = [lesion(50, 50, 10)]  # box 40..60, area 400
    boxes = [
        [40, 40, 60, 60],  # exact: hit
        [0, 0, 100, 100],  # contains centre, IoU 400/10000 = 0.04: miss
        [45, 45, 108, 108],  # IoU = 225 / (400 + 3969 - 225) = 0.054 : miss
        [55, 55, 75, 75],  # IoU 25/775 but centre (50, 50) outside: miss
        [30, 30, 80, 80],  # contains, IoU 400/2500 = 0.16: hit
        [50, 50, 70, 70],  # centre on the border counts, IoU 100/700 = 0.143: hit
    ]
    assert hit_matrix(boxes, les)[:, 0].tolist() == [True, False, False, False, True, True]


def test_recall_at_k_and_ranks():
    a = ImageResult("a", [[0, 0, 5, 5], [40, 40, 60, 60]], [0.9, 0.5], [lesion(50, 50, 10)])
    b = ImageResult("b", [[0, 0, 5, 5]], [0.9], [lesion(50, 50, 10), lesion(2, 2, 2)])
    c = ImageResult("c", [[0, 0, 5, 5]], [0.3], [])  # no lesion: ignored by recall
    assert first_hit_rank(a).tolist() == [2.0]
    assert first_hit_rank(b).tolist() == [float("inf"), 1.0]
    r = recall_at_k([a, b, c], ks=(1, 2))
    assert r["n_lesions"] == 3
    assert r["recall@1"] == pytest.approx(1 / 3) and r["recall@2"] == pytest.approx(2 / 3)
    assert recall_at_k([], ks=(1,))["n_lesions"] == 0


def test_groups_and_size_bins():
    les = [lesion(50, 50, 10, "CALC"), lesion(150, 150, 60, "CIRC")]
    res = [ImageResult("a", [[40, 40, 60, 60]], [1.0], les)]
    g = recall_by_group(res, lambda l: l.kind, ks=(1,))
    assert g["CALC"]["recall@1"] == 1.0 and g["CIRC"]["recall@1"] == 0.0
    assert size_bin(les[0]).startswith("small") and size_bin(les[1]).startswith("large")
    assert size_bin(lesion(0, 0, 30)).startswith("medium")


def test_froc_hand_case():
    les = [lesion(50, 50, 10)]
    a = ImageResult("a", [[40, 40, 60, 60], [0, 0, 5, 5]], [0.5, 0.9], les)  # TP at 0.5, FP at 0.9
    b = ImageResult("b", [[0, 0, 5, 5]], [0.7], [])  # FP at 0.7
    curve = froc([a, b])
    assert curve["threshold"] == pytest.approx([0.9, 0.7, 0.5])
    assert curve["sensitivity"] == [0.0, 0.0, 1.0]
    assert curve["fp_per_image"] == [0.5, 1.0, 1.0]
    s = sensitivity_at_fp(curve, fp_levels=(0.5, 1))
    assert s == {"sens@0.5fp": 0.0, "sens@1fp": 1.0}


def test_lesion_without_centre_uses_box_centre():
    les = [Lesion(box=(10, 10, 30, 30), kind="mass", malignant=True)]
    assert hit_matrix(torch.tensor([[10.0, 10.0, 30.0, 30.0]]), les).tolist() == [[True]]
