"""AUC against lesion size: does a model find the small cancers?

The paper's premise is that a full-image ViT at low resolution misses small
findings, which a RoI model sees at full resolution. This module measures it on
the pooled test predictions of an ablation configuration:

* each cancer image gets the size of its largest located malignant lesion
  (:func:`lesion_size_mm`: the long side of the lesion's box, in millimetres);
* the cancers are cut into size bins (:data:`SIZE_BINS_MM`), and for each bin the
  AUC of *those* cancers against *all* normal images is computed, with a 95%
  bootstrap interval that resamples women (:func:`auc_by_size`).

A model that misses small findings has a low AUC in the first bins and a high one
in the last. Cancers without a located lesion (mini-MIAS has a few) are counted
as ``n_unsized`` and left out of the bins. Pure functions, unit-tested on constructed data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from awm_lib.data.synthetic import FIELD_MM
from awm_lib.data.types import Sample, located
from awm_lib.experiments.ablation_aggregate import RunPredictions
from awm_lib.train.metrics import roc_auc

#: Bin edges (mm) of the largest malignant lesion's box side; the last bin is open-ended.
SIZE_BINS_MM = (0.0, 10.0, 15.0, 20.0, 30.0, float("inf"))
MIAS_PIXEL_MM = 0.2  # mini-MIAS films were digitised and reduced to a 200 micron pixel edge


def pixel_mm(sample: Sample, dataset: str) -> float | None:
    """Millimetres per pixel of the sample's image (None when the dataset does not say)."""
    if dataset == "synthetic" and sample.height:
        return FIELD_MM / sample.height
    if dataset == "mias":
        return MIAS_PIXEL_MM
    return None


def lesion_size_mm(sample: Sample, dataset: str) -> float | None:
    """The long side (mm) of the box of the sample's largest located malignant lesion, or None."""
    mm = pixel_mm(sample, dataset)
    if mm is None or sample.height is None or sample.width is None:
        return None
    sides = [max(le.box[2] - le.box[0], le.box[3] - le.box[1]) for le in located(sample) if le.malignant]
    return float(max(sides)) * mm if sides else None


def _bin_label(lo: float, hi: float) -> str:
    return f">= {lo:g} mm" if hi == float("inf") else f"{lo:g}-{hi:g} mm"


def auc_by_size(runs: Sequence[RunPredictions], sizes: dict[str, float | None], *,
                bins: Sequence[float] = SIZE_BINS_MM, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per size bin: the AUC of the bin's cancers against all normals, pooled over runs, with a women
    bootstrap.

    ``runs`` must carry image ids (:attr:`RunPredictions.ids`); ``sizes`` maps an image id
    to its lesion size in mm (None: unknown). Returns ``{"bins": [{"lo", "hi", "label",
    "n_pos", "auc": {"mean", "ci_low", "ci_high"}}], "n_neg", "n_unsized"}`` (counts are
    distinct images, not pooled predictions).
    """
    if any(r.ids is None for r in runs):
        raise ValueError("auc_by_size needs each run's image ids (RunPredictions.ids)")
    y = np.concatenate([np.asarray(r.y) for r in runs]).astype(np.int64)
    p = np.concatenate([np.asarray(r.p) for r in runs]).astype(np.float64)
    ids = np.concatenate([np.asarray(r.ids).astype(str) for r in runs])
    groups = np.concatenate([np.asarray(r.groups, dtype=object).astype(str) for r in runs])
    size = np.array([np.nan if sizes.get(i) is None else float(sizes[i]) for i in ids])
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
    rng = np.random.default_rng(seed)
    draws = [
        np.concatenate([members[g] for g in rng.integers(0, uniq.size, size=uniq.size)])
        for _ in range(n_boot)
    ]
    neg = y == 0
    out_bins = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        in_bin = (y == 1) & (size >= lo) & (size < hi)
        keep = neg | in_bin
        point = roc_auc(y[keep], p[keep]) if in_bin.any() and neg.any() else float("nan")
        boots = []
        for idx in draws:
            k = idx[keep[idx]]
            yk = y[k]
            if yk.size and yk.min() != yk.max():
                boots.append(roc_auc(yk, p[k]))
        ci = np.quantile(boots, [0.025, 0.975]) if boots and point == point else (None, None)
        out_bins.append({"lo": lo, "hi": None if hi == float("inf") else hi, "label": _bin_label(lo, hi),
                         "n_pos": int(np.unique(ids[in_bin]).size),
                         "auc": {"mean": None if point != point else float(point),
                                 "ci_low": None if ci[0] is None else float(ci[0]),
                                 "ci_high": None if ci[1] is None else float(ci[1])}})
    return {"bins": out_bins, "n_neg": int(np.unique(ids[neg]).size),
            "n_unsized": int(np.unique(ids[(y == 1) & np.isnan(size)]).size)}
