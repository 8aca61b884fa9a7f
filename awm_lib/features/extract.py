"""Embed RoI crops with a frozen backbone: crops exactly as the model cuts them, one ViT call per batch.

The crops come from :func:`awm_lib.model.crops.extract_rois` with the classifier's
own settings, so a cached token is what ``RoIClassifier.forward`` would feed its
transformer for that box (``tests/test_features.py`` checks it). Each image is
cropped on its own (no padding to a batch's largest image); crops of many images
are then stacked into batches of ``batch_size`` for the ViT, which runs under
``torch.inference_mode`` with PyTorch's fused attention (SDPA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from awm_lib.features.key import CropSpec
from awm_lib.model.backbone import Backbone
from awm_lib.model.crops import extract_rois


def crops_of_image(pixels: np.ndarray | torch.Tensor, boxes, crop: CropSpec) -> torch.Tensor:
    """(H, W) image in [0, 1] (or raw counts with ``crop.max_value``), boxes (K, 4) xyxy
    -> (K, 3, S, S) normalised crops."""
    image = torch.as_tensor(pixels)[None, None]  # (1, 1, H, W)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(1, -1, 4)  # (1, K, 4)
    return extract_rois(image, b, crop.crop_size, crop.pixel_mean, crop.pixel_std,
                        antialias=crop.antialias, max_value=crop.max_value)[0]


@torch.inference_mode()
def embed_crops(backbone: Backbone, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) -> final CLS token (N, C) and mean final patch token (N, C), float32."""
    device = next(backbone.parameters()).device
    out = backbone.forward_tokens(crops.to(device).contiguous())
    return out.cls.float().cpu(), out.patches.mean(dim=1).float().cpu()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (None: leave torch's setting)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embed_jobs(
    backbone: Backbone,
    jobs: Iterable[tuple[list[str], Callable[[], torch.Tensor]]],
    *,
    batch_size: int = 32,
    on_batch: Callable[[list[str], torch.Tensor, torch.Tensor], None],
    progress=None,
) -> int:
    """Run ``jobs`` (``(keys, make_crops)`` per image, ``make_crops() -> (K, 3, S, S)``)
    through the ViT in batches of ``batch_size`` crops; ``on_batch(keys, cls, mean)``
    receives each batch's tokens. Returns the number of crops embedded."""
    keys: list[str] = []
    buf: list[torch.Tensor] = []
    done = 0

    def flush(final: bool) -> None:
        nonlocal keys, buf, done
        while len(keys) >= batch_size or (final and keys):
            n = min(batch_size, len(keys))
            stacked = torch.cat(buf) if len(buf) > 1 else buf[0]  # (M, 3, S, S)
            k, c, rest = keys[:n], stacked[:n], stacked[n:]
            keys, buf = keys[n:], ([rest] if len(rest) else [])
            cls, mean = embed_crops(backbone, c)
            on_batch(k, cls, mean)
            done += n
            if progress is not None:
                progress.update(n)

    for job_keys, make in jobs:
        if not job_keys:
            continue
        keys += job_keys
        buf.append(make())
        flush(final=False)
    flush(final=True)
    return done


__all__ = ["crops_of_image", "embed_crops", "embed_jobs", "torch_threads"]
