"""The token store: one folder per :class:`~awm_lib.features.key.FeatureSpec`, append-only shards.

::

    .cache/features/<name>-<crop>px-<digest>/
        spec.json                   the FeatureSpec (what every token here depends on)
        shard-<time>-<pid>-<rand>.npz   keys (N,) str, cls (N, C) float32, mean (N, C) float32
        .lock                       held while filling (one process extracts, the others wait)

A token is never rewritten: new tokens go into a new shard, written to a temporary
file and renamed into place (atomic), so a killed extraction keeps every shard it
finished and leaves no half-written one. Several processes may read while one
writes; two that fill the same folder take turns through the lock (the second then
finds the first one's tokens instead of computing them again). :meth:`TokenStore.compact`
merges many small shards into one.

``cls`` is the final CLS token of the crop, ``mean`` the mean of its final patch
tokens; ``BackboneConfig.embedding`` chooses "cls" or "cls+mean" from them when
training, so both settings share one cache. The per-crop patch tokens themselves are not
kept: at 112 px they are 64 x 384 numbers per crop (about 100 MB in float16 for mini-MIAS,
4x that at 224 px) and nothing trains on them; the attention chapter's maps inside a crop
come from ``Backbone.forward_tokens(..., output_attentions=True)`` on the few crops it shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.errors import DataError
from awm_lib.features.key import FeatureSpec
from awm_lib.io_utils import atomic_path, write_json_atomic

FIELDS = ("cls", "mean")


def features_root() -> Path:
    """Where every RoI feature cache lives (shared by runs, folds, chapters, the widget):
    ``$AWM_CACHE/features``, by default ``.cache/features`` in the project."""
    return paths.cache_root() / "features"


class TokenStore:
    """``store.get(keys)`` -> arrays, ``store.put(keys, cls=..., mean=...)``, ``store.missing(keys)``."""

    def __init__(self, spec: FeatureSpec, root: str | os.PathLike | None = None):
        self.spec = spec
        self.root = Path(root) if root is not None else features_root()
        self.dir = self.root / spec.folder_name()
        self._index: dict[str, tuple[int, int]] | None = None
        self._arrays: list[dict[str, np.ndarray]] = []
        self._shards: list[Path] = []

    # -- reading -------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def refresh(self) -> None:
        """Read every shard not read yet (other processes may have added some)."""
        if self._index is None:
            self._index, self._arrays, self._shards = {}, [], []
        for shard in self.shards():
            if shard in self._shards:
                continue
            try:
                with np.load(shard, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in ("keys", *FIELDS)}
            except FileNotFoundError:  # compacted away meanwhile: its tokens are in the merged shard
                continue
            except (OSError, ValueError, KeyError) as e:
                raise DataError(
                    f"damaged feature shard ({e}); delete it and the tokens will be computed again", shard
                ) from e
            i = len(self._arrays)
            self._arrays.append(arrays)
            self._shards.append(shard)
            for row, key in enumerate(arrays["keys"].tolist()):
                self._index.setdefault(key, (i, row))

    def __len__(self) -> int:
        self.refresh()
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        self.refresh()
        return key in self._index

    def missing(self, keys: list[str]) -> list[str]:
        """The keys not in the store, each once, in order."""
        self.refresh()
        return list(dict.fromkeys(k for k in keys if k not in self._index))

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        """``{"cls": (N, C), "mean": (N, C)}`` float32 for ``keys`` (all must be present)."""
        self.refresh()
        absent = [k for k in keys if k not in self._index]
        if absent:
            raise KeyError(f"{len(absent)} of {len(keys)} tokens are not in {self.dir} (first: {absent[0]})")
        where = [self._index[k] for k in keys]
        out = {}
        for name in FIELDS:
            dim = self._arrays[where[0][0]][name].shape[1] if where else 0
            arr = np.empty((len(keys), dim), dtype=np.float32)
            for j, (i, row) in enumerate(where):
                arr[j] = self._arrays[i][name][row]
            out[name] = arr
        return out

    # -- writing -------------------------------------------------------------------------
    def put(self, keys: list[str], **fields: np.ndarray) -> Path:
        """Add tokens as one new shard (atomically). ``fields``: cls=(N, C), mean=(N, C)."""
        if set(fields) != set(FIELDS):
            raise ValueError(f"put needs exactly the fields {FIELDS}, got {sorted(fields)}")
        n = len(keys)
        for name, arr in fields.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"{name} must be (N={n}, C), got {arr.shape}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "spec.json").is_file():
            write_json_atomic(self.dir / "spec.json", {"spec": self.spec.key_fields(), "name": self.spec.name,
                                                        "digest": self.spec.digest()})
        name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        path = self.dir / name
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                keys=np.asarray(keys, dtype=str),
                **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in fields.items()},
            )
        return path

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive while filling the store (other processes wait; readers do not)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def compact(self) -> Path | None:
        """Merge every shard into one (under the lock); returns the merged shard, or None."""
        with self.lock():
            self._index = None
            self.refresh()
            if len(self._shards) <= 1:
                return self._shards[0] if self._shards else None
            keys = list(self._index)
            merged = self.put(keys, **self.get(keys))
            for shard in self._shards:
                shard.unlink(missing_ok=True)
            self._index = None
            return merged


__all__ = ["FIELDS", "TokenStore", "features_root"]
