"""awm_lib.book.viz: the plotting helpers draw what they are given (checked on the Matplotlib artists)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from awm_lib.book import viz  # noqa: E402
from awm_lib.errors import DataError  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_show_mammogram_draws_boxes_in_xyxy():
    img = np.zeros((40, 30), dtype=np.float32)
    ax = viz.show_mammogram(
        img, boxes=[[2, 3, 12, 23], [0, 0, 5, 5]], labels=["mass", "calc"], scores=[0.9, 0.25]
    )
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == [
        (2, 3, 10, 20),
        (0, 0, 5, 5),
    ]
    assert [t.get_text() for t in ax.texts] == ["mass 0.90", "calc 0.25"]
    shown = ax.images[0].get_array()
    assert shown.shape == (40, 30)
    assert ax.images[0].get_clim() == (0.0, 1.0)  # no per-image contrast stretch


def test_show_mammogram_accepts_tensors_and_channel_first():
    t = torch.rand(3, 20, 10)
    ax = viz.show_mammogram(t)
    assert ax.images[0].get_array().shape == (20, 10, 3)
    ax = viz.show_mammogram(torch.rand(1, 20, 10))
    assert ax.images[0].get_array().shape == (20, 10)
    with pytest.raises(DataError, match="expected an image"):
        viz.show_mammogram(np.zeros((2, 3, 4, 5)))


def test_show_heatmap_stretches_heat_over_the_image():
    ax = viz.show_heatmap(np.zeros((64, 48)), np.random.default_rng(0).random((4, 3)))
    assert len(ax.images) == 2
    assert ax.images[1].get_extent() == [0, 48, 64, 0]


def test_plot_curves_one_line_per_curve_and_log_axes():
    ax = viz.plot_curves(
        [1, 10, 100], {"a": [1, 2, 3], "b": [3, 2, 1]}, "x", "y", logx=True, xticks=[1, 10, 100]
    )
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "10", "100"]
    viz.hline(ax, 2.5, "limit")
    viz.vline(ax, 10, "here")
    assert len(ax.get_lines()) == 4


def test_plot_bars_single_and_grouped():
    ax = viz.plot_bars(["x", "y"], [3.0, 5.0], "v")
    assert [p.get_height() for p in ax.patches] == [3.0, 5.0]
    ax = viz.plot_bars(["x", "y"], {"a": [1, 2], "b": [3, 4]}, "v", annotate=None)
    assert sorted(p.get_height() for p in ax.patches) == [1, 2, 3, 4]


def test_plot_roc_adds_the_chance_line_once():
    ax = viz.plot_roc([0, 0.5, 1], [0, 0.8, 1], auc=0.9, label="m1")
    viz.plot_roc([0, 1], [0, 1], label="m2", ax=ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels.count("chance") == 1 and "m1 (AUC 0.900)" in labels


def test_human_units():
    assert viz.human_bytes(512) == "512 B"
    assert viz.human_bytes(1536) == "1.5 KiB"
    assert viz.human_bytes(3 * 2**30) == "3.0 GiB"
    assert viz.human_count(50_201) == "50.2k"
    assert viz.human_count(3.05e14) == "305T"
    assert viz.human_count(12) == "12"


def test_show_grid_one_panel_per_image_and_blank_rest():
    imgs = [np.zeros((20, 10)), np.ones((20, 10)), np.zeros((30, 30))]
    fig = viz.show_grid(imgs, titles=["a", "b", "c"], boxes=[[[1, 1, 5, 5]], None, []], ncols=2)
    axes = fig.axes
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    assert len(axes[0].patches) == 1 and len(axes[1].patches) == 0
    assert not axes[3].images and not axes[3].axison
