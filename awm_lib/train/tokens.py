"""Frozen-backbone training data: each image's RoIs as cached tokens instead of pixels.

With ``features.cached=true`` (the ``frozen`` preset) the datasets are built as
usual (preprocessing, proposals, RoI labels: :func:`~awm_lib.train.dataset.build_datasets`),
then every RoI crop is embedded once by the frozen backbone through the shared
feature cache (:class:`awm_lib.features.FeatureCache`) and each item carries::

    tokens      (K+1, D) float32   the backbone's embedding of each RoI crop
    rois, roi_mask, roi_labels, label, image_id, patient_id, image_size   as in MammoRoIDataset

:func:`collate_tokens` stacks them into ``tokens (B, K+1, D)``; the trainer calls
``RoIClassifier.forward_tokens`` on them, the same position codes, transformer,
pooling and head as the pixel path. No augmentation: a cached token is fixed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from awm_lib.data.cache import PreprocessCache
from awm_lib.features import FeatureCache, token_input
from awm_lib.model.position import boxes_to_cxcywh_norm
from awm_lib.model.roi_transformer import RoIClassifier
from awm_lib.train.dataset import MammoRoIDataset, build_datasets


class TokenDataset(Dataset):
    """Items of a :class:`MammoRoIDataset` with ``tokens`` in place of ``image``."""

    def __init__(
        self,
        base: MammoRoIDataset,
        tokens: torch.Tensor,
        image_sizes: np.ndarray,
        backbone: dict | None = None,
    ):
        if len(tokens) != len(base):
            raise ValueError(f"{len(base)} images but tokens for {len(tokens)}")
        self.samples, self.records, self.tokens = base.samples, base.records, tokens  # tokens (N, K+1, D)
        self.image_sizes = torch.as_tensor(image_sizes, dtype=torch.long)  # (N, 2) as (H, W)
        self.n_without_proposals = base.n_without_proposals
        self.backbone = backbone or {}

    def set_epoch(self, epoch: int) -> None:  # the loop calls it; nothing is drawn per epoch
        pass

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        s, rec = self.samples[i], self.records[i]
        return {
            "tokens": self.tokens[i],
            "rois": torch.tensor(rec["rois"], dtype=torch.float32),
            "roi_mask": torch.tensor(rec["valid"], dtype=torch.bool),
            "roi_labels": torch.tensor(rec["roi_labels"], dtype=torch.long),
            "label": int(s.label),
            "image_id": s.image_id,
            "patient_id": s.patient_id,
            "image_size": self.image_sizes[i],
        }


def collate_tokens(items: list[dict]) -> dict:
    """Stack token items: ``tokens (B, K+1, D)``, the rest as :func:`~awm_lib.train.dataset.collate`."""
    return {
        "tokens": torch.stack([it["tokens"] for it in items]),  # (B, K+1, D)
        "rois": torch.stack([it["rois"] for it in items]),  # (B, K+1, 4)
        "roi_mask": torch.stack([it["roi_mask"] for it in items]),  # (B, K+1)
        "roi_labels": torch.stack([it["roi_labels"] for it in items]),  # (B, K+1)
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.float32),  # (B,)
        "image_sizes": torch.stack([it["image_size"] for it in items]),  # (B, 2) as (H, W)
        "image_ids": [it["image_id"] for it in items],
        "patient_ids": [it["patient_id"] for it in items],
    }


def feature_cache_for(cfg, preprocess: PreprocessCache | None = None) -> FeatureCache:
    """The feature cache a :class:`~awm_lib.train.config.TrainConfig` trains on."""
    f, m = cfg.features, cfg.model
    preprocess = preprocess or PreprocessCache(long_side=cfg.data.long_side)
    return FeatureCache(m.backbone, crop_size=m.crop_size, preprocess=preprocess, max_value=m.max_value,
                        random_seed=f.random_seed, root=f.root, batch_size=f.batch_size, threads=f.threads)


def _image_sizes(cache: PreprocessCache, samples) -> np.ndarray:
    """(N, 2) (H, W) of each preprocessed image, read from the .npy headers only
    (an entry that is not there is preprocessed again)."""
    out = np.empty((len(samples), 2), dtype=np.int64)
    for i, s in enumerate(samples):
        try:
            out[i] = np.load(cache.entry(s.path)[0], mmap_mode="r").shape[:2]
        except (FileNotFoundError, ValueError):
            out[i] = cache.get(s.path).pixels.shape
    return out


def token_datasets(
    cfg, datasets: dict[str, MammoRoIDataset], progress: bool = True
) -> dict[str, TokenDataset]:
    """The token version of each dataset (filling the feature cache where needed, all splits at once)."""
    first = next(iter(datasets.values()))
    fc = feature_cache_for(cfg, first.cache)
    names = list(datasets)
    paths = [s.path for n in names for s in datasets[n].samples]
    boxes = [r["rois"] for n in names for r in datasets[n].records]
    tokens = fc.tokens(paths, boxes, embedding=cfg.model.backbone.embedding, progress=progress)  # (N, K+1, D)
    record = fc.record()
    out, start = {}, 0
    for n in names:
        ds = datasets[n]
        out[n] = TokenDataset(ds, tokens[start:start + len(ds)], _image_sizes(ds.cache, ds.samples), record)
        start += len(ds)
    return out


def build_token_datasets(
    cfg, *, progress: bool = True, splits: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, TokenDataset]:
    """:func:`~awm_lib.train.dataset.build_datasets`, then the tokens of every RoI."""
    return token_datasets(cfg, build_datasets(cfg, progress=progress, splits=splits), progress=progress)


def token_classifier(cfg) -> RoIClassifier:
    """The RoI classifier of ``cfg.model`` without a ViT: it reads tokens (``forward_tokens``)."""
    return RoIClassifier(cfg.model, backbone=token_input(cfg.model.backbone, cfg.features.random_seed))


def forward_token_batch(model, batch: dict):
    """``RoIClassifier.forward_tokens`` on a collated token batch (boxes normalised by each image's size)."""
    boxes_norm = boxes_to_cxcywh_norm(batch["rois"].float(), batch["image_sizes"])  # (B, K+1, 4)
    return model.forward_tokens(batch["tokens"], boxes_norm, batch.get("roi_mask"))


__all__ = [
    "TokenDataset",
    "build_token_datasets",
    "collate_tokens",
    "feature_cache_for",
    "forward_token_batch",
    "token_classifier",
    "token_datasets",
]
