"""Synthetic mammograms: the embedded default data of the book and the tests.

Real screening mammograms cannot be shipped with the project, so we draw our
own that look and behave like them (see :mod:`awm_lib.data.realism` for how
close they are to mini-MIAS). One call::

    >>> m = generate_mammogram(SynthConfig(height=1024, view="MLO", laterality="R"), seed=0)
    >>> m.pixels.shape, m.pixels.dtype, m.label, [l.kind for l in m.lesions]   # doctest: +SKIP
    ((1024, 814), dtype('uint16'), 1, ['spiculated_mass'])

The picture is built in *attenuation* units (0 = air, ~1 = densest tissue),
in the order the physics suggests: breast outline and thickness, fat plus a
power-law fibroglandular texture whose area fraction is the BI-RADS density,
Cooper's ligaments, vessels, pectoral muscle (MLO), skin line, findings,
quantum noise; then it is quantised to ``bits_stored`` bits, MONOCHROME2
(bright = dense), like a "for presentation" DICOM.

**Orientation.** We follow the radiological display convention (the images of
the two breasts hang back to back): a LEFT breast has its chest wall on the
image's left edge and the nipple pointing right; a RIGHT breast is the mirror
image (chest wall on the right edge). mini-MIAS follows the same convention:
``segment_breast`` finds the chest wall on the right edge of its right breasts
(mdb001, mdb023) and on the left edge of its left breasts (mdb002, mdb184).

**Pixel size.** A full-field image of 3518 px spans ~299 mm (0.085 mm/px, like
VinDr-Mammo). Smaller images keep the field and get bigger pixels, so lesions
keep their physical size: a 15 mm mass is ~176 px at 3518 and ~51 px at 1024.

**Breast-level label.** BI-RADS 4/5 exactly when a malignant finding is drawn
(``label = 1``); otherwise 1 (normal) or 2/3 (benign findings).

The breast's findings are sampled once per breast (:func:`sample_breast`) and
each view is drawn from that spec (:func:`render_view`), so a lesion appears in
both the CC and the MLO image of its breast at a consistent depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from awm_lib.data import synth_texture as tex
from awm_lib.data.synth_findings import FindingSpec, render_finding, retract, sample_finding
from awm_lib.data.types import Lesion
from awm_lib.errors import ConfigError

FULL_FIELD = (3518, 2800)  # VinDr-Mammo's largest images, (height, width)
FIELD_MM = 3518 * 0.085  # physical height of the detector field, mm
DENSITY_FRACTION = {"A": (0.04, 0.12), "B": (0.17, 0.30), "C": (0.36, 0.52), "D": (0.60, 0.78)}
DENSITY_PRIOR = {"A": 0.10, "B": 0.35, "C": 0.45, "D": 0.10}  # roughly VinDr-Mammo's mix
_VIEW_CODE = {"CC": 1, "MLO": 2}


@dataclass
class SynthConfig:
    """What to draw. ``None`` fields are drawn at random from the generator's stream."""

    height: int = 2048  # the long side, pixels
    width: int | None = None  # default: height * 2800 / 3518 (VinDr's aspect)
    view: str = "CC"  # "CC" or "MLO"
    laterality: str = "L"  # "L" or "R"
    density: str | None = None  # BI-RADS density "A".."D"
    bits_stored: int = 12  # 12 or 14 (any of 8..16 works)
    difficulty: float = 0.3  # 0 = obvious cancers .. 1 = subtle cancers and close look-alikes
    malignant: bool | None = None  # draw a malignant finding?
    p_malignant: float = 0.25  # ... with this probability when ``malignant`` is None
    n_benign: int | None = None  # benign findings; None: 0, or 1-2 with probability p_benign
    p_benign: float = 0.35
    p_lookalike: float | None = (
        None  # share of benign findings that mimic malignant ones; None: 0.2 + 0.6 * difficulty
    )

    def __post_init__(self):
        if self.width is None:
            self.width = int(round(self.height * FULL_FIELD[1] / FULL_FIELD[0]))
        self.view, self.laterality = str(self.view).upper(), str(self.laterality).upper()
        problems = []
        if not (64 <= self.height <= 8192 and 64 <= self.width <= 8192):
            problems.append(f"height/width {self.height}x{self.width} must be within 64..8192")
        if self.view not in _VIEW_CODE:
            problems.append(f"view {self.view!r} must be 'CC' or 'MLO'")
        if self.laterality not in ("L", "R"):
            problems.append(f"laterality {self.laterality!r} must be 'L' or 'R'")
        if self.density is not None and self.density not in DENSITY_FRACTION:
            problems.append(f"density {self.density!r} must be one of A, B, C, D")
        if not 8 <= self.bits_stored <= 16:
            problems.append(f"bits_stored {self.bits_stored} must be within 8..16 (12 or 14 are usual)")
        for name in ("difficulty", "p_malignant", "p_benign") + (
            ("p_lookalike",) if self.p_lookalike is not None else ()
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} {getattr(self, name)} must be within [0, 1]")
        if problems:
            raise ConfigError("SynthConfig: " + "; ".join(problems))

    @property
    def pixel_mm(self) -> float:
        return FIELD_MM / self.height


@dataclass(frozen=True)
class BreastSpec:
    """One breast of one woman: what every view of it shows."""

    density: str
    fraction: float  # fibroglandular area fraction (drawn within the density's range)
    findings: tuple[FindingSpec, ...]
    seed: int

    @property
    def birads(self) -> int:
        return max((f.birads for f in self.findings), default=1)

    @property
    def label(self) -> int:
        return int(any(f.malignant for f in self.findings))


@dataclass
class SynthMammogram:
    pixels: np.ndarray  # (H, W) uint16 in [0, 2**bits_stored - 1], MONOCHROME2
    lesions: tuple[Lesion, ...]  # boxes xyxy in these pixels
    breast_birads: int
    density: str
    laterality: str
    view: str
    mask: np.ndarray  # (H, W) bool, the breast
    bits_stored: int
    pixel_mm: float
    fibroglandular_fraction: float  # achieved share of dense tissue inside the breast
    pectoral: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool on MLO views

    @property
    def label(self) -> int:
        """1 = cancer (BI-RADS 4/5), the same rule as VinDr-Mammo."""
        return int(self.breast_birads >= 4)


def sample_breast(cfg: SynthConfig, rng: np.random.Generator) -> BreastSpec:
    """Draw density and findings for one breast (shared by its CC and MLO views)."""
    density = cfg.density or str(rng.choice(list(DENSITY_PRIOR), p=list(DENSITY_PRIOR.values())))
    fraction = float(rng.uniform(*DENSITY_FRACTION[density]))
    malignant = cfg.malignant if cfg.malignant is not None else bool(rng.random() < cfg.p_malignant)
    if cfg.n_benign is not None:
        n_benign = cfg.n_benign
    else:
        n_benign = int(rng.integers(1, 3)) if rng.random() < cfg.p_benign else 0
    p_look = cfg.p_lookalike if cfg.p_lookalike is not None else 0.2 + 0.6 * cfg.difficulty
    findings = (
        [sample_finding(rng, malignant=True, lookalike=False, difficulty=cfg.difficulty)] if malignant else []
    )
    for _ in range(n_benign):
        findings.append(
            sample_finding(
                rng, malignant=False, lookalike=bool(rng.random() < p_look), difficulty=cfg.difficulty
            )
        )
    return BreastSpec(density, fraction, tuple(findings), int(rng.integers(2**31)))


def _place(spec_f, patch, x_edge, mask, pect, taken, rng, view):
    """Centre (cx, cy) for a finding patch: inside the breast, off the muscle, not on another finding."""
    h, w = mask.shape
    half = patch.half
    depth, pos = spec_f.depth, spec_f.pos_cc if view == "CC" else spec_f.pos_mlo
    for attempt in range(40):
        cx = int(depth * x_edge.max())
        rows = np.nonzero(x_edge > cx + 0.6 * half + 3)[0]
        if rows.size:
            mid, span = 0.5 * (rows[0] + rows[-1]), 0.5 * (rows[-1] - rows[0]) - half
            cy = int(mid + pos * max(span, 0))
            box = (
                cx - half + patch.box[0],
                cy - half + patch.box[1],
                cx - half + patch.box[2],
                cy - half + patch.box[3],
            )
            if _fits(box, mask, pect, taken):
                return cx, cy, box
        # deterministic retreat towards the middle of the breast, then random tries
        depth, pos = (
            (0.8 * depth + 0.1, 0.8 * pos)
            if attempt < 10
            else (rng.uniform(0.2, 0.7), rng.uniform(-0.8, 0.8))
        )
    ys, xs = np.nonzero(mask)
    cx, cy = int(np.median(xs)), int(np.median(ys))
    return (
        cx,
        cy,
        (
            cx - half + patch.box[0],
            cy - half + patch.box[1],
            cx - half + patch.box[2],
            cy - half + patch.box[3],
        ),
    )


def _fits(box, mask, pect, taken) -> bool:
    h, w = mask.shape
    x0, y0, x1, y1 = (
        int(np.floor(box[0])) - 2,
        int(np.floor(box[1])) - 2,
        int(np.ceil(box[2])) + 2,
        int(np.ceil(box[3])) + 2,
    )
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or not mask[y0:y1, x0:x1].all():
        return False
    if pect is not None and pect[y0:y1, x0:x1].max() > 0.05:
        return False
    return all(x1 < t[0] or x0 > t[2] or y1 < t[1] or y0 > t[3] for t in taken)


def render_view(spec: BreastSpec, cfg: SynthConfig) -> SynthMammogram:
    """Draw one view (``cfg.view``, ``cfg.laterality``) of a breast. Deterministic for ``spec.seed``."""
    h, w, px = cfg.height, cfg.width, cfg.pixel_mm
    seeds = [spec.seed, _VIEW_CODE[cfg.view]]
    rng_shape, rng_tex, rng_noise, rng_place = (np.random.default_rng(seeds + [k]) for k in range(4))

    # outline, thickness, muscle
    x_edge = tex.breast_outline(h, w, cfg.view, rng_shape)
    mask = tex.outline_mask(x_edge, w)
    dist = tex.skin_distance_mm(mask, px, view=cfg.view)
    thick = tex.edge_thickness(dist, rng_shape.uniform(20, 40))
    falloff = 0.2 + 0.8 * thick  # periphery darker, partly equalised as in processed images
    pect = (
        tex.pectoral_mask(h, w, x_edge, rng_shape, soft_px=max(1.0, 0.4 / px)) if cfg.view == "MLO" else None
    )

    # fibroglandular tissue where glands live: not under the skin, little at the chest wall
    rho = np.arange(w, dtype=np.float32)[None, :] / np.maximum(x_edge[:, None], 1.0)
    fat_mm = rng_shape.uniform(3, 8)
    envelope = tex.smoothstep(dist, fat_mm, fat_mm + 30) * tex.smoothstep(rho, 0.0, 0.3)
    tissue_mask = mask if pect is None else mask & (pect < 0.5)
    noise = tex.power_law_noise((h, w), 3.6, rng_tex, pixel_mm=px, largest_mm=70, stretch=1.8)
    gland = tex.glandular_map(noise, envelope, tissue_mask, spec.fraction, softness=0.9)
    lines = tex.trabecular_lines((h, w), x_edge, rng_tex, pixel_mm=px)
    vessels = tex.vessels((h, w), x_edge, rng_tex, pixel_mm=px)

    fat_level, gland_level = rng_tex.uniform(0.30, 0.36), rng_tex.uniform(0.62, 0.72)
    att = fat_level + (gland_level - fat_level) * gland + 0.04 * noise * (0.6 + gland)
    att += rng_tex.uniform(0.07, 0.11) * lines * (1.0 - 0.4 * gland) * tex.smoothstep(dist, 1.0, 6.0)
    att += rng_tex.uniform(0.04, 0.07) * vessels
    att *= falloff
    if pect is not None:
        y = np.arange(h, dtype=np.float32)[:, None] / h
        muscle = (rng_tex.uniform(0.68, 0.8) - 0.25 * y + 0.04 * noise) * falloff
        att = (1.0 - pect) * att + pect * np.maximum(muscle, att)
    att += rng_tex.uniform(0.03, 0.06) * np.exp(-(((dist - 0.5) / 0.5) ** 2))  # skin line

    # findings
    lesions, taken = [], []
    for f in spec.findings:
        patch = render_finding(f, px)
        cx, cy, box = _place(f, patch, x_edge, mask, pect, taken, rng_place, cfg.view)
        taken.append(box)
        half = patch.half
        if patch.pull:
            retract(att, cx, cy, 0.5 * f.size_mm / px, patch.pull)
        ys = slice(max(0, cy - half), min(h, cy + half + 1))
        xs = slice(max(0, cx - half), min(w, cx + half + 1))
        local = (
            slice(ys.start - (cy - half), ys.stop - (cy - half)),
            slice(xs.start - (cx - half), xs.stop - (cx - half)),
        )
        if patch.fill is not None:  # a mass displaces fat: lift the tissue towards dense (never darker)
            region = att[ys, xs]
            region += 0.9 * patch.fill[local] * np.maximum(gland_level * falloff[ys, xs] - region, 0.0)
        att[ys, xs] += patch.values[local] * falloff[ys, xs]
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
        lesions.append((box, f))

    # background, quantum noise, quantisation
    background = rng_noise.uniform(0.005, 0.03)
    att = np.where(mask, att, background)
    sd = 0.006 + 0.006 * np.sqrt(np.clip(att, 0, 1))
    att += sd * rng_noise.standard_normal((h, w), dtype=np.float32)
    top = 2**cfg.bits_stored - 1
    pixels = np.clip(np.rint(att * top), 0, top).astype(np.uint16)

    flip = cfg.laterality == "R"  # canonical = chest wall on the left = left breast
    out_lesions = []
    for (x0, y0, x1, y1), f in lesions:
        if flip:
            x0, x1 = w - x1, w - x0
        center = (0.5 * (x0 + x1), 0.5 * (y0 + y1))
        out_lesions.append(
            Lesion((float(x0), float(y0), float(x1), float(y1)), f.kind, f.malignant, f.birads, center=center)
        )
    fraction = float(gland[tissue_mask].mean())
    if flip:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        pect = None if pect is None else pect[:, ::-1]
    return SynthMammogram(
        pixels=np.ascontiguousarray(pixels),
        lesions=tuple(out_lesions),
        breast_birads=spec.birads,
        density=spec.density,
        laterality=cfg.laterality,
        view=cfg.view,
        mask=np.ascontiguousarray(mask),
        bits_stored=cfg.bits_stored,
        pixel_mm=px,
        fibroglandular_fraction=fraction,
        pectoral=None if pect is None else np.ascontiguousarray(pect > 0.5),
    )


def generate_mammogram(
    cfg: SynthConfig | None = None, rng: np.random.Generator | int | None = None, *, seed: int | None = None
) -> SynthMammogram:
    """One synthetic mammogram, deterministic for a seed (``rng`` may be a Generator or an int).

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    cfg = cfg or SynthConfig()
    if rng is None:
        rng = seed if seed is not None else 0
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return render_view(sample_breast(cfg, rng), cfg)
