"""Breast segmentation, crop box, orientation and box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from awm_lib.data.breast import PAD, boxes_to_crop, boxes_to_original, segment_breast
from awm_lib.data.image import load_image
from awm_lib.errors import EmptyImageError


def unit(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / a.max()


def test_box_finds_the_breast_and_drops_the_label(breast_phantom):
    pixels, (bx0, by0, bx1, by1) = breast_phantom(256, 200, chest_wall="left")
    crop = segment_breast(unit(pixels), pad=0)
    x0, y0, x1, y1 = crop.box
    assert abs(x0 - bx0) <= 2 and abs(y0 - by0) <= 2 and abs(x1 - bx1) <= 2 and abs(y1 - by1) <= 2
    assert x1 < 200 - 16  # the label square at x >= 184 is outside the box
    assert crop.flipped is False
    assert crop.full_mask().shape == (256, 200)


def test_padding_is_added_and_clipped(breast_phantom):
    pixels, (bx0, by0, bx1, by1) = breast_phantom(256, 200)
    x0, y0, x1, y1 = segment_breast(unit(pixels), pad=PAD).box
    assert x0 == 0  # the breast touches the left edge: padding is clipped
    assert abs(y0 - (by0 - PAD)) <= 2 and abs(x1 - (bx1 + PAD)) <= 2


def test_right_chest_wall_is_flipped_and_crops_match(breast_phantom):
    left, _ = breast_phantom(256, 200, chest_wall="left")
    right = left[:, ::-1]  # the mirror image: chest wall on the right
    cl, cr = segment_breast(unit(left)), segment_breast(unit(right))
    assert cl.flipped is False and cr.flipped is True
    assert cr.box == (200 - cl.box[2], cl.box[1], 200 - cl.box[0], cl.box[3])
    assert np.array_equal(cr.crop(unit(right)), cl.crop(unit(left)))  # same oriented crop


def test_box_mapping_hand_computed_and_round_trip():
    box, flipped = (10, 20, 110, 220), True  # crop width 100
    b = np.array([[30.0, 40.0, 50.0, 60.0]])
    # shift by (10, 20) -> [20, 20, 40, 40]; mirror x -> 100 - x: [60, 20, 80, 40]
    assert np.array_equal(boxes_to_crop(b, box, flipped), [[60.0, 20.0, 80.0, 40.0]])
    rng = np.random.default_rng(0)
    many = np.sort(rng.integers(0, 400, (50, 4)), axis=1)[:, [0, 2, 1, 3]] / 4.0  # xyxy, quarter pixels
    for f in (False, True):
        assert np.array_equal(boxes_to_original(boxes_to_crop(many, box, f), box, f), many)


def test_cropped_box_marks_the_same_pixels(breast_phantom):
    pixels, _ = breast_phantom(128, 100, chest_wall="right")
    img = unit(pixels)
    crop = segment_breast(img)
    x0, y0, x1, y1 = crop.box
    bx, by = x0 + 7, y0 + 20  # a 3x2 pixel box inside the crop
    orig = np.array([[bx, by, bx + 3, by + 2]], dtype=float)
    cx0, cy0, cx1, cy1 = crop.to_crop(orig)[0].astype(int)
    assert np.array_equal(crop.crop(img)[cy0:cy1, cx0:cx1], img[by : by + 2, bx : bx + 3][:, ::-1])


def test_large_image_uses_the_downsampled_path(breast_phantom):
    pixels, (bx0, by0, bx1, by1) = breast_phantom(2048, 1600, chest_wall="right")
    crop = segment_breast(unit(pixels), pad=0)
    assert crop.step == 4 and crop.flipped is True
    x0, y0, x1, y1 = crop.box
    assert abs(x0 - bx0) <= 8 and abs(y0 - by0) <= 8 and abs(x1 - bx1) <= 8 and abs(y1 - by1) <= 8


def test_constant_and_speck_images_have_no_breast():
    with pytest.raises(EmptyImageError):
        segment_breast(np.zeros((64, 64), dtype=np.float32))
    speck = np.zeros((200, 200), dtype=np.float32)
    speck[100:103, 100:103] = 1.0
    with pytest.raises(EmptyImageError):
        segment_breast(speck)


@pytest.mark.parametrize("ref", ["mdb001", "mdb002", "mdb023", "mdb184", "mdb209", "mdb271"])
def test_mini_mias_orientation_and_lesion_inside(mias_root, ref):
    from awm_lib.data.mias import load_mias

    sample = next(s for s in load_mias(mias_root) if s.image_id == ref)
    crop = segment_breast(load_image(sample.path).pixels)
    assert crop.flipped == (sample.laterality == "R")  # right breasts have the chest wall on the right
    x0, y0, x1, y1 = crop.box
    assert (x1 - x0) * (y1 - y0) < 0.8 * 1024 * 1024  # background, labels and film edges dropped
    for les in sample.lesions:
        if les.center is not None:
            cx, cy = les.center
            assert x0 <= cx <= x1 and y0 <= cy <= y1


def test_otsu_threshold_splits_two_clusters_between_them():
    from awm_lib.data.breast import otsu_threshold

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(10, 0.5, 500), rng.normal(30, 0.5, 300)])
    for bins in (64, 256):  # the proposer's and the breast mask's histograms
        t = otsu_threshold(x, bins=bins)
        assert x[:500].mean() < t < x[500:].min()  # above the dark cluster's centre, below the bright one
        assert 300 <= (x > t).sum() <= 302  # within one bin of the gap: at most the top dark points
