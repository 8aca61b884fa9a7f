"""The reference implementation's per-image proposals files, ``<image>_preds.txt``.

One box per line, ``cx cy w h score`` in pixels (centre, width, height, score),
separated by spaces, sorted by score (highest first). The paper's files hold
all 900 Grounding DINO queries of one image, in pixels of the breast-cropped
image. We read them into :class:`~awm_lib.proposals.base.Proposals` (``xyxy``)
and write them back in the same format, so boxes can be exchanged with the
reference code both ways.

Reading is strict: a line that is not five finite numbers, or a box with a
negative width or height, raises :class:`ProposalFileError` naming the file and
the line number. Blank lines are ignored; an empty file means "no boxes".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from awm_lib.errors import ProposalFileError
from awm_lib.io_utils import write_text_atomic
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

SUFFIX = "_preds.txt"


def preds_path(root: str | Path, study_id: str, image_id: str) -> Path:
    """Where the reference layout keeps one image's file: ``root/<study_id>/<image_id>_preds.txt``."""
    return Path(root) / str(study_id) / f"{image_id}{SUFFIX}"


def parse_preds(text: str, path: str | Path = "<text>") -> Proposals:
    """Parse the contents of a ``_preds.txt`` file (see the module docstring)."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise ProposalFileError(
                f"line {lineno}: expected 5 numbers 'cx cy w h score', got {len(parts)} fields: "
                f"{line.strip()[:60]!r}",
                path,
            )
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ProposalFileError(f"line {lineno}: not a number in {line.strip()[:60]!r}", path) from None
        if not all(math.isfinite(v) for v in vals):
            raise ProposalFileError(f"line {lineno}: NaN or inf in {line.strip()[:60]!r}", path)
        if vals[2] < 0 or vals[3] < 0:
            raise ProposalFileError(f"line {lineno}: negative width or height in {line.strip()[:60]!r}", path)
        rows.append(vals)
    if not rows:
        return Proposals.empty()
    t = torch.tensor(rows, dtype=torch.float32)  # (N, 5)
    return Proposals(cxcywh_to_xyxy(t[:, :4]), t[:, 4]).sorted()


def read_preds(path: str | Path, limit: int | None = None) -> Proposals:
    """Read one ``_preds.txt`` file; ``limit`` keeps only the first ``limit`` boxes by score."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProposalFileError("proposals file not found", path) from None
    except UnicodeDecodeError:
        raise ProposalFileError("not a text file (expected lines 'cx cy w h score')", path) from None
    props = parse_preds(text, path)
    return props if limit is None else props.take(torch.arange(min(limit, len(props))))


def format_preds(proposals: Proposals) -> str:
    """The file text for ``proposals``: sorted by score, ``cx cy w h score`` per line."""
    p = proposals.sorted()
    if len(p) == 0:
        return ""
    cxcywh = xyxy_to_cxcywh(p.boxes)
    table = torch.cat([cxcywh, p.scores[:, None]], dim=1).numpy()  # (N, 5) float32
    # the shortest decimal that reads back to the same float32 (like the reference files)
    lines = [" ".join(np.format_float_positional(v, unique=True, trim="-") for v in row) for row in table]
    return "\n".join(lines) + "\n"


def write_preds(path: str | Path, proposals: Proposals) -> Path:
    """Write ``proposals`` atomically in the reference format; returns the path."""
    write_text_atomic(path, format_preds(proposals))
    return Path(path)
