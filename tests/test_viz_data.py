"""awm_lib.book.data_figures: the data chapter's figures draw what they are given, on tiny inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from awm_lib.book import data_figures as viz_data  # noqa: E402
from awm_lib.data import realism  # noqa: E402
from awm_lib.data.breast import segment_breast  # noqa: E402
from awm_lib.data.image import load_image  # noqa: E402
from awm_lib.data.types import Lesion  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _breast(h: int = 64, w: int = 48, chest_wall: str = "left") -> np.ndarray:
    """A half-disc of tissue (0.5, with a brighter blob of 0.75) against one edge, on a 0.02 background."""
    y, x = np.mgrid[0:h, 0:w]
    xx = x if chest_wall == "left" else (w - 1 - x)
    img = np.full((h, w), 0.02, dtype=np.float32)
    img[((xx / (0.7 * w)) ** 2 + ((y - h / 2) / (0.45 * h)) ** 2) < 1] = 0.5
    img[(abs(y - h / 2) < 4) & (abs(xx - 10) < 4)] = 0.75
    return img


def _rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_dicom_variants_load_the_same_way_round(tmp_path):
    img = _breast()
    paths = viz_data.write_dicom_variants(img, tmp_path, laterality="R", view="CC")
    assert list(paths) == [
        "12-bit MONOCHROME2",
        "12-bit MONOCHROME1",
        "14-bit + rescale",
        "14-bit + VOI window",
    ]
    stored = {k: viz_data.read_stored(p) for k, p in paths.items()}
    assert stored["12-bit MONOCHROME2"].max() == round(0.75 * 4095)
    np.testing.assert_array_equal(stored["12-bit MONOCHROME1"], 4095 - stored["12-bit MONOCHROME2"])
    assert stored["14-bit + rescale"].max() == round(0.75 * 16383)
    plain = load_image(paths["12-bit MONOCHROME2"]).pixels
    for name, path in paths.items():
        loaded = load_image(path)
        assert loaded.laterality == "R" and loaded.view == "CC"
        assert loaded.pixels[0, -1] < 0.05 and loaded.pixels[32, 10] > 0.9, (
            name
        )  # dark background, bright tissue
    np.testing.assert_allclose(load_image(paths["12-bit MONOCHROME1"]).pixels, plain, atol=1e-6)
    np.testing.assert_allclose(
        load_image(paths["14-bit + rescale"]).pixels, plain, atol=2e-3
    )  # linear: same picture
    raw = load_image(paths["14-bit + rescale"]).raw
    np.testing.assert_allclose(raw, 0.5 * stored["14-bit + rescale"] - 100)  # the Modality LUT, exactly


def test_describe_dicoms_one_row_per_file(tmp_path):
    paths = viz_data.write_dicom_variants(_breast(), tmp_path)
    table = viz_data.describe_dicoms(paths)
    assert list(table.index) == list(paths)
    assert list(table["photometric"]) == ["MONOCHROME2", "MONOCHROME1", "MONOCHROME2", "MONOCHROME2"]
    assert list(table["bits"]) == [12, 12, 14, 14]
    assert (
        table.loc["14-bit + VOI window", "window c, w"] != "-"
        and table.loc["12-bit MONOCHROME2", "window c, w"] == "-"
    )
    assert (table["background"] < table["breast"]).all()


def test_show_dicom_variants_two_rows_of_images(tmp_path):
    paths = viz_data.write_dicom_variants(_breast(), tmp_path)
    fig = viz_data.show_dicom_variants(paths)
    assert len(fig.axes) == 8 and all(len(ax.images) == 1 for ax in fig.axes)
    top = fig.axes[1].images[0].get_array()  # MONOCHROME1 as stored: bright background
    bottom = fig.axes[5].images[0].get_array()  # the same file loaded: dark background
    assert top[0, -1] > 0.9 and bottom[0, -1] < 0.05


def test_show_segmentation_maps_boxes_into_the_mirrored_crop():
    img = _breast(chest_wall="right")
    crop = segment_breast(img, pad=0)
    assert crop.flipped
    box = [[30, 28, 40, 36]]
    fig = viz_data.show_segmentation(img, crop, box, ["mass"], title="t")
    ax0, ax1, ax2 = fig.axes
    assert [len(ax.images) for ax in (ax0, ax1, ax2)] == [1, 2, 1]  # the mask is a second, tinted image
    assert ax2.images[0].get_array().shape == crop.crop_shape
    assert len(_rects(ax0)) == 1
    (r2,) = _rects(ax2)
    expected = crop.to_crop(box)[0]
    assert (r2.get_x(), r2.get_y(), r2.get_x() + r2.get_width()) == pytest.approx(
        (expected[0], expected[1], expected[2])
    )
    assert len(_rects(ax1)) == 1  # the crop box
    assert fig.get_suptitle() == "t"


def test_lesion_annotations_spell_out_kinds():
    lesions = [Lesion((1, 2, 3, 4), "SPIC", True), Lesion((0, 0, 5, 5), "spiculated_mass", True, birads=5),
               Lesion((2, 2, 4, 4), "calcification", False, birads=2)]
    boxes, labels = viz_data.lesion_annotations(lesions)
    assert boxes.shape == (3, 4) and boxes[0].tolist() == [1, 2, 3, 4]
    assert labels == [
        "spiculated mass, malignant",
        "spiculated mass, malignant B5",
        "calcification, benign B2",
    ]
    assert viz_data.lesion_annotations([])[0].shape == (0, 4)


def test_show_side_by_side_panels_boxes_and_blanks():
    imgs = [np.zeros((20, 10)), np.ones((20, 10)), np.zeros((20, 10))]
    fig = viz_data.show_side_by_side(imgs, titles=["a", "b", "c"], boxes=[[[1, 1, 5, 5]], None, []],
                                     labels=[["x"], None, []], ncols=2, suptitle="s")
    axes = fig.axes
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    assert len(_rects(axes[0])) == 1 and [t.get_text() for t in axes[0].texts] == ["x"]
    assert not axes[3].images and not axes[3].axison


def test_show_lesion_zooms_square_windows_with_the_box_inside():
    img = np.random.default_rng(0).random((100, 80)).astype(np.float32)
    fig = viz_data.show_lesion_zooms([img, img], [(40, 40, 50, 50), (0, 0, 6, 4)], ["a", "b"], context=1.0)
    assert len(fig.axes) == 2
    patch = fig.axes[0].images[0].get_array()
    assert patch.shape == (30, 30)  # side = 10 * (1 + 2 * 1.0)
    (r,) = _rects(fig.axes[0])
    assert (r.get_x(), r.get_y(), r.get_width()) == (10, 10, 10)  # the box, centred
    (r,) = _rects(fig.axes[1])  # near the corner: the window is clipped to the image, the box stays put
    assert (r.get_x(), r.get_y()) == (0, 0)


def test_spectrum_of_power_law_noise_has_its_slope():
    from awm_lib.data.synth_texture import power_law_noise

    rng = np.random.default_rng(0)
    img = np.zeros((400, 400), dtype=np.float32)  # 0.4 mm pixels: patches of 64 px, a 37-px margin
    img[20:380, 20:380] = 0.5 + 0.1 * power_law_noise((360, 360), 3.0, rng, pixel_mm=0.4, largest_mm=60)
    f, p, n = viz_data.mean_spectrum([img], 0.4)
    assert n >= 1 and f.shape == p.shape
    ax = viz_data.plot_spectrum_comparison({"noise": ([img], 0.4)})
    assert len(ax.get_lines()) == 2  # the spectrum and its fitted line
    beta = float(ax.get_lines()[0].get_label().split("β = ")[1])
    assert 2.3 < beta < 3.7
    with pytest.raises(ValueError, match="no tissue patch"):
        viz_data.mean_spectrum([np.zeros((50, 50), dtype=np.float32)], 0.2)


def test_plot_histograms_two_stairs_and_the_distances():
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500) ** 2
    cmp = {"mini_mias": {**realism.summarise([realism.ImageStats([3.0], a)])},
           "synthetic": {**realism.summarise([realism.ImageStats([2.8], b)])},
           "histogram_distance": realism.histogram_distance(a, b)}
    ax = viz_data.plot_histograms(cmp)
    assert len(ax.patches) == 2
    assert f"{cmp['histogram_distance']['wasserstein']:.3f}" in ax.get_title()


def test_labels_of_boxes_on_the_right_are_right_aligned_to_stay_on_the_image():
    img = np.zeros((20, 40))
    fig = viz_data.show_side_by_side(
        [img], boxes=[[[2, 2, 6, 6], [30, 10, 36, 14]]], labels=[["left", "right"]]
    )
    left, right = fig.axes[0].texts
    assert left.get_horizontalalignment() == "left" and left.get_position()[0] == 2
    assert right.get_horizontalalignment() == "right" and right.get_position()[0] == 36
