"""Box conversions, IoU, NMS, squaring and border handling against hand-computed cases."""

import pytest
import torch

from awm_lib.errors import ProposalError
from awm_lib.proposals import boxes as B


def test_cxcywh_xyxy_round_trip_and_values():
    b = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    xyxy = B.cxcywh_to_xyxy(b)
    assert xyxy.tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert torch.allclose(B.xyxy_to_cxcywh(xyxy), b)


def test_empty_and_bad_shapes():
    assert B.as_boxes([]).shape == (0, 4)
    with pytest.raises(ProposalError, match=r"\(N, 4\)"):
        B.as_boxes([[1.0, 2.0, 3.0]])
    with pytest.raises(ProposalError, match="NaN"):
        B.as_boxes([[0.0, 0.0, float("nan"), 1.0]])


def test_area_and_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    assert B.box_area(a).tolist() == [100.0]
    iou = B.box_iou(a, b)[0]
    # overlap 5x5 = 25, union 100 + 100 - 25 = 175
    assert iou[0].item() == pytest.approx(25 / 175)
    assert iou[1].item() == 0.0
    assert iou[2].item() == pytest.approx(1.0)


def test_nms_greedy_hand_case():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]]
    scores = [0.9, 0.8, 0.7, 0.95]
    # box 3 (0.95) first; box 0 IoU 0.9 -> gone; box 1 IoU with box 3 = 72/(90+100-72)=0.61 -> gone
    keep = B.nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2]
    # with a threshold of 0.95 only exact-ish duplicates go
    assert B.nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]


def test_nms_ties_are_stable_and_empty_ok():
    assert B.nms([[0, 0, 1, 1], [5, 5, 6, 6]], [0.5, 0.5], 0.5).tolist() == [0, 1]
    assert B.nms([], [], 0.5).tolist() == []


def test_square_with_margin_reference_rule():
    sq = B.square_with_margin([[100.0, 100.0, 130.0, 110.0]], margin=40)
    # centre (115, 105), side max(30, 10) + 40 = 70
    assert sq.tolist() == [[80.0, 70.0, 150.0, 140.0]]


def test_border_modes():
    b = [[-10.0, 90.0, 30.0, 130.0]]  # 40x40, crosses left and bottom of a 100x120 image
    assert B.fit_to_image(b, 100, 120, "clip").tolist() == [[0.0, 90.0, 30.0, 120.0]]
    assert B.fit_to_image(b, 100, 120, "shift").tolist() == [[0.0, 80.0, 40.0, 120.0]]
    assert B.fit_to_image(b, 100, 120, "pad").tolist() == b
    # larger than the image along x: clipped along x, shifted along y
    assert B.shift_inside([[-50.0, -5.0, 150.0, 15.0]], 100, 120).tolist() == [[0.0, 0.0, 100.0, 20.0]]
    with pytest.raises(ProposalError, match="border"):
        B.fit_to_image(b, 100, 120, "wrap")


def test_contains_points_includes_border():
    m = B.contains_points([[0, 0, 10, 10]], [[10, 10], [10.5, 5], [5, 5]])
    assert m.tolist() == [[True, False, True]]
