"""The RoI-selection chapter's helpers: figures drawn with the expected artists, and the small
bits of bookkeeping (recall curves, misses, the VinDr tables) checked on hand-made cases."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from awm_lib.book import proposal_figures as vp  # noqa: E402
from awm_lib.data.types import Lesion, Sample  # noqa: E402
from awm_lib.proposals import Proposals, SelectConfig, make_proposer, select_rois  # noqa: E402
from awm_lib.proposals.recall import ImageResult, froc  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _lesion(x0, y0, x1, y1, kind="CIRC"):
    return Lesion(box=(x0, y0, x1, y1), kind=kind, malignant=True)


def _breast(size=128):
    """A dark image with a bright half-disc (the breast) on the left and one brighter spot."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size), np.float32)
    img[(xx ** 2 + (yy - size / 2) ** 2) < (0.45 * size) ** 2] = 0.5
    img[((xx - 30) ** 2 + (yy - 64) ** 2) < 36] = 0.9
    return img


# --------------------------------------------------------------------------- boxes on an image
def test_show_selection_draws_anchor_rois_padding_and_lesions():
    props = Proposals(torch.tensor([[10.0, 10, 20, 20], [40, 40, 50, 50]]), torch.tensor([0.9, 0.5]))
    sel = select_rois(props, (64, 64), (0, 0, 64, 64), SelectConfig(topk=3, margin=4))
    ax = vp.show_selection(np.full((64, 64), 0.5), sel, lesions=[_lesion(12, 12, 18, 18)])
    assert len(_rects(ax)) == 1 + 4  # the lesion, then anchor + 2 RoIs + 1 padded row
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "lesion" and "0 anchor" in texts and "3 pad" in texts
    assert "1:0.90" in texts and "2:0.50" in texts
    assert _rects(ax)[1].get_linestyle() == "--"  # the anchor is dashed


def test_show_proposals_draws_the_first_n_boxes_more_opaque_when_better():
    props = Proposals(
        torch.tensor([[0.0, 0, 5, 5], [5, 5, 10, 10], [1, 1, 3, 3]]), torch.tensor([0.9, 0.1, 0.5])
    )
    ax = vp.show_proposals(np.zeros((16, 16)) + 0.3, props.sorted(), n=2)
    rects = _rects(ax)
    assert len(rects) == 2
    assert rects[0].get_alpha() == pytest.approx(1.0) and rects[1].get_alpha() == pytest.approx(0.35)


# --------------------------------------------------------------------------- bookkeeping
def _results():
    les_a, les_b, les_c = (
        _lesion(0, 0, 10, 10, "CIRC"),
        _lesion(50, 50, 54, 54, "CALC"),
        _lesion(80, 80, 90, 90),
    )
    r1 = ImageResult(
        "a", torch.tensor([[60.0, 60, 70, 70], [0, 0, 10, 10]]), torch.tensor([0.9, 0.8]), [les_a]
    )
    r2 = ImageResult("b", torch.tensor([[79.0, 79, 91, 91]]), torch.tensor([0.7]), [les_b, les_c])
    r3 = ImageResult("c", torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0.6]), [])
    return [r1, r2, r3]


def test_recall_curve_counts_lesions_by_first_hit_rank():
    # a: found at rank 2; b's calcification: never; b's mass: rank 1 -> recall@1 = 1/3, @2 = 2/3
    assert vp.recall_curve(_results(), [1, 2, 5]) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_missed_lesions_lists_what_the_first_k_boxes_miss():
    m1 = vp.missed_lesions(_results(), k=1)
    assert sorted(m1["image_id"]) == ["a", "b"]
    row = m1.set_index("kind").loc["CALC"]
    assert row["first_hit_rank"] == float("inf") and row["radius_px"] == pytest.approx(2.0)
    assert list(vp.missed_lesions(_results(), k=2)["kind"]) == ["CALC"]


def test_image_level_found_per_image_with_label():
    df = vp.image_level_found(_results(), {"a": 1, "b": 0, "c": 0}, k=1)
    assert df.set_index("image_id")["found"].to_dict() == {"a": False, "b": True}
    assert df.set_index("image_id")["label"].to_dict() == {"a": 1, "b": 0}


def test_load_recall_results_reads_runs_with_provenance(tmp_path):
    run = {"dataset": "mias", "proposer": "blob", "n_images": 3, "n_lesions": 2, "recall@1": 0.5,
           "recall@5": 1.0, "recall@10": 1.0, "date": "2026-01-01T00:00:00Z", "device": "cpu"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"note": "x", "runs": {"mias_blob": run}}))
    df = vp.load_recall_results(path)
    assert list(df.index) == ["mias_blob"]
    assert df.loc["mias_blob", "recall@5"] == 1.0 and df.loc["mias_blob", "device"] == "cpu"


def test_propose_samples_and_select_for_on_a_tiny_image(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray((_breast() * 255).astype(np.uint8)).save(path)
    lesion = _lesion(24, 58, 36, 70)
    sample = Sample("t", path, "p", 1, lesions=(lesion,))
    cfg = SelectConfig(topk=2, margin=0)
    oracle = vp.propose_samples([sample], make_proposer("oracle"), cfg, max_k=3, progress=False)
    assert len(oracle) == 1 and oracle[0].boxes.shape == (1, 4)
    assert vp.recall_curve(oracle, [1]) == [1.0]
    none = vp.propose_samples([sample], make_proposer("none"), cfg, max_k=3, progress=False)
    assert none[0].boxes.shape == (0, 4) and vp.recall_curve(none, [3]) == [0.0]
    sel = vp.select_for(make_proposer("oracle"), _breast(), [lesion], cfg)
    assert sel.rois.shape == (3, 4) and torch.allclose(
        sel.rois[1], torch.tensor(lesion.box, dtype=torch.float32)
    )


# --------------------------------------------------------------------------- recall figures
def test_plot_recall_at_k_one_line_per_proposer_plus_reference_lines():
    ax = vp.plot_recall_at_k(
        {"blob": ([1, 2], [0.2, 0.5]), "oracle": ([1, 2], [1.0, 1.0])}, topk=5, target=0.7
    )
    assert len(ax.get_lines()) == 4  # two curves + k line + target line
    assert ax.get_ylim() == (0, 1.02)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["blob", "oracle"]


def test_plot_froc_draws_a_step_curve_per_proposer():
    curve = froc(_results())
    ax = vp.plot_froc({"blob": curve, "copy": curve})
    lines = ax.get_lines()
    assert len(lines) == 2
    x, y = lines[0].get_data()
    assert x[0] == 0 and y[0] == 0 and y[-1] == pytest.approx(curve["sensitivity"][-1])
    assert ax.get_xscale() == "symlog"


def test_plot_recall_by_group_grouped_bars_with_counts():
    groups = {
        "blob": {"CALC": {"recall@5": 0.1, "n_lesions": 10}, "CIRC": {"recall@5": 0.8, "n_lesions": 4}},
        "random": {"CALC": {"recall@5": 0.0, "n_lesions": 10}, "CIRC": {"recall@5": 0.2, "n_lesions": 4}},
    }
    ax = vp.plot_recall_by_group(groups, k=5)
    heights = [round(p.get_height(), 3) for p in ax.patches]
    assert heights == [0.1, 0.8, 0.0, 0.2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CALC\n(n=10)", "CIRC\n(n=4)"]


def test_show_misses_one_panel_per_miss_with_lesion_and_rois():
    img = np.random.default_rng(0).random((100, 100)).astype(np.float32)
    fig = vp.show_misses([img, img], [(40, 40, 50, 50), (0, 0, 10, 10)],
                         [torch.tensor([[38.0, 38, 52, 52]]), torch.zeros(0, 4)], titles=["a", "b"], ncols=2)
    a, b = fig.axes[:2]
    assert a.get_title() == "a" and len(_rects(a)) == 2 and len(_rects(b)) == 1


# --------------------------------------------------------------------------- the VinDr boxes
def _vindr_boxes():
    rows = [("s", "i1", 0, 0, 0, 100, 100, 0.8), ("s", "i1", 1, 45, 45, 55, 55, 0.05),
            ("s", "i1", 2, 0, 0, 50, 50, 0.03), ("s", "i2", 0, 0, 0, 200, 200, 0.7),
            ("s", "i2", 1, 0, 0, 100, 100, 0.02)]
    return pd.DataFrame(rows, columns=["study_id", "image_id", "rank", "x1", "y1", "x2", "y2", "score"])


def test_vindr_box_table_sizes_relative_to_box_0():
    t = vp.vindr_box_table(_vindr_boxes())
    assert list(t["rank"]) == [1, 2, 1]
    assert t["rel_size"].tolist() == pytest.approx([0.1, 0.5, 0.5])
    assert t["score"].tolist() == pytest.approx([0.05, 0.03, 0.02])


def test_vindr_selection_table_coverage_of_the_kept_squares():
    boxes = _vindr_boxes()
    boxes = boxes[boxes["image_id"] == "i1"].iloc[:2]  # anchor 100x100 + one 10x10 box
    t = vp.vindr_selection_table(boxes, topk=5, margin=40)
    assert t["n_kept"].tolist() == [1]
    assert t["coverage"].iloc[0] == pytest.approx(0.25)  # a 50x50 square in the middle


def test_plot_hist_overlays_and_clips():
    ax = vp.plot_hist({"a": [0.1, 0.2, 0.3, 10.0], "b": [0.2, 0.2]}, "x", bins=5, clip_quantile=0.5)
    assert len(ax.patches) == 2 and ax.get_xlabel() == "x"
    assert ax.get_xlim()[1] < 1.0  # the outlier at 10 was clipped into the last bin
    heights = ax.patches[1].get_path().vertices[:, 1]
    assert heights.max() == pytest.approx(1.0)  # both of b's values in one bin: fraction 1
    ax2 = vp.plot_hist({"s": [0.01, 0.1, 1.0]}, "score", logx=True)
    assert ax2.get_xscale() == "log"


def test_show_vindr_image_draws_raw_boxes_and_the_selection():
    from awm_lib.proposals.gdino_vindr import per_image

    boxes = _vindr_boxes()
    boxes = boxes[boxes["image_id"] == "i1"]
    p = dict(per_image(boxes))["i1"]
    sel = select_rois(p.take(torch.arange(1, len(p))), (100, 100), p.boxes[0], SelectConfig(topk=1, margin=0))
    ax = vp.show_vindr_image(p, sel)
    assert len(_rects(ax)) == 2 + 2  # raw boxes 1..2, then anchor + 1 RoI
    assert ax.get_ylim() == (100.0, 0.0)
