"""Inputs for the benchmark: synthetic device tensors, a cache-backed loader, and the reference's way.

Three ways to get a batch onto the device, from cheapest to most honest:

* :func:`device_batch` - random images and boxes made ON the device. Nothing
  waits for data: this is the "model only" figure.
* :class:`CacheDataset` + :func:`cache_loader` - what our training does: each
  item reads ONE stored array from the preprocessing cache (``.npy``, uint8 or
  uint16, never decoded again) and its precomputed RoIs; workers read in
  parallel, batches go to pinned memory, and :class:`Prefetcher` copies the
  next batch to the GPU on a side stream while the current one computes.
  Integers travel (2 bytes a pixel instead of 4) and become [0, 1] floats on
  the GPU.
* :class:`ReferenceDataset` - the public implementation's way: per item,
  every epoch, decode the DICOM, find and crop the breast, resize, then cut and
  resize every RoI with PIL, normalise and stack; fp32 crops travel.

:func:`reference_crops` is the CPU cropper; with boxes on the pixel grid it
gives exactly what :func:`awm_lib.model.crops.extract_rois` gives (the tests
check it), so the fast and reference paths compute the same model on the same
inputs: the comparison is apples to apples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from awm_lib.data.cache import PreprocessCache, preprocess
from awm_lib.data.synth_dataset import write_synthetic_dataset
from awm_lib.model.crops import IMAGENET_MEAN, IMAGENET_STD
from awm_lib.model.position import boxes_to_cxcywh_norm
from awm_lib.proposals.select import SelectConfig, select_rois

# --- synthetic tensors on the device ----------------------------------------------------------


def random_rois(n: int, topk: int, height: int, width: int, rng: np.random.Generator,
                min_frac: float = 0.08, max_frac: float = 0.25) -> np.ndarray:
    """(n, topk + 1, 4) xyxy: the whole image as anchor, then ``topk`` random squares inside it.

    Side lengths are ``min_frac..max_frac`` of the image's short side, like
    lesion proposals squared with a margin.
    """
    short = min(height, width)
    side = rng.uniform(min_frac, max_frac, size=(n, topk)) * short  # (n, topk)
    x1 = rng.uniform(0, 1, size=(n, topk)) * (width - side)
    y1 = rng.uniform(0, 1, size=(n, topk)) * (height - side)
    boxes = np.stack([x1, y1, x1 + side, y1 + side], axis=-1)  # (n, topk, 4)
    anchor = np.broadcast_to(np.array([0.0, 0.0, width, height]), (n, 1, 4))
    return np.concatenate([anchor, boxes], axis=1).astype(np.float32)


def device_batch(batch_size: int, image_size: tuple[int, int], topk: int, device, seed: int = 0) -> dict:
    """A batch made on ``device``: images (B,1,H,W) in [0,1], rois (B,K,4), labels (B,), sizes (B,2)."""
    h, w = image_size
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.rand(batch_size, 1, h, w, generator=g).to(device)
    rois = torch.from_numpy(random_rois(batch_size, topk, h, w, np.random.default_rng(seed))).to(device)
    labels = (torch.arange(batch_size) % 2).float().to(device)  # both classes present
    sizes = torch.tensor([[h, w]] * batch_size, device=device)
    return {"images": images, "rois": rois, "labels": labels, "image_sizes": sizes,
            "roi_mask": torch.ones(batch_size, topk + 1, dtype=torch.bool, device=device)}


# --- source images on disk ------------------------------------------------------------------------


def prepare_sources(root: str | Path, n_images: int = 16, size: int = 2048, seed: int = 0,
                    progress: bool = True) -> list[Path]:
    """``n_images`` synthetic DICOM mammograms (long side ``size``) under ``root``; made once, then reused."""
    root = Path(root) / f"synthetic-n{n_images}-s{size}-seed{seed}"
    write_synthetic_dataset(root, n_images, seed=seed, size=size, progress=progress)
    files = sorted(p for p in root.rglob("*.dicom"))
    return files[:n_images] if len(files) >= n_images else files


def warm_cache(
    sources: list[Path], root: str | Path, long_side: int, workers: int = 1, progress: bool = True
):
    """The preprocessing cache of ``sources`` at ``long_side`` (filled on first use)."""
    # one folder per long side: the cache replaces an entry made with other settings
    cache = PreprocessCache(Path(root) / f"preprocessed-{long_side}", long_side=long_side)
    cache.warm(list(sources), workers=workers, progress=progress)
    return cache


# --- our loader: the preprocessing cache ------------------------------------------------------------


class CacheDataset(Dataset):
    """Items from the preprocessing cache, padded to a fixed ``canvas`` (H, W), as stored integers.

    ``length`` items cycle over the sources (a benchmark needs more steps than
    we have distinct images; each read still opens and reads the file).
    ``rois`` (n_sources, K, 4) are in cache pixels, anchor first.
    With ``proposer`` set, RoIs are instead computed per item (inference).
    """

    def __init__(self, cache, sources: list[Path], canvas: tuple[int, int], rois: np.ndarray | None,
                 length: int, topk: int = 5, proposer=None):
        self.cache, self.sources, self.canvas = cache, list(sources), tuple(canvas)
        self.rois, self.length, self.topk, self.proposer = rois, int(length), topk, proposer

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        j = i % len(self.sources)
        npy, _ = self.cache.entry(self.sources[j])
        stored = np.load(npy)  # (h, w) uint8 / uint16: no decoding, no resizing
        h, w = stored.shape
        ch, cw = self.canvas
        out = np.zeros((1, ch, cw), dtype=stored.dtype)  # (1, H, W)
        out[0, : min(h, ch), : min(w, cw)] = stored[:ch, :cw]
        if self.proposer is not None:
            rois = propose_rois(self.proposer, stored, self.topk)
        else:
            rois = self.rois[j]
        top = 255 if stored.dtype == np.uint8 else 65535
        return {"images": _as_tensor(out), "rois": torch.from_numpy(np.asarray(rois, dtype=np.float32)),
                "labels": torch.tensor(float(j % 2)), "image_sizes": torch.tensor([ch, cw]),
                "max_value": torch.tensor(float(top))}


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """uint16 has no NumPy->torch path everywhere; its bits travel as int16 (see :func:`to_unit`)."""
    if a.dtype == np.uint16:
        return torch.from_numpy(a.view(np.int16))
    return torch.from_numpy(a)


def to_unit(images: torch.Tensor, max_value: torch.Tensor | float) -> torch.Tensor:
    """Stored integers (uint8, or uint16 bits carried as int16) -> float32 in [0, 1], on their device."""
    if images.dtype == torch.int16:  # undo the two's-complement view: -1 -> 65535
        x = images.to(torch.int32) & 0xFFFF
    else:
        x = images
    m = max_value if not torch.is_tensor(max_value) else max_value.reshape(-1)[0]
    return x.float() / m


def propose_rois(proposer, pixels: np.ndarray, topk: int) -> np.ndarray:
    """Blob proposals -> NMS, top-k, anchor, squares (:func:`awm_lib.proposals.select.select_rois`)."""
    img = pixels.astype(np.float32) / (255.0 if pixels.dtype == np.uint8 else 65535.0)
    props = proposer.propose(img)
    sel = select_rois(props, img.shape, cfg=SelectConfig(topk=topk))
    return sel.rois.numpy()


PREFETCH_FACTOR = 2  # batches each worker prepares ahead


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)  # many workers x many threads would oversubscribe the cores


def cache_loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Workers, pinned memory and a few batches in flight: the GPU should never wait."""
    kw = (
        dict(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR, worker_init_fn=_single_thread_worker)
        if workers
        else {}
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, drop_last=True, **kw)


class Prefetcher:
    """Iterate a loader with the NEXT batch already on the device.

    On CUDA the host-to-device copy of batch ``i + 1`` runs on a side stream
    while batch ``i`` computes; the compute stream waits for the copy only when
    it needs the batch. On the CPU it is a plain iterator. Cycles forever.
    """

    def __init__(self, loader: DataLoader, device):
        self.loader, self.device = loader, torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._it = iter(self.loader)
        self._next = self._load()

    def _raw(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def _load(self) -> dict:
        batch = self._raw()
        if not self.cuda:
            return batch
        with torch.cuda.stream(self.stream):
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def next(self) -> dict:
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        batch = self._next
        if self.cuda:  # tell the allocator these tensors are now used on the compute stream
            for v in batch.values():
                v.record_stream(torch.cuda.current_stream(self.device))
        self._next = self._load()
        return batch


# --- the reference implementation's way --------------------------------------------------------------


def reference_crops(pixels: np.ndarray, rois: np.ndarray, crop_size: int, resample: str = "bilinear",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Per RoI on the CPU with PIL: cut, resize to ``crop_size``, replicate to RGB, normalise, stack.

    pixels (H, W) float32 in [0, 1]; rois (K, 4) xyxy -> (K, 3, S, S) float32.
    Parts of a box outside the image read zeros (the image is padded first).
    ``resample``: ``"bilinear"`` (PIL's antialiased bilinear, what torchvision's
    Resize does) or ``"box"`` (area average).
    """
    from PIL import Image

    filt = {"bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}[resample]
    h, w = pixels.shape
    r = np.asarray(rois, dtype=np.float64)
    pad = int(np.ceil(max(0.0, -r[:, :2].min(), (r[:, 2] - w).max(), (r[:, 3] - h).max())))
    img = Image.fromarray(
        np.pad(pixels.astype(np.float32), pad) if pad else pixels.astype(np.float32), mode="F"
    )
    out = np.empty((len(r), 3, crop_size, crop_size), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    for i, (x1, y1, x2, y2) in enumerate(r + pad):
        crop = np.asarray(img.resize((crop_size, crop_size), filt, box=(x1, y1, x2, y2)), dtype=np.float32)
        out[i] = (crop[None] - m) / s
    return out


class ReferenceDataset(Dataset):
    """Per item, every epoch: decode the DICOM, crop the breast, resize, cut every RoI with PIL.

    ``rois`` (n_sources, K, 4) are in the pixels of the preprocessed image
    (the same as the cache's, so both paths see the same boxes).
    """

    def __init__(self, sources: list[Path], rois: np.ndarray, long_side: int, crop_size: int, length: int):
        self.sources, self.rois = list(sources), rois
        self.long_side, self.crop_size, self.length = long_side, crop_size, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        j = i % len(self.sources)
        prep, _ = preprocess(self.sources[j], long_side=self.long_side)  # decode + breast crop + resize
        rois = self.rois[j]
        crops = reference_crops(prep.pixels, rois, self.crop_size)  # (K, 3, S, S) float32
        h, w = prep.pixels.shape
        boxes_norm = boxes_to_cxcywh_norm(torch.from_numpy(rois)[None], torch.tensor([[h, w]]))[0]
        return {
            "crops": torch.from_numpy(crops),
            "boxes_norm": boxes_norm,
            "labels": torch.tensor(float(j % 2)),
        }
