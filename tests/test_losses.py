"""Losses on constructed embeddings whose correct values are worked out by hand."""

import math

import pytest
import torch

from awm_lib.errors import ConfigError
from awm_lib.losses import (
    LossConfig,
    compute_loss,
    label_rois,
    repulsive_loss,
    roi_supcon_loss,
    supcon_loss,
    weighted_bce,
)
from awm_lib.model.roi_transformer import RoIOutput


def unit(deg):  # a 2-D unit vector at an angle: cosine similarities are cos(angle differences)
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_weighted_bce_by_hand():
    loss = weighted_bce(torch.tensor([0.0, 2.0]), torch.tensor([1, 0]), pos_weight=3.0)
    # positive at logit 0: 3 * -log(sigmoid(0)) = 3 log 2; negative at 2: -log(1 - sigmoid(2)) = log(1 + e^2)
    assert loss.item() == pytest.approx((3 * math.log(2) + math.log(1 + math.e**2)) / 2, rel=1e-6)


def test_repulsive_orthogonal_identical_and_sixty_degrees():
    ortho = torch.eye(3).view(1, 3, 3)
    assert repulsive_loss(ortho).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]]])  # all parallel: cos = 1
    assert repulsive_loss(same).item() == pytest.approx(1.0, rel=1e-6)
    sixty = torch.tensor([[unit(0), unit(60)]])  # cos 60 = 0.5 -> squared 0.25
    assert repulsive_loss(sixty).item() == pytest.approx(0.25, rel=1e-5)


def test_repulsive_masks_padding_and_averages_images():
    emb = torch.tensor([[unit(0), unit(90), unit(0)], [unit(0), unit(60), unit(90)]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # image 0: only the orthogonal pair counts -> 0
    # image 1: cos^2 of 60, 90 and 30 degrees = 1/4, 0, 3/4 -> mean 1/3
    assert repulsive_loss(emb, mask).item() == pytest.approx((0 + 1 / 3) / 2, rel=1e-5)
    # without the anchor (index 0) image 0 has one real RoI (skipped); image 1: (60, 90) -> 3/4
    assert repulsive_loss(emb, mask, include_anchor=False).item() == pytest.approx(0.75, rel=1e-5)


def test_supcon_three_samples_by_hand():
    z = torch.tensor([unit(0), unit(90), unit(45)])
    labels = torch.tensor([1, 1, 0])
    # anchors 0 and 1: positive at cos 90 = 0, one negative at cos 45; anchor 2 has no positive
    expected = -math.log(math.exp(0) / (math.exp(0) + math.exp(math.cos(math.radians(45)))))
    assert supcon_loss(z, labels, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # a single negative has weight 1 whatever beta is
    assert supcon_loss(z, labels, temperature=1.0, beta=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_supcon_hard_negative_weights_by_hand():
    z = torch.tensor([unit(0), unit(60), unit(90), unit(180)])
    labels = torch.tensor([1, 1, 0, 0])
    tau, beta = 0.5, 1.0
    anchor0 = torch.tensor([True, False, False, False])
    # anchor 0: s_pos = cos60/tau = 1; negatives s = cos90/tau = 0 and cos180/tau = -2
    s_neg = [0.0, -2.0]
    mean_e = (math.exp(beta * s_neg[0]) + math.exp(beta * s_neg[1])) / 2
    w = [math.exp(beta * s) / mean_e for s in s_neg]  # the hard (more similar) negative counts more
    denom = math.exp(1.0) + w[0] * math.exp(s_neg[0]) + w[1] * math.exp(s_neg[1])
    expected = -math.log(math.exp(1.0) / denom)
    got = supcon_loss(z, labels, temperature=tau, beta=beta, anchors=anchor0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    plain = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.0) + math.exp(-2.0)))
    assert supcon_loss(z, labels, temperature=tau, beta=0.0, anchors=anchor0).item() == pytest.approx(plain)
    assert expected > plain  # up-weighting the hard negative makes the loss larger


def test_supcon_without_positives_is_zero_but_differentiable():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(z, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(torch.isfinite(z.grad))


def test_roi_supcon_uses_only_labelled_rois_and_malignant_anchors():
    emb = torch.tensor([[unit(0), unit(10), unit(120)], [unit(20), unit(200), unit(0)]])
    roi_labels = torch.tensor([[-1, 1, 0], [1, 0, -1]])  # anchors and partial overlaps ignored
    got = roi_supcon_loss(emb, roi_labels, temperature=1.0)
    # malignant RoIs: 10 deg and 20 deg (positives of each other); others: 120, 200 deg
    c = lambda a, b: math.cos(math.radians(a - b))  # noqa: E731
    l10 = -math.log(math.exp(c(10, 20)) / (math.exp(c(10, 20)) + math.exp(c(10, 120)) + math.exp(c(10, 200))))
    l20 = -math.log(math.exp(c(20, 10)) / (math.exp(c(20, 10)) + math.exp(c(20, 120)) + math.exp(c(20, 200))))
    assert got.item() == pytest.approx((l10 + l20) / 2, rel=1e-6)
    # with every labelled RoI as an anchor the two "other" RoIs count too
    both = roi_supcon_loss(emb, roi_labels, temperature=1.0, malignant_anchors_only=False)
    l120 = -math.log(
        math.exp(c(120, 200)) / (math.exp(c(120, 200)) + math.exp(c(120, 10)) + math.exp(c(120, 20)))
    )
    l200 = -math.log(
        math.exp(c(200, 120)) / (math.exp(c(200, 120)) + math.exp(c(200, 10)) + math.exp(c(200, 20)))
    )
    assert both.item() == pytest.approx((l10 + l20 + l120 + l200) / 4, rel=1e-6)


def test_label_rois_by_hand():
    rois = torch.tensor(
        [[0.0, 0, 100, 100], [10, 10, 30, 30], [50, 50, 60, 60], [70, 70, 90, 90], [25, 25, 45, 45]]
    )
    lesions = torch.tensor([[12.0, 12, 28, 28], [70, 70, 90, 90]])
    malignant = torch.tensor([True, False])
    labels = label_rois(rois, lesions, malignant)
    # anchor -> -1; RoI around the malignant lesion -> 1; empty tissue -> 0;
    # exactly on the BENIGN lesion -> 0; RoI [25,45]^2 covers 3x3 of the 16x16 lesion
    # (overlap 9/256 of the smaller box: positive but under 0.5) -> -1 (ignore)
    assert labels.tolist() == [-1, 1, 0, 0, -1]


def _output(logits, emb, mask=None, pooled=None):
    return RoIOutput(
        logits=logits,
        roi_embeddings=emb,
        tokens=emb,
        pooled=pooled if pooled is not None else emb[:, 0],
        roi_mask=mask,
    )


def test_compute_loss_combines_the_parts():
    emb = torch.tensor([[unit(0), unit(60)], [unit(0), unit(90)], [unit(30), unit(120)]])
    out = _output(torch.tensor([0.0, 2.0, -1.0]), emb)
    batch = {"labels": torch.tensor([1, 0, 1]), "roi_labels": torch.tensor([[-1, 1], [-1, 0], [-1, 1]])}
    cfg = LossConfig(pos_weight=3.0, repulsive_weight=0.3, supcon_weight=0.5, roi_supcon_weight=0.2,
                     repulsive_include_anchor=True)
    total, parts = compute_loss(out, batch, cfg)
    assert parts["repulsive"].item() == pytest.approx((0.25 + 0 + 0) / 3, rel=1e-5)
    want = parts["bce"] + 0.3 * parts["repulsive"] + 0.5 * parts["supcon"] + 0.2 * parts["roi_supcon"]
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert parts["bce"].item() == pytest.approx(weighted_bce(out.logits, batch["labels"], 3.0).item())
    assert parts["supcon"].item() > 0 and parts["roi_supcon"].item() > 0
    only_bce, p2 = compute_loss(out, batch, LossConfig(pos_weight=3.0, repulsive_weight=0.0))
    assert set(p2) == {"bce", "total"} and only_bce.item() == pytest.approx(parts["bce"].item())


def test_compute_loss_errors():
    out = _output(torch.zeros(2), torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="labels"):
        compute_loss(out, {}, LossConfig())
    with pytest.raises(ConfigError, match="roi_labels"):
        compute_loss(out, {"labels": torch.tensor([0, 1])}, LossConfig(roi_supcon_weight=1.0))
    with pytest.raises(ConfigError, match="temperature"):
        compute_loss(out, {"labels": torch.tensor([0, 1])}, LossConfig(temperature=0.0))


def test_repulsive_defaults_are_the_reference_s_and_where_it_acts_is_an_option():
    """The reference: on the last block's outputs (tokens), anchor excluded; ours: on the embeddings."""
    cfg = LossConfig()
    assert (cfg.repulsive_on, cfg.repulsive_include_anchor, cfg.repulsive_weight, cfg.pos_weight) == (
        "tokens",
        False,
        0.3,
        10.0,
    )
    # embeddings: 3 RoIs at 0, 0 and 90 degrees; tokens: three orthogonal directions
    emb = torch.stack([torch.tensor([unit(0), unit(0), unit(90)])])  # (1, 3, 2)
    tok = torch.eye(3)[None]  # (1, 3, 3)
    out = RoIOutput(logits=torch.zeros(1), roi_embeddings=emb, tokens=tok, pooled=tok[:, 0])
    batch = {"labels": torch.tensor([0])}
    _, on_tokens = compute_loss(out, batch, LossConfig())
    assert on_tokens["repulsive"].item() == pytest.approx(0.0, abs=1e-7)  # tokens are orthogonal
    _, on_emb = compute_loss(out, batch, LossConfig(repulsive_on="embeddings"))
    assert on_emb["repulsive"].item() == pytest.approx(
        0.0, abs=1e-7
    )  # anchor (index 0) left out: 0 vs 90 degrees
    _, with_anchor = compute_loss(
        out, batch, LossConfig(repulsive_on="embeddings", repulsive_include_anchor=True)
    )
    assert with_anchor["repulsive"].item() == pytest.approx(
        2 / 6, rel=1e-6
    )  # the pair (0, 1) is identical, both orders
    with pytest.raises(ConfigError, match="repulsive_on"):
        LossConfig(repulsive_on="pooled").validate()
