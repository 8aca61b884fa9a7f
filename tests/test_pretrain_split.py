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
    # a dozen women: the halves are computed on them; a tiny random "checkpoint" that claims to have seen one
    # probe image
    women = sorted(
        {s.patient_id for s in samples if s.label and all(les.center is not None for les in s.lesions)}
    )[:6]
    women += sorted({s.patient_id for s in samples if s.lesions and not s.label})[:4]
    women += sorted({s.patient_id for s in samples if not s.lesions})[:4]
    few = [s for s in samples if s.patient_id in women]
    probe_half = samples_of_half(few, "probe")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny"
    Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=14, image_size=56)
    ).save_pretrained(ckpt)
    leaked = probe_half[0].image_id
    (ckpt / "pretrain_config.json").write_text(json.dumps({"image_ids": ["synthetic-0-00000", leaked]}))
    out = tmp_path / "probe.json"
    pcfg = ProbeConfig(crop_size=56, folds=2, n_boot=20, k=3, progress=False)
    res = run_heldout_probe(ckpt, pcfg, image_size=56, samples=few, out_path=out, command="pytest")
    assert json.loads(out.read_text())["command"] == "pytest"
    assert res["data"]["images"] == len(probe_half) and res["data"]["women"] == len(
        {s.patient_id for s in probe_half}
    )
    assert res["hygiene"]["probe_images_seen_by_pretraining"] == [leaked]
    assert res["hygiene"]["pretraining_mias_images"] == [leaked]
    t = res["tasks"]["lesion_vs_normal"]
    assert t["n_women"] <= len(set(res["hygiene"]["probe_women"])) and set(t["results"]) == {
        "random-init",
        "tiny",
    }
    img = res["tasks"]["malignant_vs_rest_image"]
    assert img["n"] == len(probe_half) and img["n_positive"] == sum(s.label for s in probe_half)
    assert "skipped" not in img, img
    d = img["difference_vs_random_init"]["tiny"]["linear"]["auc"]
    assert np.isfinite(d["value"]) and d["ci95"][0] <= d["ci95"][1]


def test_cpu_preset_is_small_and_keeps_the_probe_half_out():
    from awm_lib.pretrain.config import preset_config
    from awm_lib.pretrain.loop import build_backbone

    cfg = preset_config("cpu-75min")
    cfg.validate()
    assert cfg.mias_half == "pretrain" and cfg.time_limit_minutes == 72 and cfg.threads == 1
    assert 112 % cfg.patch_size == 0  # the probe's crop size
    n = sum(p.numel() for p in build_backbone(cfg).parameters())
    assert n * 2 < 25e6, "float16 weights must stay under 25 MB"


def test_model_card_names_the_images_seen_and_the_machine_load(tmp_path):
    from test_pretrain_loop import TINY, toy_bank

    from awm_lib.pretrain.loop import pretrain

    bank = toy_bank(n=4)
    bank.image_ids = ["mdb003", "mdb004", "synthetic-0-00000", "synthetic-0-00001"]
    bank.sources = ["mias", "mias", "synthetic", "synthetic"]
    cfg = PretrainConfig(**TINY, max_steps=2, mias_half="pretrain", threads=1)
    assert pretrain(cfg, tmp_path / "ckpt", bank=bank)
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert (
        "2 mini-MIAS images: mdb003, mdb004" in card
        and "`pretrain` half" in card
        and "2 synthetic images" in card
    )
    assert "load average" in card and "with 1 torch threads" in card and "Not DINOv2" in card
    meta = json.loads((tmp_path / "ckpt" / "pretrain_config.json").read_text())
    assert meta["image_ids"] == bank.image_ids
    log = [json.loads(x) for x in (tmp_path / "ckpt" / "loss_log.jsonl").read_text().splitlines()]
    assert all(r["threads"] == 1 and r["load1"] >= 0 for r in log)


def test_heldout_probe_cli_takes_one_checkpoint(tmp_path, capsys):
    from awm_lib.cli import main

    assert (
        main(
            ["pretrain", "--probe", "--checkpoint", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "b")]
        )
        == 2
    )
    assert "one --checkpoint" in capsys.readouterr().err


def test_probe_verdict_reads_the_intervals_and_flags_below_chance_baselines():
    from awm_lib.book.pretrain_figures import probe_verdict

    def r(v, lo, hi):
        return {"value": v, "ci95": [lo, hi]}

    res = {"tasks": {"a": {"n": 10, "n_women": 5,
                           "results": {"random-init": {"linear": {"auc": r(0.40, 0.3, 0.5)}},
                                       "ssl": {"linear": {"auc": r(0.55, 0.4, 0.7)}}},
                           "difference_vs_random_init": {"ssl": {"linear": {"auc": r(0.15, 0.05, 0.25)}}}},
                     "b": {"n": 10, "n_women": 5,
                           "results": {"random-init": {"knn": {"auc": r(0.70, 0.6, 0.8)}},
                                       "ssl": {"knn": {"auc": r(0.68, 0.6, 0.8)}}},
                           "difference_vs_random_init": {"ssl": {"knn": {"auc": r(-0.02, -0.06, 0.03)}}}}}}
    a, b = probe_verdict(res).splitlines()
    assert "better than" in a and "below chance" in a and "0.550 vs 0.400" in a
    assert "not distinguishable" in b and "below chance" not in b
