"""The synthetic mammogram generator: determinism, ranges, anatomy, findings, labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from awm_lib.data.synth_findings import FindingSpec, render_finding, sample_finding
from awm_lib.data.synthetic import (
    FIELD_MM,
    BreastSpec,
    SynthConfig,
    generate_mammogram,
    render_view,
    sample_breast,
)
from awm_lib.errors import ConfigError

H = 384  # small images keep the tests fast; pixel size is then ~0.78 mm


def _cfg(**kw) -> SynthConfig:
    return SynthConfig(height=kw.pop("height", H), **kw)


def test_same_seed_same_image_other_seed_other_image():
    a = generate_mammogram(_cfg(view="MLO", malignant=True), seed=5)
    b = generate_mammogram(_cfg(view="MLO", malignant=True), seed=5)
    c = generate_mammogram(_cfg(view="MLO", malignant=True), seed=6)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.pixels, c.pixels)
    rng_a = generate_mammogram(_cfg(), np.random.default_rng(9))
    rng_b = generate_mammogram(_cfg(), 9)
    assert np.array_equal(rng_a.pixels, rng_b.pixels)


@pytest.mark.parametrize("bits", [12, 14])
def test_shape_dtype_and_bit_range(bits):
    m = generate_mammogram(_cfg(bits_stored=bits), seed=1)
    assert m.pixels.shape == (H, round(H * 2800 / 3518)) == m.mask.shape
    assert m.pixels.dtype == np.uint16
    assert m.pixels.max() <= 2**bits - 1
    assert m.bits_stored == bits
    # MONOCHROME2: breast bright, background dark and near zero
    assert m.pixels[m.mask].mean() > 5 * m.pixels[~m.mask].mean()
    assert m.pixels[~m.mask].mean() < 0.05 * (2**bits - 1)
    assert m.pixel_mm == pytest.approx(FIELD_MM / H)


def test_full_field_geometry_without_rendering():
    cfg = SynthConfig(height=3518)
    assert (cfg.height, cfg.width) == (3518, 2800)
    assert cfg.pixel_mm == pytest.approx(0.085)


@pytest.mark.parametrize(
    "kw",
    [
        dict(view="ML"),
        dict(laterality="X"),
        dict(density="E"),
        dict(bits_stored=20),
        dict(difficulty=1.5),
        dict(height=10),
    ],
)
def test_bad_config_raises_config_error(kw):
    with pytest.raises(ConfigError):
        SynthConfig(**kw)


def test_right_breast_is_the_mirror_image_of_the_left():
    spec = sample_breast(_cfg(malignant=True, n_benign=1), np.random.default_rng(3))
    left = render_view(spec, _cfg(laterality="L", view="CC"))
    right = render_view(spec, _cfg(laterality="R", view="CC"))
    w = left.pixels.shape[1]
    assert np.array_equal(right.pixels, left.pixels[:, ::-1])
    for a, b in zip(left.lesions, right.lesions):
        assert b.box == pytest.approx((w - a.box[2], a.box[1], w - a.box[0], a.box[3]))
    # display convention: a left breast's chest wall is the image's left edge
    cols = left.mask.sum(0)
    assert cols[:5].mean() > cols[-5:].mean()


def _corner_and_tissue(m):
    """Mean of the upper corner at the chest wall, and of the rest of the breast."""
    h, w = m.pixels.shape
    cols = slice(0, w // 10) if m.laterality == "L" else slice(w - w // 10, w)
    corner = m.pixels[: h // 8, cols].astype(float).mean()
    lower = m.mask.copy()
    lower[: h // 2] = False
    return corner, m.pixels[lower].astype(float).mean()


@pytest.mark.parametrize("lat", ["L", "R"])
def test_mlo_has_a_bright_pectoral_corner_and_cc_does_not(lat):
    mlo = generate_mammogram(_cfg(view="MLO", laterality=lat, density="B"), seed=2)
    cc = generate_mammogram(_cfg(view="CC", laterality=lat, density="B"), seed=2)
    corner, tissue = _corner_and_tissue(mlo)
    assert mlo.pectoral is not None and mlo.pectoral.any()
    assert corner > 1.15 * tissue
    corner_cc, tissue_cc = _corner_and_tissue(cc)
    assert cc.pectoral is None
    assert corner_cc < tissue_cc


def test_density_orders_fibroglandular_fraction_and_brightness():
    fractions, brightness = [], []
    for d in "ABCD":
        m = generate_mammogram(_cfg(density=d, malignant=False, n_benign=0), seed=4)
        assert m.density == d
        fractions.append(m.fibroglandular_fraction)
        brightness.append(m.pixels[m.mask].mean())
    assert fractions == sorted(fractions) and len(set(fractions)) == 4
    assert brightness == sorted(brightness)


def test_malignant_finding_iff_label_one_and_birads_rule():
    seen = set()
    for seed in range(12):
        m = generate_mammogram(_cfg(p_malignant=0.5, p_benign=0.6), seed=seed)
        has_malignant = any(les.malignant for les in m.lesions)
        assert m.label == int(has_malignant)
        assert (m.breast_birads >= 4) == has_malignant
        if not m.lesions:
            assert m.breast_birads == 1
        for les in m.lesions:
            assert (les.birads >= 4) == les.malignant
        seen.add(m.label)
    assert seen == {0, 1}


def test_lesions_lie_inside_the_breast_and_are_small():
    for seed in range(6):
        m = generate_mammogram(
            _cfg(height=512, malignant=True, n_benign=2, view="MLO" if seed % 2 else "CC"), seed=seed
        )
        breast_area = m.mask.sum()
        assert len(m.lesions) == 3
        for les in m.lesions:
            x0, y0, x1, y1 = les.box
            assert 0 <= x0 < x1 <= m.pixels.shape[1] and 0 <= y0 < y1 <= m.pixels.shape[0]
            assert m.mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].all()
            assert (x1 - x0) * (y1 - y0) < 0.06 * breast_area
            if m.pectoral is not None:
                assert not m.pectoral[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].any()


def test_finding_sizes_are_physical():
    """Masses 5-30 mm and calcification clusters of a few mm, whatever the resolution."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        f = sample_finding(rng, malignant=bool(rng.random() < 0.5), lookalike=False, difficulty=0.3)
        if f.kind in ("mass", "spiculated_mass"):
            assert 5 <= f.size_mm <= 30
        if f.kind == "calcification":
            assert 3 <= f.size_mm <= 20
    mass = FindingSpec("mass", False, 2, False, 10.0, 0.15, 0.0, 0, 0.5, 0.0, 0.0, seed=1)
    for pixel_mm in (0.1, 0.2):
        patch = render_finding(mass, pixel_mm)
        width_mm = (patch.box[2] - patch.box[0]) * pixel_mm
        assert 9 <= width_mm <= 16  # 10 mm diameter, up to 1.5 elongation, a small margin


def test_lookalikes_are_benign_and_difficulty_fades_the_malignant_cue():
    rng = np.random.default_rng(1)
    looks = [sample_finding(rng, malignant=False, lookalike=True, difficulty=0.8) for _ in range(20)]
    assert all(not f.malignant and f.birads == 3 and f.lookalike for f in looks)

    def mean_contrast(d):
        r = np.random.default_rng(2)
        return np.mean(
            [sample_finding(r, malignant=True, lookalike=False, difficulty=d).contrast for _ in range(200)]
        )

    assert mean_contrast(0.9) < 0.7 * mean_contrast(0.0)


def test_a_finding_shows_in_both_views_of_its_breast():
    cfg = _cfg(height=512, malignant=True, n_benign=0)
    spec = sample_breast(cfg, np.random.default_rng(11))
    cc, mlo = (render_view(spec, replace(cfg, view=v)) for v in ("CC", "MLO"))
    assert [les.kind for les in cc.lesions] == [les.kind for les in mlo.lesions] == [spec.findings[0].kind]
    assert cc.label == mlo.label == 1 and cc.breast_birads == mlo.breast_birads


def test_breast_spec_rules():
    f = FindingSpec("calcification", True, 4, False, 8.0, 0.4, 0.9, 20, 0.5, 0.0, 0.0, seed=3)
    assert BreastSpec("C", 0.4, (), 0).birads == 1
    assert BreastSpec("C", 0.4, (f,), 0).label == 1
