"""Exception classes. Every error the library raises on bad input is one of these.

The CLI turns any :class:`AWMError` into one line on stderr (``python -m awm_lib CMD: error: ...``)
and exit status 2. Messages say what was wrong and, where possible, what to do.
"""

from __future__ import annotations

import contextlib


class AWMError(Exception):
    """Base class. ``path`` (optional) names the file the problem is about."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)

    def one_line(self) -> str:
        msg = " ".join(str(self).split())
        return f"{self.path}: {msg}" if self.path else msg


@contextlib.contextmanager
def about_file(path):
    """Name ``path`` in any :class:`AWMError` raised inside that names no file yet.

    >>> with about_file("mdb001.png"):      # doctest: +SKIP
    ...     crop = segment_breast(pixels)   # "no breast found" now says which file
    """
    try:
        yield
    except AWMError as e:
        if e.path is None:
            e.path = str(path)
        raise


# --- data layer -------------------------------------------------------------
class DataError(AWMError):
    """An input file or table cannot be used."""


class EmptyFileError(DataError):
    """The file has zero bytes."""


class ImageReadError(DataError):
    """The file is not a readable image (wrong format, truncated, corrupt)."""


class DicomError(ImageReadError):
    """A DICOM file is truncated, malformed or has no pixel data."""


class MissingCodecError(DicomError):
    """The DICOM's compressed transfer syntax needs a decoder that is not installed."""


class UnsupportedCompressionError(DicomError):
    """The DICOM's transfer syntax is not supported at all."""


class ImageTooSmallError(DataError):
    """The image is too small to be a mammogram (e.g. a thumbnail or an icon)."""


class EmptyImageError(DataError):
    """The image has no breast tissue (e.g. all black / constant)."""


class AnnotationError(DataError):
    """A CSV / Info.txt has missing columns, malformed rows or unknown image ids."""


class DatasetNotFoundError(DataError):
    """A dataset root does not exist or lacks the expected files."""


# --- proposals --------------------------------------------------------------
class ProposalError(AWMError):
    """Proposals cannot be computed or read."""


class ProposalFileError(ProposalError):
    """A ``*_preds.txt`` proposals file has malformed lines."""


# --- model / training -------------------------------------------------------
class ConfigError(AWMError):
    """A configuration value is invalid or inconsistent."""


class CheckpointError(AWMError):
    """A checkpoint is missing, corrupt, or does not match the configuration."""


class NonFiniteLossError(AWMError):
    """The loss became NaN or inf; the message names the step and the batch."""


class RunExistsError(AWMError):
    """The output folder already holds a run (pass resume / overwrite explicitly)."""
