"""How close are the synthetic mammograms to real ones? Two numbers and a table.

1. **Power-spectrum slope** of breast tissue. Take square patches well inside
   the breast, remove the mean and a plane, apply a Hann window, and average
   ``|FFT|**2`` over rings of equal frequency. On log-log axes the mid-frequency
   part is a straight line, ``P(f) ∝ f**-beta``; for real mammograms ``beta`` is
   about 3 (Burgess, Jacobson & Judy, Med. Phys. 28:419, 2001). The fit uses a
   band in *cycles per millimetre*, so images with different pixel sizes are
   compared on the same anatomy scale.
2. **Intensity histogram** of breast tissue, each image normalised by its own
   1st and 99th tissue percentiles (film and detectors have different
   characteristic curves; the *shape* of the distribution is what we compare).
   Distances: 1-D Wasserstein (earth mover's) and Kolmogorov-Smirnov.

:func:`compare_with_mias` runs both on mini-MIAS and on freshly generated
synthetic MLO views and returns a small dict (see :func:`format_comparison`).
The same functions measure both datasets, so the gap they report is fair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from awm_lib.data.synthetic import SynthConfig, generate_mammogram
from awm_lib.errors import DatasetNotFoundError
from awm_lib.paths import mias_root

MIAS_PIXEL_MM = 0.2  # mini-MIAS: 200 micron pixels
DEFAULT_BAND = (0.12, 0.8)  # cycles/mm fitted for the slope
PATCH_MM = 25.6  # patch side (128 px of mini-MIAS)
N_BINS = 64


@dataclass
class ImageStats:
    slopes: list[float]  # beta of each patch (positive: P ~ f**-beta)
    tissue: np.ndarray  # normalised tissue intensities (a subsample), in [0, 1]


def breast_mask(img: np.ndarray) -> np.ndarray:
    """Breast = the largest bright connected region (drops film labels and markers)."""
    img = np.asarray(img, dtype=np.float32)
    thr = img.min() + 0.12 * (np.percentile(img, 99.5) - img.min())
    labels, n = ndi.label(ndi.binary_opening(img > thr, iterations=2))
    if n == 0:
        return np.zeros(img.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(labels == sizes.argmax())


def tissue_patches(
    img, mask, pixel_mm, *, patch_mm=PATCH_MM, margin_mm=15.0, max_patches=8
) -> list[np.ndarray]:
    """Non-overlapping square patches inside the breast, away from the skin and the pectoral muscle.

    "Away from the muscle" is approximated by using the lower half of the
    breast's rows only (the muscle sits in the upper corner of MLO views).
    """
    n = int(round(patch_mm / pixel_mm))
    inner = ndi.binary_erosion(mask, iterations=max(1, int(margin_mm / pixel_mm)))
    rows = np.nonzero(mask.any(1))[0]
    if rows.size == 0:
        return []
    inner[: int(0.5 * (rows[0] + rows[-1]))] = False
    patches = []
    h, w = img.shape
    for y in range(0, h - n + 1, n):
        for x in range(0, w - n + 1, n):
            if inner[y : y + n, x : x + n].all():
                patches.append(np.asarray(img[y : y + n, x : x + n], dtype=np.float64))
    if len(patches) > max_patches:  # spread the choice evenly over the breast
        idx = np.linspace(0, len(patches) - 1, max_patches).round().astype(int)
        patches = [patches[i] for i in idx]
    return patches


def radial_power_spectrum(patch: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/mm, ring-averaged power) of a detrended, Hann-windowed patch."""
    n = patch.shape[0]
    y, x = np.mgrid[0:n, 0:n]
    a = np.c_[x.ravel(), y.ravel(), np.ones(n * n)]
    coef, *_ = np.linalg.lstsq(a, patch.ravel(), rcond=None)
    p = patch - (a @ coef).reshape(n, n)  # remove mean and plane
    win = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fftshift(np.fft.fft2(p * win))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftshift(np.fft.fftfreq(n)), np.fft.fftshift(np.fft.fftfreq(n))))
    ring = np.round(f * n).astype(int)
    counts = np.bincount(ring.ravel())
    radial = np.bincount(ring.ravel(), weights=power.ravel()) / np.maximum(counts, 1)
    k = np.arange(1, n // 2)
    return k / (n * pixel_mm), radial[1 : n // 2]


def spectrum_slope(patch: np.ndarray, pixel_mm: float, band=DEFAULT_BAND) -> float:
    """``beta`` of ``P(f) ~ f**-beta`` fitted on log-log axes over ``band`` (cycles/mm)."""
    f, power = radial_power_spectrum(patch, pixel_mm)
    sel = (f >= band[0]) & (f <= band[1]) & (power > 0)
    if sel.sum() < 3:
        raise ValueError(f"band {band} cycles/mm holds fewer than 3 frequencies for this patch")
    slope = np.polyfit(np.log(f[sel]), np.log(power[sel]), 1)[0]
    return float(-slope)


def image_stats(img, pixel_mm, *, mask=None, band=DEFAULT_BAND, rng=None, n_tissue=20_000) -> ImageStats:
    """Slopes of the tissue patches and a subsample of normalised tissue intensities."""
    img = np.asarray(img, dtype=np.float64)
    mask = breast_mask(img) if mask is None else mask
    slopes = [spectrum_slope(p, pixel_mm, band) for p in tissue_patches(img, mask, pixel_mm)]
    inner = ndi.binary_erosion(mask, iterations=max(1, int(3.0 / pixel_mm)))
    vals = img[inner] if inner.any() else img[mask]
    lo, hi = np.percentile(vals, [1, 99])
    vals = np.clip((vals - lo) / max(hi - lo, 1e-9), 0, 1)
    rng = rng or np.random.default_rng(0)
    if vals.size > n_tissue:
        vals = rng.choice(vals, n_tissue, replace=False)
    return ImageStats(slopes, vals)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Wasserstein-1 and Kolmogorov-Smirnov distances between two samples in [0, 1]."""
    from scipy import stats

    return {
        "wasserstein": float(stats.wasserstein_distance(a, b)),
        "ks": float(stats.ks_2samp(a, b).statistic),
    }


def summarise(stats_list: list[ImageStats]) -> dict:
    slopes = np.array([s for st in stats_list for s in st.slopes])
    tissue = np.concatenate([st.tissue for st in stats_list]) if stats_list else np.zeros(0)
    hist, edges = np.histogram(tissue, bins=N_BINS, range=(0, 1), density=True)
    return {
        "n_images": len(stats_list),
        "n_patches": int(slopes.size),
        "slope_mean": float(slopes.mean()) if slopes.size else float("nan"),
        "slope_sd": float(slopes.std(ddof=1)) if slopes.size > 1 else float("nan"),
        "histogram": hist.tolist(),
        "bin_edges": edges.tolist(),
        "_tissue": tissue,
    }


def mias_images(root: str | Path | None = None, n: int = 40) -> list[np.ndarray]:
    """The first ``n`` mini-MIAS images (PNG or PGM), as float arrays."""
    from PIL import Image

    root = Path(root) if root is not None else mias_root()
    files = sorted(list(root.glob("mdb*.png")) + list(root.glob("mdb*.pgm")))[:n]
    if not files:
        raise DatasetNotFoundError(
            "no mdbNNN.png / .pgm images here; set AWM_MIAS_ROOT to the mini-MIAS folder", path=str(root)
        )
    return [np.asarray(Image.open(f), dtype=np.float32) for f in files]


def compare_with_mias(
    *,
    n_mias: int = 40,
    n_synth: int = 12,
    size: int = 1024,
    seed: int = 0,
    difficulty: float = 0.3,
    mias_root=None,
) -> dict:
    """Slope mean +- sd and histogram distances: mini-MIAS vs synthetic MLO views.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    real = [image_stats(im, MIAS_PIXEL_MM) for im in mias_images(mias_root, n_mias)]
    synth = []
    for i in range(n_synth):
        cfg = SynthConfig(height=size, view="MLO", laterality="LR"[i % 2], difficulty=difficulty)
        m = generate_mammogram(cfg, seed=seed + i)
        synth.append(image_stats(m.pixels.astype(np.float32), m.pixel_mm))
    r, s = summarise(real), summarise(synth)
    out = {
        "mini_mias": {k: v for k, v in r.items() if not k.startswith("_")},
        "synthetic": {k: v for k, v in s.items() if not k.startswith("_")},
        "histogram_distance": histogram_distance(r["_tissue"], s["_tissue"]),
        "band_cycles_per_mm": list(DEFAULT_BAND),
        "patch_mm": PATCH_MM,
        "settings": {
            "n_mias": n_mias,
            "n_synth": n_synth,
            "size": size,
            "seed": seed,
            "difficulty": difficulty,
        },
    }
    out["slope_gap"] = out["synthetic"]["slope_mean"] - out["mini_mias"]["slope_mean"]
    return out


def format_comparison(cmp: dict) -> str:
    """A three-line table of :func:`compare_with_mias`'s result."""
    r, s, d = cmp["mini_mias"], cmp["synthetic"], cmp["histogram_distance"]
    return "\n".join(
        [
            f"{'':12s} {'images':>6s} {'patches':>7s}  spectrum slope beta",
            f"{'mini-MIAS':12s} {r['n_images']:6d} {r['n_patches']:7d}  {r['slope_mean']:.2f} +- "
            f"{r['slope_sd']:.2f}",
            f"{'synthetic':12s} {s['n_images']:6d} {s['n_patches']:7d}  {s['slope_mean']:.2f} +- "
            f"{s['slope_sd']:.2f}",
            f"tissue histogram distance: Wasserstein {d['wasserstein']:.3f}, KS {d['ks']:.3f}",
        ]
    )
