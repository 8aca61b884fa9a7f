"""Figures for the data chapter: DICOM variants, breast cropping, real vs synthetic.

The general drawing primitives (one mammogram with boxes, a grid, curves) live
in :mod:`awm_lib.book.viz`; this module builds the data chapter's composite figures
on top of them, so that each notebook cell stays two to five lines:

- :func:`write_dicom_variants`, :func:`describe_dicoms`, :func:`show_dicom_variants`:
  one picture stored four ways (12/14 bits, MONOCHROME1/2, rescale, VOI window),
  what the files say, and what :func:`~awm_lib.data.image.load_image` makes of them;
- :func:`show_segmentation`: :func:`~awm_lib.data.breast.segment_breast` at work;
- :func:`show_side_by_side`, :func:`lesion_annotations`, :func:`show_lesion_zooms`:
  mammograms with their findings, and close-ups of the findings;
- :func:`plot_spectrum_comparison`, :func:`plot_histograms`: the two realism
  measures of :mod:`awm_lib.data.realism`, drawn.

Matplotlib is imported inside the functions: importing this module is cheap and
does not choose a backend. Images are (H, W) arrays in [0, 1] (dark background,
bright tissue) unless said otherwise; boxes are ``xyxy`` pixels of the image shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from awm_lib.book import viz
from awm_lib.data import realism
from awm_lib.data.breast import segment_breast
from awm_lib.data.dicom import write_mammo_dicom
from awm_lib.data.image import load_image

__all__ = [
    "write_dicom_variants",
    "read_stored",
    "describe_dicoms",
    "show_dicom_variants",
    "show_segmentation",
    "MIAS_CLASSES",
    "lesion_annotations",
    "show_side_by_side",
    "show_lesion_zooms",
    "mean_spectrum",
    "plot_spectrum_comparison",
    "plot_histograms",
]


# --------------------------------------------------------------------------- DICOM
def write_dicom_variants(image, folder, *, laterality: str = "L", view: str = "MLO") -> dict[str, Path]:
    """Write one picture (H, W) in [0, 1] as four DICOMs that differ only in how they store it.

    - ``12-bit MONOCHROME2``: stored = round(v * 4095); high = bright. The plain case.
    - ``12-bit MONOCHROME1``: stored = 4095 - that; high = *dark*, like film.
    - ``14-bit + rescale``: stored = round(v * 16383), with RescaleSlope 0.5 and
      RescaleIntercept -100: the Modality LUT maps them to other units.
    - ``14-bit + VOI window``: the same stored values, plus a window (centre,
      width) in rescaled units that spans only the breast's values: the
      background falls below the window and is shown black, and the tissue
      is stretched over the whole grey scale.

    Returns ``{name: path}`` in that order.
    """
    v = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s12, s14 = np.rint(v * 4095), np.rint(v * 16383)
    slope, intercept = 0.5, -100.0
    breast = v > 0.04  # the background of a synthetic image is darker than that
    lo, hi = np.percentile(v[breast], [0.5, 99.5]) if breast.any() else (0.0, 1.0)
    lo_r, hi_r = slope * lo * 16383 + intercept, slope * hi * 16383 + intercept
    specs = {
        "12-bit MONOCHROME2": (s12, {"bits_stored": 12}),
        "12-bit MONOCHROME1": (4095 - s12, {"bits_stored": 12, "photometric": "MONOCHROME1"}),
        "14-bit + rescale": (s14, {"bits_stored": 14, "rescale": (slope, intercept)}),
        "14-bit + VOI window": (s14, {"bits_stored": 14, "rescale": (slope, intercept),
                                      "window": (round((lo_r + hi_r) / 2), round(hi_r - lo_r))}),
    }
    paths = {}
    for i, (name, (stored, kw)) in enumerate(specs.items()):
        paths[name] = write_mammo_dicom(folder / f"variant{i}.dcm", stored.astype(np.uint16),
                                        laterality=laterality, view=view, **kw)
    return paths


def read_stored(path) -> np.ndarray:
    """The DICOM's stored values exactly as in the file: no rescale, no window, no inversion."""
    import pydicom

    return pydicom.dcmread(path).pixel_array


def describe_dicoms(paths: Mapping[str, Path]):
    """A table (pandas DataFrame, one row per file) of the tags that matter and what loading gives.

    Columns: photometric interpretation, bits stored, stored min/max, rescale
    slope/intercept, window centre/width, the Modality-LUT output range
    (``raw``), and the mean of :func:`load_image`'s pixels on the background and
    in the breast (found by :func:`segment_breast`): a dark background and
    bright tissue whatever the file.
    """
    import pandas as pd
    import pydicom

    rows = []
    for name, path in paths.items():
        ds = pydicom.dcmread(path)
        stored, img = ds.pixel_array, load_image(path)
        inside = segment_breast(img.pixels).full_mask()
        rows.append({
            "file": name,
            "photometric": str(ds.PhotometricInterpretation),
            "bits": int(ds.BitsStored),
            "stored min..max": f"{int(stored.min())}..{int(stored.max())}",
            "slope, intercept": f"{ds.get('RescaleSlope', 1)}, {ds.get('RescaleIntercept', 0)}",
            "window c, w": f"{ds.WindowCenter}, {ds.WindowWidth}" if "WindowCenter" in ds else "-",
            "raw min..max": f"{float(img.raw.min()):g}..{float(img.raw.max()):g}",
            "background": round(float(img.pixels[~inside].mean()), 3),
            "breast": round(float(img.pixels[inside].mean()), 3),
        })
    return pd.DataFrame(rows).set_index("file")


def show_dicom_variants(paths: Mapping[str, Path], size: float = 2.6):
    """Top row: each file's stored values shown naively (0 black, 2**bits - 1 white).
    Bottom row: the same file through :func:`load_image`. Returns the figure."""
    import pydicom

    n = len(paths)
    fig, axes = viz.subplots(2, n, width=size, height=size * 1.15, squeeze=False)
    for j, (name, path) in enumerate(paths.items()):
        bits = int(pydicom.dcmread(path, stop_before_pixels=True).BitsStored)
        viz.show_mammogram(
            read_stored(path) / (2**bits - 1), ax=axes[0, j], title=f"{name}\nstored, shown as is"
        )
        viz.show_mammogram(load_image(path).pixels, ax=axes[1, j], title="after load_image")
    return fig


# --------------------------------------------------------------------------- breast cropping
def show_segmentation(
    pixels, crop, boxes=None, labels: Sequence[str] | None = None, size: float = 3.2, title: str | None = None
):
    """Three panels: the input; the breast mask (tinted) and crop box (dashed); the crop, oriented.

    ``crop`` is the :class:`~awm_lib.data.breast.BreastCrop` of ``pixels``;
    ``boxes`` (N, 4) are lesion boxes in original pixels, drawn on the input and,
    mapped by ``crop.to_crop``, on the crop. Returns the figure.
    """
    from matplotlib.patches import Rectangle

    pixels = np.asarray(pixels, dtype=np.float32)
    boxes = None if boxes is None else np.asarray(boxes, dtype=float).reshape(-1, 4)
    fig, axes = viz.subplots(1, 3, width=size, height=size, squeeze=False)
    ax0, ax1, ax2 = axes[0]
    viz.show_mammogram(pixels, boxes=boxes, labels=labels, ax=ax0, title="input")
    viz.show_mammogram(pixels, ax=ax1, title="breast mask and crop box")
    h, w = pixels.shape
    tint = np.zeros((h, w, 4), dtype=np.float32)
    tint[crop.full_mask()] = (0.0, 0.45, 0.7, 0.35)  # PALETTE blue, translucent
    ax1.imshow(tint, extent=(0, w, h, 0))
    x0, y0, x1, y1 = crop.box
    ax1.add_patch(
        Rectangle(
            (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=viz.PALETTE[1], linewidth=1.5, linestyle="--"
        )
    )
    mapped = None if boxes is None else crop.to_crop(boxes)
    flip = " (mirrored)" if crop.flipped else ""
    viz.show_mammogram(crop.crop(pixels), boxes=mapped, labels=labels, ax=ax2, title=f"cropped{flip}")
    _labels_inside(ax0, w)
    _labels_inside(ax2, crop.crop_shape[1])
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- mammograms and findings
#: mini-MIAS class codes (Info.txt) in words.
MIAS_CLASSES = {
    "CALC": "calcification",
    "CIRC": "circumscribed mass",
    "SPIC": "spiculated mass",
    "MISC": "ill-defined mass",
    "ARCH": "distortion",
    "ASYM": "asymmetry",
}


def lesion_annotations(lesions) -> tuple[np.ndarray, list[str]]:
    """(boxes (N, 4) xyxy, labels) for :class:`~awm_lib.data.types.Lesion` records.

    A label reads ``"spiculated mass, malignant"`` (with ``B5`` when the BI-RADS
    category is known); mini-MIAS codes (``CIRC``, ``SPIC`` ...) are spelled out.
    """
    boxes = np.asarray([les.box for les in lesions], dtype=float).reshape(-1, 4)
    labels = []
    for les in lesions:
        kind = MIAS_CLASSES.get(str(les.kind), str(les.kind).replace("_", " ").lower())
        text = f"{kind}, {'malignant' if les.malignant else 'benign'}"
        labels.append(text + (f" B{les.birads}" if les.birads is not None else ""))
    return boxes, labels


def _labels_inside(ax, width: float) -> None:
    """Right-align the box labels of boxes in the right half of an image, so they stay on it.

    :func:`awm_lib.book.viz.show_mammogram` writes a label from its box's left edge
    rightwards; near the right edge it would spill onto the next panel (and make
    the layout shrink every image to make room).
    """
    from matplotlib.patches import Rectangle

    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    for text, rect in zip(ax.texts, rects):  # labels are written in box order
        text.set_in_layout(False)
        if rect.get_x() > width / 2:
            text.set_horizontalalignment("right")
            text.set_x(rect.get_x() + rect.get_width())


def show_side_by_side(images, titles: Sequence[str] | None = None, boxes: Sequence | None = None,
                      labels: Sequence | None = None, ncols: int | None = None, size: float = 3.0,
                      suptitle: str | None = None):
    """Mammograms in a row (or ``ncols`` per row), each with optional boxes and box labels.

    Unlike :func:`awm_lib.book.viz.show_grid` it labels the boxes (``labels[i]`` goes with
    ``boxes[i]``) and gives each panel its image's aspect ratio. Returns the figure.
    """
    n = len(images)
    ncols = max(1, min(ncols or n, n))
    nrows = -(-n // ncols)
    aspect = max(np.asarray(im).shape[1] / max(np.asarray(im).shape[0], 1) for im in images)  # width / height
    width = size * min(max(aspect, 0.6), 1.6)
    fig, axes = viz.subplots(
        nrows, ncols, width=width, height=width / aspect + 0.4, squeeze=False
    )  # + a title
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        viz.show_mammogram(images[i], boxes=None if boxes is None else boxes[i],
                           labels=None if labels is None else labels[i], ax=ax,
                           title=None if titles is None else titles[i])
        _labels_inside(ax, np.asarray(images[i]).shape[1])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _zoom(image: np.ndarray, box, context: float) -> tuple[np.ndarray, np.ndarray]:
    """A square window around ``box`` (its side ``1 + 2 * context`` times the box's longer side)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 8.0) * (1 + 2 * context)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(np.clip(round(cx - side / 2), 0, max(w - side, 0)))
    top = int(np.clip(round(cy - side / 2), 0, max(h - side, 0)))
    right, bottom = min(w, left + int(round(side))), min(h, top + int(round(side)))
    return image[top:bottom, left:right], np.array([[x0 - left, y0 - top, x1 - left, y1 - top]])


def show_lesion_zooms(images, boxes, titles: Sequence[str] | None = None, context: float = 1.0,
                      ncols: int = 4, size: float = 2.4):
    """Close-ups: for each ``(images[i], boxes[i])`` a square window around the box, box drawn.

    ``context`` is how much surrounding tissue to keep, in box sizes on each
    side. The grey scale is the image's own (no stretch), so a faint finding
    looks faint. Returns the figure.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = viz.subplots(nrows, ncols, width=size, height=size * 1.1, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        patch, box = _zoom(np.asarray(images[i], dtype=np.float32), boxes[i], context)
        viz.show_mammogram(
            patch, boxes=box, ax=ax, title=None if titles is None else titles[i], linewidth=1.0
        )
    return fig


# --------------------------------------------------------------------------- realism
def mean_spectrum(images: Sequence[np.ndarray], pixel_mm: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(frequencies in cycles/mm, geometric-mean radial power spectrum, number of patches).

    The tissue patches and spectra are exactly those of :mod:`awm_lib.data.realism`;
    each patch's spectrum is divided by its own mean first, so images stored
    with different grey ranges (8-bit film, 12-bit detector) average fairly.
    """
    logs, freqs = [], None
    for img in images:
        img = np.asarray(img, dtype=np.float64)
        for patch in realism.tissue_patches(img, realism.breast_mask(img), pixel_mm):
            freqs, power = realism.radial_power_spectrum(patch, pixel_mm)
            logs.append(np.log(power / power.mean()))
    if not logs:
        raise ValueError("no tissue patch found in these images (too small, or no breast)")
    return freqs, np.exp(np.mean(logs, axis=0)), len(logs)


def plot_spectrum_comparison(groups: Mapping[str, tuple[Sequence[np.ndarray], float]], band=None, ax=None):
    """Mean power spectra of breast tissue, one line per group, log-log, with the fitted slope.

    ``groups`` maps a name to ``(images, pixel_mm)``; ``band`` (cycles/mm, default
    :data:`awm_lib.data.realism.DEFAULT_BAND`) is shaded and is where the line
    ``P ~ f**-beta`` is fitted (the legend gives beta). Returns the axis.
    """
    band = tuple(band or realism.DEFAULT_BAND)
    ax = ax if ax is not None else viz.subplots(1, 1, width=5.0, height=3.8)[1]
    for i, (name, (images, pixel_mm)) in enumerate(groups.items()):
        f, p, n = mean_spectrum(images, pixel_mm)
        sel = (f >= band[0]) & (f <= band[1])
        slope, icpt = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)
        color = viz.PALETTE[i % len(viz.PALETTE)]
        ax.plot(f, p, color=color, label=f"{name} ({n} patches): β = {-slope:.2f}")
        ax.plot(f[sel], np.exp(icpt) * f[sel] ** slope, "--", color=color, linewidth=1)
    ax.axvspan(*band, color="grey", alpha=0.12, label="fitted band")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("power (relative)")
    ax.legend(fontsize=8)
    return ax


def plot_histograms(cmp: Mapping, ax=None):
    """The tissue-intensity histograms of :func:`awm_lib.data.realism.compare_with_mias`'s result.

    Each dataset's tissue is normalised by its own 1st and 99th percentiles, so
    the *shapes* are compared; the title gives the Wasserstein and KS distances.
    Returns the axis.
    """
    ax = ax if ax is not None else viz.subplots(1, 1, width=5.0, height=3.8)[1]
    names = {"mini_mias": "mini-MIAS (real, film)", "synthetic": "synthetic"}
    for i, (key, name) in enumerate(names.items()):
        hist, edges = np.asarray(cmp[key]["histogram"]), np.asarray(cmp[key]["bin_edges"])
        ax.stairs(hist, edges, label=f"{name}, {cmp[key]['n_images']} images", color=viz.PALETTE[i],
                  linewidth=1.5, fill=False)
    d = cmp["histogram_distance"]
    ax.set_title(f"Wasserstein {d['wasserstein']:.3f}, KS {d['ks']:.3f}", fontsize=9)
    ax.set_xlabel("tissue intensity (1st..99th percentile -> 0..1)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax
