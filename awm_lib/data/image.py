"""One entry point for every mammogram file: :func:`load_image`.

Whatever the input (DICOM, PNG, PGM; 8 to 16 bits; MONOCHROME1 or 2), the
result is a :class:`MammoImage` whose ``pixels`` are float32 in [0, 1] with a
dark background and bright tissue, so that everything downstream (breast
segmentation, the cache, the model) sees one convention.

The format is decided by the file's first bytes (its "magic number"), not by
its extension: a PNG renamed ``.dcm`` is a common accident, and we say so
instead of failing with a cryptic parser error.

Constant images (all black, or a window that hides everything) raise
:class:`EmptyImageError` here, at load time: they cannot be normalised to
[0, 1], and there is nothing to learn from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from awm_lib.data.dicom import read_dicom
from awm_lib.errors import EmptyFileError, EmptyImageError, ImageReadError, ImageTooSmallError

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

# First bytes -> format name (PIL reads all but DICOM).
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"P5", "pgm"),
    (b"P2", "pgm"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
]


@dataclass
class MammoImage:
    """A decoded mammogram.

    ``pixels``: (H, W) float32 in [0, 1], dark background, bright tissue.
    ``raw``: (H, W) values before display scaling: for DICOM the output of the
    Modality LUT (before windowing and before any MONOCHROME1 inversion), for
    PNG the stored integers, for PGM the integers as Pillow returns them
    (Pillow rescales a PGM's ``maxval`` to the full 8- or 16-bit range).
    """

    pixels: np.ndarray
    raw: np.ndarray
    photometric: str  # "MONOCHROME1" / "MONOCHROME2" (PNG/PGM: "MONOCHROME2")
    bits_stored: int
    laterality: str | None = None  # "L" / "R" when the file says
    view: str | None = None  # "CC" / "MLO" / ... when the file says
    modality: str | None = None  # DICOM Modality ("MG"); None for PNG/PGM
    path: Path | None = None
    format: str = "dicom"  # "dicom", "png", "pgm", ...

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # (H, W)

    def to_uint8(self) -> np.ndarray:
        """(H, W) uint8, 0 = black background, 255 = brightest tissue."""
        return np.round(np.clip(self.pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


# A full-field mammogram is thousands of pixels a side (mini-MIAS: 1024; VinDr: ~3500 x 2800);
# under this on the short side a file is a thumbnail or an icon, not something to diagnose.
MIN_MAMMOGRAM_SIDE = 256


def check_mammogram_size(
    image: MammoImage, path: str | Path | None = None, min_side: int = MIN_MAMMOGRAM_SIDE
) -> MammoImage:
    """Refuse an image too small to be a mammogram (short side under ``min_side`` pixels)."""
    h, w = image.shape
    if min(h, w) < min_side:
        raise ImageTooSmallError(
            f"{w}x{h} pixels is too small to be a mammogram (the short side must be at least {min_side} px; "
            "a full-field mammogram is thousands of pixels a side)", path if path is not None else image.path)
    return image


def sniff_format(path: str | Path) -> str | None:
    """Guess the format from the first bytes: "dicom", "png", "pgm", "jpeg", "tiff" or None."""
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def load_image(path: str | Path) -> MammoImage:
    """Read a DICOM / PNG / PGM mammogram into a :class:`MammoImage`.

    Raises :class:`EmptyFileError`, :class:`ImageReadError` (and its
    :class:`DicomError` family) or :class:`EmptyImageError` with a message that
    names the problem.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    path = Path(path)
    if path.is_dir():
        raise ImageReadError("is a directory; give one image file (DICOM, PNG or PGM)", path)
    if not path.is_file():
        raise ImageReadError("no such file", path)
    if path.stat().st_size == 0:
        raise EmptyFileError("the file is empty (0 bytes); re-copy or re-download it", path)
    fmt = sniff_format(path)
    if fmt is None and path.suffix.lower() in DICOM_SUFFIXES:
        fmt = "dicom"  # DICOM without the 128-byte preamble: let pydicom decide
    if fmt != "dicom" and path.suffix.lower() in DICOM_SUFFIXES:
        raise ImageReadError(
            f"named like a DICOM ({path.suffix}) but its content looks like a {fmt.upper()} file; "
            f"rename it to .{fmt} (or export a real DICOM)",
            path,
        )
    if fmt == "dicom":
        return _load_dicom(path)
    if fmt is None:
        raise ImageReadError("unknown image format (expected DICOM, PNG or PGM by its first bytes)", path)
    return _load_raster(path, fmt)


def _load_dicom(path: Path) -> MammoImage:
    d = read_dicom(path)
    return MammoImage(
        pixels=d.pixels,
        raw=d.raw,
        photometric=d.photometric,
        bits_stored=d.bits_stored,
        laterality=d.laterality,
        view=d.view,
        modality=d.modality,
        path=path,
        format="dicom",
    )


def _load_raster(path: Path, fmt: str) -> MammoImage:
    """PNG / PGM (8 or 16 bit) / JPEG / TIFF through Pillow."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr"):
                im = im.convert("L")
            raw = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(
            f"cannot read the {fmt.upper()} file, it is probably truncated or corrupt ({e})", path
        ) from e
    if raw.ndim != 2:
        raise ImageReadError(f"expected a grey-level image, got shape {raw.shape}", path)
    if fmt == "pgm":
        # Pillow rescales PGM values to the full 8- or 16-bit range whatever the header's maxval.
        bits = max(1, _pgm_maxval(path).bit_length())
        top = 255.0 if raw.dtype == np.uint8 else 65535.0
    else:
        bits = _bits_stored(raw)
        top = float(2**bits - 1)
    pixels = raw.astype(np.float32) / np.float32(top)
    if raw.size == 0 or raw.max() == raw.min():
        raise EmptyImageError("the image is constant (e.g. all black); there is no breast to see", path)
    return MammoImage(
        pixels=np.clip(pixels, 0.0, 1.0),
        raw=raw,
        photometric="MONOCHROME2",
        bits_stored=bits,
        path=path,
        format=fmt,
    )


def _pgm_maxval(path: Path) -> int:
    """The ``maxval`` field of a PGM header (``P5 <width> <height> <maxval>``, ``#`` comments allowed)."""
    with open(path, "rb") as f:
        head = f.read(512)
    tokens: list[bytes] = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 4:
            break
    try:
        return int(tokens[3])
    except (IndexError, ValueError):
        return 255


def _bits_stored(raw: np.ndarray) -> int:
    """8 for 8-bit files; for 16-bit ones the smallest depth that holds the data.

    A 12-bit scan saved as 16-bit PNG holds values up to 4095: dividing by
    65535 would make it nearly black, so we use the smallest bit depth (>= 8)
    that holds the largest value.
    """
    if raw.dtype == np.uint8 or raw.dtype == bool:
        return 8
    return max(8, int(raw.max()).bit_length())
