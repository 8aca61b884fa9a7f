"""Data hygiene for pretraining: two halves of the mini-MIAS women, one to pretrain on, one to probe on.

A backbone that has seen a test image, even without its label, may have
memorised its texture; a probe on that image then flatters the backbone.
So the women of mini-MIAS are split once, by a fixed seed, into

* ``"pretrain"``: their images may go into the self-supervised tissue bank;
* ``"probe"``:    their images are never shown to pretraining; every probe
  figure in ``results/pretrain_probe.json`` is computed on them only.

Both images of a woman (the left/right pair) are always on the same side. The
split is stratified by the woman's class (any malignant lesion > any lesion >
normal) so each half gets about half of the cancers and of the lesions.
"""

from __future__ import annotations

import numpy as np

HALVES = ("pretrain", "probe")


def woman_class(samples) -> dict[str, str]:
    """``patient_id`` -> "malignant" (any malignant lesion), "lesion" (any lesion) or "normal"."""
    rank = {"normal": 0, "lesion": 1, "malignant": 2}
    out: dict[str, str] = {}
    for s in samples:
        c = "malignant" if any(les.malignant for les in s.lesions) else ("lesion" if s.lesions else "normal")
        if rank[c] >= rank[out.get(s.patient_id, "normal")]:
            out[s.patient_id] = c
    return out


def mias_halves(samples, seed: int = 0) -> dict[str, list[str]]:
    """``{"pretrain": [patient_id, ...], "probe": [...]}``: a seeded 50/50 split of women, stratified by
    class.

    Within each class the women are sorted, shuffled with ``seed``, and the
    first ``ceil(n / 2)`` go to the probe half (so the probe half is never the
    smaller one of a class). Independent of the order of ``samples``.
    """
    classes = woman_class(samples)
    rng = np.random.default_rng(seed)
    probe: list[str] = []
    for c in ("malignant", "lesion", "normal"):
        group = sorted(p for p, k in classes.items() if k == c)
        probe += [str(p) for p in rng.permutation(group)[: (len(group) + 1) // 2]]
    probe_set = set(probe)
    return {"pretrain": sorted(p for p in classes if p not in probe_set), "probe": sorted(probe_set)}


def samples_of_half(samples, half: str, seed: int = 0) -> list:
    """The samples whose woman is in ``half`` ("pretrain" or "probe") of :func:`mias_halves`."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    women = set(mias_halves(samples, seed)[half])
    return [s for s in samples if s.patient_id in women]
