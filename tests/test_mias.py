"""mini-MIAS: Info.txt parsing (counts from its README), coordinates, patient folds, bad input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from awm_lib.data.mias import image_class, load_mias, parse_info, split_folds
from awm_lib.data.types import located
from awm_lib.errors import AnnotationError, DatasetNotFoundError


@pytest.fixture(scope="module")
def mias(mias_root):
    return load_mias(mias_root)


def test_counts_match_the_readme(mias):
    assert len(mias) == 322
    assert Counter(image_class(s) for s in mias) == {"normal": 207, "benign": 63, "malignant": 52}
    assert sum(s.label for s in mias) == 52
    assert sum(len(located(s)) for s in mias) == 119
    assert sum(len(s.lesions) for s in mias) == 123


def test_origin_bottom_left_is_flipped(mias):
    s = {x.image_id: x for x in mias}["mdb001"]  # "mdb001 G CIRC B 535 425 197"
    (les,) = s.lesions
    assert les.center == (535.0, 1023.0 - 425.0)
    assert les.radius == 197.0 and les.kind == "CIRC" and les.malignant is False
    assert les.box == (535 - 197, 598 - 197, 535 + 197, 598 + 197)
    assert s.laterality == "R" and s.view == "MLO" and s.patient_id == "mias-001"


def test_box_is_clipped_to_the_image(mias):
    boxes = np.array([les.box for s in mias for les in s.lesions])
    assert boxes.min() >= 0 and boxes.max() <= 1024


def test_several_rows_and_rows_without_location(mias):
    by_id = {s.image_id: s for s in mias}
    assert len(by_id["mdb005"].lesions) == 2  # two benign masses
    (spread,) = by_id["mdb216"].lesions  # "*NOTE 3*": calcifications spread everywhere
    assert spread.center is None and spread.box == (0.0, 0.0, 1024.0, 1024.0) and spread.malignant
    assert image_class(by_id["mdb059"]) == "benign" and located(by_id["mdb059"]) == []


def test_folds_keep_pairs_together_and_are_deterministic(mias_root, mias):
    folds = {}
    for s in mias:
        folds.setdefault(s.patient_id, set()).add(s.fold)
    assert len(folds) == 161 and all(len(f) == 1 for f in folds.values())
    assert {s.fold for s in mias} == set(range(5))
    again = load_mias(mias_root, seed=0)
    assert [s.fold for s in again] == [s.fold for s in mias]
    other = load_mias(mias_root, seed=1)
    assert [s.fold for s in other] != [s.fold for s in mias]
    cancers = Counter(s.fold for s in mias if s.label)
    assert max(cancers.values()) - min(cancers.values()) <= 3  # stratified: cancers spread evenly
    train, test = split_folds(mias, 2)
    assert len(train) + len(test) == 322 and {s.patient_id for s in train}.isdisjoint(
        {s.patient_id for s in test}
    )


def _tiny_root(tmp_path, rows: str, suffix: str = ".pgm"):
    (tmp_path / "Info.txt").write_text("header text\n\n" + rows)
    for line in rows.splitlines():
        ref = line.split()[0]
        (tmp_path / f"{ref}{suffix}").write_bytes(b"P5\n4 4\n255\n" + bytes(16))
    return tmp_path


def test_pgm_files_are_accepted(tmp_path):
    root = _tiny_root(tmp_path, "mdb001 G CIRC B 10 20 5\nmdb002 G NORM\n")
    samples = load_mias(root, n_folds=2)
    assert [s.path.name for s in samples] == ["mdb001.pgm", "mdb002.pgm"]
    assert samples[0].lesions[0].center == (10.0, 1003.0)
    assert samples[0].fold == samples[1].fold


@pytest.mark.parametrize(
    "bad,why",
    [
        ("mdb003 X NORM\n", "tissue"),
        ("mdb003 G BLOB B\n", "class"),
        ("mdb003 G CIRC Q 1 2 3\n", "severity"),
        ("mdb003 G CIRC B 1 2\n", "three numbers"),
        ("mdb003 G CIRC B 1 two 3\n", "numbers"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path, bad, why):
    root = _tiny_root(tmp_path, "mdb001 G NORM\nmdb002 G NORM\n" + bad)
    with pytest.raises(AnnotationError, match=f"line 5: .*{why}"):
        parse_info(root / "Info.txt")


def test_missing_root_or_info(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_mias(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match="Info.txt"):
        load_mias(tmp_path)


def test_missing_images(tmp_path):
    root = _tiny_root(tmp_path, "mdb001 G NORM\nmdb002 G NORM\n")
    (root / "mdb002.pgm").unlink()
    with pytest.raises(DatasetNotFoundError, match="mdb002"):
        load_mias(root, n_folds=2)
    assert len(load_mias(root, n_folds=2, require_images=False)) == 2
