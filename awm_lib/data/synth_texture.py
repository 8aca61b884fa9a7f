"""The normal breast of a synthetic mammogram: outline, thickness, texture, muscle.

Everything here is drawn in a *canonical* orientation: the chest wall is the
image's LEFT edge (x = 0) and the nipple points right. :mod:`awm_lib.data.synthetic`
flips the finished image for the breasts that the display convention puts the
other way round.

The ingredients, in the order a radiologist would name them:

- **Outline** (:func:`breast_outline`): a super-ellipse against the chest wall. On
  MLO views the upper half is stretched so the breast runs up into the axilla
  and reaches the top edge of the image.
- **Thickness** (:func:`edge_thickness`): a compressed breast has a rounded edge,
  so the projected tissue thickness falls off over the last ~2 cm before the
  skin. That is why the periphery of a mammogram is darker.
- **Fibroglandular texture** (:func:`power_law_noise`, :func:`glandular_map`):
  real breast tissue has a power spectrum ``P(f) ∝ 1 / f**beta`` with ``beta``
  near 3 (Burgess et al., Med. Phys. 2001). Gaussian noise filtered to that
  spectrum and passed through a soft threshold gives blobs of dense tissue in
  fat whose area fraction is the BI-RADS density.
- **Cooper's ligaments** (:func:`ligament_network`): the zero-level lines of a
  band-pass random field form closed, curving lines around fat lobules -- the
  thin bright network that is most visible in fatty breasts.
- **Vessels** (:func:`draw_curves`): a few thin meandering tubes from the chest
  wall towards the nipple.
- **Pectoral muscle** (:func:`pectoral_mask`): on MLO views, a bright triangle in
  the upper corner at the chest wall.

All arrays are float32; sizes are given in millimetres and converted with the
image's pixel size, so the same breast looks the same at any resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi


def _fast_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """FFT-friendly sizes >= shape (3518 = 2 x 1759, a prime, would be slow)."""
    return (sfft.next_fast_len(shape[0], real=True), sfft.next_fast_len(shape[1], real=True))


def _spectral_field(shape, rng, filt) -> np.ndarray:
    """Real Gaussian random field whose amplitude spectrum is ``filt(fy, fx)`` (cycles/px)."""
    ph, pw = _fast_shape(shape)
    fy = np.fft.fftfreq(ph).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(pw).astype(np.float32)[None, :]
    amp = filt(fy, fx).astype(np.float32)
    spec = rng.standard_normal((ph, pw // 2 + 1), dtype=np.float32) + 1j * rng.standard_normal(
        (ph, pw // 2 + 1), dtype=np.float32
    )
    spec *= amp
    field = sfft.irfft2(spec, s=(ph, pw))[: shape[0], : shape[1]]
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32, copy=False)


def power_law_noise(shape, beta, rng, *, pixel_mm=0.1, largest_mm=60.0, stretch=1.0) -> np.ndarray:
    """Zero-mean, unit-sd noise with power spectrum ``1 / f**beta`` (f in cycles/px).

    ``largest_mm`` rolls the spectrum off below ``1 / largest_mm`` so the field
    has no structure bigger than a breast; ``stretch > 1`` elongates structures
    along x (towards the nipple), as ducts and trabeculae are.
    """
    f0 = pixel_mm / largest_mm

    def filt(fy, fx):
        f2 = (fx / stretch) ** 2 + fy**2 + f0**2
        return f2 ** (-beta / 4.0)  # amplitude = sqrt(power)

    return _spectral_field(shape, rng, filt)


def band_noise(shape, scale_mm, rng, *, pixel_mm=0.1, stretch=1.0) -> np.ndarray:
    """Unit-sd noise concentrated at one spatial scale (a ring in frequency)."""
    fc = pixel_mm / scale_mm

    def filt(fy, fx):
        f = np.sqrt((fx / stretch) ** 2 + fy**2)
        return np.exp(-0.5 * ((f - fc) / (0.5 * fc)) ** 2)

    return _spectral_field(shape, rng, filt)


def smooth_1d(n, rng, *, correlation=0.1) -> np.ndarray:
    """A smooth random curve of length ``n`` (unit sd), for wobbly outlines."""
    sigma = max(1.0, correlation * n)
    x = ndi.gaussian_filter1d(rng.standard_normal(n + int(6 * sigma)), sigma)[
        int(3 * sigma) : int(3 * sigma) + n
    ]
    return (x / (x.std() + 1e-12)).astype(np.float32)


# --- outline and thickness ---------------------------------------------------
def breast_outline(height, width, view, rng) -> np.ndarray:
    """``x_edge[y]``: the breast occupies ``x < x_edge[y]`` in each row (canonical orientation)."""
    y = np.arange(height, dtype=np.float32)
    depth = width * rng.uniform(0.58, 0.80)  # chest wall to nipple
    p = rng.uniform(1.8, 2.4)  # super-ellipse exponent: 2 = ellipse, lower = more pointed
    if view == "CC":
        cy = height * rng.uniform(0.46, 0.54)
        b_up, b_down = height * rng.uniform(0.33, 0.43), height * rng.uniform(0.33, 0.43)
    else:  # MLO: the upper half runs into the axilla, past the top of the image
        cy = height * rng.uniform(0.52, 0.60)
        b_up, b_down = cy + height * rng.uniform(0.10, 0.25), height * rng.uniform(0.30, 0.38)
        p = rng.uniform(1.6, 2.0)
    t = np.where(y < cy, (cy - y) / b_up, (y - cy) / b_down)
    x_edge = depth * np.clip(1.0 - np.clip(t, 0, 1) ** p, 0, 1) ** (1.0 / p)
    x_edge *= 1.0 + 0.025 * smooth_1d(height, rng, correlation=0.08)
    return np.clip(x_edge, 0, width - 2).astype(np.float32)


def outline_mask(x_edge, width) -> np.ndarray:
    return np.arange(width, dtype=np.float32)[None, :] < x_edge[:, None]


def skin_distance_mm(mask, pixel_mm, *, view, cap_mm=50.0) -> np.ndarray:
    """Distance (mm) from each breast pixel to the skin, capped at ``cap_mm``.

    The chest wall (left edge) and, on MLO, the top edge are where the breast
    leaves the image, not skin: we pad the mask there so they do not count.
    Computed on a coarse grid (~2 mm cells are plenty for a 2 cm fall-off) and
    interpolated back up, which keeps it fast at 3518 x 2800.
    """
    h, w = mask.shape
    step = max(1, int(round(1.0 / pixel_mm)))  # ~1 mm cells
    small = mask[::step, ::step]
    pad = int(cap_mm / (pixel_mm * step)) + 2
    top = pad if view == "MLO" else 0
    padded = np.pad(small, ((top, 0), (0, 0)), mode="edge")
    padded = np.pad(padded, ((0, 0), (pad, 0)), mode="edge")
    dist = ndi.distance_transform_edt(padded)[top:, pad:] * (pixel_mm * step)
    dist = np.minimum(dist, cap_mm).astype(np.float32)
    big = upsample(dist, (dist.shape[0] * step, dist.shape[1] * step))[:h, :w]
    return np.where(mask, np.maximum(big, 0.0), 0.0).astype(np.float32)


def edge_thickness(dist_mm, edge_mm) -> np.ndarray:
    """Relative projected thickness, rising from 0 at the skin to 1 at ``edge_mm`` inside.

    A compressed breast's edge is roughly a half-cylinder, but its X-ray path
    also shortens through the rounded upper and lower surfaces; a parabolic
    ramp ``1 - (1 - d / edge)**2`` gives the gradual darkening towards the skin
    seen in real mammograms.
    """
    s = np.clip(dist_mm / edge_mm, 0.0, 1.0)
    return (1.0 - (1.0 - s) ** 2).astype(np.float32)


def smoothstep(x, lo, hi) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --- fibroglandular tissue ---------------------------------------------------
def glandular_map(noise, envelope, mask, fraction, *, softness=0.6, rng=None) -> np.ndarray:
    """Soft-threshold ``noise`` so the mean over the breast equals ``fraction``.

    ``envelope`` in [0, 1] says where glands may be (not in the subcutaneous fat
    just under the skin, less near the chest wall). The threshold is found by
    bisection on a subsample, so density D really is denser than C.
    """
    field = noise + 3.0 * (envelope - 1.0)
    vals = field[mask]
    if vals.size > 50_000:
        vals = vals[:: vals.size // 50_000]
    lo, hi = float(vals.min()) - 5 * softness, float(vals.max()) + 5 * softness
    for _ in range(40):
        thr = 0.5 * (lo + hi)
        mean = float(np.mean(1.0 / (1.0 + np.exp(-(vals - thr) / softness))))
        lo, hi = (thr, hi) if mean > fraction else (lo, thr)
    g = 1.0 / (1.0 + np.exp(-(field - thr) / softness))
    return np.where(mask, g, 0.0).astype(np.float32)


def trabecular_lines(shape, x_edge, rng, *, pixel_mm, per_cm2=0.6, width_mm=0.2) -> np.ndarray:
    """Thin, long, gently curving lines (Cooper's ligaments, trabeculae, ducts), peak ~1.

    Real mammograms are crossed by hundreds of them; most run towards the
    nipple, so each line starts at a random point of the breast and heads for
    the nipple (give or take ~35 degrees), turning slowly as it goes.
    """
    h, w = shape
    area_cm2 = float(x_edge.sum()) * (pixel_mm / 10.0) ** 2
    n = int(per_cm2 * area_cm2)
    nipple = (float(x_edge.max()), float(np.argmax(x_edge)))
    ys = rng.uniform(0, h, n)
    xs = rng.uniform(0, 1, n) * x_edge[ys.astype(int)]
    curves, weights = [], []
    for x0, y0 in zip(xs, ys):
        aim = np.arctan2(nipple[1] - y0, nipple[0] - x0) + rng.normal(0, 0.6)
        if rng.random() < 0.5:
            aim += np.pi  # the line extends both ways from its seed point
        length = rng.uniform(15, 70) / pixel_mm
        curves.append(random_curve((x0, y0), aim, length, rng, wiggle=0.045))
        weights.append(rng.uniform(0.3, 1.0))
    sigma = max(0.55, width_mm / pixel_mm)
    return draw_curves(shape, curves, weights, sigma)


def pectoral_mask(height, width, x_edge, rng, *, soft_px=2.0) -> np.ndarray:
    """Soft mask of the pectoral muscle: a triangle in the upper-left (chest-wall) corner."""
    top_w = min(width * rng.uniform(0.22, 0.38), 0.75 * float(x_edge[0]))
    depth = height * rng.uniform(0.38, 0.62)
    gamma = rng.uniform(0.8, 1.25)  # < 1 bulges out, > 1 curves in
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    wobble = 1.0 + 0.04 * smooth_1d(height, rng, correlation=0.15)[:, None]
    boundary = top_w * np.clip(1.0 - y / depth, 0, 1) ** gamma * wobble
    return (1.0 / (1.0 + np.exp(np.clip((x - boundary) / soft_px, -50, 50)))).astype(np.float32)


# --- thin curves (vessels, spicules) -----------------------------------------
def random_curve(start, angle, length_px, rng, *, wiggle=0.04, step=0.7) -> np.ndarray:
    """Points (N, 2) as (x, y) of a smoothly turning random walk."""
    n = max(2, int(length_px / step))
    turn = ndi.gaussian_filter1d(rng.standard_normal(n), 8.0) * wiggle * np.sqrt(n)
    angles = angle + np.cumsum(turn) / np.sqrt(n)
    steps = np.stack([np.cos(angles), np.sin(angles)], 1) * step
    return np.asarray(start, dtype=np.float64) + np.cumsum(steps, 0)


def draw_curves(shape, curves, weights, sigma_px, *, taper=False) -> np.ndarray:
    """Render polylines as blurred lines: splat all points, then one Gaussian blur.

    The line's peak height is ~``weight`` whatever ``sigma_px`` is (the splat is
    scaled by the blur's 1-D normalisation). ``taper`` thins lines towards their
    end. Wide lines are drawn on a coarser grid and interpolated back up: the
    result is the same smooth profile at a fraction of the cost.
    """
    h, w = shape
    f = max(1, int(sigma_px // 1.5))  # coarse grid factor for wide lines
    hs, ws = -(-h // f), -(-w // f)
    idx, vals = [], []
    for pts, wt in zip(curves, weights):
        # coarse cell i covers fine pixels [i f, (i + 1) f): floor, not round (f == 1: nearest pixel)
        xi = (np.floor(pts[:, 0] / f) if f > 1 else np.round(pts[:, 0])).astype(np.int64)
        yi = (np.floor(pts[:, 1] / f) if f > 1 else np.round(pts[:, 1])).astype(np.int64)
        ok = (xi >= 0) & (xi < ws) & (yi >= 0) & (yi < hs)
        v = np.full(len(pts), wt, dtype=np.float64)
        if taper:
            v *= np.linspace(1.0, 0.15, len(pts))
        idx.append((yi * ws + xi)[ok])
        vals.append(v[ok])
    if not idx:
        return np.zeros(shape, np.float32)
    acc = np.bincount(np.concatenate(idx), weights=np.concatenate(vals), minlength=hs * ws).astype(np.float32)
    step = 0.7 / f  # point spacing in coarse pixels (random_curve's default step)
    img = ndi.gaussian_filter(acc.reshape(hs, ws) * (step * np.sqrt(2 * np.pi) * sigma_px / f), sigma_px / f)
    return img if f == 1 else upsample(img, (h, w))


def upsample(img: np.ndarray, shape) -> np.ndarray:
    """Bilinear resize of a float image to ``shape`` (PIL's is ~20x faster than ndimage.zoom)."""
    from PIL import Image

    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(out, dtype=np.float32)


def vessels(shape, x_edge, rng, *, pixel_mm, n=None) -> np.ndarray:
    """A few vessels from the chest wall towards the nipple (peak ~1)."""
    h, w = shape
    n = int(rng.integers(2, 6)) if n is None else n
    rows = np.nonzero(x_edge > 0.3 * x_edge.max())[0]
    curves, weights = [], []
    for _ in range(n):
        y0 = float(rng.choice(rows))
        length = x_edge[int(y0)] * rng.uniform(0.5, 0.95)
        curves.append(random_curve((0.0, y0), rng.normal(0, 0.25), length, rng, wiggle=0.08))
        weights.append(rng.uniform(0.5, 1.0))
    sigma = max(0.7, rng.uniform(0.4, 0.8) / pixel_mm)
    return draw_curves(shape, curves, weights, sigma, taper=True)
