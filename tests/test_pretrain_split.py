"""Data hygiene of pretraining: the mini-MIAS half split, the bank it allows, and the held-out probe."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from awm_lib.data.mias import load_mias
from awm_lib.pretrain.config import PretrainConfig
from awm_lib.pretrain.heldout import image_crops, run_heldout_probe
from awm_lib.pretrain.probe import ProbeConfig
from awm_lib.pretrain.split import mias_halves, samples_of_half, woman_class


@pytest.fixture(scope="module")
def samples():
    return load_mias()


def test_halves_split_women_not_images_and_are_stratified(samples):
    halves = mias_halves(samples, seed=0)
    pre, probe = set(halves["pretrain"]), set(halves["probe"])
    women = {s.patient_id for s in samples}
    assert pre.isdisjoint(probe) and pre | probe == women and len(women) == 161
    # both images of a woman are on one side
    for half in ("pretrain", "probe"):
        chosen = samples_of_half(samples, half)
        assert {s.patient_id for s in chosen} == set(halves[half])
        assert all(sum(s.patient_id == w for s in chosen) == 2 for w in halves[half])
    # every class of woman is split in two (the probe half gets the odd one)
    classes = woman_class(samples)
    for c in ("malignant", "lesion", "normal"):
        n_pre = sum(classes[w] == c for w in pre)
        n_probe = sum(classes[w] == c for w in probe)
        assert n_probe - n_pre in (0, 1), c


def test_halves_depend_on_the_seed_only(samples):
    shuffled = list(samples)
    random.Random(3).shuffle(shuffled)
    assert mias_halves(shuffled, seed=0) == mias_halves(samples, seed=0)
    assert mias_halves(samples, seed=1) != mias_halves(samples, seed=0)
    with pytest.raises(ValueError):
        samples_of_half(samples, "test")


def test_bank_of_the_pretrain_half_holds_no_probe_image(samples):
    from awm_lib.pretrain.loop import load_bank

    cfg = PretrainConfig(mias_half="pretrain", long_side=64, max_images=6, progress=False)
    bank = load_bank(cfg)
    probe_ids = {s.image_id for s in samples_of_half(samples, "probe")}
    pre_ids = {s.image_id for s in samples_of_half(samples, "pretrain")}
    assert len(bank) == 6 and set(bank.image_ids) <= pre_ids and not set(bank.image_ids) & probe_ids
    with pytest.raises(Exception, match="mias_half"):
        PretrainConfig(mias_half="everything").validate()


def test_image_crops_are_whole_breasts_on_a_square(samples):
    x = image_crops(samples[:2], 56)
    assert x.shape == (2, 1, 56, 56) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float(x[:, :, :, :4].mean()) > 0.05  # chest wall on the left: tissue there


def test_heldout_probe_uses_probe_women_and_flags_leaks(samples, tmp_path):
    # a dozen women: the halves are computed on them; a tiny random "checkpoint" that claims to have seen one probe image
    women = sorted({s.patient_id for s in samples if s.label and all(les.center is not None for les in s.lesions)})[:6]
    women += sorted({s.patient_id for s in samples if s.lesions and not s.label})[:4]
    women += sorted({s.patient_id for s in samples if not s.lesions})[:4]
    few = [s for s in samples if s.patient_id in women]
    probe_half = samples_of_half(few, "probe")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=14, image_size=56)).save_pretrained(ckpt)
    leaked = probe_half[0].image_id
    (ckpt / "pretrain_config.json").write_text(json.dumps({"image_ids": ["synthetic-0-00000", leaked]}))
    out = tmp_path / "probe.json"
    pcfg = ProbeConfig(crop_size=56, folds=2, n_boot=20, k=3, progress=False)
    res = run_heldout_probe(ckpt, pcfg, image_size=56, samples=few, out_path=out, command="pytest")
    assert json.loads(out.read_text())["command"] == "pytest"
    assert res["data"]["images"] == len(probe_half) and res["data"]["women"] == len({s.patient_id for s in probe_half})
    assert res["hygiene"]["probe_images_seen_by_pretraining"] == [leaked]
    assert res["hygiene"]["pretraining_mias_images"] == [leaked]
    t = res["tasks"]["lesion_vs_normal"]
    assert t["n_women"] <= len(set(res["hygiene"]["probe_women"])) and set(t["results"]) == {"random-init", "tiny"}
    img = res["tasks"]["malignant_vs_rest_image"]
    assert img["n"] == len(probe_half) and img["n_positive"] == sum(s.label for s in probe_half)
    assert "skipped" not in img, img
    d = img["difference_vs_random_init"]["tiny"]["linear"]["auc"]
    assert np.isfinite(d["value"]) and d["ci95"][0] <= d["ci95"][1]
