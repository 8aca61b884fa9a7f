"""Splits by woman, RoIs and their labels, padding, augmentation, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from awm_lib.data.cache import PreprocessCache, Preprocessed
from awm_lib.data.types import Lesion, Sample
from awm_lib.proposals.base import Proposals
from awm_lib.train.dataset import (
    MammoRoIDataset,
    RoISettings,
    carve_validation,
    collate,
    limit_samples,
    rois_for_image,
    split_samples,
)


def _samples(n_patients=20, per=2, cancer_every=4):
    out = []
    for p in range(n_patients):
        for v in range(per):
            out.append(
                Sample(
                    image_id=f"p{p}v{v}",
                    path=f"p{p}v{v}.png",
                    patient_id=f"p{p}",
                    label=int(p % cancer_every == 0 and v == 0),
                    fold=p % 5,
                    split="train",
                )
            )
    return out


def test_carve_validation_keeps_women_whole_and_stratifies():
    samples = _samples()
    train, val = carve_validation(samples, 0.2, seed=0)
    assert len(train) + len(val) == len(samples)
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}
    assert sum(s.label for s in val) >= 1 and all(s.split == "val" for s in val)
    # 5 patients with a cancer and 15 without: round(0.2 * 5) = 1 and round(0.2 * 15) = 3 women
    assert len({s.patient_id for s in val}) == 4
    assert carve_validation(samples, 0.2, seed=0) == (train, val)


def test_mias_split_tests_on_one_fold_and_carves_validation_from_the_others():
    parts = split_samples(_samples(), "mias", fold=2, val_fraction=0.25)
    assert {s.fold for s in parts["test"]} == {2}
    assert 2 not in {s.fold for s in parts["train"] + parts["val"]}
    women = [{s.patient_id for s in parts[k]} for k in ("train", "val", "test")]
    assert not (women[0] & women[1]) and not (women[0] & women[2]) and not (women[1] & women[2])


def test_limit_samples_keeps_the_share_of_cancers():
    samples = _samples(n_patients=40, per=1, cancer_every=4)  # 10 of 40 are cancers
    small = limit_samples(samples, 8)
    assert len(small) == 8 and sum(s.label for s in small) == 2
    assert limit_samples(samples, None) is samples


def _prep(h=100, w=80):
    pixels = np.random.default_rng(0).random((h, w)).astype(np.float32)
    # original image 200 x 160: the cache holds it at half size
    return Preprocessed(
        pixels=pixels,
        box=(0, 0, 160, 200),
        flipped=False,
        scale=(0.5, 0.5),
        original_shape=(200, 160),
        source="x",
    )


class Fixed:
    """A proposer stub returning given boxes (cache pixels)."""

    needs_ground_truth = False

    def __init__(self, boxes):
        self.boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)

    def propose(self, image, mask=None):
        return Proposals(self.boxes, torch.linspace(1, 0.5, len(self.boxes)))


def test_rois_and_their_labels_from_lesion_overlap():
    sample = Sample(
        "a", "a.png", "p", 1, lesions=(Lesion(box=(40.0, 40.0, 80.0, 80.0), kind="mass", malignant=True),)
    )
    # in cache pixels the lesion is (20, 20, 40, 40); one proposal on it, one far away
    rec = rois_for_image(
        _prep(), sample, Fixed([[20, 20, 40, 40], [50, 60, 70, 80]]), RoISettings(topk=3, margin=0.0)
    )
    assert rec["n_proposals"] == 2
    assert rec["rois"][0] == [0.0, 0.0, 80.0, 100.0]  # the anchor: the whole cached image
    assert rec["rois"][1] == [20.0, 20.0, 40.0, 40.0]
    assert rec["valid"] == [True, True, True, False]  # one padded row, masked
    assert rec["roi_labels"] == [
        -1,
        1,
        0,
        -1,
    ]  # anchor ignored, lesion RoI malignant, far RoI not, padding ignored


def test_no_proposals_leaves_the_anchor_alone_unless_padding_is_random():
    sample = Sample("a", "a.png", "p", 0)
    rec = rois_for_image(_prep(), sample, Fixed([]), RoISettings(topk=3))
    assert rec["n_proposals"] == 0 and rec["valid"] == [True, False, False, False]
    rec = rois_for_image(_prep(), sample, Fixed([]), RoISettings(topk=3, pad="random"))
    assert rec["valid"] == [True] * 4 and rec["roi_labels"] == [-1, 0, 0, 0]


def test_cancer_without_a_located_lesion_has_no_benign_rois():
    # mini-MIAS rows without coordinates become a whole-image box: not a location
    sample = Sample(
        "a", "a.png", "p", 1, lesions=(Lesion(box=(0.0, 0.0, 160.0, 200.0), kind="CALC", malignant=True),)
    )
    rec = rois_for_image(_prep(), sample, Fixed([[20, 20, 40, 40]]), RoISettings(topk=1))
    assert rec["roi_labels"] == [-1, -1]


@pytest.fixture
def tiny_dataset(tmp_path, breast_phantom):
    samples = []
    for i, (h, w) in enumerate([(120, 96), (100, 90)]):
        pixels, _ = breast_phantom(height=h, width=w, bits=8, seed=i)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(f"img{i}", path, f"p{i}", i % 2))
    cache = PreprocessCache(tmp_path / "cache", long_side=64)
    recs = [
        {
            "rois": [[0, 0, 30, 60], [5, 5, 25, 25]],
            "valid": [True, True],
            "roi_labels": [-1, 0],
            "n_proposals": 1,
        }
    ] * 2
    return samples, cache, recs


def test_items_collate_with_padding(tiny_dataset):
    samples, cache, recs = tiny_dataset
    ds = MammoRoIDataset(samples, cache, recs)
    items = [ds[0], ds[1]]
    assert items[0]["image"].shape[0] == 1 and max(items[0]["image"].shape[1:]) == 64
    batch = collate(items)
    H = max(it["image"].shape[1] for it in items)
    W = max(it["image"].shape[2] for it in items)
    assert batch["images"].shape == (2, 1, H, W)
    for b, it in enumerate(items):
        h, w = it["image"].shape[1:]
        assert batch["image_sizes"][b].tolist() == [h, w]
        assert torch.equal(batch["images"][b, :, :h, :w], it["image"])
        assert batch["images"][b, :, h:, :].abs().sum() == 0 and batch["images"][b, :, :, w:].abs().sum() == 0
    assert batch["rois"].shape == (2, 2, 4) and batch["labels"].tolist() == [0.0, 1.0]
    assert batch["image_ids"] == ["img0", "img1"]


def test_augmentation_depends_only_on_seed_epoch_and_index(tiny_dataset):
    samples, cache, recs = tiny_dataset
    ds = MammoRoIDataset(samples, cache, recs, augment=True, seed=3)
    a = ds[0]
    again = MammoRoIDataset(samples, cache, recs, augment=True, seed=3)[0]
    assert torch.equal(a["image"], again["image"]) and torch.equal(a["rois"], again["rois"])
    ds.set_epoch(1)
    b = ds[0]
    assert not torch.equal(a["image"], b["image"])
    assert torch.equal(a["rois"][0], b["rois"][0])  # the anchor never moves
    plain = MammoRoIDataset(samples, cache, recs)[0]
    assert torch.equal(plain["rois"], torch.tensor(recs[0]["rois"], dtype=torch.float32))


def test_roi_cache_key_follows_the_proposers_own_settings(tmp_path):
    """A changed proposer (its settings carry its version) must never reuse older boxes."""
    from awm_lib.train.dataset import RoICache, RoISettings

    cache = PreprocessCache(root=tmp_path / "prep", long_side=64)
    default = RoICache(cache, RoISettings(proposer="blob"), root=tmp_path / "rois")
    again = RoICache(cache, RoISettings(proposer="blob"), root=tmp_path / "rois")
    changed = RoICache(cache, RoISettings(proposer="blob"), root=tmp_path / "rois",
                       proposer_kwargs={"calc_every": 0})
    assert default.path == again.path
    assert default.path != changed.path
