"""Position codes: hand-computed sine features; RoPE-2D sees only relative positions."""

import math

import pytest
import torch

from awm_lib.errors import ConfigError
from awm_lib.model.position import (
    apply_rope,
    boxes_to_cxcywh_norm,
    check_mode,
    rope1d_angles,
    rope2d_angles,
    rope_angles,
    sine_box_embedding,
)


def test_boxes_to_normalised_cxcywh():
    boxes = torch.tensor([[[10.0, 20.0, 30.0, 60.0]]])
    out = boxes_to_cxcywh_norm(boxes, torch.tensor([[100, 50]]))  # H=100, W=50
    assert torch.allclose(out, torch.tensor([[[20 / 50, 40 / 100, 20 / 50, 40 / 100]]]))


def test_sine_embedding_by_hand():
    box = torch.tensor([[[0.25, 0.5, 0.125, 1.0]]])
    code = sine_box_embedding(box, dim=16)[0, 0]  # 4 features per coordinate
    expected = []
    for c in box[0, 0].tolist():
        a = 2 * math.pi * c
        # frequencies 1, 1, 1/100, 1/100 (10000 ** (2 * (i // 2) / 4)); sin on even, cos on odd
        expected += [math.sin(a), math.cos(a), math.sin(a / 100), math.cos(a / 100)]
    assert torch.allclose(code, torch.tensor(expected), atol=1e-6)
    assert code[0].item() == pytest.approx(1.0)  # sin(pi/2)
    with pytest.raises(ConfigError):
        sine_box_embedding(box, dim=12)


def _logits(q, k, angles):
    return apply_rope(q, angles[:, None]) @ apply_rope(k, angles[:, None]).transpose(-1, -2)


def test_rope2d_logits_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 5, 16, generator=g), torch.randn(2, 3, 5, 16, generator=g)
    centres = torch.rand(2, 5, 2, generator=g)
    base = _logits(q, k, rope2d_angles(centres, 16))
    shifted = _logits(q, k, rope2d_angles(centres + torch.tensor([0.31, -0.17]), 16))
    assert torch.allclose(base, shifted, atol=1e-4)
    moved = centres.clone()
    moved[:, 2] += torch.tensor([0.2, 0.0])  # one box moves relative to the others
    assert not torch.allclose(base, _logits(q, k, rope2d_angles(moved, 16)), atol=1e-3)
    # rotations keep lengths
    assert torch.allclose(
        apply_rope(q, rope2d_angles(centres, 16)[:, None]).norm(dim=-1), q.norm(dim=-1), atol=1e-5
    )


def test_rope2d_uses_x_for_first_half_and_y_for_second():
    angles = rope2d_angles(torch.tensor([[[0.5, 0.0]]]), head_dim=8, min_wavelength=0.5, max_wavelength=2.0)
    # two pairs per axis: wavelengths 0.5 and 2.0 -> angles 2*pi*0.5/0.5 and 2*pi*0.5/2 for x, 0 for y
    assert torch.allclose(angles[0, 0], torch.tensor([2 * math.pi, math.pi / 2, 0.0, 0.0]), atol=1e-6)


def test_rope1d_by_hand_and_blind_to_geometry():
    a = rope1d_angles(3, head_dim=4, base=100.0)
    assert torch.allclose(a, torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]]), atol=1e-6)
    boxes = torch.rand(1, 3, 4)
    far = boxes.clone()
    far[:, 1, :2] += 0.5
    assert torch.equal(rope_angles("rope1d_index", boxes, 8), rope_angles("rope1d_index", far, 8))
    assert not torch.equal(rope_angles("rope2d", boxes, 8), rope_angles("rope2d", far, 8))


def test_modes():
    assert rope_angles("none", torch.rand(1, 2, 4), 8) is None
    assert rope_angles("sine", torch.rand(1, 2, 4), 8) is None
    assert rope_angles("sine+rope2d", torch.rand(1, 2, 4), 8).shape == (1, 2, 4)
    boxes = torch.rand(2, 5, 4)
    torch.testing.assert_close(rope_angles("sinecat+rope1d", boxes, 8), rope_angles("rope1d_index", boxes, 8))
    assert rope_angles("sinecat", boxes, 8) is None  # the reference's concatenated code alone
    with pytest.raises(ConfigError, match="position=.* is unknown"):
        check_mode("rope3d")
    with pytest.raises(ConfigError, match="divisible by 4"):
        rope2d_angles(torch.rand(1, 2, 2), 6)
