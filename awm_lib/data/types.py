"""Plain records shared by every dataset: one image, its lesions, its labels.

Boxes are ``xyxy`` in pixels of the ORIGINAL image (before breast cropping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Lesion:
    box: tuple[float, float, float, float]  # xyxy, original pixels
    kind: str  # "mass", "spiculated_mass", "calcification", "distortion", "asymmetry", ... or MIAS class
    malignant: bool
    birads: int | None = None
    center: tuple[float, float] | None = None  # (x, y) pixels, when the source gives a centre
    radius: float | None = None  # pixels, when the source gives one (mini-MIAS)


@dataclass(frozen=True)
class Sample:
    image_id: str
    path: Path
    patient_id: str  # one woman (VinDr: study_id; mini-MIAS: the left/right pair)
    label: int  # 1 = cancer (VinDr: breast BI-RADS 4/5; mini-MIAS: malignant), else 0
    laterality: str | None = None  # "L" / "R"
    view: str | None = None  # "CC" / "MLO"
    split: str | None = None  # "train" / "val" / "test"
    fold: int | None = None  # cross-validation fold (mini-MIAS)
    birads: int | None = None
    density: str | None = None  # "A".."D"
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)
    height: int | None = None
    width: int | None = None
