"""Patient-level splits: every image of one woman lands on the same side."""

from __future__ import annotations

import numpy as np

from awm_lib.data.types import Sample


def validation_patients(
    samples: list[Sample], fraction: float, seed: int = 0, *, at_least_one: bool = False
) -> set[str]:
    """The patients to move to validation: ``fraction`` of them, stratified by label.

    A patient's label is the maximum over her images (one cancer makes her positive).
    Within each label the patients are sorted, shuffled with ``seed`` and the first
    ``round(fraction * n)`` taken (at least one of a group of two or more when
    ``at_least_one``). Deterministic for a seed and independent of the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction}")
    label_of: dict[str, int] = {}
    for s in samples:
        label_of[s.patient_id] = max(label_of.get(s.patient_id, 0), s.label)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for label in (1, 0):
        group = sorted(p for p, lab in label_of.items() if lab == label)
        n_val = int(round(fraction * len(group)))
        if at_least_one and len(group) >= 2:
            n_val = max(n_val, 1)
        chosen.update(str(p) for p in rng.permutation(group)[:n_val])
    return chosen
