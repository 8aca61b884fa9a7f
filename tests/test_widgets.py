"""The ablation panel: builds with and without results, follows the dropdowns, and its Train
button runs an injected trainer (no real training here) and shows its log and results."""

from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from test_results import BASE_SETTINGS, make_results  # noqa: E402

from awm_lib.book import results as R  # noqa: E402
from awm_lib.book import widgets  # noqa: E402

PNG_MAGIC = b"\x89PNG"


@pytest.fixture
def res():
    return R.validate_ablation(make_results())


def test_panel_starts_on_the_full_method_and_shows_it(res):
    panel = widgets.AblationPanel(res, background=False)
    assert panel.settings == BASE_SETTINGS  # the full method (the paper's recipe)
    assert panel.record["configuration"] == "roi-rope2d"
    assert "roi-rope2d" in panel.status.value and "0.720 [0.670, 0.770]" in panel.metrics.value
    data = make_results()
    data["records"] = [r for r in data["records"] if r["configuration"] not in ("roi-rope2d", "oracle")]
    panel = widgets.AblationPanel(R.validate_ablation(data), background=False)
    assert panel.record["configuration"] == "roi-nopos"  # no full method: the first RoI record


def test_initial_settings_and_dropdown_changes_update_the_metrics(res):
    panel = widgets.AblationPanel(res, background=False, initial=BASE_SETTINGS)
    assert "roi-rope2d" in panel.status.value
    assert "0.720 [0.670, 0.770]" in panel.metrics.value
    assert bytes(panel.roc.value).startswith(PNG_MAGIC) and panel.roc.layout.display is None
    panel.set(proposer="oracle")
    assert "oracle" in panel.status.value and "0.800 [0.750, 0.850]" in panel.metrics.value
    assert "lesion recall" in panel.metrics.value and "1.000" in panel.metrics.value


def test_not_in_grid_path(res):
    panel = widgets.AblationPanel(res, background=False, initial=BASE_SETTINGS)
    panel.set(topk=3)  # a default choice the grid lacks
    assert widgets.NOT_IN_GRID in panel.status.value
    assert panel.metrics.value == "" and panel.roc.layout.display == "none"
    panel.set(topk=5)
    assert widgets.NOT_IN_GRID not in panel.status.value


def test_dropdowns_offer_grid_values_and_defaults(res):
    panel = widgets.AblationPanel(res, background=False)
    assert set(panel.dropdowns) == set(R.SETTING_KEYS)
    opts = panel.dropdowns["proposer"].options
    assert {"blob", "oracle", "none", "random"} <= set(opts)
    assert 112 in panel.dropdowns["crop_size"].options


def test_panel_without_results_still_builds(tmp_path):
    panel = widgets.AblationPanel(R.load_ablation(tmp_path / "none.json", missing_ok=True), background=False)
    assert "no precomputed results yet" in panel.status.value and "awm_lib ablation" in panel.status.value
    assert panel.settings == widgets.DEFAULT_SETTINGS
    assert panel.widget.children  # a real widget tree


def test_overlay_is_shown_when_the_file_exists(tmp_path):
    png = tmp_path / "overlay.png"
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.savefig(png)
    plt.close(fig)
    data = make_results()
    data["records"][2]["example_overlay"] = str(png)
    panel = widgets.AblationPanel(R.validate_ablation(data), background=False, initial=BASE_SETTINGS)
    assert bytes(panel.overlay.value) == png.read_bytes() and panel.overlay.layout.display is None
    panel.set(position="none")  # roi-nopos: no overlay
    assert panel.overlay.layout.display == "none"


def stub_trainer(calls):
    """Writes a training log as the real loop does, then returns results and test predictions."""

    def trainer(settings, out_dir):
        calls.append((dict(settings), out_dir))
        with open(out_dir / "metrics.jsonl", "w") as f:
            for step, loss in enumerate([0.9, 0.7, 0.5, 0.4], start=1):
                f.write(json.dumps({"kind": "train", "step": step, "loss": loss}) + "\n")
        (out_dir / "predictions_test.csv").write_text(
            "image_id,label,prob\na,0,0.1\nb,1,0.8\nc,0,0.6\nd,1,0.4\n"
        )
        return {m: {"mean": 0.61, "ci_low": 0.5, "ci_high": 0.7} for m in R.METRICS}

    return trainer


def test_train_button_runs_the_injected_trainer(res, tmp_path):
    calls = []
    panel = widgets.AblationPanel(res, background=False, initial=BASE_SETTINGS, trainer=stub_trainer(calls),
                                  total_steps=4, runs_dir=tmp_path, poll_s=0.01)
    panel.set(topk=3)  # not in the grid
    assert panel.loss_plot.layout.display == "none"  # nothing to plot before a run
    panel.train_button.click()
    assert len(calls) == 1 and calls[0][0] == {**BASE_SETTINGS, "topk": 3}
    assert calls[0][1].parent == tmp_path
    assert panel.progress.value == 4 and panel.progress.bar_style == "success"
    assert bytes(panel.loss_plot.value).startswith(PNG_MAGIC) and panel.loss_plot.layout.display is None
    assert "live run done" in panel.train_status.value and "0.610 [0.500, 0.700]" in panel.train_status.value
    # the ROC of the live run, computed from its test predictions (the stub returned none)
    assert panel.last_run["results"]["roc"]["tpr"][-1] == 1.0
    assert panel.live_roc.layout.display is None and bytes(panel.live_roc.value).startswith(PNG_MAGIC)
    assert not panel.train_button.disabled
    panel.train_button.click()  # the same settings: the same run folder (load_or_train reuses it)
    panel.set(topk=1)
    panel.train_button.click()
    assert calls[1][1] == calls[0][1] and calls[2][1] != calls[0][1]


def test_train_failure_is_shown_not_raised(res, tmp_path):
    def broken(settings, out_dir):
        raise RuntimeError("no data here")

    panel = widgets.AblationPanel(res, background=False, trainer=broken, runs_dir=tmp_path, poll_s=0.01)
    panel.train_button.click()
    assert "the run failed" in panel.train_status.value and "no data here" in panel.train_status.value
    assert panel.progress.bar_style == "danger" and not panel.train_button.disabled


def test_background_training_finishes(res, tmp_path):
    calls = []
    panel = widgets.AblationPanel(
        res, background=True, trainer=stub_trainer(calls), runs_dir=tmp_path, poll_s=0.01
    )
    panel.start_training()
    panel.thread.join(10)
    for _ in range(200):  # the watcher thread finishes right after the trainer
        if panel.last_run is not None:
            break
        import time

        time.sleep(0.02)
    assert panel.last_run is not None and len(calls) == 1


def test_settings_to_overrides_build_a_valid_config():
    from awm_lib.train.config import make_config

    s = {
        **BASE_SETTINGS,
        "loss": "bce+repulsive+supcon",
        "contrastive_weight": 1.0,
        "topk": 3,
        "crop_size": 56,
    }
    cfg = make_config("smoke", widgets.settings_to_overrides(s), dataset="mias")
    assert (cfg.model.topk, cfg.model.crop_size, cfg.model.position) == (3, 56, "rope2d")
    assert (
        cfg.loss.repulsive_weight == 1.0 and cfg.loss.roi_supcon_weight == 1.0 and cfg.data.proposer == "blob"
    )
    cfg = make_config("smoke", widgets.settings_to_overrides({**s, "loss": "bce"}), dataset="mias")
    assert cfg.loss.repulsive_weight == 0.0 and cfg.loss.supcon_weight == 0.0
    cfg = make_config("smoke", widgets.settings_to_overrides({**s, "loss": "bce", "proposer": "oracle"}))
    assert cfg.loss.roi_supcon_weight == 0.0 and cfg.data.pad_rois == "random"
    full = {**s, "proposer": "none", "topk": 0, "crop_size": 252, "pooling": "mean"}
    cfg = make_config("smoke", widgets.settings_to_overrides(full))
    assert cfg.arch == "full_image" and cfg.baseline.pooling == "mean" and cfg.baseline.long_side == 252
    cfg = make_config(
        "smoke", widgets.settings_to_overrides({**full, "topk": 3, "crop_size": 56, "pooling": "anchor"})
    )
    assert cfg.arch == "roi" and cfg.data.proposer == "none"  # the anchor alone
    ssl = widgets.settings_to_overrides({**s, "backbone_init": "ssl"})
    assert any(o.startswith("model.backbone.name_or_path=") and o.endswith("awm-dino-s14") for o in ssl)


def test_roc_title_carries_the_auc_interval():
    from unittest import mock

    rec = {
        "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]},
        "auc": {"mean": 0.7, "ci_low": 0.6, "ci_high": 0.8},
    }
    with mock.patch("awm_lib.book.widgets.plot_roc") as plot:
        assert widgets._roc_png(rec, "live run").startswith(PNG_MAGIC)
    assert plot.call_args.kwargs["title"] == "live run\nAUC 0.700 [0.600, 0.800]"
    assert widgets._roc_png({"auc": rec["auc"]}, "x") == b""


def test_frozen_overrides_pin_the_backbone_and_match_the_grid():
    from awm_lib.train.config import make_config

    paper = {
        **BASE_SETTINGS,
        "position": "sinecat+rope1d",
        "loss": "bce+repulsive",
        "crop_size": 112,
        "topk": 5,
    }
    ov = widgets.settings_to_overrides(paper, frozen=True)
    assert "model.backbone.name_or_path=none" in ov and "loss.repulsive_on=tokens" in ov
    base = widgets.settings_to_overrides(
        {**paper, "proposer": "none", "topk": 0, "crop_size": 224, "position": "none", "loss": "bce"},
        frozen=True,
    )
    assert base[:4] == ["arch=roi", "data.proposer=none", "model.topk=0", "model.crop_size=224"]
    ssl = widgets.settings_to_overrides({**paper, "backbone_init": "ssl"}, frozen=True)
    assert any(o.endswith("awm-dino-cpu") for o in ssl)
    cfg = make_config("frozen", ov, dataset="mias")
    assert (
        cfg.features.cached
        and cfg.model.position == "sinecat+rope1d"
        and cfg.model.backbone.name_or_path is None
    )
