"""The RoI feature cache: embed every RoI crop once with a frozen backbone, read the tokens ever after.

::

    fc = FeatureCache(BackboneConfig(name_or_path=None, random_arch="small"), crop_size=112,
                      preprocess=PreprocessCache(long_side=1024))
    tokens = fc.tokens(paths, boxes)        # (N, K, C) float32: K boxes of each of N images
    fc.record()                             # which backbone, weights hash, crop size, cache folder

``paths`` are the source image files; ``boxes[i]`` is ``(K, 4)`` xyxy in pixels of
image ``i`` as the :class:`~awm_lib.data.cache.PreprocessCache` gives it (the RoI
cache's boxes). Only the crops not cached yet are computed (a progress bar shows
them; none when there is nothing to do), and the backbone is built only then.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from awm_lib.data.cache import PreprocessCache
from awm_lib.errors import ConfigError
from awm_lib.features.backbones import ResolvedBackbone, resolve
from awm_lib.features.extract import crops_of_image, embed_jobs, torch_threads
from awm_lib.features.key import CropSpec, FeatureSpec, crop_key, file_hashes
from awm_lib.features.store import TokenStore
from awm_lib.model.backbone import BackboneConfig

FLUSH_EVERY = 256  # crops per shard while filling: a killed run keeps all but the last few


@dataclass
class FillReport:
    """What :meth:`FeatureCache.ensure` did."""

    n_crops: int  # distinct crops asked for
    n_computed: int  # of those, embedded now
    seconds: float


class FeatureCache:
    """Tokens of a frozen backbone for (image, box) pairs; see the module docstring."""

    def __init__(
        self,
        backbone: BackboneConfig | ResolvedBackbone,
        *,
        crop_size: int,
        preprocess: PreprocessCache,
        max_value: float = 1.0,
        antialias: bool = True,
        random_seed: int = 0,
        root: str | os.PathLike | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        device: str | torch.device = "cpu",
    ):
        self.resolved = backbone if isinstance(backbone, ResolvedBackbone) else resolve(backbone, random_seed)
        cfg = self.resolved.cfg
        if crop_size % self.resolved.patch_size:
            raise ConfigError(
                f"crop_size={crop_size} is not a multiple of the backbone's patch size "
                f"{self.resolved.patch_size}"
            )
        self.crop = CropSpec(
            int(crop_size), tuple(cfg.pixel_mean), tuple(cfg.pixel_std), float(max_value), bool(antialias)
        )
        self.preprocess = preprocess
        self.spec = FeatureSpec(
            weights=self.resolved.weights,
            crop=self.crop,
            preprocess=preprocess.settings(),
            arch=self.resolved.arch,
            name=self.resolved.name,
        )
        self.store = TokenStore(self.spec, root)
        self.batch_size, self.threads, self.device = int(batch_size), threads, torch.device(device)
        self._backbone = None
        self.last_fill: FillReport | None = None

    # -- keys ---------------------------------------------------------------------------
    def keys(self, paths: list[str | os.PathLike], boxes: list) -> list[list[str]]:
        """The crop keys of every box of every image (the image's content hash + the box)."""
        if len(paths) != len(boxes):
            raise ValueError(f"{len(paths)} images but {len(boxes)} box lists")
        hashes = file_hashes(paths)
        return [
            [crop_key(h, b) for b in np.asarray(bx, dtype=np.float64).reshape(-1, 4)]
            for h, bx in zip(hashes, boxes)
        ]

    # -- filling --------------------------------------------------------------------------
    def backbone(self):
        if self._backbone is None:
            self._backbone = self.resolved.build().to(self.device)
        return self._backbone

    def ensure(self, paths: list[str | os.PathLike], boxes: list, progress: bool = True,
               keys: list[list[str]] | None = None) -> FillReport:
        """Compute and store the tokens that are missing; returns what it did."""
        t0 = time.perf_counter()
        keys = keys if keys is not None else self.keys(paths, boxes)
        wanted = {k for ks in keys for k in ks}
        if not self.store.missing(list(wanted)):
            self.last_fill = FillReport(len(wanted), 0, time.perf_counter() - t0)
            return self.last_fill
        with self.store.lock():  # another process filling the same folder: wait, then reuse its work
            missing = set(self.store.missing(list(wanted)))
            bar = tqdm(total=len(missing), desc=f"RoI features ({self.spec.name}, {self.crop.crop_size} px)",
                       unit="crop", disable=not progress or not missing)
            pending: dict[str, list] = {"keys": [], "cls": [], "mean": []}

            def on_batch(k, cls, mean):
                pending["keys"] += k
                pending["cls"].append(cls.numpy())
                pending["mean"].append(mean.numpy())
                if len(pending["keys"]) >= FLUSH_EVERY:
                    flush()

            def flush():
                if pending["keys"]:
                    self.store.put(
                        pending["keys"],
                        cls=np.concatenate(pending["cls"]),
                        mean=np.concatenate(pending["mean"]),
                    )
                    pending.update(keys=[], cls=[], mean=[])

            def jobs():
                seen = set()
                for path, bx, ks in zip(paths, boxes, keys):
                    todo = [j for j, k in enumerate(ks) if k in missing and k not in seen]
                    if not todo:
                        continue
                    seen.update(ks[j] for j in todo)
                    bx = np.asarray(bx, dtype=np.float32).reshape(-1, 4)[todo]
                    yield (
                        [ks[j] for j in todo],
                        (lambda p=path, b=bx: crops_of_image(self.preprocess.get(p).pixels, b, self.crop)),
                    )

            try:
                with torch_threads(self.threads):
                    n = embed_jobs(
                        self.backbone(), jobs(), batch_size=self.batch_size, on_batch=on_batch, progress=bar
                    )
            finally:
                flush()  # whatever finished is kept, also when interrupted
                bar.close()
        self.last_fill = FillReport(len(wanted), n, time.perf_counter() - t0)
        return self.last_fill

    # -- reading --------------------------------------------------------------------------
    def tokens(
        self, paths: list[str | os.PathLike], boxes: list, *, embedding: str = "cls", progress: bool = True
    ) -> torch.Tensor:
        """(N, K, C) float32 tokens (``embedding="cls+mean"``: (N, K, 2C)); fills what is missing.

        All images must have the same number of boxes K (the RoI cache gives topk + 1)."""
        keys = self.keys(paths, boxes)
        if len({len(k) for k in keys}) > 1:
            raise ValueError("every image needs the same number of boxes (K = topk + 1)")
        self.ensure(paths, boxes, progress=progress, keys=keys)
        flat = [k for ks in keys for k in ks]
        got = self.store.get(flat)
        if embedding == "cls":
            arr = got["cls"]
        elif embedding == "cls+mean":
            arr = np.concatenate([got["cls"], got["mean"]], axis=1)
        else:
            raise ConfigError(f"embedding={embedding!r}; choose 'cls' or 'cls+mean'")
        k = len(keys[0]) if keys else 0
        return torch.from_numpy(arr).view(len(keys), k, -1)

    def record(self) -> dict:
        """The backbone and crop settings behind these tokens (for result files)."""
        return {
            **self.resolved.record(),
            "crop_size": self.crop.crop_size,
            "feature_spec": self.spec.digest(),
            "cache_dir": str(self.store.dir),
        }


__all__ = ["FeatureCache", "FillReport"]
