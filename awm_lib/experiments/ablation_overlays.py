"""Example overlays of the ablation study: one run's model drawn on a fixed test image.

The overlay PNG of a record shows the first run's model on a fixed test image
(its first cancer with a located lesion, :func:`overlay_image`) with the RoIs it
was TESTED with (:func:`overlay_prediction`), shrunk and written by
:func:`write_overlay` at :func:`overlay_path`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.errors import CheckpointError
from awm_lib.experiments.ablation_study import RunSpec
from awm_lib.io_utils import atomic_path
from awm_lib.train.dataset import build_datasets, collate, limit_samples, load_samples, split_samples
from awm_lib.train.experiment import forward_batch, read_results
from awm_lib.train.inference import ImagePrediction, _roi_weights, load_run, save_overlay


def overlay_image(spec: RunSpec):
    """The fixed example image of a run's test split: its first cancer with a located lesion (by image id)."""
    d = spec.cfg.data
    samples = load_samples(d.dataset, d.root, synthetic_n=d.synthetic_n, synthetic_seed=d.synthetic_seed,
                           synthetic_size=d.synthetic_size, val_fraction=d.val_fraction, progress=False)
    test = limit_samples(
        split_samples(samples, d.dataset, fold=d.fold, val_fraction=d.val_fraction, seed=0)["test"],
        d.max_images,
    )
    cands = sorted((s for s in test if s.label == 1 and s.lesions), key=lambda s: s.image_id)
    return cands[0] if cands else (sorted(test, key=lambda s: s.image_id)[0] if test else None)


def overlay_prediction(spec: RunSpec, sample):
    """The run's best model on ``sample`` with the RoIs it was TESTED with (from the RoI cache).

    Unlike :func:`awm_lib.train.inference.predict_image` (which proposes afresh and
    so cannot know the lesion boxes), this shows what the oracle/random/blob model
    really saw during evaluation.
    """
    import torch

    model, cfg, step_dir = load_run(spec.run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = build_datasets(cfg, progress=False, splits=("test",))["test"]
    i = next(j for j, s in enumerate(test.samples) if s.image_id == sample.image_id)
    batch = collate([test[i]])
    rec = test.records[i]
    with torch.no_grad():
        if cfg.arch == "full_image":
            prob = float(torch.sigmoid(forward_batch(model, batch).float())[0])
            keep, weights, kind = [0], torch.ones(1), "full-image baseline (no RoIs)"
        else:
            out = model(
                batch["images"],
                batch["rois"],
                image_sizes=batch["image_sizes"],
                roi_mask=batch["roi_mask"],
                return_attention=True,
            )
            prob = float(torch.sigmoid(out.logits.float())[0])
            weights, kind = _roi_weights(out, cfg.model.pooling)
            keep = [j for j, v in enumerate(rec["valid"]) if v]
    prep = test.cache.get(sample.path)
    boxes = prep.boxes_to_original(np.asarray(rec["rois"], dtype=np.float64))
    rois = [
        {
            "rank": j,
            "kind": "anchor" if j == 0 else ("proposal" if j <= rec["n_proposals"] else "padding"),
            "box": [round(float(v), 1) for v in boxes[j]],
            "weight": round(float(weights[j]), 4),
        }
        for j in keep
    ]
    threshold = (read_results(spec.run_dir) or {}).get("threshold")
    label = None if threshold is None else ("cancer" if prob >= threshold else "no cancer")
    return ImagePrediction(
        image=str(sample.path),
        probability=prob,
        label=label,
        threshold=threshold,
        rois=rois,
        weight_kind=kind,
        n_proposals=rec["n_proposals"],
        fallback_to_anchor=rec["n_proposals"] == 0 and cfg.arch == "roi",
        checkpoint=str(step_dir),
        proposer=cfg.data.proposer,
    )


def write_overlay(spec: RunSpec, out_png: Path, max_side: int = 512) -> Path | None:
    """Draw the run's RoIs and weights on its example test image (shrunk to ``max_side`` px)."""
    from PIL import Image

    sample = overlay_image(spec)
    if sample is None:
        return None
    save_overlay(overlay_prediction(spec, sample), out_png)
    with Image.open(out_png) as im:
        im.thumbnail((max_side, max_side))
        small = im.copy()
    with atomic_path(out_png) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return out_png


def overlay_path(overlays_dir: str | Path, dataset: str, configuration: str, scale: str) -> Path:
    """``<dir>/<dataset>-<configuration>.png`` (cpu-smoke) or ``...-<scale>.png`` (so scales never overwrite
    each other)."""
    return Path(overlays_dir) / f"{dataset}-{configuration}{'' if scale == 'cpu-smoke' else '-' + scale}.png"


def _overlay_once(spec: RunSpec, png: Path, log: Callable[[str], None]) -> str | None:
    """The overlay of ``spec`` at ``png`` (drawn unless it exists); None (and a message) if it cannot be
    drawn,
    e.g. for a run carried from another machine without its checkpoints."""
    if not png.is_file():
        try:
            if write_overlay(spec, png) is None:
                return None
        except (CheckpointError, OSError, StopIteration) as e:
            log(f"ablation: no example overlay for {spec.configuration} ({type(e).__name__}: {e})")
            return None
    return _relative(png)


def _relative(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(p)
