"""The RoI probe on a handful of real mini-MIAS images with a tiny random backbone."""

import json

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from awm_lib.data.mias import load_mias
from awm_lib.pretrain.probe import ProbeConfig, _women_bootstrap, run_probe, square_box


@pytest.fixture(scope="module")
def few_samples():
    samples = load_mias()
    pick = []
    for cls in ("malignant", "benign"):
        want = [s for s in samples if s.lesions and all(les.center is not None for les in s.lesions)
                and any(les.malignant == (cls == "malignant") for les in s.lesions)]
        pick += want[:3]
    pick += [s for s in samples if not s.lesions][:2]
    return pick


def test_square_box_is_shifted_inside_the_image():
    assert square_box(5, 5, 20, 100, 100) == (0.0, 0.0, 20.0, 20.0)
    assert square_box(99, 50, 20, 100, 100) == (80.0, 40.0, 100.0, 60.0)


def test_women_bootstrap_keeps_each_woman_whole():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in _women_bootstrap(groups, 20, 0):
        counts = {w: (groups[idx] == w).sum() for w in "abc"}
        assert counts["a"] % 2 == 0 and counts["c"] % 3 == 0


def test_probe_runs_and_writes_its_json(few_samples, tmp_path):
    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56
    )
    Dinov2Model(cfg).save_pretrained(tmp_path / "tiny")
    pcfg = ProbeConfig(crop_size=56, folds=2, n_boot=20, k=3, progress=False, normals_per_image=1)
    out = tmp_path / "probe.json"
    res = run_probe([str(tmp_path / "tiny")], pcfg, samples=few_samples, out_path=out, command="pytest")
    on_disk = json.loads(out.read_text())
    assert on_disk["command"] == "pytest" and on_disk["seed"] == 0
    assert set(res["models"]) == {"random-init", str(tmp_path / "tiny")}
    t = res["tasks"]["lesion_vs_normal"]
    assert t["n"] == res["data"]["lesion_crops"] + res["data"]["normal_crops"]
    assert res["data"]["normal_crops"] == len(few_samples)  # one per image, every image fully located
    for name in res["models"]:
        for m in ("knn", "linear"):
            r = t["results"][name][m]["balanced_accuracy"]
            assert 0 <= r["value"] <= 1 and r["ci95"][0] <= r["ci95"][1]
    d = t["difference_vs_random_init"][str(tmp_path / "tiny")]["linear"]["accuracy"]
    assert set(d) == {"value", "ci95"}
    assert "malignant_vs_benign" in res["tasks"]


def test_pca_rgb_and_cls_attention_on_a_real_mammogram(few_samples):
    from awm_lib.book.pretrain_figures import (
        _patch_mask,
        cls_attention,
        patch_tokens,
        pca_rgb,
        prepare_breast,
    )
    from awm_lib.data.image import load_image

    torch.manual_seed(0)
    model = Dinov2Model(
        Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56)
    )
    image, mask = prepare_breast(load_image(few_samples[0].path).pixels, long_side=112)
    assert image.shape[0] % 14 == 0 and image.shape[1] % 14 == 0 and mask.shape == image.shape
    tok = patch_tokens(model, image)
    fg = _patch_mask(mask, tok.shape[:2])
    rgb = pca_rgb(tok, fg)
    assert rgb.shape == (*tok.shape[:2], 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert (rgb[~fg] == 0).all() and rgb[fg].std() > 0
    att = cls_attention(model, image)
    assert att.shape == (2, *tok.shape[:2])
    assert np.all(att.reshape(2, -1).sum(1) <= 1 + 1e-5)  # the rest goes to the CLS token itself
    assert model.config._attn_implementation != "eager"  # switched back afterwards


def test_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from awm_lib.pretrain.probe import _metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.random(50), 1)  # with ties
    m = _metrics(y, s)
    assert np.isclose(m["auc"], roc_auc_score(y, s))
    assert np.isclose(m["balanced_accuracy"], balanced_accuracy_score(y, (s >= 0.5).astype(int)))
    assert np.isnan(_metrics(np.ones(5, int), s[:5])["auc"])
