"""What a cached RoI token depends on, written down as hashes.

A token (the frozen backbone's embedding of one RoI crop) is a pure function of

=============  =====================================================================
weights        the backbone's weights: ``sha256:<hash of the weight files>`` for a
               ``save_pretrained`` folder or a hub snapshot, ``random:<arch>:<seed>``
               for the random initialisation (plus the library versions that draw it)
image          the source file's bytes (sha256), and the preprocessing that turned it
               into the image the boxes are measured in (``PreprocessCache.settings()``)
box            the RoI, ``xyxy`` in that image's pixels
crop           crop size, anti-aliasing, ``max_value``, normalisation mean / std
=============  =====================================================================

:class:`FeatureSpec` holds everything except the image and the box; its
:meth:`~FeatureSpec.digest` names one folder of the store. Inside it a crop's
key is :func:`crop_key` ``(image hash, box)``. Change any of these and the key
changes, so stale tokens can never be read.

The proposer's settings decide *which* boxes an image gets, and the RoI cache
(:class:`awm_lib.train.dataset.RoICache`) keys the boxes on them; a token
itself depends only on its box. So two proposers that return the same box (the
full-breast anchor is the same for every proposer) share its token, and a
changed proposer setting that moves a box gets a new token.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.io_utils import write_json_atomic

FEATURES_VERSION = 1  # bump when the way tokens are computed changes
BOX_DECIMALS = 3  # boxes are keyed to 1/1000 of a pixel


def _digest(obj, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


@dataclass(frozen=True)
class CropSpec:
    """How a box becomes the ViT's input: see :func:`awm_lib.model.crops.extract_rois`."""

    crop_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    max_value: float = 1.0
    antialias: bool = True


@dataclass(frozen=True)
class FeatureSpec:
    """Everything a token depends on apart from the image and the box.

    ``weights``: ``"sha256:..."`` or ``"random:<arch>:<seed>"``; ``name``: for
    people (the hub id, the folder, "random small"), not part of the key;
    ``arch``: the backbone's shape and the versions that matter for it.
    """

    weights: str
    crop: CropSpec
    preprocess: dict
    arch: dict = field(default_factory=dict)
    name: str = ""
    version: int = FEATURES_VERSION

    def key_fields(self) -> dict:
        d = asdict(self)
        d.pop("name")
        return d

    def digest(self) -> str:
        return _digest(self.key_fields())

    def folder_name(self) -> str:
        """``<readable name>-<crop>px-<digest>``: one folder of the store per spec."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (self.name or "backbone"))[-40:]
        return f"{safe}-{self.crop.crop_size}px-{self.digest()[:12]}"


def crop_key(image_hash: str, box) -> str:
    """The key of one crop inside a spec's folder: the image's content hash and the box."""
    b = np.round(np.asarray(box, dtype=np.float64).reshape(4), BOX_DECIMALS) + 0.0  # no "-0.0"
    return _digest([image_hash, [f"{v:.{BOX_DECIMALS}f}" for v in b]], 24)


# --- file content hashes, remembered by (path, size, mtime) ---------------------------------
_MEMO: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def _hash_index_path() -> Path:
    return paths.cache_root() / "features" / "file_hashes.json"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes. Remembered per (absolute path, size, mtime) in memory and in
    ``.cache/features/file_hashes.json``, so a warm run does not re-read every image."""
    return file_hashes([path])[0]


def file_hashes(paths_: list[str | os.PathLike]) -> list[str]:
    """:func:`file_sha256` of many files; the on-disk index is read and written once."""
    stats = []
    for p in paths_:
        p = Path(p).resolve()
        st = p.stat()
        stats.append((str(p), st.st_size, st.st_mtime_ns))
    with _LOCK:
        todo = [s for s in stats if s not in _MEMO]
        if todo:
            index_path = _hash_index_path()
            index = {}
            if index_path.is_file():
                try:
                    index = json.loads(index_path.read_text())
                except (OSError, ValueError):
                    index = {}
            changed = False
            for s in todo:
                ident = f"{s[1]}:{s[2]}"
                hit = index.get(s[0])
                if hit and hit.get("stat") == ident:
                    _MEMO[s] = hit["sha256"]
                    continue
                h = hashlib.sha256()
                with open(s[0], "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                _MEMO[s] = h.hexdigest()
                index[s[0]] = {"stat": ident, "sha256": _MEMO[s]}
                changed = True
            if changed:
                write_json_atomic(index_path, index, indent=None)
        return [_MEMO[s] for s in stats]


def files_sha256(files: list[str | os.PathLike]) -> str:
    """One sha256 over several files' hashes (e.g. a checkpoint folder's weight files)."""
    hashes = file_hashes(files)
    return hashlib.sha256("".join(f"{Path(f).name}:{h};" for f, h in zip(files, hashes)).encode()).hexdigest()


__all__ = [
    "BOX_DECIMALS",
    "CropSpec",
    "FEATURES_VERSION",
    "FeatureSpec",
    "crop_key",
    "file_hashes",
    "file_sha256",
    "files_sha256",
]
