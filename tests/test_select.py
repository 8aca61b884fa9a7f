"""The shared post-processing: anchor first, NMS, top-k, squares, padding."""

import pytest
import torch

from awm_lib.errors import ConfigError, ProposalError
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.select import SelectConfig, coverage, select_batch, select_rois


def props(boxes, scores):
    return Proposals(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores))


def test_anchor_first_nms_topk_and_square():
    p = props(
        [[10, 10, 30, 20], [11, 11, 31, 21], [100, 100, 110, 140], [0, 0, 200, 200]], [0.9, 0.8, 0.7, 0.95]
    )
    cfg = SelectConfig(topk=2, margin=40, border="pad")
    s = select_rois(p, (200, 200), anchor=(0, 0, 200, 200), cfg=cfg)
    assert s.rois.shape == (3, 4) and s.n_padded == 0
    assert s.rois[0].tolist() == [0, 0, 200, 200]  # anchor; the 0.95 copy of it was suppressed
    # box 0 (centre 20, 15; side 20 + 40 = 60), box 2 (centre 105, 120; side 40 + 40 = 80)
    assert s.rois[1].tolist() == [-10, -15, 50, 45]
    assert s.rois[2].tolist() == [65, 80, 145, 160]
    assert s.scores.tolist() == pytest.approx([1.0, 0.9, 0.7])
    assert s.valid.all()


def test_padding_is_deterministic_and_flagged():
    p = props([[10, 10, 30, 30]], [0.5])
    cfg = SelectConfig(topk=4, seed=3)
    a = select_rois(p, (100, 80), cfg=cfg)
    b = select_rois(p, (100, 80), cfg=cfg)
    assert a.n_padded == 3 and a.valid.tolist() == [True, True, False, False, False]
    assert torch.equal(a.rois, b.rois)
    assert (a.rois[:, 0] >= 0).all() and (a.rois[:, 2] <= 80).all() and (a.rois[:, 3] <= 100).all()
    c = select_rois(p, (100, 80), cfg=SelectConfig(topk=4, seed=4))
    assert not torch.equal(a.rois, c.rois)
    anchor_pad = select_rois(p, (100, 80), cfg=SelectConfig(topk=4, pad="anchor"))
    assert torch.equal(anchor_pad.rois[2], anchor_pad.rois[0])


def test_k_larger_than_proposals_and_no_proposals():
    s = select_rois(Proposals.empty(), (64, 64), cfg=SelectConfig(topk=3))
    assert s.rois.shape == (4, 4) and s.n_padded == 3 and s.n_kept == 0
    s0 = select_rois(props([[1, 1, 5, 5]], [1.0]), (64, 64), cfg=SelectConfig(topk=0))
    assert s0.rois.shape == (1, 4)


def test_boxes_outside_image_are_dropped_and_counted():
    p = props([[-50, -50, -10, -10], [500, 500, 600, 600], [10, 10, 20, 20]], [0.9, 0.8, 0.1])
    s = select_rois(p, (100, 100), cfg=SelectConfig(topk=2, margin=0))
    assert s.n_dropped == 2 and s.n_kept == 1
    assert s.raw.tolist() == [[10, 10, 20, 20]]


def test_bad_config_and_anchor():
    with pytest.raises(ConfigError):
        SelectConfig(topk=-1)
    with pytest.raises(ConfigError):
        SelectConfig(border="mirror")
    with pytest.raises(ProposalError, match="anchor"):
        select_rois(Proposals.empty(), (10, 10), anchor=(20, 20, 30, 30))


def test_batch_and_coverage():
    rois, scores, valid = select_batch(
        [Proposals.empty(), props([[0, 0, 10, 10]], [1.0])], [(50, 50), (50, 50)], cfg=SelectConfig(topk=2)
    )
    assert rois.shape == (2, 3, 4) and valid.tolist() == [[True, False, False], [True, True, False]]
    assert coverage([[0, 0, 50, 100]], (0, 0, 100, 100)) == pytest.approx(0.5)
    assert coverage([], (0, 0, 100, 100)) == 0.0


def test_margin_in_millimetres():
    # 3.4 mm at 0.2 mm per pixel = 17 px: a 20-px box becomes a 37-px square
    cfg = SelectConfig(topk=1, margin_mm=3.4, pixel_mm=0.2, border="pad")
    assert cfg.margin_px == pytest.approx(17.0)
    s = select_rois(props([[50, 50, 70, 60]], [1.0]), (200, 200), cfg=cfg)
    assert s.rois[1].tolist() == pytest.approx([41.5, 36.5, 78.5, 73.5])
    assert SelectConfig(margin=25).margin_px == 25  # no margin_mm: the pixel margin, as before
    with pytest.raises(ConfigError, match="pixel_mm"):
        SelectConfig(margin_mm=3.4)
    with pytest.raises(ConfigError, match="margin_mm"):
        SelectConfig(margin_mm=-1, pixel_mm=0.2)
