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


def is_located(lesion: Lesion, height: int, width: int) -> bool:
    """True when the source says where the lesion is: it has a centre, or a box smaller than the image.

    Sources give a lesion's position as a centre (mini-MIAS, synthetic) or as a box
    (VinDr-Mammo findings have boxes and no centre). A mini-MIAS row without
    ``X Y RADIUS`` ("somewhere in this image", e.g. spread calcifications) gets the
    whole ``height x width`` image as its box and no centre: that one is not
    located, and no RoI can be scored against it. The rule is exactly "centre, or
    a box that is not the whole image", because the two simpler rules are wrong:
    "has a centre" drops every VinDr finding, and "box under 90% of the image"
    drops a real lesion whose box, clipped to the image, covers most of it.

    Explained in the book: chapter 3, *RoI selection* (``notebooks/03_roi_selection.ipynb``).
    """
    if lesion.center is not None:
        return True
    x1, y1, x2, y2 = lesion.box
    return not (x1 <= 0 and y1 <= 0 and x2 >= width and y2 >= height)


def located(sample: Sample, shape: tuple[int, int] | None = None) -> list[Lesion]:
    """The lesions of ``sample`` that :func:`is_located` keeps.

    ``shape`` is the image's ``(height, width)``; by default the sample's own
    ``height`` / ``width`` (mini-MIAS, VinDr and synthetic samples carry them).
    """
    if shape is None:
        if sample.height is None or sample.width is None:
            raise ValueError(
                f"{sample.image_id}: the sample has no height/width; pass shape=(height, width) of its image"
            )
        shape = (sample.height, sample.width)
    return [les for les in sample.lesions if is_located(les, *shape)]
