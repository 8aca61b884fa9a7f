"""VinDr-Mammo loader on a tiny CSV set built here: labels, splits by study, lesions, bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from awm_lib.data.vindr import (
    BREAST_CSV,
    FINDING_CSV,
    load_vindr,
    parse_birads,
    parse_categories,
    parse_density,
)
from awm_lib.errors import AnnotationError, DatasetNotFoundError

VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]


def make_root(tmp_path, n_train: int = 10, n_test: int = 2, touch_images: bool = True):
    """Studies s00.. with four images each; the left breast of every third study is BI-RADS 4."""
    breast, findings = [], []
    for i in range(n_train + n_test):
        study = f"s{i:02d}"
        for lat, view in VIEWS:
            cancer = lat == "L" and i % 3 == 0
            row = dict(
                study_id=study,
                series_id=f"{study}-{lat}",
                image_id=f"{study}-{lat}{view}",
                laterality=lat,
                view_position=view,
                height=100,
                width=80,
                breast_birads="BI-RADS 4" if cancer else ("BI-RADS 3" if lat == "L" else "BI-RADS 1"),
                breast_density="DENSITY C",
                split="training" if i < n_train else "test",
            )
            breast.append(row)
            if cancer:
                findings.append(
                    {
                        **row,
                        "finding_categories": "['Mass', 'Suspicious Calcification']",
                        "finding_birads": "BI-RADS 4",
                        "xmin": 10.0,
                        "ymin": 20.0,
                        "xmax": 30.5,
                        "ymax": 40.0,
                    }
                )
                findings.append(
                    {
                        **row,
                        "finding_categories": "['Asymmetry']",
                        "finding_birads": "BI-RADS 3",
                        "xmin": 1.0,
                        "ymin": 2.0,
                        "xmax": 3.0,
                        "ymax": 4.0,
                    }
                )
            else:
                findings.append(
                    {
                        **row,
                        "finding_categories": "['No Finding']",
                        "finding_birads": None,
                        "xmin": None,
                        "ymin": None,
                        "xmax": None,
                        "ymax": None,
                    }
                )
            if touch_images:
                p = tmp_path / "images" / study / f"{row['image_id']}.dicom"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"")  # the loader only checks that the file exists
    pd.DataFrame(breast).to_csv(tmp_path / BREAST_CSV, index=False)
    pd.DataFrame(findings).to_csv(tmp_path / FINDING_CSV, index=False)
    return tmp_path


def test_parsers():
    assert parse_birads("BI-RADS 4") == 4 and parse_birads(5) == 5 and parse_birads(float("nan")) is None
    assert parse_density("DENSITY C") == "C" and parse_density("??") is None
    assert parse_categories("['Mass', 'Suspicious Calcification']") == ["Mass", "Suspicious Calcification"]
    assert parse_categories("Mass") == ["Mass"]


def test_labels_lesions_and_paths(tmp_path):
    root = make_root(tmp_path)
    samples = load_vindr(root, val_fraction=0.0)
    assert len(samples) == 48
    s = {x.image_id: x for x in samples}
    cancer = s["s00-LCC"]
    assert cancer.label == 1 and cancer.birads == 4 and cancer.density == "C"
    assert (cancer.laterality, cancer.view, cancer.height, cancer.width) == ("L", "CC", 100, 80)
    assert cancer.path == root / "images" / "s00" / "s00-LCC.dicom"
    mass, asym = cancer.lesions
    assert (
        mass.box == (10.0, 20.0, 30.5, 40.0)
        and mass.kind == "Mass, Suspicious Calcification"
        and mass.malignant
    )
    assert asym.malignant is False and asym.birads == 3
    assert s["s01-LCC"].label == 0 and s["s01-LCC"].birads == 3  # BI-RADS 3 is not cancer
    assert s["s01-RCC"].lesions == ()  # "No Finding" rows carry no box
    assert {x.split for x in samples} == {"train", "test"}


def test_validation_is_drawn_by_study(tmp_path):
    root = make_root(tmp_path, n_train=20)
    samples = load_vindr(root, val_fraction=0.3, seed=0)
    per_study = {}
    for x in samples:
        per_study.setdefault(x.patient_id, set()).add(x.split)
    assert all(len(v) == 1 for v in per_study.values())  # all four images of a woman together
    val_studies = {p for p, v in per_study.items() if v == {"val"}}
    assert len(val_studies) == 6  # 30% of 20 training studies
    assert any(x.label for x in samples if x.split == "val")  # stratified: cancers in val too
    assert all(x.split == "test" for x in samples if int(x.patient_id[1:]) >= 20)  # official test kept
    again = load_vindr(root, val_fraction=0.3, seed=0)
    assert [x.split for x in again] == [x.split for x in samples]


def test_missing_column_names_csv_and_column(tmp_path):
    root = make_root(tmp_path)
    df = pd.read_csv(root / BREAST_CSV).drop(columns=["breast_birads", "split"])
    df.to_csv(root / BREAST_CSV, index=False)
    with pytest.raises(AnnotationError, match="breast_birads, split") as e:
        load_vindr(root)
    assert e.value.path.endswith(BREAST_CSV)


def test_unknown_image_id_in_findings(tmp_path):
    root = make_root(tmp_path)
    df = pd.read_csv(root / FINDING_CSV)
    df.loc[0, "image_id"] = "ghost-image"
    df.to_csv(root / FINDING_CSV, index=False)
    with pytest.raises(AnnotationError, match="ghost-image") as e:
        load_vindr(root)
    assert e.value.path.endswith(FINDING_CSV)


def test_missing_images_are_listed(tmp_path):
    root = make_root(tmp_path, touch_images=False)
    with pytest.raises(DatasetNotFoundError, match="48 of 48 images are missing, e.g. .*s00-LCC.dicom"):
        load_vindr(root)
    assert len(load_vindr(root, require_images=False)) == 48


def test_missing_csv_and_root(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_vindr(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match=BREAST_CSV):
        load_vindr(tmp_path)
