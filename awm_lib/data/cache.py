"""Decode each mammogram once: a preprocessing cache on disk.

Decoding a 3518x2800 DICOM, segmenting the breast and resizing takes a good
fraction of a second; a training run reads every image dozens of times. So we
do the work once::

    load_image -> segment_breast -> crop + orient -> resize (long side = long_side)

and store the result as ``<name>-<key>.npy`` (uint16, or uint8 for 8-bit
sources) with a JSON sidecar holding everything needed to map boxes back to
the original image: the crop box, the flip, the scale, the original size.

The ``key`` hashes the source's path, size and modification time together with
the settings, so editing a source file or changing ``long_side`` makes a new
entry (and the stale one is removed when it is replaced). Writes are atomic:
an interrupted run leaves no half-written entry.

To carry a data set to another machine, :func:`pack` writes one compact zip
of PNGs plus the metadata, and :class:`PackedCache` serves it by name.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.data.breast import PAD, boxes_to_crop, boxes_to_original, segment_breast
from awm_lib.data.image import load_image
from awm_lib.errors import DataError, about_file
from awm_lib.io_utils import atomic_path, write_json_atomic

CACHE_VERSION = 1  # bump when the preprocessing itself changes


@dataclass
class Preprocessed:
    """One preprocessed image: the cropped, oriented, resized breast and how it was made.

    ``scale`` is ``(sx, sy)``: cache pixels per crop pixel along x and y.
    """

    pixels: np.ndarray  # (h, w) float32 in [0, 1]
    box: tuple[int, int, int, int]  # breast crop in original pixels, xyxy
    flipped: bool
    scale: tuple[float, float]
    original_shape: tuple[int, int]  # (H, W)
    source: str
    laterality: str | None = None
    view: str | None = None

    def boxes_to_cache(self, boxes) -> np.ndarray:
        """(N, 4) xyxy in original pixels -> (N, 4) xyxy in this cached image's pixels."""
        sx, sy = self.scale
        return boxes_to_crop(boxes, self.box, self.flipped) * np.array([sx, sy, sx, sy])

    def boxes_to_original(self, boxes) -> np.ndarray:
        """(N, 4) xyxy in cached pixels -> (N, 4) xyxy in original pixels."""
        sx, sy = self.scale
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([sx, sy, sx, sy])
        return boxes_to_original(b, self.box, self.flipped)

    def meta(self) -> dict:
        d = asdict(self)
        d.pop("pixels")
        return d


def preprocess(
    path: str | Path, long_side: int = 1024, pad: int = PAD, upscale: bool = False
) -> tuple[Preprocessed, int]:
    """Run the whole pipeline on one file; returns the result and the source's bits stored.

    The crop is resized so its long side is ``long_side``; a smaller crop is left
    at its size unless ``upscale`` (enlarging adds no information, only bytes).
    """
    from PIL import Image

    image = load_image(path)
    with about_file(path):  # "no breast found" names the file
        crop = segment_breast(image.pixels, pad=pad)
    region = np.ascontiguousarray(crop.crop(image.pixels))  # (ch, cw)
    ch, cw = region.shape
    f = long_side / max(ch, cw)
    if f > 1 and not upscale:
        f = 1.0
    w, h = max(1, round(cw * f)), max(1, round(ch * f))
    # Pillow's resize is antialiased when shrinking (the filter widens with the factor).
    small = np.asarray(Image.fromarray(region.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))
    result = Preprocessed(
        pixels=np.clip(small, 0.0, 1.0).astype(np.float32),
        box=crop.box,
        flipped=crop.flipped,
        scale=(w / cw, h / ch),
        original_shape=image.shape,
        source=str(path),
        laterality=image.laterality,
        view=image.view,
    )
    return result, image.bits_stored


def _quantise(pixels: np.ndarray, dtype: str) -> np.ndarray:
    top = 255 if dtype == "uint8" else 65535
    return np.round(pixels * top).astype(dtype)


def _dequantise(stored: np.ndarray) -> np.ndarray:
    top = 255.0 if stored.dtype == np.uint8 else 65535.0
    return stored.astype(np.float32) / np.float32(top)


class PreprocessCache:
    """On-disk cache of :func:`preprocess` results; ``get(path)`` decodes only on a miss.

    ``dtype``: "uint16", "uint8", or "auto" (uint8 when the source has 8 bits
    stored, e.g. mini-MIAS; uint16 otherwise). ``hits`` / ``misses`` count
    what happened since construction.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        long_side: int = 1024,
        dtype: str = "auto",
        pad: int = PAD,
        upscale: bool = False,
    ):
        if dtype not in ("auto", "uint8", "uint16"):
            raise ValueError(f"dtype must be 'auto', 'uint8' or 'uint16', got {dtype!r}")
        if long_side < 16:
            raise ValueError(f"long_side must be at least 16, got {long_side}")
        self.root = Path(root) if root is not None else paths.cache_root() / "preprocessed"
        self.long_side, self.dtype, self.pad, self.upscale = int(long_side), dtype, int(pad), bool(upscale)
        self.hits = self.misses = 0

    def settings(self) -> dict:
        return {
            "version": CACHE_VERSION,
            "long_side": self.long_side,
            "dtype": self.dtype,
            "pad": self.pad,
            "upscale": self.upscale,
        }

    def key(self, path: str | Path) -> str:
        """Hash of (absolute path, size, mtime, settings): changes when the source or settings do."""
        path = Path(path).resolve()
        st = path.stat()
        ident = json.dumps([str(path), st.st_size, st.st_mtime_ns, self.settings()], sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]

    def entry(self, path: str | Path) -> tuple[Path, Path]:
        """The (.npy, .json) files that hold ``path``'s entry."""
        stem = f"{Path(path).stem}-{self.key(path)}"
        return self.root / f"{stem}.npy", self.root / f"{stem}.json"

    def get(self, path: str | Path) -> Preprocessed:
        if not Path(path).is_file():
            raise DataError("no such file", path)
        npy, sidecar = self.entry(path)
        if sidecar.is_file() and npy.is_file():  # the sidecar is written last: its presence = complete
            try:
                meta = json.loads(sidecar.read_text())
                stored = np.load(npy)
                self.hits += 1
                return _from_meta(_dequantise(stored), meta)
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry: rebuild it
        self.misses += 1
        result, bits = preprocess(path, long_side=self.long_side, pad=self.pad, upscale=self.upscale)
        result.source = str(Path(path).resolve())
        dtype = self.dtype if self.dtype != "auto" else ("uint8" if bits <= 8 else "uint16")
        stored = _quantise(result.pixels, dtype)
        self._remove_stale(path, keep=sidecar)
        with atomic_path(npy) as tmp:
            np.save(tmp, stored)
        write_json_atomic(sidecar, {**result.meta(), "dtype": dtype, "settings": self.settings()})
        result.pixels = _dequantise(stored)  # exactly what a later hit returns
        return result

    def _remove_stale(self, path: str | Path, keep: Path) -> None:
        """Delete older entries of the same source under the same settings (the file changed).

        Entries of other settings stay: runs with another ``long_side`` (the smoke preset's
        256 px, the book's 1024 px) share the cache folder, possibly at the same time, and
        must not delete each other's entries."""
        source = str(Path(path).resolve())
        for old in self.root.glob(f"{Path(path).stem}-*.json"):
            if old == keep:
                continue
            try:
                meta = json.loads(old.read_text())
                if meta.get("source") != source or meta.get("settings", self.settings()) != self.settings():
                    continue
            except (OSError, ValueError):
                continue
            old.unlink(missing_ok=True)
            old.with_suffix(".npy").unlink(missing_ok=True)

    def warm(self, paths_: list[str | Path], workers: int = 1, progress: bool = True) -> None:
        """Fill the cache for ``paths_`` (in ``workers`` processes), with a progress bar."""
        from tqdm.auto import tqdm

        todo = [p for p in paths_ if not self.entry(p)[1].is_file()]
        if not todo:  # everything cached: no work, no (empty) progress bar
            return
        if workers <= 1 or len(todo) <= 1:
            for p in tqdm(todo, desc="preprocess", disable=not progress):
                self.get(p)
            return
        args = (str(self.root), self.long_side, self.dtype, self.pad, self.upscale)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(_warm_one, args, str(p)) for p in todo]
            for job in tqdm(jobs, desc="preprocess", disable=not progress):
                job.result()


def _warm_one(args: tuple, path: str) -> None:
    root, long_side, dtype, pad, upscale = args
    PreprocessCache(root, long_side=long_side, dtype=dtype, pad=pad, upscale=upscale).get(path)


def _from_meta(pixels: np.ndarray, meta: dict) -> Preprocessed:
    return Preprocessed(
        pixels=pixels,
        box=tuple(int(v) for v in meta["box"]),
        flipped=bool(meta["flipped"]),
        scale=tuple(float(v) for v in meta["scale"]),
        original_shape=tuple(int(v) for v in meta["original_shape"]),
        source=meta["source"],
        laterality=meta.get("laterality"),
        view=meta.get("view"),
    )


# --------------------------------------------------------------------------- packing
def pack(
    items: dict[str, str | Path],
    out: str | Path,
    cache: PreprocessCache | None = None,
    codec: str = "png",
    progress: bool = True,
) -> Path:
    """Write ``{name: source path}`` as one zip of lossless images + ``meta.json``, atomically.

    ``codec="png"`` (8 or 16 bit) needs only Pillow; ``codec="j2k"`` (lossless
    JPEG 2000, about 10% smaller and faster, needs ``pylibjpeg-openjpeg``).
    Either compresses mammograms better than zlib on raw arrays, and the zip is
    all that :class:`PackedCache` needs to read them back.
    """
    from tqdm.auto import tqdm

    if codec not in ("png", "j2k"):
        raise ValueError(f"codec must be 'png' or 'j2k', got {codec!r}")
    cache = cache or PreprocessCache()
    meta = {"settings": cache.settings(), "codec": codec, "images": {}}
    out = Path(out)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, path in tqdm(items.items(), desc="pack", disable=not progress):
            item = cache.get(path)
            npy, _ = cache.entry(path)
            stored = np.load(npy)  # the exact quantised values
            zf.writestr(f"{name}.{codec}", _encode(stored, codec))
            meta["images"][name] = item.meta()
        zf.writestr("meta.json", json.dumps(meta))
    return out


class PackedCache:
    """Read a :func:`pack` zip: ``get(name) -> Preprocessed``; ``names`` lists what it holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("packed cache not found; build it with awm_lib.data.cache.pack", self.path)
        self._zip = zipfile.ZipFile(self.path)
        self._meta = json.loads(self._zip.read("meta.json"))
        self.settings = self._meta["settings"]
        self.names = sorted(self._meta["images"])

    def __contains__(self, name: str) -> bool:
        return name in self._meta["images"]

    def get(self, name: str) -> Preprocessed:
        if name not in self:
            raise KeyError(f"{name!r} is not in {self.path}")
        codec = self._meta.get("codec", "png")
        stored = _decode(self._zip.read(f"{name}.{codec}"), codec)
        return _from_meta(_dequantise(stored), self._meta["images"][name])


def _encode(stored: np.ndarray, codec: str) -> bytes:
    if codec == "j2k":
        try:
            import openjpeg
        except ImportError as e:
            raise DataError("codec 'j2k' needs pylibjpeg-openjpeg: pip install 'awm-lib[jpeg]'") from e
        return openjpeg.encode(np.ascontiguousarray(stored))  # lossless by default
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _decode(data: bytes, codec: str) -> np.ndarray:
    if codec == "j2k":
        import openjpeg

        return np.asarray(openjpeg.decode(data))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        stored = np.asarray(im)
    return stored if stored.dtype == np.uint8 else stored.astype(np.uint16)


def size_on_disk(path: str | Path) -> int:
    """Bytes used by a file or a folder (for reporting how compact a cache is)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


__all__ = [
    "CACHE_VERSION",
    "PackedCache",
    "PreprocessCache",
    "Preprocessed",
    "pack",
    "preprocess",
    "size_on_disk",
]
