"""awm_lib.book.model_figures: attention measures with hand-computed values, the position-code
comparison's invariances, embedding helpers and figures on tiny inputs (Agg backend)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from awm_lib.book import model_figures as vm  # noqa: E402
from awm_lib.errors import ConfigError  # noqa: E402

BOXES = torch.tensor(
    [[0.5, 0.5, 1.0, 1.0], [0.3, 0.35, 0.15, 0.15], [0.7, 0.6, 0.15, 0.15], [0.45, 0.8, 0.1, 0.1]]
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_attention_stats_uniform_and_one_hot():
    uni = vm.attention_stats(torch.full((2, 8), 1 / 8))
    assert uni["n_tokens"] == 8
    assert uni["entropy"] == pytest.approx(math.log(8))
    assert uni["entropy_ratio"] == pytest.approx(1.0)
    assert uni["effective_tokens"] == pytest.approx(8.0)
    assert uni["max_weight"] == pytest.approx(1 / 8)
    one = vm.attention_stats(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    assert one["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert one["effective_tokens"] == pytest.approx(1.0)
    assert one["max_weight"] == 1.0


def test_attention_stats_averages_rows():
    rows = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    s = vm.attention_stats(rows)
    assert s["entropy"] == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert s["max_weight"] == pytest.approx(0.375)


def test_rope2d_logits_depend_only_on_relative_position():
    shifted = BOXES.clone()
    shifted[:, :2] += torch.tensor([0.13, -0.07])  # every box, the anchor too
    a, b = vm.position_logits("rope2d", BOXES), vm.position_logits("rope2d", shifted)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # a swap of ranks permutes rows and columns: the logit follows the boxes
    perm = [0, 2, 1, 3]
    np.testing.assert_allclose(vm.position_logits("rope2d", BOXES[perm]), a[np.ix_(perm, perm)], atol=1e-5)


def test_rope1d_index_ignores_boxes_and_depends_on_rank_only():
    perm = [0, 2, 1, 3]
    a = vm.position_logits("rope1d_index", BOXES)
    moved = torch.rand(4, 4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(vm.position_logits("rope1d_index", moved), a, atol=1e-6)
    swapped = vm.position_logits("rope1d_index", BOXES[perm])
    np.testing.assert_allclose(swapped, a, atol=1e-6)  # the same matrix: the pair's logit changed
    assert not np.allclose(swapped[np.ix_(perm, perm)], a, atol=1e-4)
    # Toeplitz: depends only on j - i
    np.testing.assert_allclose(np.diag(a, 1), np.full(3, a[0, 1]), atol=1e-5)


def test_sine_sees_absolute_positions_and_none_sees_nothing():
    shifted = BOXES.clone()
    shifted[:, :2] += 0.1
    assert not np.allclose(vm.position_logits("sine", BOXES), vm.position_logits("sine", shifted), atol=1e-3)
    flat = vm.position_logits("none", BOXES)
    np.testing.assert_allclose(flat, np.full((4, 4), flat[0, 0]), atol=1e-6)
    with pytest.raises(ConfigError):
        vm.position_logits("bogus", BOXES)


def test_plot_position_logits_grid():
    fig = vm.plot_position_logits(
        {"a": BOXES, "b": BOXES[[0, 2, 1, 3]]}, ("sine", "rope2d", "rope1d_index"), head_dim=16
    )
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "sine"


def test_show_roi_attention_draws_one_box_per_valid_roi():
    img = np.zeros((64, 48), np.float32)
    rois = torch.tensor(
        [[0, 0, 48, 64], [5, 5, 20, 20], [20, 30, 40, 50], [0, 0, 48, 64]], dtype=torch.float32
    )
    w = torch.tensor([0.1, 0.6, 0.3, 0.0])
    ax = vm.show_roi_attention(img, rois, w, valid=torch.tensor([True, True, True, False]),
                               lesion=torch.tensor([False, False, True, False]))
    assert len(ax.patches) == 3
    assert {t.get_text() for t in ax.texts} == {"anchor: 0.10", "#1: 0.60", "#2: 0.30 (lesion)"}
    assert len(ax.figure.axes) == 2  # the image and its colour bar
    with pytest.raises(ConfigError):
        vm.show_roi_attention(img, rois, w[:2])


def test_plot_attention_matrices_one_panel_per_block():
    att = [torch.softmax(torch.randn(2, 3, 3), -1) for _ in range(2)]
    fig = vm.plot_attention_matrices(att)
    image_axes = [a for a in fig.axes if a.images and a.get_title()]
    assert [a.get_title() for a in image_axes] == ["block 1", "block 2"]
    assert np.allclose(
        image_axes[0].images[0].get_array().sum(1), 1.0, atol=1e-5
    )  # head mean of softmax rows


def test_show_patch_attention():
    ax = vm.show_patch_attention(torch.randn(3, 28, 28), torch.rand(2, 2, 2), title="RoI")
    assert ax.get_title() == "RoI" and len(ax.images) == 2


def test_hard_negative_mask_picks_negatives_closest_to_malignant():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0], [0.0, -1.0]])
    labels = np.array([1, 0, 0, 0, -1])
    hard = vm.hard_negative_mask(emb, labels, quantile=0.9)
    assert hard.tolist() == [False, False, True, False, False]
    assert not vm.hard_negative_mask(emb, np.zeros(5, int)).any()


def test_project_and_plot_embeddings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    p = vm.project_2d(x, "pca")
    assert p.shape == (20, 2)
    assert vm.project_2d(x, "tsne").shape == (20, 2)
    with pytest.raises(ConfigError):
        vm.project_2d(x, "umap")
    labels = np.array([1] * 4 + [0] * 12 + [-1] * 4)
    look = np.zeros(20, bool)
    look[5:7] = True
    ax = vm.plot_embeddings(p, labels, vm.hard_negative_mask(x, labels), look, title="t")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:4] == ["ignored (anchor / partial) (4)", "not malignant (12)", "malignant lesion (4)",
                         "on a benign lesion (2)"]
    assert texts[4].startswith("hard negative (")


def test_collect_roi_embeddings_flattens_real_rois():
    class Tiny(torch.nn.Module):  # stands in for the RoI classifier: fixed embeddings per RoI
        def forward(self, images, rois, image_sizes=None, roi_mask=None):
            from awm_lib.model.roi_transformer import RoIOutput

            b, k = rois.shape[:2]
            emb = rois[..., :2].clone()  # (B, K, 2)
            return RoIOutput(
                logits=torch.zeros(b), roi_embeddings=emb, tokens=emb, pooled=emb[:, 0], roi_mask=roi_mask
            )

    items = []
    for i in range(3):
        items.append(
            {
                "image": torch.zeros(1, 8, 8),
                "rois": torch.tensor([[0.0, i, 8, 8], [1, i, 2, 3], [2, i, 3, 4]]),
                "roi_mask": torch.tensor([True, True, i != 1]),
                "roi_labels": torch.tensor([-1, i % 2, 0]),
                "label": i % 2,
                "image_id": f"im{i}",
                "patient_id": "p",
                "image_size": torch.tensor([8, 8]),
            }
        )
    out = vm.collect_roi_embeddings(Tiny(), items, batch_size=2)
    assert out["embeddings"].shape == (8, 2)
    assert out["image_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert out["rank"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    assert out["roi_labels"].tolist() == [-1, 0, 0, -1, 1, -1, 0, 0]
    assert np.allclose(out["prob"], 0.5)
    assert not out["lookalike"].any()  # plain items carry no lesion boxes


def test_plot_loss_curves_and_metrics_table():
    logs = {
        "a": [{"step": s, "loss": 1.0 / s, "bce": 0.5} for s in range(1, 11)],
        "b": [{"step": 1, "bce": 0.3}],
    }
    ax = vm.plot_loss_curves(logs, "loss", smooth=3)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a"]  # "b" has no loss
    assert len(ax.lines) == 2  # raw (faint) + smoothed
    res = {"r": {"auc": {"mean": 0.61234, "ci_low": 0.5, "ci_high": 0.7}, "f1": {"mean": None}, "n_test": 10}}
    t = vm.metrics_table(res, ("auc", "f1"))
    assert t.loc["r", "auc"] == "0.612 [0.50, 0.70]"
    assert t.loc["r", "f1"] == "n/a" and t.loc["r", "n test"] == 10


def test_collect_marks_rois_on_benign_lesions():
    from types import SimpleNamespace

    from awm_lib.data.cache import Preprocessed
    from awm_lib.data.types import Lesion, Sample

    prep = Preprocessed(pixels=np.zeros((100, 100), np.float32), box=(0, 0, 100, 100), flipped=False,
                        scale=(1.0, 1.0), original_shape=(100, 100), source="x")
    lesions = (
        Lesion(box=(10, 10, 30, 30), kind="CIRC", malignant=False),
        Lesion(box=(60, 60, 80, 80), kind="SPIC", malignant=True),
    )
    sample = Sample(image_id="a", path="a.png", patient_id="p", label=1, lesions=lesions)
    ds = SimpleNamespace(samples=[sample], cache=SimpleNamespace(get=lambda path: prep))
    rois = torch.tensor([[0.0, 0, 100, 100], [12, 12, 28, 28], [60, 60, 80, 80], [40, 0, 50, 10]])
    assert vm._benign_overlap(ds, 0, rois).tolist() == [False, True, False, False]  # anchor never
