"""From a list of :class:`~awm_lib.data.types.Sample` to training batches.

Each item is one mammogram, ready for the RoI classifier::

    image       (1, H, W) float32 in [0, 1]   the cropped, oriented breast from the
                                              preprocessing cache (long side = data.long_side)
    rois        (K+1, 4) float32 xyxy         anchor (the whole breast) first, then the
                                              proposer's top-k, in the image's pixels
    roi_mask    (K+1,) bool                   False for padding (fewer than k proposals)
    roi_labels  (K+1,) int64                  1 = overlaps a malignant lesion, 0 = not,
                                              -1 = unknown/ignored (anchor, padding, partial)
    label       int                           1 = cancer
    image_id    str

Work that does not change between epochs is done once, before training:
preprocessing (:class:`awm_lib.data.cache.PreprocessCache`) and proposals (run
once per image and remembered on disk, keyed by the proposer's settings and the
cache entry). ``__getitem__`` then only reads one small ``.npy`` file, so a
DataLoader with a few workers and pinned memory keeps a GPU fed.

Augmentation (training only) is drawn from ``(seed, epoch, index)``: the same
image gets the same augmentation in the same epoch however the data are split
between workers or processes, which is what makes resumed runs exact.

:func:`split_samples` makes the splits: mini-MIAS 5-fold cross-validation by
woman (test = fold ``data.fold``, validation women carved out of the other
folds), VinDr-Mammo and the synthetic set by their official split (validation
studies drawn from training).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from awm_lib import paths
from awm_lib.data.cache import PreprocessCache, Preprocessed
from awm_lib.data.mias import load_mias
from awm_lib.data.splits import validation_patients
from awm_lib.data.synth_dataset import ensure_synthetic_dataset
from awm_lib.data.synthetic import FIELD_MM
from awm_lib.data.types import Sample, located
from awm_lib.data.vindr import load_vindr
from awm_lib.errors import ConfigError, DatasetNotFoundError
from awm_lib.io_utils import write_json_atomic
from awm_lib.losses import label_rois
from awm_lib.proposals.base import Proposals, make_proposer
from awm_lib.proposals.select import PIXEL_MM, SelectConfig, select_rois
from awm_lib.train.config import DEFAULT_MARGIN

ROIS_VERSION = 1  # bump when the way RoIs are computed changes


class NoProposalsWarning(UserWarning):
    """Some images had no proposals: they are classified from the anchor (whole breast) alone."""


# --- splits --------------------------------------------------------------------------
def load_samples(
    dataset: str,
    root: str | Path | None,
    *,
    synthetic_n: int = 400,
    synthetic_seed: int = 0,
    synthetic_size: int = 1024,
    val_fraction: float = 0.2,
    progress: bool = True,
) -> list[Sample]:
    """All samples of a dataset (``synthetic`` is generated on first use).

    VinDr-shaped sets get their validation studies (``split == "val"``) here,
    ``val_fraction`` of the official training studies.
    """
    if dataset == "mias":
        return load_mias(root)
    if dataset == "vindr":
        if root is None:
            raise DatasetNotFoundError(
                "VinDr-Mammo needs --root (the folder with breast-level_annotations.csv)"
            )
        return load_vindr(root, val_fraction=val_fraction)
    if dataset == "synthetic":
        if root is None:
            root = ensure_synthetic_dataset(synthetic_n, synthetic_seed, synthetic_size, progress=progress)
        return load_vindr(root, val_fraction=val_fraction)
    raise ConfigError(f"unknown dataset {dataset!r}; choose synthetic, mias or vindr")


def carve_validation(
    samples: list[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val) by patient, stratified by the patient's label.

    Patients are shuffled (seeded) within each label and the first ``fraction`` of
    each group (at least one when the group has two or more) goes to validation.
    """
    val_patients = validation_patients(samples, fraction, seed, at_least_one=True)
    train = [s for s in samples if s.patient_id not in val_patients]
    val = [replace(s, split="val") for s in samples if s.patient_id in val_patients]
    return train, val


def split_samples(
    samples: list[Sample], dataset: str, *, fold: int = 0, val_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[Sample]]:
    """``{"train", "val", "test"}`` lists. The split depends on ``seed`` and ``fold`` only."""
    if dataset == "mias":
        if any(s.fold is None for s in samples):
            raise ConfigError("mini-MIAS samples need folds (load them with awm_lib.data.mias.load_mias)")
        n_folds = max(s.fold for s in samples) + 1
        if not 0 <= fold < n_folds:
            raise ConfigError(f"data.fold={fold} but mini-MIAS has folds 0..{n_folds - 1}")
        pool = [s for s in samples if s.fold != fold]
        train, val = carve_validation(pool, val_fraction, seed)
        return {"train": train, "val": val, "test": [s for s in samples if s.fold == fold]}
    out = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    if not out["val"] and out["train"]:  # no official validation split: carve one by patient
        out["train"], out["val"] = carve_validation(out["train"], val_fraction, seed)
    return out


def limit_samples(samples: list[Sample], n: int | None, seed: int = 0) -> list[Sample]:
    """At most ``n`` samples, keeping the share of cancers (for quick runs)."""
    if n is None or len(samples) <= n:
        return samples
    rng = np.random.default_rng(seed)
    pos = [s for s in samples if s.label == 1]
    neg = [s for s in samples if s.label != 1]
    n_pos = min(len(pos), max(1 if pos else 0, round(n * len(pos) / len(samples))))
    picked = [pos[i] for i in rng.permutation(len(pos))[:n_pos]] + [
        neg[i] for i in rng.permutation(len(neg))[: n - n_pos]
    ]
    keep = {s.image_id for s in picked}
    return [s for s in samples if s.image_id in keep]  # original order


# --- RoIs --------------------------------------------------------------------------------
@dataclass
class RoISettings:
    """Everything that decides an image's RoIs (and so the key of the RoI cache)."""

    proposer: str = "blob"
    topk: int = 5
    nms_iou: float = 0.5
    margin: float = 40.0  # pixels of the ORIGINAL image
    min_overlap: float = 0.5  # roi_labels
    seed: int = 0
    # fewer than topk proposals: "mask" = pad and mask out, "random" = seeded random boxes used as RoIs,
    # "repeat" = repeated kept proposals used as RoIs (the reference)
    pad: str = "mask"
    square_anchor: bool = False  # the reference squares the anchor too (side max(w, h) + margin)
    anchor_in_nms: bool = True  # False: NMS among the proposals only (the reference)
    # boxes crossing the border: "shift" inside (ours) | "pad" with black (the reference) | "clip"
    border: str = "shift"

    def key(self) -> dict:
        """The settings as they enter the cache key. Settings added later enter only when
        they differ from their defaults, so RoIs cached before they existed stay valid."""
        d = dict(self.__dict__)
        for name, default in (("square_anchor", False), ("anchor_in_nms", True), ("border", "shift")):
            if d[name] == default:
                del d[name]
        if self.pad == "random":
            d["filler"] = 2  # v2: filler sizes independent of the kept boxes, one seed per image
        return d


def lesion_boxes_in(prep: Preprocessed, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Located lesions' boxes (M, 4) in cache pixels and their malignancy (M,).

    A lesion without a real location (:func:`awm_lib.data.types.is_located`:
    mini-MIAS rows without coordinates get the whole image as their box) is left out.
    """
    lesions = located(sample, prep.original_shape)
    if not lesions:
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    boxes = prep.boxes_to_cache(np.array([les.box for les in lesions], dtype=np.float64))
    return boxes.astype(np.float32), np.array([les.malignant for les in lesions])


def rois_for_image(prep: Preprocessed, sample: Sample, proposer, s: RoISettings) -> dict:
    """Propose, select ``topk`` + anchor, label each RoI; all in the cached image's pixels."""
    h, w = prep.pixels.shape
    les_boxes, les_malignant = lesion_boxes_in(prep, sample)
    if getattr(proposer, "needs_ground_truth", False):  # the oracle: the lesion boxes themselves
        props = proposer.propose(prep.pixels, gt_boxes=les_boxes)
    else:
        props = proposer.propose(prep.pixels)
    if not isinstance(props, Proposals):  # pragma: no cover - a proposer breaking its contract
        raise ConfigError(f"proposer {s.proposer!r} returned {type(props).__name__}, not Proposals")
    scale = 0.5 * (prep.scale[0] + prep.scale[1])  # cache pixels per original pixel
    pad = {"mask": "anchor", "random": "random", "repeat": "repeat"}[s.pad]
    seed = (s.seed * 1_000_003 + zlib.crc32(sample.image_id.encode())) % (
        2**63
    )  # fillers differ between images
    sel = select_rois(props, (h, w), None, SelectConfig(
        topk=s.topk, iou_threshold=s.nms_iou, margin=s.margin * scale, pad=pad, seed=seed, border=s.border,
        square_anchor=s.square_anchor, anchor_in_nms=s.anchor_in_nms))
    rois = sel.rois  # (K+1, 4)
    # "random" / "repeat" padding: the filler boxes are ordinary RoIs, so the number of real
    # proposals cannot leak into the model (it would with the oracle: lesion <=> proposals)
    valid = sel.valid if s.pad == "mask" else torch.ones_like(sel.valid)
    labels = label_rois(rois, torch.from_numpy(les_boxes), torch.from_numpy(les_malignant), s.min_overlap)
    if sample.label == 1 and not les_malignant.any():
        labels[:] = -1  # a cancer somewhere we do not know: no RoI can be called benign
    labels[~valid] = -1
    return {
        "rois": rois.tolist(),
        "valid": valid.tolist(),
        "roi_labels": labels.tolist(),
        "n_proposals": sel.n_kept,
    }


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block. The proposers work on small images where
    threads only add overhead; on a busy 2-core machine they made the blob proposer ~100x
    slower (5 s instead of 30 ms per image, measured 2026-11-22)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class RoICache:
    """RoIs of every image, computed once per (image, settings) and kept in one JSON file."""

    def __init__(self, cache: PreprocessCache, settings: RoISettings, root: str | Path | None = None,
                 proposer_kwargs: dict | None = None):
        self.cache, self.settings = cache, settings
        self.root = Path(root) if root is not None else paths.cache_root() / "rois"
        # the proposer's own settings (which carry its version) are part of the key, so a
        # changed proposer never reuses boxes computed by an older one
        self.proposer = make_proposer(settings.proposer, **(proposer_kwargs or {}))
        ident = json.dumps({"v": ROIS_VERSION, "rois": settings.key(), "cache": cache.settings(),
                            "proposer": self.proposer.settings()}, sort_keys=True, default=str)
        self.path = (
            self.root / f"rois-{settings.proposer}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.json"
        )

    def get_all(self, samples: list[Sample], progress: bool = True) -> list[dict]:
        table = json.loads(self.path.read_text()) if self.path.is_file() else {}
        keys = [self.cache.key(s.path) for s in samples]
        todo = [(s, k) for s, k in zip(samples, keys) if k not in table]
        if todo:
            proposer = self.proposer
            with single_thread():
                for s, k in tqdm(todo, desc=f"proposals ({self.settings.proposer})", disable=not progress):
                    table[k] = rois_for_image(self.cache.get(s.path), s, proposer, self.settings)
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, table, indent=None)
        return [table[k] for k in keys]


# --- the dataset ---------------------------------------------------------------------------
class MammoRoIDataset(Dataset):
    """Items as described in the module docstring; see :func:`collate` for batches."""

    def __init__(
        self,
        samples: list[Sample],
        cache: PreprocessCache,
        rois: list[dict],
        *,
        augment: bool = False,
        seed: int = 0,
    ):
        if len(samples) != len(rois):
            raise ValueError("one RoI record per sample is needed")
        self.samples, self.cache, self.records = samples, cache, rois
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.n_without_proposals = sum(1 for r in rois if r["n_proposals"] == 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        s, rec = self.samples[i], self.records[i]
        pixels = self.cache.get(s.path).pixels  # (H, W) float32 in [0, 1]
        rois = np.asarray(rec["rois"], dtype=np.float32)  # (K+1, 4)
        if self.augment:
            pixels, rois = self._augment(pixels, rois, np.random.default_rng([self.seed, self.epoch, i]))
        h, w = pixels.shape
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels))[None],  # (1, H, W)
            "rois": torch.from_numpy(rois),
            "roi_mask": torch.tensor(rec["valid"], dtype=torch.bool),
            "roi_labels": torch.tensor(rec["roi_labels"], dtype=torch.long),
            "label": int(s.label),
            "image_id": s.image_id,
            "patient_id": s.patient_id,
            "image_size": torch.tensor([h, w], dtype=torch.long),
        }

    @staticmethod
    def _augment(
        pixels: np.ndarray, rois: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random gamma (contrast) and a small jitter of the proposal boxes (not the anchor)."""
        gamma = float(np.exp(rng.uniform(-0.2, 0.2)))
        pixels = np.power(np.clip(pixels, 0.0, 1.0), gamma, dtype=np.float32)
        h, w = pixels.shape
        out = rois.copy()
        size = np.maximum(out[1:, 2:] - out[1:, :2], 1.0)  # (K, 2)
        shift = rng.uniform(-0.05, 0.05, size=(len(size), 2)) * size
        out[1:, :2] += shift
        out[1:, 2:] += shift
        dx = np.clip(-out[1:, 0], 0, None) - np.clip(out[1:, 2] - w, 0, None)  # shift back inside
        dy = np.clip(-out[1:, 1], 0, None) - np.clip(out[1:, 3] - h, 0, None)
        out[1:, [0, 2]] += dx[:, None]
        out[1:, [1, 3]] += dy[:, None]
        return pixels, out.astype(np.float32)


def collate(items: list[dict]) -> dict:
    """Stack items; images of different sizes are padded with black at the bottom/right.

    Padding does not move any box (boxes are measured from the top-left corner);
    ``image_sizes`` keeps each image's real size for the position codes.
    """
    H = max(it["image"].shape[-2] for it in items)
    W = max(it["image"].shape[-1] for it in items)
    images = torch.zeros(len(items), 1, H, W, dtype=items[0]["image"].dtype)  # (B, 1, H, W)
    for b, it in enumerate(items):
        h, w = it["image"].shape[-2:]
        images[b, :, :h, :w] = it["image"]
    return {
        "images": images,
        "rois": torch.stack([it["rois"] for it in items]),  # (B, K+1, 4)
        "roi_mask": torch.stack([it["roi_mask"] for it in items]),  # (B, K+1)
        "roi_labels": torch.stack([it["roi_labels"] for it in items]),  # (B, K+1)
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.float32),  # (B,)
        "image_sizes": torch.stack([it["image_size"] for it in items]),  # (B, 2) as (H, W)
        "image_ids": [it["image_id"] for it in items],
        "patient_ids": [it["patient_id"] for it in items],
    }


def roi_settings(cfg) -> RoISettings:
    """The :class:`RoISettings` of a :class:`~awm_lib.train.config.TrainConfig`."""
    d = cfg.data
    return RoISettings(proposer=d.proposer, topk=cfg.model.topk, nms_iou=d.nms_iou, margin=roi_margin_px(d),
                       min_overlap=d.roi_min_overlap, seed=0, pad=d.pad_rois, square_anchor=d.square_anchor,
                       anchor_in_nms=d.anchor_in_nms, border=d.roi_border)


def roi_margin_px(d) -> float:
    """The crop margin in pixels of the ORIGINAL image, from a ``DataConfig``.

    ``roi_margin_mm`` (if set) wins and is converted with the dataset's pixel size
    (:func:`dataset_pixel_mm`); else ``roi_margin`` pixels; else the dataset's default
    (``awm_lib.train.config.DEFAULT_MARGIN``: pixels on VinDr-shaped data, millimetres on mini-MIAS).
    """
    if d.roi_margin_mm is not None:
        return d.roi_margin_mm / dataset_pixel_mm(d)
    if d.roi_margin is not None:
        return d.roi_margin
    unit, value = DEFAULT_MARGIN[d.dataset]
    return value / dataset_pixel_mm(d) if unit == "mm" else value


def dataset_pixel_mm(d) -> float:
    """Millimetres per ORIGINAL pixel of a ``DataConfig``'s dataset (typical values)."""
    if d.dataset == "synthetic":
        return FIELD_MM / d.synthetic_size
    return PIXEL_MM[d.dataset]


def build_datasets(
    cfg,
    *,
    progress: bool = True,
    splits: tuple[str, ...] = ("train", "val", "test"),
    workers: int | None = None,
) -> dict[str, MammoRoIDataset]:
    """The datasets a :class:`~awm_lib.train.config.TrainConfig` asks for.

    Preprocesses every image (once, cached), computes every image's RoIs (once,
    cached) and warns when some images had no proposals at all.
    """
    d = cfg.data
    samples = load_samples(d.dataset, d.root, synthetic_n=d.synthetic_n, synthetic_seed=d.synthetic_seed,
                           synthetic_size=d.synthetic_size, val_fraction=d.val_fraction, progress=progress)
    parts = split_samples(samples, d.dataset, fold=d.fold, val_fraction=d.val_fraction, seed=0)
    parts = {k: limit_samples(v, d.max_images, seed=0) for k, v in parts.items() if k in splits}
    empty = [k for k, v in parts.items() if not v]
    if empty:
        raise DatasetNotFoundError(
            f"the {', '.join(empty)} split(s) of {d.dataset} are empty; check the data folder or "
            "data.max_images"
        )
    cache = PreprocessCache(long_side=d.long_side)
    everything = [s for v in parts.values() for s in v]
    if workers is None:  # preprocessing is CPU-bound and runs once: use the cores (up to 4)
        workers = max(d.num_workers, min(4, os.cpu_count() or 1))
    cache.warm([s.path for s in everything], workers=max(1, workers), progress=progress)
    settings = roi_settings(cfg)
    rois = RoICache(cache, settings)
    out = {}
    for name, group in parts.items():
        recs = rois.get_all(group, progress=progress)
        out[name] = MammoRoIDataset(group, cache, recs, augment=d.augment and name == "train", seed=cfg.seed)
        if out[name].n_without_proposals and d.proposer not in ("none", "oracle"):  # expected for those two
            warnings.warn(
                f"{out[name].n_without_proposals} of {len(group)} {name} images had no proposals from "
                f"'{d.proposer}': they are classified from the anchor (whole breast) alone",
                NoProposalsWarning,
                stacklevel=2,
            )
    return out
