"""The held-out probe: a pretrained backbone against its random init, on women pretraining never saw.

:func:`run_heldout_probe` writes ``results/pretrain_probe.json``. It is the
protocol of :mod:`awm_lib.pretrain.probe` (frozen features, k-NN and linear
probes, folds and bootstrap by woman, paired differences against a random
initialisation of the same architecture) restricted to the ``"probe"`` half of
:func:`awm_lib.pretrain.split.mias_halves`, with two tasks:

* ``lesion_vs_normal``: RoI crops around located lesions vs size-matched crops
  of normal tissue (:func:`~awm_lib.pretrain.probe.extract_roi_crops`);
* ``malignant_vs_rest_image``: one feature per image, the whole breast
  (breast-cropped, long side resized to ``image_size``, padded square), malignant
  (any malignant lesion) against benign and normal images.

It also checks, from the checkpoint's own ``pretrain_config.json``, which
mini-MIAS images pretraining saw, and records that no probe woman is among
them (or, if some are, says so in the file: the figures are then flagged).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from awm_lib.data.image import load_image
from awm_lib.data.mias import load_mias
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.paths import results_root
from awm_lib.pretrain.probe import (
    ProbeConfig,
    embed_crops,
    evaluate_task,
    extract_roi_crops,
    random_init_like,
)
from awm_lib.pretrain.split import mias_halves, samples_of_half
from awm_lib.pretrain.tissue import breast_tissue, place_on_canvas


def image_crops(samples, size: int) -> torch.Tensor:
    """Whole breasts: ``(N, 1, size, size)`` in [0, 1], breast-cropped, long side ``size``, padded (tissue
    bank layout)."""
    out = []
    for s in samples:
        crop, mask = breast_tissue(load_image(s.path).pixels)
        out.append(torch.from_numpy(place_on_canvas(crop, mask, size)[0]).float().div(255)[None])
    return torch.stack(out)


def pretraining_images(checkpoint: str | Path) -> list[str] | None:
    """The image ids a checkpoint's pretraining bank held (``pretrain_config.json``), or None if
    unrecorded."""
    path = Path(checkpoint) / "pretrain_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("image_ids")


def _task(features: dict[str, np.ndarray], y: np.ndarray, women: np.ndarray, cfg: ProbeConfig) -> dict:
    """:func:`evaluate_task` against "random-init", or a ``skipped`` note when a class has fewer than two
    women."""
    if min(len(np.unique(women[y == c])) for c in (0, 1)) < 2:
        return {"skipped": "fewer than two women in one of the classes"}
    return evaluate_task(features, y, women, cfg, "random-init")


def run_heldout_probe(
    checkpoint: str | Path,
    cfg: ProbeConfig | None = None,
    image_size: int = 224,
    split_seed: int = 0,
    samples=None,
    out_path: str | Path | None = None,
    command: str | None = None,
    tasks: tuple[str, ...] = ("lesion_vs_normal", "malignant_vs_rest_image", "malignant_vs_benign"),
) -> dict:
    """Probe ``checkpoint`` and its architecture's random init on the held-out women; write and return the
    JSON dict."""
    from transformers import Dinov2Model

    cfg = cfg or ProbeConfig()
    samples = samples if samples is not None else load_mias()
    halves = mias_halves(samples, split_seed)
    held = samples_of_half(samples, "probe", split_seed)
    seen = pretraining_images(checkpoint)
    held_ids = {s.image_id for s in held}
    leaked = sorted(held_ids & set(seen or []))

    ssl = Dinov2Model.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    name = Path(checkpoint).name
    models = {"random-init": random_init_like(ssl, cfg.seed), name: ssl}
    out_tasks: dict[str, dict] = {}
    data: dict = {"dataset": "mini-MIAS", "half": "probe", "split_seed": split_seed, "images": len(held),
                  "women": len({s.patient_id for s in held})}

    if {"lesion_vs_normal", "malignant_vs_benign"} & set(tasks):
        rois = extract_roi_crops(held, cfg)
        feats = {
            k: embed_crops(m, rois.crops, cfg.embedding, cfg.batch_size, cfg.progress)
            for k, m in models.items()
        }
        les = rois.is_lesion
        data.update(
            lesion_crops=int(les.sum()),
            normal_crops=int((~les).sum()),
            malignant_lesions=int((rois.malignant == 1).sum()),
            benign_lesions=int((rois.malignant == 0).sum()),
        )
        if "lesion_vs_normal" in tasks:
            out_tasks["lesion_vs_normal"] = _task(feats, les.astype(int), rois.woman, cfg)
        if "malignant_vs_benign" in tasks:
            ym, wm = rois.malignant[les], rois.woman[les]
            out_tasks["malignant_vs_benign"] = _task({k: v[les] for k, v in feats.items()}, ym, wm, cfg)
    if "malignant_vs_rest_image" in tasks:
        imgs = image_crops(held, image_size)
        feats = {
            k: embed_crops(m, imgs, cfg.embedding, cfg.batch_size, cfg.progress) for k, m in models.items()
        }
        y = np.array([s.label for s in held])
        out_tasks["malignant_vs_rest_image"] = _task(feats, y, np.array([s.patient_id for s in held]), cfg)
        data.update(image_size=image_size, malignant_images=int(y.sum()))

    result = run_record(command, seed=cfg.seed, device="cpu")
    result.update(
        checkpoint=str(checkpoint),
        probe_config=asdict(cfg),
        data=data,
        hygiene={
            "pretraining_mias_images": sorted(i for i in (seen or []) if i.startswith("mdb"))
            if seen is not None
            else "not recorded",
            "probe_women": halves["probe"],
            "probe_images_seen_by_pretraining": leaked if seen is not None else "unknown",
        },
        models={
            k: {"parameters": int(sum(p.numel() for p in m.parameters())), "source": k}
            for k, m in models.items()
        },
        tasks=out_tasks,
    )
    out_path = Path(out_path) if out_path else results_root() / "pretrain_probe.json"
    write_json_atomic(out_path, result)
    return result
