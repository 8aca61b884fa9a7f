"""One mammogram in, a probability and the RoIs the model looked at out.

:func:`predict_image` runs the whole pipeline of a trained run on one file:
preprocess (crop + orient + resize, as in training), propose, select the top-k
RoIs + the anchor, classify. For each RoI it reports how much the image-level
decision leaned on it:

* ``anchor`` / ``cls`` pooling: the head reads one token, so the weight of RoI
  ``j`` is that token's attention to ``j`` in the last RoI-transformer block,
  averaged over heads;
* ``attention`` / ``mean`` pooling: the pooling weights themselves.

An image where the proposer found nothing is classified from the anchor (the
whole breast) alone; the result says so (``fallback_to_anchor``) and a
:class:`~awm_lib.train.dataset.NoProposalsWarning` is raised.
:func:`save_overlay` draws the RoIs on the original image.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from awm_lib.config import from_dict, to_dict
from awm_lib.data.cache import preprocess
from awm_lib.data.image import check_mammogram_size, load_image
from awm_lib.data.types import Sample
from awm_lib.errors import ConfigError
from awm_lib.features import resolve, token_input
from awm_lib.io_utils import atomic_path
from awm_lib.model.baseline import FullImageClassifier
from awm_lib.model.pretrained import locate
from awm_lib.model.roi_transformer import RoIClassifier
from awm_lib.proposals.base import make_proposer
from awm_lib.train.checkpoint import load_checkpoint
from awm_lib.train.config import TrainConfig, config_from_dict
from awm_lib.train.dataset import NoProposalsWarning, roi_settings, rois_for_image, single_thread
from awm_lib.train.experiment import forward_batch, read_results
from awm_lib.train.provenance import describe_model


@dataclass
class ImagePrediction:
    image: str
    probability: float
    label: str | None  # "cancer" / "no cancer" at the validation threshold, when known
    threshold: float | None
    rois: list[dict]  # box (original pixels xyxy), kind, rank, score, weight
    weight_kind: str  # what "weight" means for this model's pooling
    n_proposals: int
    fallback_to_anchor: bool
    checkpoint: str
    proposer: str
    messages: list[str] = field(default_factory=list)
    # what the model is (awm_lib.train.provenance): "random init" / "the project's SSL checkpoint" / "hub
    # weights" / ...
    backbone_source: str = "not recorded"
    backbone_weights: str = ""
    training_data: str = ""
    toy: bool = False
    caution: str | None = None  # one line when the backbone or the training data is a toy

    def to_dict(self) -> dict:
        return asdict(self)


def _roi_weights(out, pooling: str) -> tuple[torch.Tensor, str]:
    """(K,) weight per RoI for the first image of the batch (see the module docstring)."""
    if pooling in ("attention", "mean") and out.pool_weights is not None:
        return out.pool_weights[0].float(), f"{pooling}-pooling weight"
    if out.attention:
        last = out.attention[-1][0].float().mean(0)  # (K', K'), averaged over heads
        row = last[0]  # the token the head reads: the anchor (or the CLS token)
        if pooling == "cls":
            row = row[1:]  # drop the CLS token itself
        return row, f"last-block attention of the {'CLS token' if pooling == 'cls' else 'anchor'}"
    w = out.pool_weights[0].float() if out.pool_weights is not None else torch.zeros(out.tokens.shape[1])
    return w, f"{pooling}-pooling weight"


def load_run(checkpoint: str | os.PathLike, *, which: str = "best",
             device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig, Path]:
    """A trained run's model, its configuration and its checkpoint folder.

    The model loads itself (``from_pretrained``) with the configuration the run
    recorded: a :class:`RoIClassifier`, or the full-image baseline for runs with
    ``arch="full_image"``. ``checkpoint`` is a run folder (its ``which`` = best /
    last checkpoint) or one step folder. A head trained on cached tokens
    (``features.cached``) comes with a token input in place of its ViT: call it
    with ``forward_tokens``.
    """
    step_dir = locate(checkpoint, which)
    cfg = config_from_dict(load_checkpoint(step_dir).config)
    model_cls = FullImageClassifier if cfg.arch == "full_image" else RoIClassifier
    model_cfg = from_dict(model_cls.CONFIG_CLASS, model_cls.config_from_training_run(to_dict(cfg)))
    backbone = token_input(cfg.model.backbone, cfg.features.random_seed) if cfg.features.cached else None
    return (
        model_cls.from_pretrained(step_dir, config=model_cfg, backbone=backbone, device=device),
        cfg,
        step_dir,
    )


@torch.no_grad()
def predict_image(
    image_path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    proposer: str | None = None,
    device: str | torch.device = "cpu",
) -> ImagePrediction:
    """Classify one mammogram with a trained run (see the module docstring).

    An image too small to be a mammogram is refused (:class:`~awm_lib.errors.ImageTooSmallError`).
    """
    check_mammogram_size(load_image(image_path), image_path)
    model, cfg, step_dir = load_run(checkpoint, device=device)
    if cfg.arch == "roi" and cfg.features.cached:  # a head trained on cached tokens: put its frozen ViT back

        model.backbone = resolve(cfg.model.backbone, cfg.features.random_seed, warn=False).build().to(device)
    if proposer is not None:
        cfg = replace(cfg, data=replace(cfg.data, proposer=proposer))
    if cfg.data.proposer == "oracle":  # it needs lesion annotations, which one image does not have
        raise ConfigError(
            "the 'oracle' proposer needs the image's lesion annotations, and predict sees one unannotated "
            "image; pass --proposer blob (or random / none)"
            + (" (this run was trained with oracle boxes)" if proposer is None else "")
        )
    prep, _ = preprocess(image_path, long_side=cfg.data.long_side)
    sample = Sample(image_id=Path(image_path).stem, path=Path(image_path), patient_id="?", label=0)
    settings = roi_settings(cfg)
    with single_thread():
        rec = rois_for_image(prep, sample, make_proposer(settings.proposer), settings)
    rois = torch.tensor(rec["rois"], dtype=torch.float32)  # (K+1, 4) cache pixels
    valid = torch.tensor(rec["valid"], dtype=torch.bool)
    h, w = prep.pixels.shape
    batch = {
        "images": torch.from_numpy(prep.pixels)[None, None].to(device),  # (1, 1, H, W)
        "rois": rois[None].to(device),
        "roi_mask": valid[None].to(device),
        "image_sizes": torch.tensor([[h, w]], device=device),
    }
    if cfg.arch == "full_image":  # the baseline looks at the whole breast: one "RoI", the anchor
        prob = float(torch.sigmoid(forward_batch(model, batch).float())[0])
        valid = torch.zeros_like(valid)
        valid[0] = True
        weights, kind = torch.ones(len(valid)), "full-image baseline (no RoIs)"
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
    boxes_orig = prep.boxes_to_original(rois.numpy())
    roi_list = []
    for j in range(rois.shape[0]):
        if not valid[j]:
            continue
        roi_list.append({
            "rank": j,
            "kind": "anchor" if j == 0 else "proposal",
            "box": [round(float(v), 1) for v in boxes_orig[j]],
            "weight": round(float(weights[j]), 4),
        })
    messages = []
    fallback = rec["n_proposals"] == 0 and cfg.arch == "roi"
    if fallback:
        msg = (f"{Path(image_path).name}: the '{cfg.data.proposer}' proposer found no region; "
               "classified from the anchor (whole breast) alone")
        warnings.warn(msg, NoProposalsWarning, stacklevel=2)
        messages.append(msg)
    run_dir = step_dir.parent.parent
    results = read_results(run_dir) or {}
    threshold = results.get("threshold")
    label = None if threshold is None else ("cancer" if prob >= threshold else "no cancer")
    return ImagePrediction(
        image=str(image_path),
        probability=prob,
        label=label,
        threshold=threshold,
        rois=roi_list,
        weight_kind=kind,
        n_proposals=rec["n_proposals"],
        fallback_to_anchor=fallback,
        checkpoint=str(step_dir),
        proposer=cfg.data.proposer,
        messages=messages,
        **describe_model(cfg, results),
    )


def save_overlay(pred: ImagePrediction, out_png: str | os.PathLike) -> Path:
    """The original image with each RoI drawn; brighter red = larger weight; the anchor in blue."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(load_image(pred.image).to_uint8()).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(img.size) / 50)))
    top = max((r["weight"] for r in pred.rois), default=1.0) or 1.0
    for r in sorted(pred.rois, key=lambda r: r["weight"]):
        if r["kind"] == "anchor":
            colour = (80, 160, 255)
        else:
            a = r["weight"] / top
            colour = (255, int(200 * (1 - a)), int(60 * (1 - a)))
        draw.rectangle(r["box"], outline=colour, width=width)
        draw.text(
            (r["box"][0] + width + 2, r["box"][1] + width + 2),
            f"{r['kind'][0].upper()}{r['rank']} {r['weight']:.2f}",
            fill=colour,
            font=font,
        )
    head = f"p(cancer) = {pred.probability:.3f}" + (
        f"  ({pred.label} at t = {pred.threshold:.3f})" if pred.label else ""
    )
    if pred.fallback_to_anchor:
        head += "  [no proposals: anchor only]"
    draw.text((10, 10), head, fill=(255, 255, 0), font=font)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        img.save(tmp, format="PNG")
    return out_png


def weights_array(pred: ImagePrediction) -> np.ndarray:
    """The RoI weights as an array (anchor first), e.g. for plotting."""
    return np.array([r["weight"] for r in pred.rois])
