"""VinDr-Mammo (and the synthetic data set, which is written in the same shape).

Layout of a root folder::

    breast-level_annotations.csv   one row per image: study_id, series_id, image_id,
                                   laterality, view_position, height, width,
                                   breast_birads ("BI-RADS 4"), breast_density
                                   ("DENSITY C"), split ("training" / "test")
    finding_annotations.csv        one row per finding (or one "No Finding" row with
                                   empty boxes): the same columns plus
                                   finding_categories ("['Mass']"), finding_birads,
                                   xmin, ymin, xmax, ymax (original pixels)
    images/<study_id>/<image_id>.dicom

Labels follow the paper: an image is cancer (``label = 1``) when its breast's
BI-RADS is 4 or 5. The official training/test split is kept; a validation set
is drawn from training **by study** (one study = one woman's four images), so
the two breasts of a woman never sit on both sides of a split.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

from awm_lib.data.splits import validation_patients
from awm_lib.data.types import Lesion, Sample
from awm_lib.errors import AnnotationError, DatasetNotFoundError

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
BREAST_COLUMNS = [
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
]
FINDING_COLUMNS = [*BREAST_COLUMNS, "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax"]
SPLITS = {"training": "train", "train": "train", "test": "test"}


def parse_birads(value) -> int | None:
    """``"BI-RADS 4"`` / ``"4"`` / ``4`` -> 4; empty -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).upper().replace("BI-RADS", "").strip()
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_density(value) -> str | None:
    """``"DENSITY C"`` -> "C"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).upper().replace("DENSITY", "").strip()
    return text if text in ("A", "B", "C", "D") else None


def parse_categories(value) -> list[str]:
    """``"['Mass', 'Suspicious Calcification']"`` -> ["Mass", "Suspicious Calcification"]."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    text = str(value).strip()
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = [text]
    if isinstance(parsed, str):
        parsed = [parsed]
    return [str(c).strip() for c in parsed if str(c).strip()]


def _opt_str(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip().upper() or None


def _opt_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def is_cancer(birads: int | None) -> bool:
    """The paper's label: breast BI-RADS 4 (suspicious) or 5 (highly suggestive of malignancy)."""
    return birads in (4, 5)


def _read_csv(path: Path, required: list[str]):
    import pandas as pd

    if not path.is_file():
        raise DatasetNotFoundError(
            f"missing {path.name}; a VinDr-Mammo root holds {BREAST_CSV}, {FINDING_CSV} and images/", path
        )
    try:
        df = pd.read_csv(path, dtype={"study_id": str, "series_id": str, "image_id": str})
    except Exception as e:  # empty file, bad quoting ...
        raise AnnotationError(f"cannot read the CSV ({type(e).__name__}: {e})", path) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise AnnotationError(f"missing column(s) {', '.join(missing)}; expected {', '.join(required)}", path)
    return df


def image_path(root: Path, study_id: str, image_id: str) -> Path:
    """``images/<study_id>/<image_id>.dicom`` (``.dcm`` accepted too)."""
    p = root / "images" / study_id / f"{image_id}.dicom"
    if not p.exists():
        alt = p.with_suffix(".dcm")
        if alt.exists():
            return alt
    return p


def load_vindr(
    root: str | Path, val_fraction: float = 0.1, seed: int = 0, require_images: bool = True
) -> list[Sample]:
    """Every image of a VinDr-Mammo-shaped folder as a :class:`Sample`.

    ``split`` is "train", "val" or "test"; "val" studies are drawn from the
    official training split (``val_fraction`` of its studies, stratified by
    whether the study has a cancer, seeded). ``lesions`` are the findings with
    boxes; a finding is malignant when its own BI-RADS is 4 or 5.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError("VinDr-Mammo folder not found", root)
    breast = _read_csv(root / BREAST_CSV, BREAST_COLUMNS)
    findings = _read_csv(root / FINDING_CSV, FINDING_COLUMNS)

    if breast["image_id"].duplicated().any():
        dup = breast.loc[breast["image_id"].duplicated(), "image_id"].iloc[0]
        raise AnnotationError(f"image_id {dup!r} appears on more than one row", root / BREAST_CSV)
    known = set(breast["image_id"])
    unknown = sorted(set(findings["image_id"]) - known)
    if unknown:
        raise AnnotationError(
            f"{len(unknown)} image_id(s) are not in {BREAST_CSV}, e.g. {', '.join(unknown[:3])}",
            root / FINDING_CSV,
        )
    bad_split = sorted(set(breast["split"].astype(str).str.lower()) - set(SPLITS))
    if bad_split:
        raise AnnotationError(
            f"unknown split value(s) {bad_split}; expected 'training' or 'test'", root / BREAST_CSV
        )

    lesions = _lesions_by_image(findings, root / FINDING_CSV)
    samples = []
    for row in breast.itertuples(index=False):
        birads = parse_birads(row.breast_birads)
        samples.append(
            Sample(
                image_id=row.image_id,
                path=image_path(root, row.study_id, row.image_id),
                patient_id=row.study_id,
                label=int(is_cancer(birads)),
                laterality=_opt_str(row.laterality),
                view=_opt_str(row.view_position),
                split=SPLITS[str(row.split).lower()],
                birads=birads,
                density=parse_density(row.breast_density),
                lesions=tuple(lesions.get(row.image_id, ())),
                height=_opt_int(row.height),
                width=_opt_int(row.width),
            )
        )
    if require_images:
        missing = [str(s.path) for s in samples if not s.path.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(samples)} images are missing, e.g. {', '.join(missing[:3])}; "
                "expected images/<study_id>/<image_id>.dicom",
                root,
            )
    return assign_validation(samples, val_fraction=val_fraction, seed=seed)


def _lesions_by_image(findings, csv_path: Path) -> dict[str, list[Lesion]]:
    out: dict[str, list[Lesion]] = {}
    for i, row in enumerate(findings.itertuples(index=False), start=2):  # line 1 is the header
        coords = [row.xmin, row.ymin, row.xmax, row.ymax]
        if any(c is None or (isinstance(c, float) and math.isnan(c)) for c in coords):
            continue  # "No Finding" rows have no box
        try:
            x0, y0, x1, y1 = (float(c) for c in coords)
        except (TypeError, ValueError):
            raise AnnotationError(f"line {i}: box coordinates are not numbers: {coords}", csv_path) from None
        if x1 <= x0 or y1 <= y0:
            raise AnnotationError(
                f"line {i}: empty box (xmin {x0}, ymin {y0}, xmax {x1}, ymax {y1})", csv_path
            )
        categories = parse_categories(row.finding_categories)
        birads = parse_birads(row.finding_birads)
        out.setdefault(row.image_id, []).append(
            Lesion(
                box=(x0, y0, x1, y1),
                kind=", ".join(categories) or "finding",
                malignant=is_cancer(birads),
                birads=birads,
            )
        )
    return out


def assign_validation(samples: list[Sample], val_fraction: float = 0.1, seed: int = 0) -> list[Sample]:
    """Move ``val_fraction`` of the training studies to "val", by study, stratified by cancer."""
    from dataclasses import replace

    val = validation_patients([s for s in samples if s.split == "train"], val_fraction, seed)
    return [replace(s, split="val") if s.split == "train" and s.patient_id in val else s for s in samples]
