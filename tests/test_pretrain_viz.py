"""The pretraining chapter's figure helpers (awm_lib.book.pretrain_figures): constructed cases with known
answers."""

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import Dinov2Config, Dinov2Model  # noqa: E402

from awm_lib.book import pretrain_figures as pv  # noqa: E402
from awm_lib.pretrain.augment import MultiCropConfig, multi_crop, to_model_input  # noqa: E402
from awm_lib.pretrain.loop import save_backbone  # noqa: E402
from awm_lib.pretrain.probe import ProbeConfig, evaluate_task  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _disc(L=64):
    yy, xx = np.mgrid[0:L, 0:L]
    mask = (xx / 40.0) ** 2 + ((yy - L / 2) / 28.0) ** 2 <= 1
    image = np.where(mask, 0.3 + 0.4 * (xx % 7) / 7, 0.0).astype(np.float32)
    return image, mask


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return Dinov2Model(
        Dinov2Config(
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            patch_size=14,
            image_size=28,
        )
    ).eval()


def _saved_run(tmp_path, seed=0, steps=7):
    """A folder shaped like a pretraining run: save_pretrained weights + pretrain_config.json."""
    out = tmp_path / "run"
    save_backbone(_tiny_model(seed), out, dtype="float32")
    meta = {
        "steps": steps,
        "train_seconds": 1.0,
        "n_images": 3,
        "sources": {"mias": 3},
        "seed": seed,
        "device": "cpu (test)",
        "date": "2026-01-02T03:04:05",
        "command": "pytest",
        "config": {"out_dim": 32},
    }
    (out / "pretrain_config.json").write_text(json.dumps(meta))
    return out


def test_to_grey_inverts_to_model_input():
    grey = torch.rand(2, 1, 5, 5)
    back = pv.to_grey(to_model_input(grey))
    assert back.shape == (2, 5, 5)
    np.testing.assert_allclose(back, grey[:, 0].numpy(), atol=1e-6)


def test_centering_without_image_information_gives_the_uniform_distribution():
    # every image has the same logits: centering removes everything, so p is uniform whatever the temperature
    logits = pv.toy_teacher_logits(n_images=8, n_prototypes=16, common_std=0.5, image_std=0.0, seed=1)
    rows = {
        (r["centering"], r["temperature"]): r
        for r in pv.centering_sharpening_table(logits, temps=(1.0, 0.04))
    }
    for t in (1.0, 0.04):
        assert rows[("on", t)]["entropy per image (nats)"] == pytest.approx(math.log(16), abs=1e-3)
    # without centering and sharp: every image on the same prototype, nearly one-hot
    sharp = rows[("off", 0.04)]
    assert sharp["images on the top prototype"] == 1.0
    assert sharp["entropy of batch mean (nats)"] == pytest.approx(sharp["entropy per image (nats)"], abs=1e-3)
    assert sharp["entropy per image (nats)"] < 0.5 * math.log(16)


def test_centering_and_sharpening_together_spread_images_over_prototypes():
    logits = pv.toy_teacher_logits(n_images=32, n_prototypes=64, common_std=0.3, image_std=0.1, seed=0)
    assert logits.shape == (32, 64)
    assert torch.equal(
        logits, pv.toy_teacher_logits(n_images=32, n_prototypes=64, common_std=0.3, image_std=0.1, seed=0)
    )
    rows = {
        (r["centering"], r["temperature"]): r
        for r in pv.centering_sharpening_table(logits, temps=(1.0, 0.04))
    }
    both, collapsed = rows[("on", 0.04)], rows[("off", 0.04)]
    assert both["entropy of batch mean (nats)"] > collapsed["entropy of batch mean (nats)"] + 1.0
    assert both["entropy per image (nats)"] < rows[("on", 1.0)]["entropy per image (nats)"] - 1.0
    assert both["images on the top prototype"] < collapsed["images on the top prototype"]
    fig = pv.plot_centering_sharpening(logits)
    assert len([a for a in fig.axes if a.images]) == 4  # four heat maps (+ the colour bar)


def test_plot_multi_crop_draws_every_box_and_every_crop():
    image, mask = _disc()
    cfg = MultiCropConfig(n_global=2, n_local=3, global_size=28, local_size=14)
    views = multi_crop(
        torch.from_numpy(image)[None, None],
        torch.from_numpy(mask)[None],
        cfg,
        torch.Generator().manual_seed(0),
    )
    fig = pv.plot_multi_crop(image, mask, views)
    assert len(fig.axes) == 1 + 2 + 3
    assert len(fig.axes[0].patches) == 5  # one rectangle per view
    sizes = sorted(a.images[0].get_array().shape[0] for a in fig.axes[1:])
    assert sizes == [14, 14, 14, 28, 28]


def test_intensity_panels_start_from_the_untouched_crop():
    image, mask = _disc()
    fig = pv.plot_intensity_augmentations(image, mask, MultiCropConfig(), size=28, scale=0.1, seed=0)
    axes = [a for a in fig.axes if a.images]
    assert len(axes) == 8
    original = np.asarray(axes[0].images[0].get_array())
    noisy = np.asarray(axes[5].images[0].get_array())
    assert original.shape == (28, 28) and 0 <= original.min() and original.max() <= 1
    assert not np.allclose(original, noisy)  # the noise panel is noisier than the original


def test_plot_patch_masks_paints_exactly_the_masked_patches():
    crops = to_model_input(torch.rand(2, 1, 28, 28))
    masks = torch.tensor([[True, False, False, True], [False, False, False, False]])
    fig = pv.plot_patch_masks(crops, masks, patch=14)
    overlay = np.ma.getdata(fig.axes[0].images[1].get_array())
    assert np.isfinite(overlay).sum() == 2
    assert fig.axes[0].get_title().startswith("2 of 4")
    assert fig.axes[1].get_title().startswith("0 of 4")


def test_plot_pretrain_logs_one_row_per_run_with_log_k():
    rec = {"loss": 2.0, "dino": 1.0, "ibot": 1.0, "teacher_entropy": 1.0, "teacher_mean_entropy": 2.0}
    logs = {"a": [dict(rec, step=s) for s in (1, 2, 3)], "b": [dict(rec, step=s) for s in (10, 20)]}
    fig = pv.plot_pretrain_logs(logs, {"a": 64})
    assert len(fig.axes) == 4
    ys = [line.get_ydata()[0] for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"]
    assert ys == [pytest.approx(math.log(64))]
    assert len(fig.axes[0].get_lines()) == 3  # loss, dino, ibot


def test_checkpoint_summary_and_status_without_a_run(tmp_path):
    assert pv.checkpoint_summary(tmp_path / "nothing") is None
    text = pv.status_markdown(tmp_path / "nothing", tmp_path / "probe.json")
    assert "Pending a GPU run" in text and "do not exist yet" in text
    for line in pv.GPU_RUN_COMMANDS.splitlines():
        assert line in text


def test_figure_backbones_and_status_with_a_run(tmp_path):
    run = _saved_run(tmp_path, steps=7)
    info = pv.checkpoint_summary(run)
    assert info["steps"] == 7 and info["device"] == "cpu (test)"
    models = pv.figure_backbones(run, seed=3)
    (rand_label, rand), (pre_label, pre) = models.items()
    assert rand_label.startswith("random init (seed 3)") and "7 steps" in pre_label
    saved = _tiny_model(0)
    assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), saved.state_dict().values()))
    assert not torch.equal(
        rand.embeddings.patch_embeddings.projection.weight, pre.embeddings.patch_embeddings.projection.weight
    )
    # only the probe missing: the note says exactly that
    assert "does not exist yet" in pv.status_markdown(run, tmp_path / "probe.json")
    (tmp_path / "probe.json").write_text("{}")
    assert "Pretrained weights present" in pv.status_markdown(run, tmp_path / "probe.json")


def test_max_weight_change_is_zero_at_init_and_sees_a_change(tmp_path):
    run = _saved_run(tmp_path, seed=0)
    assert pv.max_weight_change(run, seed=0) == 0.0
    model = _tiny_model(0)
    with torch.no_grad():
        model.layernorm.bias.add_(0.25)
    save_backbone(model, run, dtype="float32")
    assert pv.max_weight_change(run, seed=0) == pytest.approx(0.25)


def test_probe_table_and_plot_from_a_constructed_probe():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 12)
    women = np.repeat(np.arange(12), 2).astype(str)
    features = {"random-init": rng.normal(size=(24, 4)), "good": np.c_[y * 3.0, rng.normal(size=(24, 3))]}
    task = evaluate_task(
        features, y, women, ProbeConfig(k=3, folds=3, n_boot=30, progress=False), "random-init"
    )
    res = {"tasks": {"lesion_vs_normal": task, "malignant_vs_benign": {"skipped": "too few women"}}}
    table = pv.probe_table(res)
    good = table.loc[("lesion_vs_normal (n = 24, 12 women)", "good", "linear")]
    assert good["balanced accuracy [95% CI]"].startswith("1.000")
    assert ("lesion_vs_normal (n = 24, 12 women)", "good minus random-init", "knn") in table.index
    assert (
        table.loc[("malignant_vs_benign", "-", "-")]["balanced accuracy [95% CI]"] == "skipped: too few women"
    )
    fig = pv.plot_probe(res)
    assert len(fig.axes) == 1  # the skipped task gets no panel
    assert len(fig.axes[0].get_yticklabels()) == 4  # 2 models x 2 probes


def test_figure_backbones_without_a_run_is_one_random_init_of_the_gpu_architecture(tmp_path):
    models = pv.figure_backbones(tmp_path / "missing", seed=0)
    assert len(models) == 1
    (label, model), = models.items()
    assert label.startswith("random init (seed 0)") and "untrained" in label
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.patch_size) == (384, 6, 14)
