"""The analysis of the paper's published Grounding DINO boxes (real files, small fake copy for speed)."""

import gzip

import numpy as np
import pandas as pd
import pytest

from awm_lib import paths
from awm_lib.errors import DatasetNotFoundError
from awm_lib.proposals.gdino_vindr import analyse, bootstrap_auc, load_gdino_vindr


def test_loads_the_real_tables():
    boxes, images = load_gdino_vindr()
    assert len(images) == 4000 and images["cancer"].sum() == 198
    assert set(boxes["rank"].unique()) == set(range(50))
    row = boxes.iloc[0]
    assert row["x2"] - row["x1"] == pytest.approx(row["w"], rel=1e-4)
    assert set(boxes["image_id"]).issubset(set(images["image_id"]))


def _write_small(tmp_path, n_img=12):
    """A copy of the first ``n_img`` real images' rows: same format, fast to analyse."""
    real = paths.gdino_vindr_root()
    test = pd.read_csv(real / "test.csv")
    boxes = pd.read_csv(real / "proposals_top50.csv.gz")
    ids = test["im_path"].str.split("/").str[1].str.replace(".dicom", "")
    keep = test.iloc[:n_img].copy()
    keep.loc[keep.index[:4], "cancer"] = 1  # make both classes present in the small copy
    keep.loc[keep.index[4:], "cancer"] = 0
    keep.to_csv(tmp_path / "test.csv", index=False)
    with gzip.open(tmp_path / "proposals_top50.csv.gz", "wt") as f:
        boxes[boxes["image_id"].isin(set(ids.iloc[:n_img]))].to_csv(f, index=False)
    return tmp_path


def test_analysis_on_a_small_copy(tmp_path):
    out = analyse(_write_small(tmp_path), n_boot=50)
    assert out["n_images"] == 12 and out["n_cancer"] == 4
    assert 0 < out["coverage_of_breast"]["q50"] <= 1
    assert out["tokens"]["rois_448px_tokens"] == 6 * 32 * 32
    assert out["tokens"]["rois_224px_tokens"] == 6 * 16 * 16
    assert out["selection"]["n_kept"]["q50"] <= 5
    auc = out["auc_cancer"]["max_other_score"]
    assert 0 <= auc["auc"] <= 1 and auc["ci95"][0] <= auc["ci95"][1]


def test_bootstrap_auc_hand_case():
    y = np.array([0, 0, 1, 1])
    assert bootstrap_auc(y, [0.1, 0.2, 0.8, 0.9], n_boot=20)["auc"] == 1.0
    r = bootstrap_auc(y, [0.9, 0.8, 0.2, 0.1], groups=[0, 0, 1, 1], n_boot=20)
    # resamples that draw only one study hold one class and are skipped; the others all give 0
    assert r["auc"] == 0.0 and 0 < r["n_boot"] < 20 and r["ci95"] == [0.0, 0.0]


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_gdino_vindr(tmp_path)
