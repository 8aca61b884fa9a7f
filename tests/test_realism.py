"""Realism measures, checked on constructed images, then synthetic vs mini-MIAS."""

from __future__ import annotations

import numpy as np
import pytest

from awm_lib.data import realism
from awm_lib.data.synth_texture import power_law_noise
from awm_lib.paths import mias_root


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_slope_of_constructed_power_law_noise(beta):
    """Noise made with P(f) ~ f**-beta gives back beta (averaged over patches)."""
    rng = np.random.default_rng(0)
    field = power_law_noise((512, 512), beta, rng, pixel_mm=0.2, largest_mm=1e6)
    slopes = [
        realism.spectrum_slope(field[y : y + 128, x : x + 128], 0.2)
        for y in range(0, 512, 128)
        for x in range(0, 512, 128)
    ]
    assert np.mean(slopes) == pytest.approx(beta, abs=0.25)


def test_slope_does_not_depend_on_pixel_size_for_the_same_anatomy():
    rng = np.random.default_rng(1)
    field = power_law_noise((256, 256), 3.0, rng, pixel_mm=0.1, largest_mm=1e6)
    fine = realism.spectrum_slope(field, 0.1)
    coarse = realism.spectrum_slope(field.reshape(128, 2, 128, 2).mean((1, 3)), 0.2)
    assert coarse == pytest.approx(fine, abs=0.3)


def test_breast_mask_drops_labels_and_keeps_the_breast():
    img = np.zeros((200, 200), np.float32)
    yy, xx = np.mgrid[:200, :200]
    img[(xx / 120.0) ** 2 + ((yy - 100) / 80.0) ** 2 < 1] = 0.6  # breast against the left edge
    img[10:30, 170:190] = 1.0  # a bright film label
    mask = realism.breast_mask(img)
    assert mask[100, 50] and not mask[20, 180] and not mask[100, 190]


def test_histogram_distances():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.6, 5000)
    assert realism.histogram_distance(a, a) == {"wasserstein": 0.0, "ks": 0.0}
    d = realism.histogram_distance(a, a + 0.1)
    assert d["wasserstein"] == pytest.approx(0.1, abs=1e-9)
    assert d["ks"] == pytest.approx(0.25, abs=0.03)  # a shift of 0.1 over a width of 0.4


def test_synthetic_vs_mini_mias(capsys):
    """Both datasets' tissue spectra are power laws with beta in the realistic band; the gap is stated."""
    cmp = realism.compare_with_mias(n_mias=12, n_synth=4, size=1024, seed=0, mias_root=mias_root())
    table = realism.format_comparison(cmp)
    with capsys.disabled():
        print("\n" + table)
    real, synth = cmp["mini_mias"], cmp["synthetic"]
    assert real["n_images"] == 12 and synth["n_images"] == 4
    assert real["n_patches"] >= 12 and synth["n_patches"] >= 8
    assert 2.0 <= synth["slope_mean"] <= 4.0
    assert 2.0 <= real["slope_mean"] <= 4.0  # the literature's ~3 holds for mini-MIAS too
    assert cmp["slope_gap"] == pytest.approx(synth["slope_mean"] - real["slope_mean"])
    # the gap is smaller than the spread of slopes between patches of real images
    assert abs(cmp["slope_gap"]) < 2 * real["slope_sd"]
    dist = cmp["histogram_distance"]
    assert 0.0 < dist["wasserstein"] < 0.25 and 0.0 < dist["ks"] < 1.0
    assert np.sum(real["histogram"]) * (1 / realism.N_BINS) == pytest.approx(1.0)
