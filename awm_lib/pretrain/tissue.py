"""The tissue bank: every pretraining image, breast-cropped, small, in one array.

Self-supervised pretraining reads each image thousands of times (a new random
crop each time), so decoding PNGs or DICOMs on every step would starve a GPU.
Instead we preprocess once:

    load_image -> segment_breast -> crop (chest wall on the left)
    -> resize so the long side is ``long_side`` -> paste top-left on a square canvas

and keep the result as ``uint8`` pixels ``(N, 1, L, L)`` plus breast masks
``(N, L, L)``. All of mini-MIAS at ``L = 512`` is ~84 MB in memory and, saved
with :meth:`TissueBank.save` (zip-compressed ``.npz``; the black canvas
compresses to nothing), a file small enough to carry to a GPU machine. On the
GPU the whole bank moves to device memory once; a batch is then an index.

Sources: mini-MIAS (:func:`mias_bank`), any list of image files such as VinDr
DICOMs (:func:`files_bank`), and synthetic mammograms (:func:`synthetic_bank`).
Banks of the same ``long_side`` concatenate with :func:`concat_banks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from awm_lib.data.breast import segment_breast
from awm_lib.data.image import load_image
from awm_lib.data.synthetic import SynthConfig, generate_mammogram
from awm_lib.errors import DataError, DatasetNotFoundError, EmptyImageError
from awm_lib.io_utils import atomic_path


@dataclass
class TissueBank:
    pixels: np.ndarray  # (N, 1, L, L) uint8, breast top-left, chest wall on the left
    masks: np.ndarray  # (N, L, L) bool, breast tissue
    image_ids: list[str]
    sources: list[str]  # "mias", "synthetic", "vindr", ... one per image

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def long_side(self) -> int:
        return int(self.pixels.shape[-1])

    def nbytes(self) -> int:
        return int(self.pixels.nbytes + self.masks.nbytes)

    def to_tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, L, L)`` uint8 and ``(N, L, L)`` bool tensors on ``device`` (convert per batch)."""
        return torch.from_numpy(self.pixels).to(device), torch.from_numpy(self.masks).to(device)

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` atomically (masks bit-packed)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                pixels=self.pixels,
                masks=np.packbits(self.masks, axis=-1),
                mask_width=np.array(self.masks.shape[-1]),
                image_ids=np.array(self.image_ids),
                sources=np.array(self.sources),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TissueBank:
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(
                "no tissue bank here; build one with `python -m awm_lib pretrain --build-bank PATH`",
                path=str(path),
            )
        try:
            with np.load(path) as z:
                w = int(z["mask_width"])
                masks = np.unpackbits(z["masks"], axis=-1, count=w).astype(bool)
                return cls(
                    z["pixels"], masks, [str(s) for s in z["image_ids"]], [str(s) for s in z["sources"]]
                )
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"not a tissue bank ({e}); rebuild it", path=str(path)) from e


def place_on_canvas(pixels: np.ndarray, mask: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a breast crop ``(h, w)`` so its long side is ``long_side``; paste top-left on a square.

    Pixels are resized with antialiasing (a 1024 px film shrunk 2x should
    average, not skip, its grain); the mask with nearest neighbour.
    Returns ``(L, L)`` uint8 and ``(L, L)`` bool.
    """
    h, w = pixels.shape
    s = long_side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    small = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    msmall = F.interpolate(m, size=(nh, nw), mode="nearest")[0, 0] > 0.5
    out = np.zeros((long_side, long_side), np.uint8)
    out_m = np.zeros((long_side, long_side), bool)
    out[:nh, :nw] = np.round(small.clamp(0, 1).numpy() * 255).astype(np.uint8)
    out_m[:nh, :nw] = msmall.numpy()
    return out, out_m


def breast_tissue(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` image in ``[0, 1]`` -> its breast crop and mask (chest wall left), via
    ``segment_breast``."""
    crop = segment_breast(pixels)
    return np.ascontiguousarray(crop.crop(pixels)), np.ascontiguousarray(crop.crop(crop.full_mask()))


def bank_from_arrays(
    items: Iterable[tuple[str, np.ndarray]], long_side: int, source: str, progress: bool = True
) -> TissueBank:
    """Build a bank from ``(image_id, pixels (H, W) in [0, 1])`` pairs; images without a breast are
    skipped."""
    pix, masks, ids = [], [], []
    for image_id, pixels in tqdm(items, desc=f"tissue bank ({source})", disable=not progress):
        try:
            crop, mask = breast_tissue(pixels)
        except EmptyImageError:
            continue
        p, m = place_on_canvas(crop, mask, long_side)
        pix.append(p)
        masks.append(m)
        ids.append(image_id)
    if not ids:
        raise DataError(f"no usable images for the tissue bank from source {source!r}")
    return TissueBank(np.stack(pix)[:, None], np.stack(masks), ids, [source] * len(ids))


def files_bank(paths: Iterable[str | Path], long_side: int, source: str, progress: bool = True) -> TissueBank:
    """A bank from image files (PNG/PGM/DICOM) read with :func:`awm_lib.data.image.load_image`."""
    def items():
        for p in paths:
            yield Path(p).stem, load_image(p).pixels

    return bank_from_arrays(items(), long_side, source, progress)


def mias_bank(
    root: str | Path, long_side: int, max_images: int | None = None, progress: bool = True
) -> TissueBank:
    """All (or the first ``max_images``) mini-MIAS images, sorted by name."""
    root = Path(root)
    paths = sorted(root.glob("mdb*.png")) or sorted(root.glob("mdb*.pgm"))
    if not paths:
        raise DatasetNotFoundError(
            "no mdb*.png / mdb*.pgm files; point mias_root at the mini-MIAS folder", path=str(root)
        )
    return files_bank(paths[:max_images], long_side, "mias", progress)


def _render_synthetic(args: tuple[int, int, int]) -> tuple[str, np.ndarray]:
    i, seed, height = args
    cfg = SynthConfig(height=height, view="MLO" if i % 2 else "CC", laterality="LR"[(i // 2) % 2])
    m = generate_mammogram(cfg, seed=seed * 1_000_003 + i)
    return f"synthetic-{seed}-{i:05d}", m.pixels.astype(np.float32) / (2**m.bits_stored - 1)


def synthetic_bank(
    n: int, long_side: int, seed: int = 0, progress: bool = True, workers: int = 1
) -> TissueBank:
    """``n`` synthetic mammograms (:func:`awm_lib.data.synthetic.generate_mammogram`), half CC, half MLO.

    Rendered at ``long_side`` and scaled from their stored bits to ``[0, 1]``;
    ``workers > 1`` renders in that many processes (a GPU host has cores to spare).
    """
    jobs = [(i, seed, long_side) for i in range(n)]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # "spawn": safe even when the parent has already initialised CUDA
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return bank_from_arrays(
                pool.map(_render_synthetic, jobs, chunksize=4), long_side, "synthetic", progress
            )
    return bank_from_arrays(map(_render_synthetic, jobs), long_side, "synthetic", progress)


def concat_banks(banks: list[TissueBank]) -> TissueBank:
    if not banks:
        raise DataError("no pretraining data: enable mini-MIAS, synthetic images or a tissue bank file")
    sides = {b.long_side for b in banks}
    if len(sides) != 1:
        raise DataError(
            f"tissue banks of different sizes {sorted(sides)} cannot be mixed; rebuild with one long_side"
        )
    return TissueBank(
        np.concatenate([b.pixels for b in banks]),
        np.concatenate([b.masks for b in banks]),
        [i for b in banks for i in b.image_ids],
        [s for b in banks for s in b.sources],
    )
