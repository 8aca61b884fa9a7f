"""Read (and write) mammography DICOM files with pydicom.

A mammogram in DICOM is a grid of *stored values* (12 to 16 bits) plus tags
that say how to turn them into something a radiologist sees. The display
pipeline of the standard (PS3.3 C.11) has three steps, applied in order:

1. **Modality LUT** (``RescaleSlope`` / ``RescaleIntercept`` or a
   ``ModalityLUTSequence``): stored values -> physical-ish values. We call the
   result ``raw``; it is what a model should see if it wants the detector's
   numbers rather than a display.
2. **VOI LUT** (``WindowCenter`` / ``WindowWidth`` or a ``VOILUTSequence``):
   picks the range of values to display, the "window". We map it to [0, 1].
3. **Photometric interpretation**: ``MONOCHROME2`` means a high value is
   bright, ``MONOCHROME1`` means a high value is *dark* (film-like). We invert
   MONOCHROME1 so that every image comes out the same way round: dark
   background, bright tissue.

pydicom does steps 1 and 2 (:func:`pydicom.pixels.apply_modality_lut`,
:func:`pydicom.pixels.apply_voi_lut`); this module adds the normalisation to
[0, 1], the inversion, the error messages and the tags we care about
(laterality and view).

Compressed files: RLE Lossless decodes with pydicom alone; JPEG 2000 and
JPEG-LS need the pylibjpeg plugins (``pip install 'awm-lib[jpeg]'``). When a
decoder is missing we raise :class:`MissingCodecError` naming the package.

:func:`write_mammo_dicom` writes a valid "Digital Mammography X-Ray Image -
For Presentation" file; the tests and the synthetic generator use it.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from awm_lib.errors import (
    DicomError,
    EmptyFileError,
    EmptyImageError,
    MissingCodecError,
    UnsupportedCompressionError,
)
from awm_lib.io_utils import atomic_path

# Digital Mammography X-Ray Image Storage - For Presentation
MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

# Which pip package provides a decoder, by transfer-syntax family (keyword prefix).
_CODEC_PACKAGES = {
    "JPEG2000": "pylibjpeg-openjpeg",
    "HTJ2K": "pylibjpeg-openjpeg",
    "JPEGLS": "pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg-libjpeg",  # baseline / extended / lossless JPEG
}


class NonMammographyWarning(UserWarning):
    """The DICOM's Modality is not ``MG``: it may not be a mammogram at all."""


@dataclass
class DicomPixels:
    """What :func:`read_dicom` returns (``image.load_image`` wraps it in a MammoImage)."""

    pixels: np.ndarray  # (H, W) float32 in [0, 1], dark background, bright tissue
    raw: np.ndarray  # (H, W) after the modality LUT, before windowing
    photometric: str
    bits_stored: int
    laterality: str | None
    view: str | None
    modality: str | None


# --------------------------------------------------------------------------- reading
def read_dicom(path: str | Path) -> DicomPixels:
    """Decode one DICOM into display-ready pixels in [0, 1] plus its key tags.

    Raises :class:`EmptyFileError` (0 bytes), :class:`DicomError` (not DICOM,
    truncated, no pixel data), :class:`MissingCodecError` /
    :class:`UnsupportedCompressionError` (compressed pixel data we cannot
    decode) and :class:`EmptyImageError` (a constant image). Warns with
    :class:`NonMammographyWarning` when Modality is not MG.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    ds = _read_dataset(path)
    modality = _str_tag(ds, "Modality")
    if modality != "MG":
        warnings.warn(
            f"{path}: Modality is {modality or 'missing'!r}, not 'MG'; this may not be a mammogram",
            NonMammographyWarning,
            stacklevel=2,
        )
    stored = _decode_pixels(ds, path)  # (H, W) stored values
    raw = _apply_modality(stored, ds, path)  # (H, W) modality-LUT output
    pixels = _apply_voi(raw, ds, path)  # (H, W) float in [0, 1], high = bright for MONOCHROME2
    photometric = _str_tag(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if photometric == "MONOCHROME1":
        pixels = np.float32(1.0) - pixels  # high stored value = dark: flip so tissue is bright
    if pixels.max() - pixels.min() <= 0 or not np.isfinite(pixels.sum()):
        raise EmptyImageError(
            "the image is constant (e.g. all black) after windowing; there is no breast to see", path
        )
    return DicomPixels(
        pixels=pixels.astype(np.float32, copy=False),
        raw=raw,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", 16) or 16),
        laterality=_laterality(ds),
        view=_view(ds),
        modality=modality,
    )


def _read_dataset(path: str | Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if path.stat().st_size == 0:
        raise EmptyFileError("the file is empty (0 bytes); re-copy or re-download it", path)
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # Old files may lack the 128-byte preamble and 'DICM'; accept them only if they hold an image.
            ds = pydicom.dcmread(path, force=True)
            if "Rows" not in ds:
                raise
    except InvalidDicomError as e:
        raise DicomError(
            "not a DICOM file (no 'DICM' marker and no image tags); check the path or the file format", path
        ) from e
    except Exception as e:  # EOFError, struct.error, ValueError ... when the file is cut short
        raise DicomError(
            f"cannot parse the DICOM, it is probably truncated or corrupt ({type(e).__name__}: {e})", path
        ) from e
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("the DICOM has no pixel data (PixelData tag missing); it is not an image", path)
    return ds


def _transfer_syntax(ds):
    from pydicom.uid import ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    return (
        meta.get("TransferSyntaxUID", ImplicitVRLittleEndian) if meta is not None else ImplicitVRLittleEndian
    )


def _codec_package(ts) -> str:
    keyword = (getattr(ts, "keyword", "") or "").upper()
    for prefix, package in _CODEC_PACKAGES.items():
        if keyword.startswith(prefix):
            return package
    return "pylibjpeg"


def _missing_codec(ts, path) -> MissingCodecError:
    package = _codec_package(ts)
    return MissingCodecError(
        f"the pixel data is compressed as {ts.name} and no decoder for it is installed; "
        f"run: pip install 'awm-lib[jpeg]' (or pip install {package})",
        path,
    )


def _check_decoder(ds, path) -> None:
    """Fail early, with a useful message, when pixel data cannot be decoded here."""
    from pydicom.pixels import get_decoder

    ts = _transfer_syntax(ds)
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as e:
        raise UnsupportedCompressionError(
            f"the transfer syntax {ts.name} ({ts}) is not supported; convert the file to an uncompressed "
            "or JPEG 2000 / RLE syntax (e.g. with dcmtk's dcmdjpeg / gdcmconv --raw)",
            path,
        ) from e
    if not decoder.is_available:
        raise _missing_codec(ts, path)


def _decode_pixels(ds, path) -> np.ndarray:
    _check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except RuntimeError as e:  # pydicom: "... because all plugins are missing dependencies"
        if "missing" in str(e) or "plugin" in str(e):
            raise _missing_codec(_transfer_syntax(ds), path) from e
        raise DicomError(f"cannot decode the pixel data ({e})", path) from e
    except Exception as e:  # too few bytes, inconsistent Rows/Columns, corrupt stream ...
        raise DicomError(
            f"cannot decode the pixel data, the file is probably truncated ({type(e).__name__}: {e})", path
        ) from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1:  # a colour secondary capture: average the channels
        arr = arr.mean(axis=-1)
    if arr.ndim == 3:  # several frames (e.g. tomosynthesis): keep the first
        warnings.warn(f"{path}: {arr.shape[0]} frames, using the first", stacklevel=3)
        arr = arr[0]
    if arr.ndim != 2:
        raise DicomError(f"expected a 2-D image, got pixel data of shape {arr.shape}", path)
    bits = int(ds.get("BitsStored", 0) or 0)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0 and 0 < bits < arr.dtype.itemsize * 8:
        arr = arr & np.asarray((1 << bits) - 1, dtype=arr.dtype)  # drop junk above BitsStored
    return arr


def _apply_modality(stored: np.ndarray, ds, path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        return apply_modality_lut(stored, ds)
    except Exception as e:
        raise DicomError(f"cannot apply the Modality LUT / rescale ({e})", path) from e


def _apply_voi(raw: np.ndarray, ds, path) -> np.ndarray:
    """Window ``raw`` to [0, 1] (high value = high output, before any MONOCHROME1 flip).

    With a VOI LUT sequence we use its table; with WindowCenter/Width we let
    pydicom window into a known output range (a 16-bit unsigned one, by handing
    it a small dataset that holds only the VOI tags) and divide by that range.
    Without either, we stretch the raw range (min..max) to [0, 1].
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi_lut

    try:
        if ds.get("VOILUTSequence"):
            out = apply_voi_lut(raw, ds, index=0, prefer_lut=True).astype(np.float64)
            lut = _lut_values(ds.VOILUTSequence[0])
            lo, hi = float(lut.min()), float(lut.max())  # the table's own output range
            return _unit(out, lo, hi)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            voi = Dataset()
            voi.PhotometricInterpretation = "MONOCHROME2"
            voi.BitsStored, voi.PixelRepresentation = 16, 0  # -> output range [0, 65535]
            voi.WindowCenter, voi.WindowWidth = ds.WindowCenter, ds.WindowWidth
            if "VOILUTFunction" in ds:
                voi.VOILUTFunction = ds.VOILUTFunction
            out = apply_voi_lut(raw.astype(np.float64, copy=False), voi, index=0)
            return _unit(out, 0.0, 65535.0)
    except Exception as e:
        raise DicomError(f"cannot apply the VOI LUT / window ({e})", path) from e
    return _unit(raw, float(raw.min()), float(raw.max()))


def _lut_values(item) -> np.ndarray:
    """A LUT's entries, whether pydicom read LUTData as numbers (US) or raw bytes (OW)."""
    data = item.LUTData
    if isinstance(data, bytes | bytearray):
        bits = int(item.LUTDescriptor[2])
        return np.frombuffer(data, dtype="<u2" if bits > 8 else "u1").astype(np.float64)
    return np.asarray(data, dtype=np.float64).ravel()


def _unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo), clipped to [0, 1], as float32 (in place where possible: images are big)."""
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    y = x.astype(np.float32)  # a copy
    y -= np.float32(lo)
    y *= np.float32(1.0 / (hi - lo))
    np.minimum(y, 1.0, out=y)
    np.maximum(y, 0.0, out=y)
    return y


def _str_tag(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    value = str(value).strip().upper()
    return value or None


def _laterality(ds) -> str | None:
    """``ImageLaterality`` (per image, mammography's tag) or ``Laterality`` (per series)."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = _str_tag(ds, keyword)
        if value in ("L", "R"):
            return value
    return None


_VIEW_MEANINGS = {
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medio-lateral": "ML",
    "latero-medial": "LM",
}


def _view(ds) -> str | None:
    """``ViewPosition`` (e.g. CC, MLO), else the ``ViewCodeSequence`` meaning."""
    value = _str_tag(ds, "ViewPosition")
    if value:
        return value
    seq = ds.get("ViewCodeSequence")
    if seq:
        meaning = str(seq[0].get("CodeMeaning", "")).strip().lower()
        for text, view in _VIEW_MEANINGS.items():
            if meaning.startswith(text):
                return view
    return None


# --------------------------------------------------------------------------- writing
def write_mammo_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    laterality: str | None = None,
    view: str | None = None,
    modality: str = "MG",
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    transfer_syntax: Any = None,
    **extra: Any,
) -> Path:
    """Write ``pixels`` (H, W) stored values as a mammography DICOM, atomically.

    ``pixels`` are the *stored* values, taken as they are: for MONOCHROME1 pass
    values where high = dark (e.g. ``(2**bits_stored - 1) - v``). ``rescale``
    is ``(slope, intercept)``, ``window`` is ``(center, width)`` in rescaled
    units. ``transfer_syntax`` is a pydicom UID (default Explicit VR Little
    Endian; ``RLELossless`` and, with pylibjpeg-openjpeg, ``JPEG2000Lossless``
    compress). ``extra`` sets any other tag by keyword (``PatientID="p1"``,
    ``StudyInstanceUID=...``, ...). Returns ``path``.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D (H, W), got shape {pixels.shape}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 8..16, got {bits_stored}")
    if pixels.min() < 0 or pixels.max() >= 2**bits_stored:
        raise ValueError(f"stored values must lie in [0, {2**bits_stored - 1}] for bits_stored={bits_stored}")
    transfer_syntax = transfer_syntax or ExplicitVRLittleEndian

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    now = _dt.datetime.now()
    ds.SOPClassUID = MAMMO_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.PatientID = "anonymous"
    ds.PatientName = "Anonymous"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    if laterality:
        ds.ImageLaterality = laterality
        ds.Laterality = laterality
    if view:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{float(v):g}" for v in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{float(v):g}" for v in window)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)  # encodes PixelData and sets the file meta's syntax

    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
