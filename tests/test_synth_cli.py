"""The VinDr-shaped synthetic dataset writer and ``python -m awm_lib synth``."""

from __future__ import annotations

import ast
import os

import numpy as np
import pandas as pd
import pydicom
import pytest

from awm_lib.cli import main
from awm_lib.data.synth_dataset import (
    BREAST_COLUMNS,
    FINDING_COLUMNS,
    ensure_synthetic_dataset,
    n_studies_for,
    pick_test_studies,
    write_synthetic_dataset,
)
from awm_lib.data.vindr import load_vindr
from awm_lib.errors import ConfigError, DataError

SIZE = 256


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = write_synthetic_dataset(root, 18, seed=3, size=SIZE, prevalence=0.5, progress=False)
    return root, summary


def test_counts_round_up_to_whole_studies(dataset):
    root, s = dataset
    assert n_studies_for(18) == 5 and n_studies_for(1) == 1 and n_studies_for(8) == 2
    assert (s.n_studies, s.n_images, s.n_written) == (5, 20, 20)
    assert len(list((root / "images").glob("*/*.dicom"))) == 20


def test_csv_columns_and_values(dataset):
    root, s = dataset
    breast = pd.read_csv(root / "breast-level_annotations.csv", dtype=str)
    findings = pd.read_csv(root / "finding_annotations.csv", dtype=str)
    assert list(breast.columns) == BREAST_COLUMNS
    assert list(findings.columns) == FINDING_COLUMNS
    assert set(breast["split"]) <= {"training", "test"}
    assert breast["breast_birads"].str.fullmatch(r"BI-RADS [1-5]").all()
    assert breast["breast_density"].str.fullmatch(r"DENSITY [A-D]").all()
    assert set(breast["image_id"]) == set(findings["image_id"])
    # every study is one woman: L/R x CC/MLO, one split, one density
    for _, g in breast.groupby("study_id"):
        assert sorted(zip(g.laterality, g.view_position)) == [
            ("L", "CC"),
            ("L", "MLO"),
            ("R", "CC"),
            ("R", "MLO"),
        ]
        assert g["split"].nunique() == 1 and g["breast_density"].nunique() == 1
    nofind = findings[findings["finding_categories"] == "['No Finding']"]
    assert nofind[["xmin", "ymin", "xmax", "ymax", "finding_birads"]].isna().all().all()
    boxed = findings[findings["finding_categories"] != "['No Finding']"]
    assert len(boxed) > 0 and not boxed[["xmin", "ymin", "xmax", "ymax"]].isna().any().any()
    for cats in findings["finding_categories"]:
        assert isinstance(ast.literal_eval(cats), list)
    assert s.n_cancer_images == breast["breast_birads"].isin(["BI-RADS 4", "BI-RADS 5"]).sum()
    assert s.n_test_images == (breast["split"] == "test").sum() == 4 * len(pick_test_studies(5, 3))


def test_both_views_of_a_breast_agree(dataset):
    root, _ = dataset
    breast = pd.read_csv(root / "breast-level_annotations.csv", dtype=str)
    findings = pd.read_csv(root / "finding_annotations.csv", dtype=str)
    for _, g in breast.groupby(["study_id", "laterality"]):
        assert g["breast_birads"].nunique() == 1
        cats = [sorted(findings.loc[findings.image_id == i, "finding_categories"]) for i in g["image_id"]]
        assert cats[0] == cats[1]


def test_dicoms_are_readable_mammograms(dataset):
    root, _ = dataset
    breast = pd.read_csv(root / "breast-level_annotations.csv", dtype=str)
    for row in breast.head(4).itertuples():
        ds = pydicom.dcmread(root / "images" / row.study_id / f"{row.image_id}.dicom")
        assert ds.Modality == "MG" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsStored in (12, 14) and ds.BitsAllocated == 16
        assert ds.ImageLaterality == ds.Laterality == row.laterality
        assert ds.ViewPosition == row.view_position
        assert ds.StudyInstanceUID and ds.PatientID.startswith("SYNTH")
        px = ds.pixel_array
        assert px.shape == (int(row.height), int(row.width)) == (SIZE, round(SIZE * 2800 / 3518))
        assert px.dtype == np.uint16 and px.max() < 2**ds.BitsStored


def test_load_vindr_reads_it(dataset):
    root, s = dataset
    samples = load_vindr(root)
    assert len(samples) == s.n_images
    assert sum(x.label for x in samples) == s.n_cancer_images
    assert {x.split for x in samples} <= {"train", "val", "test"}
    for x in samples:
        assert x.path.is_file() and x.laterality in ("L", "R") and x.view in ("CC", "MLO")
        assert x.label == int(any(les.malignant for les in x.lesions))
        for les in x.lesions:
            assert 0 <= les.box[0] < les.box[2] <= x.width and 0 <= les.box[1] < les.box[3] <= x.height


def test_resume_skips_finished_studies_and_refuses_other_settings(dataset):
    root, _ = dataset
    before = {p: p.stat().st_mtime_ns for p in (root / "images").glob("*/*.dicom")}
    victim = sorted(before)[0]
    victim.unlink()  # an interrupted run: one image missing, its study is redone
    again = write_synthetic_dataset(root, 18, seed=3, size=SIZE, prevalence=0.5, progress=False)
    assert again.n_written == 4 and victim.is_file()
    untouched = [p for p in before if p.parent != victim.parent]
    assert all(p.stat().st_mtime_ns == before[p] for p in untouched)
    with pytest.raises(DataError, match="other settings"):
        write_synthetic_dataset(root, 18, seed=4, size=SIZE, progress=False)
    with pytest.raises(ConfigError):
        write_synthetic_dataset(root, 0, seed=3, size=SIZE, progress=False)


def test_same_seed_same_dataset(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", 4, seed=8, size=128, progress=False)
    b = write_synthetic_dataset(tmp_path / "b", 4, seed=8, size=128, progress=False)
    for name in ("breast-level_annotations.csv", "finding_annotations.csv"):
        assert (a.root / name).read_text() == (b.root / name).read_text()
    pa = sorted(a.root.glob("images/*/*.dicom"))
    pb = sorted(b.root.glob("images/*/*.dicom"))
    assert [p.name for p in pa] == [p.name for p in pb]
    assert np.array_equal(pydicom.dcmread(pa[0]).pixel_array, pydicom.dcmread(pb[0]).pixel_array)


def test_ensure_synthetic_dataset_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AWM_CACHE", str(tmp_path / "cache"))
    root = ensure_synthetic_dataset(4, seed=1, size=128, progress=False)
    assert root == tmp_path / "cache" / "synthetic" / "4-1-128"
    stamp = os.stat(root / "breast-level_annotations.csv").st_mtime_ns
    assert ensure_synthetic_dataset(4, seed=1, size=128, progress=False) == root
    assert os.stat(root / "breast-level_annotations.csv").st_mtime_ns == stamp


def test_cli_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "ds"
    assert (
        main(
            [
                "synth",
                str(out),
                "--n",
                "4",
                "--seed",
                "2",
                "--size",
                "128",
                "--no-progress",
                "--prevalence",
                "1",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert str(out) in text and "4 images" in text and "4 BI-RADS 4/5" in text
    assert len(load_vindr(out)) == 4
    assert main(["synth", str(out), "--n", "4", "--seed", "9", "--size", "128", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m awm_lib synth: error: ")
        and "other settings" in err
        and len(err.strip().splitlines()) == 1
    )


def test_a_split_without_cancer_is_warned_about_in_the_library_and_the_cli(tmp_path, capsys):
    from awm_lib.data.synth_dataset import SplitWithoutCancerWarning

    with pytest.warns(SplitWithoutCancerWarning, match="test split has no cancer") as caught:
        s = write_synthetic_dataset(tmp_path / "none", 8, seed=1, size=SIZE, prevalence=0.0, progress=False)
    assert {str(w.message).split(" split")[0].rsplit(" ", 1)[-1] for w in caught} == {"training", "test"}
    assert (s.n_cancer_images, s.n_test_cancer_images) == (0, 0)
    assert "4 test (0 BI-RADS 4/5)" in s.describe()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWithoutCancerWarning)  # every breast a cancer: no warning
        s = write_synthetic_dataset(tmp_path / "all", 8, seed=1, size=SIZE, prevalence=1.0, progress=False)
    assert s.n_test_cancer_images == s.n_test_images == 4
    assert (
        main(
            [
                "synth",
                str(tmp_path / "cli"),
                "--n",
                "8",
                "--size",
                str(SIZE),
                "--prevalence",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning:" in err and "the test split has no cancer" in err and "--prevalence" in err
