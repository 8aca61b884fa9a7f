"""The ablation runner: aggregation math, records, resumability, and one real tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.experiments import ablation
from awm_lib.experiments.ablation import (
    RunPredictions,
    aggregate_runs,
    config_for,
    pooled_recall,
    settings_of,
    small_roc,
)

pytestmark = pytest.mark.filterwarnings("ignore::awm_lib.model.backbone.RandomBackboneWarning")


# --- aggregation on constructed predictions --------------------------------------------
def two_runs(groups=None):
    # run A: AUC 3/4; at its threshold 0.5 only 0.8 is called cancer -> tp 1, fn 1 -> F1 2/3
    a = RunPredictions(y=np.array([0, 0, 1, 1]), p=np.array([0.1, 0.4, 0.35, 0.8]), threshold=0.5,
                       groups=np.array(groups[:4] if groups else ["a1", "a2", "a3", "a4"]), fold=0)
    # run B: AUC 1; threshold 0.65 calls 0.7 and 0.9 -> tp 2 -> F1 1
    b = RunPredictions(y=np.array([0, 1, 0, 1]), p=np.array([0.6, 0.7, 0.2, 0.9]), threshold=0.65,
                       groups=np.array(groups[4:] if groups else ["b1", "b2", "b3", "b4"]), fold=1)
    return [a, b]


def test_pooled_means_use_pooled_scores_and_each_runs_own_threshold():
    agg = aggregate_runs(two_runs(), n_boot=50)
    # positives 0.35, 0.8, 0.7, 0.9 vs negatives 0.1, 0.4, 0.6, 0.2: 2 + 4 + 4 + 4 = 14 of 16 pairs
    assert agg["auc"]["mean"] == pytest.approx(14 / 16)
    # pooled decisions: tp 3 (0.8, 0.7, 0.9), fp 0, fn 1 (0.35) -> F1 = 6 / 7
    # (one pooled threshold of 0.5 would call 0.6 a cancer: F1 = 6/8 -- not what we report)
    assert agg["f1"]["mean"] == pytest.approx(6 / 7)
    assert agg["n_test"] == 8 and agg["n_test_pos"] == 4
    assert [r["auc"] for r in agg["per_run"]] == pytest.approx([0.75, 1.0])


def test_sd_is_over_runs_of_each_runs_point_estimate():
    agg = aggregate_runs(two_runs(), n_boot=10)
    assert agg["auc"]["sd"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert agg["f1"]["sd"] == pytest.approx(np.std([2 / 3, 1.0], ddof=1))
    one = aggregate_runs(two_runs()[:1], n_boot=10)
    assert one["auc"]["sd"] == 0.0


def test_bootstrap_resamples_whole_women_and_is_seeded():
    # every image belongs to one woman: each resample is the whole pool, so the CI collapses to the point
    agg = aggregate_runs(two_runs(groups=["w"] * 8), n_boot=30)
    for k in ablation.ABLATION_METRICS:
        assert agg[k]["ci_low"] == pytest.approx(agg[k]["mean"]) and agg[k]["ci_high"] == pytest.approx(
            agg[k]["mean"]
        )
    a1, a2 = aggregate_runs(two_runs(), n_boot=200, seed=3), aggregate_runs(two_runs(), n_boot=200, seed=3)
    assert a1["auc"] == a2["auc"]
    assert a1["auc"]["ci_low"] <= a1["auc"]["mean"] <= a1["auc"]["ci_high"]


def test_sensitivity_at_fpr_on_the_pool():
    agg = aggregate_runs(two_runs(), n_boot=0)
    # pooled, sorted: 0.9+ 0.8+ 0.7+ 0.6- 0.4- 0.35+ 0.2- 0.1-; at FPR 0.25 (one negative) TPR is 3/4,
    # at FPR 0.5 (two negatives, 0.6 and 0.4, then 0.35+) the top of the step is 4/4
    assert agg["sens@fpr0.5"]["mean"] == pytest.approx(1.0)
    assert agg["sens@fpr0.1"]["mean"] == pytest.approx(0.75)  # interpolated between (0, 3/4) and (1/4, 3/4)
    assert agg["auc"]["ci_low"] is None  # no bootstrap asked: no interval (JSON null, not NaN)


def test_small_roc_has_at_most_50_monotone_points():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = rng.random(300) + 0.3 * y
    roc = small_roc(y, p, 50)
    assert len(roc["fpr"]) == len(roc["tpr"]) == 50
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["tpr"]) >= 0)


def test_pooled_recall_counts_each_image_once():
    fold0 = {"m1": [1, 1], "m2": [0, 2]}
    fold1 = {"m3": [1, 1], "m4": [0, 0]}
    assert pooled_recall([fold0, fold1]) == pytest.approx(2 / 4)
    assert pooled_recall([fold0, dict(fold0)]) == pytest.approx(1 / 3)  # two seeds, same test images
    assert pooled_recall([None, None]) is None
    assert pooled_recall([{"m4": [0, 0]}]) is None  # no located lesions: undefined


# --- configurations, settings, records ---------------------------------------------------
@pytest.mark.parametrize(
    "name,loss,arch",
    [
        ("baseline-full-image", "bce", "full_image"),
        ("roi-nopos", "bce", "roi"),
        ("roi-rope2d-repulsive", "bce+repulsive", "roi"),
        ("roi-rope2d-supcon", "bce+supcon", "roi"),
        ("roi-rope2d-repulsive-supcon", "bce+repulsive+supcon", "roi"),
    ],
)
def test_settings_of_each_configuration(name, loss, arch):
    cfg = config_for(name, "mias", "cpu-smoke", fold=2, seed=1)
    s = settings_of(cfg)
    assert s["loss"] == loss and s["arch"] == arch and cfg.data.fold == 2 and cfg.seed == 1
    assert all(isinstance(v, (str, int, float)) for v in s.values())
    assert s["backbone_init"] == "random"


def test_configurations_change_what_they_say():
    from awm_lib.experiments import ablation_study as study

    nopos, sine = config_for("roi-nopos", "mias", "cpu-smoke"), config_for("roi-sine", "mias", "cpu-smoke")
    assert (nopos.model.position, sine.model.position) == ("none", "sine")
    oracle = config_for("proposer-oracle", "mias", "cpu-smoke")
    assert oracle.data.proposer == "oracle" and oracle.data.pad_rois == "random"
    assert config_for("roi-rope2d-repulsive", "mias", "cpu-smoke").data.proposer == "blob"
    gpu = config_for("roi-rope2d", "synthetic", "gpu")
    default_weights = study.resolve_backbone(study.GPU_BACKBONES)  # the SSL checkpoint once committed
    assert (
        gpu.model.crop_size == 224
        and gpu.data.synthetic_n >= 6000
        and gpu.model.backbone.name_or_path == default_weights
    )
    with pytest.raises(ConfigError, match="unknown ablation configuration"):
        config_for("roi-rope3d", "mias", "cpu-smoke")


def test_missing_ssl_checkpoint_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation.paths, "PROJECT_ROOT", tmp_path)  # no checkpoints/ here
    runs, skipped = ablation.plan_runs(
        "mias", ["roi-nopos", "backbone-ssl"], "cpu-smoke", seeds=[0, 1], folds=[0, 3], runs_dir=tmp_path
    )
    assert "backbone-ssl" in skipped and "pretrain" in skipped["backbone-ssl"]
    assert sorted(r.run_dir.relative_to(tmp_path).as_posix() for r in runs) == [
        "mias/roi-nopos/fold0",
        "mias/roi-nopos/fold0-seed1",
        "mias/roi-nopos/fold3",
        "mias/roi-nopos/fold3-seed1",
    ]


def test_record_schema_and_merge(tmp_path):
    cfg = config_for("roi-rope2d-repulsive", "mias", "cpu-smoke")
    agg = aggregate_runs(two_runs(), n_boot=20)
    run_res = [{"device": "cpu", "date": "2026-01-02T00:00:00Z", "versions": {"torch": "x"}}]
    rec = ablation.make_record(
        "mias",
        "roi-rope2d-repulsive",
        "cpu-smoke",
        cfg,
        agg,
        lesion_recall=0.5,
        seeds=[0],
        folds=[0, 1],
        run_results=run_res,
        overlay=None,
        command="python -m awm_lib ablation",
    )
    for key in (
        "dataset",
        "configuration",
        "scale",
        "settings",
        "auc",
        "f1",
        "sens@fpr0.1",
        "sens@fpr0.3",
        "sens@fpr0.5",
        "lesion_recall",
        "n_test",
        "n_test_pos",
        "seeds",
        "folds",
        "roc",
        "example_overlay",
        "command",
        "device",
        "date",
        "versions",
    ):
        assert key in rec, key
    assert set(rec["auc"]) == {"mean", "ci_low", "ci_high", "sd", "run_mean"}
    assert rec["auc"]["run_mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert set(rec["settings"]) >= {
        "proposer",
        "topk",
        "crop_size",
        "position",
        "pooling",
        "loss",
        "contrastive_weight",
        "backbone_init",
    }
    out = tmp_path / "ablation.json"
    ablation.write_results(out, [rec], {"backbone-ssl": "no checkpoint"}, "mias")
    rec2 = dict(rec, configuration="roi-nopos")
    ablation.write_results(
        out, [rec2, dict(rec, n_test=99)], {}, "mias"
    )  # replaces the first, keeps order of the ladder
    data = json.loads(out.read_text())
    assert data["schema"] == ablation.SCHEMA == 2 and "cpu-smoke" in data["notes"] and data["skipped"] == []
    assert [(r["configuration"], r["n_test"]) for r in data["records"]] == [
        ("roi-nopos", 8),
        ("roi-rope2d-repulsive", 99),
    ]
    assert (
        rec["n_runs"] == 2 and rec["backbone"] == "random:micro"
    )  # two runs pooled, the smoke preset's micro ViT
    assert data["contrasts"] == []


def test_schema_is_defined_once_beside_its_writer():
    from awm_lib.book.results import file as reader
    from awm_lib.experiments import ablation_records

    assert reader.SCHEMA is ablation_records.SCHEMA and reader.METRICS is ablation_records.METRICS
    assert reader.METRICS == ablation.ABLATION_METRICS


def test_a_schema_1_file_is_upgraded_when_written_to(tmp_path):
    cfg = config_for("roi-nopos", "mias", "cpu-smoke")
    rec = ablation.make_record(
        "mias",
        "roi-nopos",
        "cpu-smoke",
        cfg,
        aggregate_runs(two_runs(), n_boot=10),
        lesion_recall=None,
        seeds=[0],
        folds=[0, 1],
        run_results=[],
        overlay=None,
        command="x",
    )
    old = {k: v for k, v in rec.items() if k not in ("n_runs", "backbone")}
    out = tmp_path / "ablation.json"
    out.write_text(json.dumps({"schema": 1, "records": [dict(old, configuration="roi-sine")]}))
    data = ablation.write_results(out, [rec], {}, "mias")
    assert data["schema"] == 2 and [r["n_runs"] for r in data["records"]] == [2, 2]
    assert {r["backbone"] for r in data["records"]} == {"random:micro"}
    from awm_lib.book.results import validate_ablation

    assert len(validate_ablation(json.loads(out.read_text()))) == 2
    out.write_text(json.dumps({"schema": 7, "records": []}))
    with pytest.raises(ConfigError, match="schema 7"):
        ablation.write_results(out, [rec], {}, "mias")


# --- paired contrasts -----------------------------------------------------------------------
def arm(p, threshold=0.5, women=None, y=None, seed=0):
    y = np.array([0, 0, 0, 1, 1, 1] if y is None else y)
    return RunPredictions(y=y, p=np.asarray(p, float), threshold=threshold,
                          groups=np.array(women or ["w1", "w2", "w3", "w4", "w5", "w6"]), seed=seed)


def test_paired_contrast_point_is_the_difference_of_pooled_metrics():
    a = [arm([0.1, 0.5, 0.6, 0.4, 0.7, 0.9])]  # AUC 7/9; decisions >= .5: tp 2, fp 2, fn 1 -> F1 4/7
    b = [arm([0.1, 0.2, 0.3, 0.4, 0.7, 0.9])]  # AUC 1; tp 2, fn 1 -> F1 4/5
    c = ablation.paired_contrast(a, b, n_boot=200)
    assert c["auc"]["mean"] == pytest.approx(1 - 7 / 9) and c["f1"]["mean"] == pytest.approx(4 / 5 - 4 / 7)
    assert c["n_women"] == 6 and c["auc"]["ci_low"] <= c["auc"]["mean"] <= c["auc"]["ci_high"]
    same = ablation.paired_contrast(a, a, n_boot=50)  # an arm against itself: exactly 0, every resample
    assert (
        same["auc"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        and ablation.resolved(same["auc"]) is False
    )
    assert ablation.paired_contrast(a, b, n_boot=200, seed=1) == ablation.paired_contrast(
        a, b, n_boot=200, seed=1
    )


def test_pairing_resolves_a_small_shared_shift_that_marginal_intervals_cannot():
    # 200 women with noisy scores; arm B = arm A + a small, consistent lift of the cancers' scores.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = rng.random(200) + 0.4 * y
    women = [f"w{i}" for i in range(200)]
    a = [arm(p, women=women, y=y)]
    b = [arm(p + 0.08 * y, women=women, y=y)]
    marg_a, marg_b = aggregate_runs(a, n_boot=400), aggregate_runs(b, n_boot=400)
    assert marg_b["auc"]["ci_low"] < marg_a["auc"]["ci_high"]  # the marginal intervals overlap...
    c = ablation.paired_contrast(a, b, n_boot=400)
    assert c["auc"]["ci_low"] > 0 and ablation.resolved(c["auc"])  # ...the paired one excludes 0


def test_paired_bootstrap_keeps_a_womans_images_together_in_both_arms():
    # one woman per arm-image pair... but all images of one woman: every resample is the whole pool
    a = [arm([0.1, 0.5, 0.6, 0.4, 0.7, 0.9], women=["w"] * 6)]
    b = [arm([0.1, 0.2, 0.3, 0.4, 0.7, 0.9], women=["w"] * 6)]
    c = ablation.paired_contrast(a, b, n_boot=30)
    assert c["auc"]["ci_low"] == pytest.approx(c["auc"]["mean"]) == pytest.approx(c["auc"]["ci_high"])
    with pytest.raises(ValueError, match="share no test woman"):
        ablation.paired_contrast(a, [arm([0.1] * 6, women=list("abcdef"))], n_boot=5)


def test_contrasts_are_merged_by_dataset_scale_and_name(tmp_path):
    cfg = config_for("roi-nopos", "mias", "cpu-smoke")
    rec = ablation.make_record(
        "mias",
        "roi-nopos",
        "cpu-smoke",
        cfg,
        aggregate_runs(two_runs(), n_boot=10),
        lesion_recall=None,
        seeds=[0],
        folds=[0, 1],
        run_results=[],
        overlay=None,
        command="x",
    )
    pair = ablation.paired_contrast(
        [arm([0.1, 0.5, 0.6, 0.4, 0.7, 0.9])], [arm([0.1, 0.2, 0.3, 0.4, 0.7, 0.9])], n_boot=20
    )
    mk = ablation.make_contrast_record
    out = tmp_path / "ablation.json"
    ablation.write_results(
        out,
        [rec],
        {},
        "mias",
        contrasts=[
            mk("mias", "cpu-smoke", "position: sine", "position", "roi-nopos", "roi-sine", pair),
            mk(
                "mias",
                "cpu-smoke",
                "method",
                "method",
                "baseline-full-image",
                "roi-rope2d-repulsive",
                pair,
                claim="method",
            ),
        ],
    )
    data = ablation.write_results(
        out,
        [rec],
        {},
        "mias",
        contrasts=[
            mk(
                "mias",
                "cpu-smoke",
                "position: sine",
                "position",
                "roi-nopos",
                "roi-sine",
                pair | {"n_women": 1},
            )
        ],
    )
    assert [(c["name"], c["n_women"]) for c in data["contrasts"]] == [
        ("method", 6),
        ("position: sine", 1),
    ]  # study order
    from awm_lib.book.results import validate_ablation

    assert len(validate_ablation(data).paired) == 2


# --- resumability -------------------------------------------------------------------------
def fake_train_counter(monkeypatch):
    calls = []

    def fake_train(cfg, out_dir, *, resume=False, progress=True, command=None):
        from awm_lib.io_utils import write_json_atomic
        from awm_lib.train.config import to_dict

        calls.append((str(out_dir), resume))
        write_json_atomic(out_dir / "config.json", {"config": to_dict(cfg)})
        write_json_atomic(out_dir / "results.json", {"threshold": 0.5})
        return type("R", (), {"results": {"threshold": 0.5}})()

    monkeypatch.setattr(ablation, "train", fake_train)
    return calls


def test_a_finished_run_is_skipped_and_a_changed_one_refused(tmp_path, monkeypatch):
    calls = fake_train_counter(monkeypatch)
    runs, _ = ablation.plan_runs(
        "mias", ["roi-nopos"], "cpu-smoke", seeds=[0], folds=[0, 1], runs_dir=tmp_path
    )
    for spec in runs:
        spec.run_dir.mkdir(parents=True)
    assert [ablation.run_one(s)[1] for s in runs] == [True, True]
    assert [ablation.run_one(s)[1] for s in runs] == [False, False]  # second pass: nothing trained
    assert len(calls) == 2
    changed = ablation.plan_runs("mias", ["roi-nopos"], "cpu-smoke", seeds=[0], folds=[0], runs_dir=tmp_path,
                                 extra=["optim.lr_head=0.5"])[0][0]
    with pytest.raises(CheckpointError):
        ablation.run_one(changed)


# --- one real tiny run ----------------------------------------------------------------------
@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a busy machine
    yield
    torch.set_num_threads(n)


def test_end_to_end_tiny_mias_run(tmp_path, monkeypatch, mias_root, one_thread):
    monkeypatch.setenv("AWM_CACHE", str(tmp_path / "cache"))
    small = ["data.max_images=6", "optim.epochs=1", "optim.batch_size=4", "eval.n_boot=10"]
    kw = dict(
        seeds=[0],
        folds=[0],
        root=str(mias_root),
        runs_dir=tmp_path / "runs",
        out=tmp_path / "ablation.json",
        overlays_dir=tmp_path / "overlays",
        progress=False,
        extra=small,
        n_boot=100,
    )
    data = ablation.run_study("mias", ["roi-rope2d-repulsive"], "cpu-smoke", **kw)
    (rec,) = data["records"]
    assert rec["scale"] == "cpu-smoke" and rec["folds"] == [0] and rec["seeds"] == [0]
    assert rec["n_test"] == 6 and rec["n_test_pos"] >= 1
    assert rec["settings"]["proposer"] == "blob" and rec["settings"]["loss"] == "bce+repulsive"
    assert rec["lesion_recall"] is None or 0.0 <= rec["lesion_recall"] <= 1.0
    assert 0.0 <= rec["auc"]["mean"] <= 1.0 and len(rec["roc"]["fpr"]) <= 50
    assert (tmp_path / "overlays" / "mias-roi-rope2d-repulsive.png").is_file()
    assert (tmp_path / "runs" / "mias" / "roi-rope2d-repulsive" / "fold0" / "lesion_recall.json").is_file()
    # rerunning the same study trains nothing and gives the same record
    monkeypatch.setattr(ablation, "train", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = ablation.run_study("mias", ["roi-rope2d-repulsive"], "cpu-smoke", **kw)
    assert again["records"][0]["auc"] == rec["auc"]
    # aggregate-only with a fold that never ran: it is left out, and the record says so
    partial = ablation.run_study(
        "mias", ["roi-rope2d-repulsive"], "cpu-smoke", train_missing=False, **{**kw, "folds": [0, 1]}
    )
    assert partial["records"][0]["folds"] == [0] and "--folds 0 " in partial["records"][0]["command"] + " "


# --- AUC against lesion size -------------------------------------------------------------------
def test_auc_by_size_compares_each_bins_cancers_with_all_normals():
    from awm_lib.experiments.lesion_size import auc_by_size

    # normals score 0.1..0.4; small cancers (5 mm) score 0.15 and 0.35 (missed half the time), large ones 0.9
    ids = np.array(["n1", "n2", "n3", "n4", "s1", "s2", "l1", "l2", "u1"])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.15, 0.35, 0.9, 0.95, 0.5])
    run = RunPredictions(y=y, p=p, threshold=0.5, groups=ids, ids=ids)
    sizes = {"s1": 5.0, "s2": 6.0, "l1": 25.0, "l2": 40.0, "u1": None}
    out = auc_by_size([run], sizes, bins=(0, 10, 30, float("inf")), n_boot=200)
    small, mid, large = out["bins"]
    assert (
        small["label"] == "0-10 mm"
        and small["n_pos"] == 2
        and small["auc"]["mean"] == pytest.approx((1 + 3) / 8)
    )
    assert (
        mid["n_pos"] == 1
        and mid["auc"]["mean"] == 1.0
        and large["label"] == ">= 30 mm"
        and large["hi"] is None
    )
    assert out["n_neg"] == 4 and out["n_unsized"] == 1
    assert small["auc"]["ci_low"] <= small["auc"]["mean"] <= small["auc"]["ci_high"]
    empty = auc_by_size([run], sizes, bins=(100, 200), n_boot=10)["bins"][0]
    assert empty["n_pos"] == 0 and empty["auc"] == {"mean": None, "ci_low": None, "ci_high": None}
    with pytest.raises(ValueError, match="image ids"):
        auc_by_size([RunPredictions(y=y, p=p, threshold=0.5, groups=ids)], sizes)


def test_lesion_sizes_of_real_mias_cancers_are_in_millimetres(mias_root):
    from awm_lib.data.mias import load_mias
    from awm_lib.experiments.lesion_size import lesion_size_mm

    samples = load_mias(mias_root)
    sizes = [lesion_size_mm(s, "mias") for s in samples if s.label == 1]
    known = [v for v in sizes if v is not None]
    assert len(known) >= 0.7 * len(sizes) and 2 < np.median(known) < 60  # MIAS radii of a few mm to a few cm
    assert all(lesion_size_mm(s, "mias") is None for s in samples if s.label == 0 and not s.lesions)


# --- time limit ------------------------------------------------------------------------------
def test_time_limit_stops_starting_runs_and_a_rerun_goes_on(tmp_path, monkeypatch):
    calls = fake_train_counter(monkeypatch)
    monkeypatch.setattr(ablation, "ensure_recall", lambda spec: None)
    monkeypatch.setattr(
        ablation,
        "_run_predictions",
        lambda spec, patient_of: RunPredictions(
            y=np.array([0, 1]),
            p=np.array([0.2, 0.8]),
            threshold=0.5,
            groups=np.array(["a", "b"]),
            fold=spec.fold,
            seed=spec.seed,
        ),
    )
    kw = dict(
        seeds=[0],
        folds=[0, 1],
        runs_dir=tmp_path / "runs",
        out=tmp_path / "a.json",
        overlays_dir=None,
        progress=False,
        n_boot=10,
        log=lambda m: None,
    )
    data = ablation.run_study("mias", ["roi-nopos"], "cpu-smoke", time_limit_s=0.0, **kw)
    assert len(calls) == 0 and data["records"] == []  # the limit was reached before the first run
    ablation.run_study("mias", ["roi-nopos"], "cpu-smoke", **kw)
    assert len(calls) == 2


def test_every_contrast_changes_exactly_its_factor(monkeypatch):
    """Issue 14: pad_rois (and where the repulsive term acts) are held fixed by a one-factor contrast."""
    from awm_lib.experiments import ablation_study as study
    from awm_lib.experiments.ablation_records import settings_differences
    from awm_lib.experiments.ablation_study import CONTRASTS

    # the gpu scale with no pretrained weights found (random init); with the SSL checkpoint as its default
    # backbone the ssl contrast compares a configuration with itself and is left out (next test)
    monkeypatch.setattr(study, "resolve_backbone", lambda names: None)

    for scale in ("cpu-smoke", "gpu"):
        for c in CONTRASTS:
            if c.factor == "method":  # the full-image baseline differs in everything
                continue
            a, b = (settings_of(config_for(name, "mias", scale)) for name in (c.a, c.b))
            assert settings_differences(a, b) == [c.factor], (scale, c.name)
    # the oracle's random padding would be a second factor against a blob row padded with masks
    masked, oracle = (
        settings_of(config_for(n, "mias", "cpu-smoke")) for n in ("roi-paper", "proposer-oracle")
    )
    assert settings_differences(masked, oracle) == ["proposer", "pad_rois"]


def test_gpu_scale_takes_the_first_backbone_available(tmp_path, monkeypatch):
    """Issue 14: DINOv2 when reachable, else the project's SSL checkpoint, else random init; records say
    which."""
    from awm_lib.experiments import ablation_study as study
    from awm_lib.experiments.ablation_records import backbone_of

    study.resolve_backbone.cache_clear()
    monkeypatch.setattr(study, "hub_reachable", lambda timeout=5.0: False)
    ssl = tmp_path / "awm-dino-cpu"
    assert study.resolve_backbone(("facebook/dinov2-small", str(ssl))) is None  # nothing here: random init
    ssl.mkdir()
    (ssl / "config.json").write_text("{}")
    study.resolve_backbone.cache_clear()
    assert study.resolve_backbone(("facebook/dinov2-small", str(ssl))) == str(ssl)
    monkeypatch.setattr(study, "hub_reachable", lambda timeout=5.0: True)
    study.resolve_backbone.cache_clear()
    assert study.resolve_backbone(("facebook/dinov2-small", str(ssl))) == "facebook/dinov2-small"
    study.resolve_backbone.cache_clear()

    monkeypatch.setattr(study, "resolve_backbone", lambda names: str(ssl))
    for name in ("roi-paper", "baseline-full-image"):
        cfg = config_for(name, "mias", "gpu")
        assert cfg.model.backbone.name_or_path == str(ssl) and not cfg.model.backbone.allow_random_fallback
        assert backbone_of(cfg) == str(ssl)
    monkeypatch.setattr(study, "resolve_backbone", lambda names: None)
    cfg = config_for("roi-paper", "mias", "gpu")
    assert cfg.model.backbone.name_or_path is None and backbone_of(cfg) == "random:small"
    assert (
        config_for("roi-paper", "mias", "cpu-smoke").model.backbone.random_arch == "micro"
    )  # CPU scales untouched


def test_a_contrast_whose_arms_are_the_same_settings_is_left_out(monkeypatch, tmp_path):
    """gpu scale offline with the SSL checkpoint as its default: 'ssl vs random' would be ssl vs ssl."""
    from awm_lib.experiments import ablation_study as study

    monkeypatch.setattr(study, "resolve_backbone", lambda names: "checkpoints/awm-dino-cpu")
    lines: list[str] = []
    out = ablation.study_contrasts("mias", "gpu", {"backbone-ssl": []}, seeds=[0], folds=[0],
                                   runs_dir=tmp_path, root=None, extra=(), patient_of={}, n_boot=10,
                                   log=lines.append)
    assert out == [] and any("same settings here" in m and "backbone: ssl" in m for m in lines)
