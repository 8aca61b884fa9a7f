"""RoI crops: exact pixels on the grid, exact area averages when shrinking, zeros outside."""

import pytest
import torch

from awm_lib.errors import ConfigError
from awm_lib.model.crops import IMAGENET_MEAN, IMAGENET_STD, extract_rois, sample_boxes

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: compare pixels


def test_box_on_pixel_grid_at_its_own_size_reproduces_pixels():
    img = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 64
    boxes = torch.tensor([[[2.0, 3.0, 6.0, 7.0]]])  # x 2..6, y 3..7
    crop = extract_rois(img, boxes, crop_size=4, **RAW)
    assert crop.shape == (1, 1, 3, 4, 4)
    for c in range(3):  # grey replicated to 3 channels
        assert torch.allclose(crop[0, 0, c], img[0, 0, 3:7, 2:6], atol=1e-6)


def test_normalisation_uses_imagenet_statistics():
    img = torch.full((1, 1, 14, 14), 0.5)
    crop = extract_rois(img, torch.tensor([[[0.0, 0.0, 14.0, 14.0]]]), crop_size=14)
    for c in range(3):
        expected = (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(crop[0, 0, c], torch.full((14, 14), expected), atol=1e-6)


def test_halving_gives_exact_2x2_block_means():
    img = torch.rand(1, 1, 8, 8)
    crop = extract_rois(img, torch.tensor([[[0.0, 0.0, 8.0, 8.0]]]), crop_size=4, **RAW)
    blocks = img.view(4, 2, 4, 2).mean(dim=(1, 3))  # hand-computed 2x2 means
    assert torch.allclose(crop[0, 0, 0], blocks, atol=1e-6)


@pytest.mark.parametrize("box_size", [32.0, 24.0, 20.0])  # shrink 4x, 3x, 2.5x
def test_antialiasing_turns_a_checkerboard_grey(box_size):
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((yy + xx) % 2).float().view(1, 1, 32, 32)  # finest possible texture, mean 0.5
    boxes = torch.tensor([[[0.0, 0.0, box_size, box_size]]])
    good = extract_rois(board, boxes, crop_size=8, **RAW)[0, 0, 0]
    assert torch.allclose(good, torch.full((8, 8), 0.5), atol=1e-5)  # the texture's mean
    if box_size != 32.0:  # (at exactly 4x bilinear points fall on pixel corners: grey by luck)
        naive = extract_rois(board, boxes, crop_size=8, antialias=False, **RAW)[0, 0, 0]
        assert (naive - 0.5).abs().max() > 0.1  # one point per output pixel: aliasing


def test_bright_edge_stays_bright_when_shrinking():
    img = torch.ones(1, 1, 30, 30)  # tissue touching the image border (the chest wall)
    crop = extract_rois(img, torch.tensor([[[0.0, 0.0, 30.0, 30.0]]]), crop_size=8, **RAW)
    assert torch.allclose(crop, torch.ones_like(crop), atol=1e-6)


def test_outside_the_image_is_zero():
    img = torch.ones(1, 1, 8, 8)
    crop = extract_rois(img, torch.tensor([[[-4.0, -4.0, 4.0, 4.0]]]), crop_size=8, **RAW)[0, 0, 0]
    assert torch.all(crop[:4, :4] == 0) and torch.all(crop[:4, 4:] == 0) and torch.all(crop[4:, :4] == 0)
    assert torch.allclose(crop[4:, 4:], torch.ones(4, 4))
    # shrinking 2x a box that sticks out: cells outside are 0, cells inside 1
    big = extract_rois(torch.ones(1, 1, 16, 16), torch.tensor([[[-16.0, -16.0, 16.0, 16.0]]]), 16, **RAW)
    expected = torch.zeros(16, 16)
    expected[8:, 8:] = 1
    assert torch.allclose(big[0, 0, 0], expected, atol=1e-6)


def test_batched_equals_one_box_at_a_time():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 1, 40, 30, generator=g)
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 30.0, 40.0], [3.5, 7.25, 17.5, 21.25], [20.0, 30.0, 34.0, 44.0]],
            [[0.0, 0.0, 30.0, 40.0], [1.0, 2.0, 9.0, 10.0], [10.0, 5.0, 25.0, 15.0]],
        ]
    )
    batched = extract_rois(imgs, boxes, crop_size=14)
    assert batched.shape == (2, 3, 3, 14, 14)
    for b in range(2):
        for k in range(3):
            one = extract_rois(imgs[b : b + 1], boxes[b : b + 1, k : k + 1], crop_size=14)
            assert torch.allclose(batched[b, k], one[0, 0], atol=1e-5)
    assert not torch.allclose(batched[0, 1], batched[1, 1])  # each box reads its own image


def test_raw_counts_divided_by_max_value():
    raw = torch.randint(0, 4096, (1, 1, 16, 16), dtype=torch.int32)
    boxes = torch.tensor([[[2.0, 2.0, 12.0, 12.0]]])
    a = extract_rois(raw, boxes, 10, max_value=4095.0)
    b = extract_rois(raw.float() / 4095.0, boxes, 10)
    assert torch.allclose(a, b, atol=1e-6)


def test_three_channel_input_and_non_square_output():
    img = torch.rand(1, 3, 10, 12)
    out = sample_boxes(img, torch.tensor([[[0.0, 0.0, 12.0, 10.0]]]), (10, 12))
    assert out.shape == (1, 1, 3, 10, 12) and torch.allclose(out[0, 0], img, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ConfigError, match="images"):
        extract_rois(torch.rand(1, 8, 8), torch.zeros(1, 1, 4), 4)
    with pytest.raises(ConfigError, match="boxes"):
        extract_rois(torch.rand(2, 1, 8, 8), torch.zeros(1, 1, 4), 4)
