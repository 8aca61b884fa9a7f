"""Every offline proposer on constructed images, the registry, and bad input."""

import numpy as np
import pytest
import torch

from awm_lib.errors import ConfigError, EmptyImageError, ProposalError
from awm_lib.proposals.base import Proposals, make_proposer
from awm_lib.proposals.boxes import contains_points


def phantom(size=256, mass=(150, 120), r=10, specks=None, seed=0):
    """A half-ellipse 'breast' with smooth noisy texture, one bright round mass, optional specks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    breast = ((xx / (0.75 * size)) ** 2 + ((yy - size / 2) / (0.48 * size)) ** 2) < 1
    img = np.where(breast, 0.45, 0.0).astype(np.float32)
    img += breast * rng.normal(0, 0.01, img.shape).astype(np.float32)
    img += 0.25 * np.exp(-((xx - mass[0]) ** 2 + (yy - mass[1]) ** 2) / (2 * r**2)) * breast
    for x, y in specks or []:
        img[y, x] += 0.4
    return np.clip(img, 0, 1), breast


def test_blob_finds_the_mass_first():
    img, mask = phantom()
    p = make_proposer("blob", calc=False).propose(img, mask)
    assert isinstance(p, Proposals) and len(p) > 0
    assert bool(contains_points(p.boxes[:1], [[150, 120]])[0, 0])
    assert (p.scores[:-1] >= p.scores[1:]).all()  # sorted
    assert p.labels[0] == "mass"
    assert (p.boxes[:, 0] >= -40).all() and (p.boxes[:, 2] <= 256 + 40).all()  # input pixels
    assert p.image_size == (256, 256)


def test_blob_finds_a_speck_cluster():
    rng = np.random.default_rng(1)
    specks = [(int(x), int(y)) for x, y in rng.integers(0, 12, (8, 2)) + np.array([60, 60])]
    img, mask = phantom(size=512, mass=(300, 300), r=4, specks=specks)
    p = make_proposer("blob", calc_size=512).propose(img, mask)
    calc = p.take([i for i, lab in enumerate(p.labels) if lab == "calcification"])
    assert len(calc) >= 1
    assert bool(contains_points(calc.boxes, [[66, 66]]).any())


def test_blob_is_deterministic_and_scale_free():
    img, mask = phantom()
    a = make_proposer("blob").propose(img, mask)
    b = make_proposer("blob").propose(torch.from_numpy(img), torch.from_numpy(mask))
    assert torch.equal(a.boxes, b.boxes)


def test_blob_empty_inputs():
    with pytest.raises(EmptyImageError):
        make_proposer("blob").propose(np.zeros((64, 64), np.float32))
    img, _ = phantom(64)
    with pytest.raises(EmptyImageError, match="mask"):
        make_proposer("blob").propose(img, np.zeros((64, 64), bool))
    with pytest.raises(ProposalError, match="shape"):
        make_proposer("blob").propose(img, np.ones((32, 32), bool))
    with pytest.raises(ProposalError, match="grey"):
        make_proposer("blob").propose(np.ones((2, 3, 8, 8), np.float32))


def test_blob_without_mask_uses_the_data_layer_segmentation():
    img, _ = phantom(256)
    p = make_proposer("blob", calc=False).propose(img)
    assert bool(contains_points(p.boxes[:3], [[150, 120]]).any())


def test_oracle_exact_and_jittered():
    img, mask = phantom(128)
    gt = [[10, 20, 40, 60]]
    exact = make_proposer("oracle").propose(img, mask, gt_boxes=gt)
    assert exact.boxes.tolist() == gt and exact.scores.tolist() == [1.0]
    j1 = make_proposer("oracle", jitter=0.2, seed=1).propose(img, mask, gt_boxes=gt)
    j2 = make_proposer("oracle", jitter=0.2, seed=1).propose(img, mask, gt_boxes=gt)
    assert torch.equal(j1.boxes, j2.boxes) and not torch.equal(j1.boxes, exact.boxes)
    with pytest.raises(ProposalError, match="ground-truth"):
        make_proposer("oracle").propose(img, mask)


def test_random_boxes_inside_breast_and_seeded():
    img, mask = phantom(128)
    a = make_proposer("random", n_boxes=7, seed=2).propose(img, mask)
    b = make_proposer("random", n_boxes=7, seed=2).propose(img, mask)
    c = make_proposer("random", n_boxes=7, seed=3).propose(img, mask)
    assert len(a) == 7 and torch.equal(a.boxes, b.boxes) and not torch.equal(a.boxes, c.boxes)
    centres = ((a.boxes[:, :2] + a.boxes[:, 2:]) / 2).long().clamp(0, 127)
    assert (a.boxes[:, 2] <= 128).all() and (a.boxes[:, 0] >= 0).all()
    assert (
        mask[centres[:, 1], centres[:, 0]].mean() > 0.8
    )  # centred on breast pixels (clipping may move a few)


def test_none_and_registry():
    img, mask = phantom(64)
    assert len(make_proposer("none").propose(img, mask)) == 0
    with pytest.raises(ConfigError, match="unknown proposer"):
        make_proposer("yolo")
    with pytest.raises(ConfigError, match="no setting"):
        make_proposer("blob", colour="red")
    assert make_proposer("blob").settings()["proposer"] == "blob"
    batch = make_proposer("none").propose_batch([img, img])
    assert len(batch) == 2


def test_box_mean_matches_a_direct_window_average():
    from awm_lib.proposals.blob import box_mean

    x = torch.arange(35, dtype=torch.float32).reshape(1, 1, 5, 7)
    out = box_mean(x, 3)
    assert out.shape == x.shape
    assert out[0, 0, 2, 3].item() == pytest.approx(x[0, 0, 1:4, 2:5].mean().item())  # interior
    # corner: replicated edges, so the window is rows [0,0,1] x columns [0,0,1]
    corner = (4 * x[0, 0, 0, 0] + 2 * x[0, 0, 0, 1] + 2 * x[0, 0, 1, 0] + x[0, 0, 1, 1]) / 9
    assert out[0, 0, 0, 0].item() == pytest.approx(corner.item())


def test_interleave_reserves_ranks_for_clusters():
    from awm_lib.proposals.blob import _interleave

    mb = torch.tensor(
        [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], dtype=torch.float32
    )
    ms = torch.tensor([5.0, 4.0, 3.0, 2.0])  # masses, best first
    cb = torch.tensor([[0, 50, 5, 55], [10, 50, 15, 55], [20, 50, 25, 55]], dtype=torch.float32)
    cz = torch.tensor([9.0, 1.0, 3.0])  # the 1.0 cluster is below min_z: it goes last
    p = _interleave(mb, ms, cb, cz, every=3, min_z=2.0, max_boxes=10)
    assert p.labels == ["mass", "mass", "calcification", "mass", "mass", "calcification", "calcification"]
    assert p.boxes[2].tolist() == cb[0].tolist() and p.boxes[5].tolist() == cb[2].tolist()
    assert p.boxes[6].tolist() == cb[1].tolist()
    assert (p.scores[:-1] > p.scores[1:]).all()  # sorting by score keeps this order
    assert torch.equal(p.sorted().boxes, p.boxes)
    assert len(_interleave(mb, ms, cb, cz, every=3, min_z=2.0, max_boxes=4)) == 4


def test_cluster_box_fits_its_specks():
    rng = np.random.default_rng(1)
    specks = [(int(x), int(y)) for x, y in rng.integers(0, 12, (8, 2)) + np.array([60, 60])]
    img, mask = phantom(size=512, mass=(300, 300), r=4, specks=specks)
    p = make_proposer("blob", calc_size=512).propose(img, mask)
    calc = p.take([i for i, lab in enumerate(p.labels) if lab == "calcification"])
    hit = contains_points(calc.boxes, [[66, 66]])[:, 0]
    best = calc.boxes[hit][0]
    window = 0.04 * 512 * 2  # the counting window is much larger than the 12-px cluster
    assert float(best[2] - best[0]) < window / 2 and float(best[3] - best[1]) < window / 2


def test_blob_is_translation_equivariant_and_versioned():
    # the proposer crops the image to the breast; moving the breast inside the same canvas by a
    # multiple of the crop alignment (64 px) must move every box by exactly that much
    img, mask = phantom(256)
    canvas = ((0, 0), (0, 128))  # a 256 x 384 image, breast on the left
    a = make_proposer("blob").propose(np.pad(img, canvas), np.pad(mask, canvas))
    moved = ((0, 0), (128, 0))
    b = make_proposer("blob").propose(np.pad(img, moved), np.pad(mask, moved))
    # (the weakest maxima near the crop's border may differ: compare the strongest ones)
    assert len(a) >= 5 and len(b) >= 5
    assert torch.allclose(b.boxes[:5], a.boxes[:5] + torch.tensor([128.0, 0.0, 128.0, 0.0]), atol=1e-3)
    assert torch.allclose(a.scores[:5], b.scores[:5], atol=1e-5)
    assert isinstance(make_proposer("blob").settings()["version"], int)
