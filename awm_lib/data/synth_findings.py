"""Findings for synthetic mammograms: what a lesion is, and how it is drawn.

A :class:`FindingSpec` describes one finding of one breast independently of the
view, so the same lesion can be drawn in the CC and the MLO image (same shape,
same size, a consistent position). :func:`sample_finding` draws a spec;
:func:`render_finding` draws it into a small local patch that the composer adds
to the breast, and returns its box.

What separates malignant from benign here is what separates them in BI-RADS:

============================  ==========================  ===============================
finding                        malignant cue               benign / look-alike
============================  ==========================  ===============================
mass                           irregular, spiculated,      oval/round, sharp margin;
                               indistinct margin           look-alike: lobulated, a few
                                                           short spicules
calcification cluster          fine pleomorphic, linear,   coarse, round, sometimes
                               branching, many             rim-like; look-alike: fine but
                                                           round and punctate
architectural distortion       many long radiating lines   (look-alike, radial scar):
                               pulling the tissue in       fewer, shorter lines
focal asymmetry                --                          a patch of denser tissue
============================  ==========================  ===============================

``difficulty`` in [0, 1] shrinks and fades the malignant cues and pushes the
look-alikes towards them, so a model has to look closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from awm_lib.data.synth_texture import draw_curves, power_law_noise, random_curve

MALIGNANT_KINDS = {"spiculated_mass": 0.5, "calcification": 0.35, "distortion": 0.15}
BENIGN_KINDS = {"mass": 0.4, "calcification": 0.35, "asymmetry": 0.25}

#: VinDr-Mammo's ``finding_categories`` name for each kind.
VINDR_CATEGORY = {
    "mass": "Mass",
    "spiculated_mass": "Mass",
    "calcification": "Suspicious Calcification",
    "distortion": "Architectural Distortion",
    "asymmetry": "Focal Asymmetry",
}


@dataclass(frozen=True)
class FindingSpec:
    """One finding of one breast, independent of the view."""

    kind: str  # "mass", "spiculated_mass", "calcification", "distortion", "asymmetry"
    malignant: bool
    birads: int  # 2..5; >= 4 exactly when malignant
    lookalike: bool  # benign, drawn to resemble the malignant version
    size_mm: float  # diameter of the mass / extent of the cluster
    # attenuation above fibroglandular tissue at the core (masses, asymmetry) or added (calcs, lines)
    contrast: float
    irregularity: float  # 0 = smooth oval margin .. 1 = very irregular
    n_lines: int  # spicules / radiating lines (0 for smooth masses)
    depth: float  # position: fraction of the way from chest wall to skin
    pos_cc: float  # position across the breast in the CC view, in [-1, 1]
    pos_mlo: float  # ... and in the MLO view
    seed: int  # the lesion's own random stream: same shape in both views


def _pick(rng, table: dict[str, float]) -> str:
    kinds = list(table)
    p = np.array([table[k] for k in kinds])
    return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]


def sample_finding(rng, *, malignant: bool, lookalike: bool, difficulty: float) -> FindingSpec:
    """Draw one finding. Sizes follow screening practice: masses 5-30 mm, clusters 4-15 mm."""
    d = float(difficulty)
    u = rng.uniform
    where = dict(
        depth=u(0.25, 0.75), pos_cc=u(-0.6, 0.6), pos_mlo=u(-0.55, 0.65), seed=int(rng.integers(2**31))
    )
    if malignant:
        kind = _pick(rng, MALIGNANT_KINDS)
        fade, shrink = 1.0 - 0.55 * d, 1.0 - 0.35 * d
        if kind == "spiculated_mass":
            spec = dict(
                size_mm=u(8, 25) * shrink,
                contrast=u(0.07, 0.13) * fade,
                irregularity=u(0.6, 1.0),
                n_lines=int(u(10, 28) * (1 - 0.5 * d)),
            )
        elif kind == "calcification":
            spec = dict(
                size_mm=u(5, 14) * shrink,
                contrast=u(0.35, 0.6) * fade,
                irregularity=u(0.7, 1.0),
                n_lines=int(u(12, 35) * (1 - 0.5 * d)),
            )
        else:  # distortion
            spec = dict(
                size_mm=u(15, 30) * shrink,
                contrast=u(0.05, 0.09) * fade,
                irregularity=1.0,
                n_lines=int(u(14, 26) * (1 - 0.4 * d)),
            )
        birads = 5 if rng.random() < 0.35 * (1 - d) + 0.1 else 4
        return FindingSpec(kind, True, birads, False, **spec, **where)
    if lookalike:  # benign, but it borrows the malignant look, more so when difficult
        kind = _pick(rng, {"mass": 0.45, "calcification": 0.4, "distortion": 0.15})
        if kind == "mass":
            spec = dict(
                size_mm=u(6, 20),
                contrast=u(0.04, 0.1),
                irregularity=0.25 + 0.5 * d,
                n_lines=int(8 * d * u(0.5, 1.0)),
            )
        elif kind == "calcification":
            spec = dict(
                size_mm=u(4, 10),
                contrast=u(0.3, 0.5),
                irregularity=0.2 + 0.5 * d,
                n_lines=int(u(6, 14) + 10 * d),
            )
        else:
            spec = dict(
                size_mm=u(10, 20), contrast=u(0.04, 0.07), irregularity=0.6, n_lines=int(u(5, 9) + 8 * d)
            )
        return FindingSpec(kind, False, 3, True, **spec, **where)
    kind = _pick(rng, BENIGN_KINDS)
    if kind == "mass":
        spec = dict(size_mm=u(6, 25), contrast=u(0.04, 0.1), irregularity=u(0.0, 0.12), n_lines=0)
        birads = int(rng.choice([2, 3]))
    elif kind == "calcification":
        spec = dict(size_mm=u(6, 20), contrast=u(0.45, 0.7), irregularity=0.0, n_lines=int(u(3, 10)))
        birads = 2
    else:  # asymmetry
        spec = dict(size_mm=u(18, 40), contrast=u(0.0, 0.04), irregularity=0.3, n_lines=0)
        birads = 3
    return FindingSpec(kind, False, birads, False, **spec, **where)


# --- drawing -----------------------------------------------------------------
@dataclass
class FindingPatch:
    """A finding drawn around its centre: add ``values`` at ``(cx - half, cy - half)``."""

    values: np.ndarray  # (S, S) float32 attenuation to add
    fill: (
        np.ndarray | None
    )  # (S, S) in [0, 1]: where the lesion REPLACES fat by dense tissue (masses, asymmetry)
    box: tuple[float, float, float, float]  # xyxy relative to the patch's top-left corner
    pull: float = 0.0  # distortion: how strongly to retract the tissue towards the centre (px)

    @property
    def half(self) -> int:
        return self.values.shape[0] // 2


def _grid(half):
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    return x, y


def _radius_function(theta, rng, irregularity):
    """Margin radius (relative) as a sum of harmonics: smooth oval .. jagged."""
    r = np.ones_like(theta)
    for k in range(2, 17):
        amp = (0.05 if k <= 3 else 0.0) + irregularity * 0.22 * k**-0.9
        r += amp * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.maximum(r, 0.45)


def _box_of(mask, pad=0.0):
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        c = mask.shape[0] / 2
        return (c - 1, c - 1, c + 1, c + 1)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    n = mask.shape[0]
    return (max(0.0, x0 - px), max(0.0, y0 - py), min(n, x1 + px), min(n, y1 + py))


def _render_mass(spec: FindingSpec, rng, pixel_mm) -> FindingPatch:
    r0 = 0.5 * spec.size_mm / pixel_mm
    reach = 1.0 + 0.5 * spec.irregularity + (2.8 if spec.n_lines else 0.0)
    half = int(np.ceil(r0 * reach + 4))
    x, y = _grid(half)
    aspect, rot = rng.uniform(1.0, 1.5), rng.uniform(0, np.pi)
    xr = (x * np.cos(rot) + y * np.sin(rot)) / np.sqrt(aspect)
    yr = (-x * np.sin(rot) + y * np.cos(rot)) * np.sqrt(aspect)
    theta = np.arctan2(yr, xr)
    rho = np.hypot(xr, yr) / (r0 * _radius_function(theta, rng, spec.irregularity))
    body = np.clip(1.0 - rho**2, 0.0, 1.0) ** 0.35  # a dense lump: flatter top than a sphere's projection
    blur_mm = 0.12 + 1.2 * spec.irregularity**2  # sharp circumscribed .. indistinct margin
    body = ndi.gaussian_filter(body, max(0.5, blur_mm / pixel_mm))
    texture = power_law_noise(body.shape, 2.5, rng, pixel_mm=pixel_mm, largest_mm=spec.size_mm)
    values = spec.contrast * body * (1.0 + 0.3 * texture)  # above the dense-tissue level it fills in
    box = _box_of(body > 0.12, pad=0.05)
    if spec.n_lines:
        curves, weights = [], []
        for _ in range(spec.n_lines):
            a = rng.uniform(0, 2 * np.pi)
            start = (half + 0.85 * r0 * np.cos(a), half + 0.85 * r0 * np.sin(a))
            length = r0 * rng.uniform(1.0, 2.7) * (0.4 + 0.6 * spec.irregularity)
            curves.append(random_curve(start, a, length, rng, wiggle=0.03))
            weights.append(rng.uniform(0.05, 0.1))
        sigma = max(0.6, rng.uniform(0.12, 0.25) / pixel_mm)
        values = values + draw_curves(values.shape, curves, weights, sigma, taper=True)
    return FindingPatch(values.astype(np.float32), body.astype(np.float32), box)


def _render_calcs(spec: FindingSpec, rng, pixel_mm) -> FindingPatch:
    """A cluster of specks. ``irregularity`` sets how pleomorphic (elongated, varied) they are."""
    rc = 0.5 * spec.size_mm / pixel_mm
    n = max(3, spec.n_lines)
    fine = spec.malignant or spec.lookalike
    if spec.malignant and rng.random() < 0.6:  # ductal: specks strung along a branching line
        pts = []
        for _ in range(int(rng.integers(1, 4))):
            c = random_curve((0, 0), rng.uniform(0, 2 * np.pi), 2 * rc, rng, wiggle=0.1)
            c = c - c.mean(0) + rc * rng.uniform(-0.3, 0.3, 2)
            pts.append(c[rng.integers(0, len(c), n)])
        centres = np.concatenate(pts)[:n]
    else:
        centres = rng.normal(0, 0.45 * rc, (n, 2))
    centres = np.clip(centres, -rc, rc)
    if fine:
        sizes = rng.uniform(0.1, 0.5, n) * (1 + spec.irregularity * rng.uniform(0, 1.5, n))
        aspects = 1 + spec.irregularity * rng.uniform(0, 3.0, n)
    else:  # coarse, round (popcorn / dystrophic)
        sizes = rng.uniform(0.6, 2.5, n)
        aspects = rng.uniform(1.0, 1.3, n)
    sigmas = np.maximum(0.45, 0.5 * sizes / pixel_mm)
    reach = np.ceil(4 * sigmas * np.sqrt(aspects)).astype(int) + 1
    half = int(np.ceil(rc + reach.max() + 2))
    x, y = _grid(half)
    values = np.zeros_like(x)
    for (cx, cy), s, sig, asp, k in zip(centres, sizes, sigmas, aspects, reach):
        ang = rng.uniform(0, np.pi)
        ix, iy = int(round(cx)) + half, int(round(cy)) + half
        sl = (slice(iy - k, iy + k + 1), slice(ix - k, ix + k + 1))
        dx, dy = x[sl] - cx, y[sl] - cy
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        blob = np.exp(-0.5 * ((u / (sig * np.sqrt(asp))) ** 2 + (v * np.sqrt(asp) / sig) ** 2))
        if not fine and rng.random() < 0.35:  # rim ("eggshell") calcification: lucent centre
            blob -= 0.6 * np.exp(-0.5 * ((u / (0.6 * sig)) ** 2 + (v / (0.6 * sig)) ** 2))
        # specks smaller than a pixel are partly averaged away (partial volume)
        values[sl] += min(1.0, (s / pixel_mm) / 1.5 + 0.35) * np.clip(blob, 0, None)
    values *= spec.contrast
    pad_px = 1.0 / pixel_mm  # 1 mm around the outermost specks
    xs, ys = centres[:, 0] + half, centres[:, 1] + half
    r = sizes.max() / pixel_mm
    box = (xs.min() - r - pad_px, ys.min() - r - pad_px, xs.max() + r + pad_px, ys.max() + r + pad_px)
    n_side = values.shape[0]
    box = (max(0.0, box[0]), max(0.0, box[1]), min(n_side, box[2]), min(n_side, box[3]))
    return FindingPatch(values.astype(np.float32), None, box)


def _render_distortion(spec: FindingSpec, rng, pixel_mm) -> FindingPatch:
    """Radiating thin lines with no central mass, plus a pull of the tissue inwards."""
    rd = 0.5 * spec.size_mm / pixel_mm
    half = int(np.ceil(rd * 1.1 + 4))
    curves, weights = [], []
    for a in rng.uniform(0, 2 * np.pi, spec.n_lines):
        start = (half + 0.1 * rd * np.cos(a), half + 0.1 * rd * np.sin(a))
        length = rd * rng.uniform(0.5, 1.0) * (0.5 + 0.5 * spec.malignant)
        curves.append(random_curve(start, a, length, rng, wiggle=0.04))
        weights.append(rng.uniform(0.6, 1.0))
    sigma = max(0.6, 0.2 / pixel_mm)
    values = spec.contrast * draw_curves((2 * half + 1,) * 2, curves, weights, sigma, taper=True)
    c = half
    box = (c - 0.6 * rd, c - 0.6 * rd, c + 0.6 * rd, c + 0.6 * rd)
    pull = (0.25 if spec.malignant else 0.12) * rd
    return FindingPatch(values, None, box, pull=pull)


def _render_asymmetry(spec: FindingSpec, rng, pixel_mm) -> FindingPatch:
    """A patch of denser, textured tissue with a soft irregular outline and no mass margin."""
    ra = 0.5 * spec.size_mm / pixel_mm
    half = int(np.ceil(ra * 1.35 + 4))
    x, y = _grid(half)
    theta = np.arctan2(y, x)
    rho = np.hypot(x, y) / (ra * _radius_function(theta, rng, spec.irregularity))
    envelope = np.clip(1.3 - rho, 0, 1) ** 1.5
    envelope = ndi.gaussian_filter(envelope, max(1.0, 2.0 / pixel_mm))
    texture = power_law_noise(x.shape, 4.0, rng, pixel_mm=pixel_mm, largest_mm=spec.size_mm / 2)
    fill = 0.7 * envelope * np.clip(0.8 + 0.25 * texture, 0, 1)
    values = spec.contrast * fill
    return FindingPatch(
        values.astype(np.float32), fill.astype(np.float32), _box_of(envelope > 0.25 * envelope.max())
    )


def render_finding(spec: FindingSpec, pixel_mm: float) -> FindingPatch:
    """Draw ``spec`` at ``pixel_mm`` millimetres per pixel (deterministic for ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    if spec.kind in ("mass", "spiculated_mass"):
        return _render_mass(spec, rng, pixel_mm)
    if spec.kind == "calcification":
        return _render_calcs(spec, rng, pixel_mm)
    if spec.kind == "distortion":
        return _render_distortion(spec, rng, pixel_mm)
    if spec.kind == "asymmetry":
        return _render_asymmetry(spec, rng, pixel_mm)
    raise ValueError(f"unknown finding kind {spec.kind!r}")


def retract(image, cx, cy, radius, pull) -> None:
    """Pull the tissue around ``(cx, cy)`` towards it (in place): the distortion's tethering."""
    h, w = image.shape
    half = int(np.ceil(2 * radius))
    x0, x1, y0, y1 = max(0, cx - half), min(w, cx + half + 1), max(0, cy - half), min(h, cy + half + 1)
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy) + 1e-3
    shift = pull * (r / radius) * np.exp(1.0 - (r / radius) ** 2) / r  # sample from further out
    image[y0:y1, x0:x1] = ndi.map_coordinates(
        image, [y + dy * shift, x + dx * shift], order=1, mode="nearest"
    )
