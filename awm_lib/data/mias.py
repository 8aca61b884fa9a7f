"""mini-MIAS: 322 digitised-film mammograms (MLO views, left/right pairs).

The database's ``Info.txt`` describes each image on lines that start with
``mdbNNN``::

    REFNUM TISSUE CLASS [SEVERITY [X Y RADIUS]]
    mdb001 G CIRC B 535 425 197
    mdb003 D NORM
    mdb059 F CIRC B                  <- abnormal, but no location given
    mdb216 D CALC M *NOTE 3*         <- calcifications spread over the breast

Three things to get right:

- **Origin bottom-left.** ``Y`` counts up from the bottom edge, so the image
  row is ``H - 1 - Y`` (1023 - Y).
- **Several rows per image** (one per lesion), and some abnormal rows have no
  location. Such a lesion gets the whole image as its box and
  ``center=None`` (it is "somewhere in this image"); use
  :func:`awm_lib.data.types.located` to keep only lesions with a real position.
- **One woman, two images.** Films come in pairs, ``mdb001`` (right, odd)
  and ``mdb002`` (left, even) are the same patient. Cross-validation folds
  must keep both in the same fold, or the model is tested on the twin of an
  image it trained on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from awm_lib import paths
from awm_lib.data.types import Lesion, Sample
from awm_lib.errors import AnnotationError, DatasetNotFoundError

IMAGE_SIZE = 1024  # every mini-MIAS image is 1024 x 1024 (Info.txt, note 2)
TISSUES = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
CLASSES = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"}
_ROW = re.compile(r"^mdb(\d{3})\b")


def parse_info(path: str | Path) -> dict[str, list[dict]]:
    """Parse ``Info.txt`` into ``{"mdb001": [row, ...], ...}`` in file order.

    Each row is a dict with ``tissue``, ``cls``, ``severity`` ("B"/"M"/None),
    ``x``, ``y``, ``radius`` (ints or None) and ``line`` (1-based line number).
    Raises :class:`AnnotationError` naming the line of a malformed row.
    """
    path = Path(path)
    rows: dict[str, list[dict]] = defaultdict(list)
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        m = _ROW.match(line)
        if not m:
            continue
        ref = f"mdb{m.group(1)}"
        tokens = line.split("*", 1)[0].split()  # "*NOTE 3*" and anything after it is a comment
        rows[ref].append(_parse_row(tokens, path, lineno))
    if not rows:
        raise AnnotationError("no 'mdbNNN ...' rows found; is this the mini-MIAS Info.txt?", path)
    return dict(rows)


def _parse_row(tokens: list[str], path: Path, lineno: int) -> dict:
    def bad(why: str) -> AnnotationError:
        return AnnotationError(f"line {lineno}: {why}: {' '.join(tokens)!r}", path)

    if len(tokens) < 3:
        raise bad("expected REFNUM TISSUE CLASS [SEVERITY X Y RADIUS]")
    _, tissue, cls, *rest = tokens
    if tissue not in TISSUES:
        raise bad(f"unknown tissue {tissue!r} (expected F, G or D)")
    if cls not in CLASSES:
        raise bad(f"unknown class {cls!r} (expected one of {sorted(CLASSES)})")
    severity = None
    if cls != "NORM":
        if not rest or rest[0] not in ("B", "M"):
            raise bad("an abnormal row needs severity B or M")
        severity, rest = rest[0], rest[1:]
    if len(rest) not in (0, 3):
        raise bad("the location must be three numbers X Y RADIUS (or absent)")
    try:
        x, y, radius = (int(float(v)) for v in rest) if rest else (None, None, None)
    except ValueError:
        raise bad("X, Y and RADIUS must be numbers") from None
    return {
        "tissue": tissue,
        "cls": cls,
        "severity": severity,
        "x": x,
        "y": y,
        "radius": radius,
        "line": lineno,
    }


def row_to_lesion(row: dict, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> Lesion:
    """An abnormal Info.txt row as a :class:`Lesion` with an xyxy box in image pixels.

    The row is ``height - 1 - Y`` (origin bottom-left); the box is the centre
    plus/minus the radius, clipped to the image.
    """
    malignant = row["severity"] == "M"
    if row["x"] is None:
        return Lesion(box=(0.0, 0.0, float(width), float(height)), kind=row["cls"], malignant=malignant)
    x, r = float(row["x"]), float(row["radius"])
    y = float(height - 1 - row["y"])
    box = (max(0.0, x - r), max(0.0, y - r), min(float(width), x + r), min(float(height), y + r))
    return Lesion(box=box, kind=row["cls"], malignant=malignant, center=(x, y), radius=r)


def load_mias(
    root: str | Path | None = None, n_folds: int = 5, seed: int = 0, require_images: bool = True
) -> list[Sample]:
    """All 322 mini-MIAS images as :class:`Sample` records, with patient-level folds.

    ``label`` is 1 when any lesion is malignant; :func:`image_class` gives the
    three-way class. ``fold`` (0..n_folds-1) keeps each woman's two images
    together, is stratified by label and depends only on ``seed``. Images may
    be ``mdbNNN.png`` or ``mdbNNN.pgm``.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    root = Path(root) if root is not None else paths.mias_root()
    info = root / "Info.txt"
    if not root.is_dir():
        raise DatasetNotFoundError(
            "mini-MIAS folder not found; download it (see README) or set AWM_MIAS_ROOT", root
        )
    if not info.is_file():
        raise DatasetNotFoundError(
            "no Info.txt in the mini-MIAS folder; it must hold Info.txt and mdbNNN.pgm/.png", root
        )
    table = parse_info(info)

    samples, missing = [], []
    for ref, rows in table.items():
        path = _find_image(root, ref)
        if path is None:
            missing.append(ref)
            path = root / f"{ref}.png"
        lesions = tuple(row_to_lesion(r) for r in rows if r["cls"] != "NORM")
        number = int(ref[3:])
        samples.append(
            Sample(
                image_id=ref,
                path=path,
                patient_id=f"mias-{(number + 1) // 2:03d}",
                label=int(any(les.malignant for les in lesions)),
                laterality="R" if number % 2 else "L",  # Info.txt note 1: odd = right, even = left
                view="MLO",
                lesions=lesions,
                height=IMAGE_SIZE,
                width=IMAGE_SIZE,
            )
        )
    if missing and require_images:
        raise DatasetNotFoundError(
            f"{len(missing)} images listed in Info.txt are missing, e.g. {', '.join(missing[:5])} (.png or "
            ".pgm)",
            root,
        )
    return assign_folds(samples, n_folds=n_folds, seed=seed)


def _find_image(root: Path, ref: str) -> Path | None:
    for suffix in (".png", ".pgm", ".PNG", ".PGM"):
        p = root / f"{ref}{suffix}"
        if p.is_file():
            return p
    return None


def image_class(sample: Sample) -> str:
    """"malignant" if any lesion is malignant, "benign" if it has lesions, else "normal"."""
    if any(les.malignant for les in sample.lesions):
        return "malignant"
    return "benign" if sample.lesions else "normal"


def assign_folds(samples: list[Sample], n_folds: int = 5, seed: int = 0) -> list[Sample]:
    """Give every sample a fold, by patient, stratified by the patient's label.

    Patients are shuffled within each label (seeded) and dealt round-robin to the
    folds, like cards, so each fold gets about the same number of cancers.
    """
    from dataclasses import replace

    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    by_patient: dict[str, int] = {}
    for s in samples:
        by_patient[s.patient_id] = max(by_patient.get(s.patient_id, 0), s.label)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for label in sorted(set(by_patient.values()), reverse=True):  # cancers first
        group = sorted(p for p, lab in by_patient.items() if lab == label)
        for p in rng.permutation(group):
            fold_of[str(p)] = dealt % n_folds
            dealt += 1
    return [replace(s, fold=fold_of[s.patient_id]) for s in samples]


def split_folds(samples: list[Sample], test_fold: int) -> tuple[list[Sample], list[Sample]]:
    """(train, test) for one cross-validation round: test = the samples in ``test_fold``."""
    train = [s for s in samples if s.fold != test_fold]
    test = [s for s in samples if s.fold == test_fold]
    return train, test
