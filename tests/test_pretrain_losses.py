"""DINO / iBOT losses, centering, EMA and schedules against hand-computed values."""

import math

import torch
import torch.nn as nn

from awm_lib.optim import warmup_cosine
from awm_lib.pretrain.dino import (
    DINOHead,
    cosine_schedule,
    dino_loss,
    ema_update,
    entropy,
    ibot_loss,
    random_patch_masks,
    teacher_probs,
    teacher_temperature,
    update_center,
)


def test_uniform_teacher_gives_logsumexp_minus_mean():
    # teacher logits all equal -> p_t uniform -> CE = logsumexp(s/T) - mean(s/T) for each pair
    K, B = 5, 3
    t = torch.zeros(2, B, K)
    p = teacher_probs(t, torch.zeros(K), temp=0.04)
    assert torch.allclose(p, torch.full_like(p, 1 / K))
    s = torch.tensor([0.1, -0.3, 0.5, 0.0, 0.2]).expand(4, B, K)  # 2 global + 2 local views
    T = 0.1
    expected = torch.logsumexp(s[0, 0] / T, 0) - (s[0, 0] / T).mean()
    assert torch.allclose(dino_loss(s, p, T), expected, atol=1e-6)
    # a uniform student too: exactly log K
    assert math.isclose(dino_loss(torch.zeros(4, B, K), p, T).item(), math.log(K), rel_tol=1e-6)


def test_dino_loss_skips_same_view_pairs():
    # 2 global views; the teacher is one-hot on prototype 0 for view 0 and on 1 for view 1.
    p = torch.tensor([[[1.0, 0, 0]], [[0, 1.0, 0]]])  # (2, 1, K=3)
    s = torch.tensor(
        [[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]
    )  # (2, 1, K): each student view predicts the OTHER
    T = 1.0
    ls = torch.log_softmax(s / T, -1)
    # pairs (t=0, s=1) and (t=1, s=0) only
    expected = -(ls[1, 0, 0] + ls[0, 0, 1]) / 2
    assert torch.allclose(dino_loss(s, p, T), expected)
    # had the same-view pairs counted, the loss would differ
    with_same = -(ls[1, 0, 0] + ls[0, 0, 1] + ls[0, 0, 0] + ls[1, 0, 1]) / 4
    assert not torch.allclose(expected, with_same)


def test_centering_and_sharpening():
    c = torch.tensor([1.0, 2.0])
    t = torch.tensor([[[3.0, 5.0]], [[1.0, 3.0]]])  # mean over views/images = (2, 4)
    new = update_center(c, t, momentum=0.9)
    assert torch.allclose(new, torch.tensor([0.9 * 1 + 0.1 * 2, 0.9 * 2 + 0.1 * 4]))
    assert torch.allclose(update_center(c, t, 1.0), c)
    assert torch.allclose(update_center(c, t, 0.0), torch.tensor([2.0, 4.0]))
    # p = softmax((t - c) / T) by hand, and a lower T is sharper
    p = teacher_probs(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), temp=0.5)
    e = math.exp(2.0)
    assert torch.allclose(p, torch.tensor([e / (e + 1), 1 / (e + 1)]))
    sharp = teacher_probs(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), temp=0.1)
    assert entropy(sharp) < entropy(p)


def test_ibot_loss_averages_per_view_then_over_views():
    K = 2
    masks = torch.tensor([[True, True, False], [False, False, False], [True, False, False]])  # 3 views
    # view 0 has two masked patches with CEs a, b; view 2 one with CE c; view 1 none
    s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # (M=3, K), row-major order
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ce = -(p * torch.log_softmax(s, -1)).sum(-1)
    expected = ((ce[0] + ce[1]) / 2 + ce[2]) / 2
    assert torch.allclose(ibot_loss(s, p, masks, 1.0), expected)
    # no masked patch at all -> 0 (and differentiable)
    z = torch.zeros(0, K, requires_grad=True)
    out = ibot_loss(z, torch.zeros(0, K), torch.zeros(2, 3, dtype=torch.bool), 0.1)
    assert out.item() == 0.0 and out.requires_grad


def test_random_patch_masks_exact_counts():
    g = torch.Generator().manual_seed(0)
    m = random_patch_masks(50, 100, ratio=(0.2, 0.2), probability=1.0, generator=g)
    assert m.shape == (50, 100) and (m.sum(1) == 20).all()
    m0 = random_patch_masks(10, 100, probability=0.0, generator=g)
    assert not m0.any()


def test_ema_update_extremes_and_midpoint():
    torch.manual_seed(0)
    s, t = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.clone() for p in t.parameters()]
    ema_update(t, s, 1.0)  # momentum 1 keeps the teacher
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), t0))
    ema_update(t, s, 0.5)
    assert all(torch.allclose(a, (b + c) / 2) for a, b, c in zip(t.parameters(), t0, s.parameters()))
    ema_update(t, s, 0.0)  # momentum 0 copies the student
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), s.parameters()))


def test_schedules():
    assert cosine_schedule(0.0, 0.996, 1.0) == 0.996
    assert math.isclose(cosine_schedule(1.0, 0.996, 1.0), 1.0)
    assert math.isclose(cosine_schedule(0.5, 0.0, 1.0), 0.5)
    assert math.isclose(
        warmup_cosine(0.05, total=1.0, warmup=0.1, peak=1.0, end=0.0), 0.5
    )  # half-way through warm-up
    assert math.isclose(warmup_cosine(0.1, total=1.0, warmup=0.1, peak=1.0, end=0.0), 1.0)  # peak
    assert math.isclose(warmup_cosine(1.0, total=1.0, warmup=0.1, peak=1.0, end=0.0), 0.0)
    assert math.isclose(teacher_temperature(0.15, 0.04, 0.07, 0.3), 0.055)
    assert teacher_temperature(0.9, 0.04, 0.07, 0.3) == 0.07


def test_head_outputs_are_cosines_of_normalised_prototypes():
    torch.manual_seed(0)
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=6)
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 16)
    assert out.abs().max() <= 1 + 1e-5
    # scaling a prototype does not change the logits (weight normalisation)
    x = torch.randn(2, 8)
    before = head(x)
    with torch.no_grad():
        head.prototypes[4] *= 3.0
    assert torch.allclose(before, head(x), atol=1e-6)
