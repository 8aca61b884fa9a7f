"""awm_lib.book.results on a small constructed ablation file: checking, tables, lookup, figures, claims."""

from __future__ import annotations

import copy
import json

import matplotlib
import pytest

matplotlib.use("Agg")

from awm_lib.book import results as R  # noqa: E402

BASE_SETTINGS = {"proposer": "blob", "topk": 5, "crop_size": 112, "position": "rope2d", "pooling": "anchor",
                 "loss": "bce+repulsive", "contrastive_weight": 0.3, "backbone_init": "random"}


def metric(mean, lo, hi, sd=0.02):
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "sd": sd}


def record(configuration, auc, f1, lesion_recall=None, **settings):
    """A valid record with AUC/F1 as given (CIs mean ± 0.05) and the other metrics fixed."""
    s = {**BASE_SETTINGS, "arch": "roi", **settings}  # records may carry more settings than the dropdowns
    return {
        "dataset": "mias",
        "configuration": configuration,
        "scale": "cpu-smoke",
        "settings": s,
        "auc": metric(auc, auc - 0.05, auc + 0.05),
        "f1": metric(f1, f1 - 0.05, f1 + 0.05),
        "sens@fpr0.1": metric(0.2, 0.1, 0.3),
        "sens@fpr0.3": metric(0.5, 0.4, 0.6),
        "sens@fpr0.5": metric(0.7, 0.6, 0.8),
        "lesion_recall": lesion_recall,
        "n_test": 322,
        "n_test_pos": 51,
        "seeds": [0],
        "folds": [0, 1, 2, 3, 4],
        "n_runs": 5,
        "backbone": "random:micro",
        "roc": {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.6, 1.0]},
        "example_overlay": None,
        "command": "test",
        "device": "cpu",
        "date": "2026-01-01T00:00:00Z",
        "versions": {},
    }


def delta(mean, lo, hi):
    return {"mean": mean, "ci_low": lo, "ci_high": hi}


def contrast(name, factor, a, b, d_auc, d_f1, claim=None):
    return {
        "dataset": "mias",
        "scale": "cpu-smoke",
        "name": name,
        "factor": factor,
        "from": a,
        "to": b,
        "claim": claim,
        "d_auc": d_auc,
        "d_f1": d_f1,
        "n_women": 161,
        "n_boot": 1000,
    }


def make_results() -> dict:
    """Baseline, position none/rope2d, loss bce/bce+repulsive, and an oracle proposer; three paired
    contrasts."""
    return {
        "schema": 2,
        "notes": "constructed for tests",
        "contrasts": [
            # position: marginal intervals overlap, but the paired interval excludes 0 -> held on F1
            contrast(
                "position: rope2d",
                "position",
                "roi-nopos",
                "roi-rope2d",
                delta(0.02, 0.005, 0.035),
                delta(0.03, 0.01, 0.05),
                "position",
            ),
            contrast(
                "loss: repulsive",
                "loss",
                "roi-rope2d-bce",
                "roi-rope2d",
                delta(-0.18, -0.25, -0.11),
                delta(0.23, -0.01, 0.4),
                "loss",
            ),
            contrast(
                "method",
                "method",
                R.BASELINE,
                "roi-rope2d",
                delta(0.12, 0.05, 0.2),
                delta(0.13, 0.02, 0.25),
                "method",
            ),
        ],
        "records": [
            record(
                R.BASELINE,
                0.60,
                0.30,
                proposer="none",
                position="none",
                pooling="cls",
                loss="bce",
                arch="full_image",
            ),
            record("roi-nopos", 0.70, 0.40, lesion_recall=0.5, position="none"),
            record("roi-rope2d", 0.72, 0.43, lesion_recall=0.5),  # the full recipe
            record("roi-rope2d-bce", 0.90, 0.20, lesion_recall=0.5, loss="bce", contrastive_weight=0.0),
            record("oracle", 0.80, 0.50, lesion_recall=1.0, proposer="oracle"),
        ],
    }


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(make_results()))
    return path


def test_load_valid_file(results_file):
    res = R.load_ablation(results_file)
    assert len(res) == 5 and res.datasets == ["mias"] and res.scales == ["cpu-smoke"]
    assert res.notes == "constructed for tests" and res.path == results_file


def test_missing_file_is_none_or_a_clear_error(tmp_path):
    assert R.load_ablation(tmp_path / "nope.json", missing_ok=True) is None
    with pytest.raises(R.ResultsFileError, match="awm_lib ablation"):
        R.load_ablation(tmp_path / "nope.json")


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.update(schema=1), "schema"),
    (lambda d: d["records"][1].pop("n_runs"), "n_runs"),
    (lambda d: d["records"][1].update(backbone=""), "backbone"),
    (lambda d: d.update(contrasts={}), "'contrasts' must be a list"),
    (lambda d: d["contrasts"][0].pop("to"), "'to'"),
    (lambda d: d["contrasts"][0]["d_auc"].update(mean=2.0), "differences of fractions"),
    (lambda d: d["contrasts"][0]["d_f1"].update(mean=0.9), "outside its interval"),
    (lambda d: d.update(records={}), "'records' must be a list"),
    (lambda d: d["records"][1].pop("auc"), "'auc'"),
    (lambda d: d["records"][1]["settings"].pop("pooling"), "pooling"),
    (lambda d: d["records"][1]["f1"].update(mean=54.5), "fraction"),  # percent instead of a fraction
    (lambda d: d["records"][1]["auc"].update(mean=0.9), "outside its interval"),
    (lambda d: d["records"][1].update(n_test=0), "n_test"),
    (lambda d: d["records"][1].update(lesion_recall=1.5), "lesion_recall"),
    (lambda d: d["records"][1]["roc"]["fpr"].append(1.0), "equal length"),
    (lambda d: d["records"].append(copy.deepcopy(d["records"][1])), "second record"),
])
def test_bad_files_raise_results_file_error(tmp_path, breakage, message):
    data = make_results()
    breakage(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(R.ResultsFileError, match=message) as info:
        R.load_ablation(path)
    assert info.value.path == str(path)


def test_not_json_raises(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(R.ResultsFileError, match="not valid JSON"):
        R.load_ablation(path)


def test_format_ci():
    assert R.format_ci({"mean": 0.8123, "ci_low": 0.7, "ci_high": 0.9}) == "0.812 [0.700, 0.900]"
    assert R.format_ci({"mean": 0.5, "ci_low": None, "ci_high": None}, digits=2) == "0.50"
    assert R.format_ci({"mean": None, "ci_low": None, "ci_high": None}) == "n/a"
    assert R.format_ci(None) == "n/a"


def test_ablation_table_strings(results_file):
    table = R.ablation_table(R.load_ablation(results_file), settings=True)
    assert list(table["configuration"]) == [r["configuration"] for r in make_results()["records"]]
    row = table.set_index("configuration").loc["roi-nopos"]
    assert row["auc"] == "0.700 [0.650, 0.750]"
    assert row["f1"] == "0.400 [0.350, 0.450]"
    assert row["sens@fpr0.3"] == "0.500 [0.400, 0.600]"
    assert row["lesion recall"] == "0.500" and row["position"] == "none"
    assert row["n_test (pos)"] == "322 (51)" and row["runs"] == "5 folds × 1 seed"
    assert table.set_index("configuration").loc[R.BASELINE, "lesion recall"] == "n/a"


def test_metric_frame_is_numeric(results_file):
    df = R.metric_frame(R.load_ablation(results_file), metrics=("auc",))
    assert len(df) == 5
    assert df.set_index("configuration").loc["oracle", "ci_high"] == pytest.approx(0.85)


def test_find_record_by_settings(results_file):
    res = R.load_ablation(results_file)
    assert R.find_record(res, BASE_SETTINGS)["configuration"] == "roi-rope2d"
    assert R.find_record(res, {**BASE_SETTINGS, "proposer": "oracle"})["configuration"] == "oracle"
    # the contrastive weight is irrelevant (ignored) when the loss is plain BCE
    assert (
        R.find_record(res, {**BASE_SETTINGS, "loss": "bce", "contrastive_weight": 1.0})["configuration"]
        == "roi-rope2d-bce"
    )
    # a numeric setting matches across int/float spellings
    assert (
        R.find_record(res, {**BASE_SETTINGS, "contrastive_weight": 0.30000000000000004})["configuration"]
        == "roi-rope2d"
    )
    assert R.find_record(res, {**BASE_SETTINGS, "topk": 3}) is None
    assert R.find_record(res, BASE_SETTINGS, dataset="vindr") is None
    assert R.find_record(None, BASE_SETTINGS) is None


def test_setting_choices_union_with_defaults(results_file):
    ch = R.setting_choices(R.load_ablation(results_file), {"topk": [1, 3]})
    assert ch["topk"] == [1, 3, 5]
    assert ch["proposer"] == ["blob", "none", "oracle"]
    assert ch["position"] == ["none", "rope2d"]


def test_contrasts_one_factor_pairs(results_file):
    df = R.contrasts(R.load_ablation(results_file))
    pos = df[df["factor"] == "position"].iloc[0]
    assert (pos["from"], pos["to"]) == ("none", "rope2d")
    assert pos["d_auc"] == pytest.approx(2.0) and pos["d_f1"] == pytest.approx(3.0)
    assert pos["overlap_auc"]  # [0.65, 0.75] and [0.67, 0.77]
    loss = df[df["factor"] == "loss"].iloc[0]
    assert (loss["from"], loss["to"]) == ("bce", "bce+repulsive")
    assert loss["d_auc"] == pytest.approx(-18.0) and not loss["overlap_auc"]
    method = df[df["factor"] == "method"].iloc[0]
    assert method["to_config"] == "roi-rope2d"  # the paper's recipe, not the best AUC
    assert R.headline_configurations(R.load_ablation(results_file)) == [R.BASELINE, "roi-rope2d"]
    assert R.headline_configurations(None) == []
    assert method["d_auc"] == pytest.approx(12.0) and not method["overlap_auc"]
    assert set(df["factor"]) == {"position", "loss", "proposer", "method"}


def test_claims_are_decided_on_paired_intervals(results_file):
    res = R.load_ablation(results_file)
    table = R.claims_table(res).set_index("paper's claim")
    position = table.loc[R.PAPER_ABLATION[0]["claim"]]
    # the two marginal AUC intervals overlap ([0.65, 0.75] vs [0.67, 0.77]); the paired F1 interval excludes 0
    assert R.contrasts(res).set_index("factor").loc["position", "overlap_auc"]
    assert (
        position["ΔF1 (pp) [95% CI]"] == "+3.0 [+1.0, +5.0]" and position["verdict (AUC / F1)"] == "— / held"
    )
    loss = table.loc[R.PAPER_ABLATION[1]["claim"]]
    assert loss["ΔAUC (pp) [95% CI]"] == "-18.0 [-25.0, -11.0]"
    assert loss["verdict (AUC / F1)"] == "contradicted / not resolved (interval includes 0)"
    method = table.loc[R.PAPER_ABLATION[2]["claim"]]
    assert (
        method["verdict (AUC / F1)"] == "held / held"
        and method["our contrast"] == f"mias: {R.BASELINE} → roi-rope2d"
    )
    assert not table.isna().any().any()
    md = R.claims_markdown(res)
    assert "3 of 3 claims" in md and "paired bootstrap" in md and "|" not in md
    assert "No ablation results yet" in R.claims_markdown(None)
    assert R.claims_table(None).empty
    paired = R.paired_table(res)
    assert list(paired["contrast"]) == ["position: rope2d", "loss: repulsive", "method"]
    assert list(paired["AUC resolved"]) == ["yes", "yes", "yes"] and not paired.isna().any().any()


def test_paired_verdict_rules():
    assert R.paired_verdict(delta(0.01, -0.01, 0.03), 1.0) == "not resolved (interval includes 0)"
    assert R.paired_verdict(delta(0.02, 0.01, 0.03), 1.0) == "held"
    assert R.paired_verdict(delta(-0.02, -0.03, -0.01), 1.0) == "contradicted"
    assert R.paired_verdict(delta(0.02, None, None), 1.0) == "no interval to judge"
    assert R.paired_verdict(delta(0.02, 0.01, 0.03), None) == "—"


def test_claim_not_in_grid(tmp_path):
    data = make_results()
    data["contrasts"] = [c for c in data["contrasts"] if c["claim"] != "position"]
    table = R.claims_table(R.validate_ablation(data))
    assert (
        table.iloc[0]["our contrast"].startswith("not in this grid")
        and table.iloc[0]["verdict (AUC / F1)"] == "not tested"
    )


def test_the_book_discusses_the_strongest_scale(results_file):
    data = make_results()
    frozen = [dict(r, scale="cpu-frozen", auc=metric(0.7, 0.6, 0.8)) for r in data["records"]]
    data["records"] += frozen
    res = R.validate_ablation(data)
    assert res.main_scale() == "cpu-frozen" and res.main_scale("vindr") is None
    assert R.claims_table(res)["verdict (AUC / F1)"].eq("not tested").all()  # contrasts are cpu-smoke only
    assert "(scale `cpu-frozen`)" in R.findings_markdown(res)


def test_paper_table_is_the_papers_numbers():
    df = R.paper_table().set_index("model")
    assert (
        df.loc["RoI tokens (full method)", "auc"] == 86.6 and df.loc["RoI tokens (full method)", "f1"] == 54.5
    )
    assert df.loc["Mammo-CLIP EfficientNet-B5", "f1"] == 50.8
    assert set(df["source"]) == {"paper (VinDr-Mammo; F1 threshold chosen on test)"}
    assert (
        "arXiv 2604.19350" in R.PAPER_CITATION
        and "Attend what matters: Leveraging vision foundational" in R.PAPER_CITATION
    )
    # beside the paper's F1: its threshold was picked on the test set; cancer = BI-RADS 4/5; a study is one
    # woman
    assert df.attrs["note"] == R.PAPER_F1_NOTE
    for point in ("TEST set", "validation", "BI-RADS 4 or 5", "not biopsy-confirmed", "one woman"):
        assert point in R.PAPER_F1_NOTE


def test_figures_draw_what_the_file_holds(results_file):
    res = R.load_ablation(results_file)
    fig = R.plot_forest(res)
    ax_auc, ax_f1 = fig.axes
    assert [t.get_text() for t in ax_auc.get_yticklabels()] == [r["configuration"] for r in res.records]
    xs = ax_auc.lines[0].get_xdata()
    assert list(xs) == pytest.approx([0.6, 0.7, 0.72, 0.9, 0.8])
    ax = R.plot_roc_curves(res)
    assert sum(line.get_label().startswith("roi-") for line in ax.get_lines()) == 3
    ax = R.plot_recall_vs_metric(res)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["full-image baseline", "chance (AUC 0.5)", "roi-rope2d (blob)", "oracle (oracle)"]
    ax = R.plot_paper_comparison(res, configurations=["roi-rope2d"])
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "paper: RoI tokens (full method)" and ticks[-1] == "ours (mias, cpu-smoke): roi-rope2d"
    widths = [p.get_width() for p in ax.containers[0]]
    assert widths[0] == 86.6 and widths[-1] == pytest.approx(72.0)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_generated_text_reads_the_numbers(results_file):
    res = R.load_ablation(results_file)
    summary = R.summary_markdown(res)
    assert "5 configurations" in summary and "`cpu-smoke`" in summary and "2026-01-01" in summary
    text = R.findings_markdown(res)
    assert "0 of 5 configurations" in text  # every AUC interval here lies above 0.5
    assert "F1 = 2p/(1+p) = 0.273" in text  # p = 51/322 -> 2p/(1+p) = 102/373 = 0.2735
    assert "no difference between these configurations" not in text
    chance = make_results()
    for r in chance["records"]:
        r["auc"] = metric(0.5, 0.4, 0.6)
    assert "no difference between these configurations" in R.findings_markdown(R.validate_ablation(chance))
    assert "Highest AUC: `roi-rope2d-bce`, 90.0 [85.0, 95.0]" in text
    assert "12.0 points above the full-image baseline" in text
    assert (
        "paired ΔAUC +12.0 [+5.0, +20.0] pp, an interval that excludes 0." in text
    )  # the paired contrast decides
    assert "5 of 5 have an AUC interval whose lower end is above 0.5" in text
    # every other resolved paired contrast is named, the method and proposer ones have their own bullets
    assert ("Other paired contrasts whose ΔAUC interval excludes 0: position: rope2d (`roi-nopos` → "
            "`roi-rope2d`) +2.0 [+0.5, +3.5] pp; loss: repulsive (`roi-rope2d-bce` → `roi-rope2d`) "
            "-18.0 [-25.0, -11.0] pp.") in text
    # the swap is the full method (recall 0.5, AUC 72) and the oracle (recall 1.0, AUC 80) only
    assert (
        "rises with every step up in lesion recall (`roi-rope2d` recall 0.50 → AUC 72.0; `oracle` recall 1.00"
        in text
    )
    data = make_results()
    data["records"].append(record("random", 0.75, 0.4, lesion_recall=0.1, proposer="random"))
    assert "does not rise monotonically" in R.findings_markdown(R.validate_ablation(data))
    assert "No precomputed results yet" in R.summary_markdown(None)
    data = make_results()
    data["skipped"] = [{"dataset": "mias", "configuration": "backbone-ssl", "reason": "no checkpoint"}]
    assert "skipped `backbone-ssl` (mias): no checkpoint" in R.summary_markdown(R.validate_ablation(data))


def test_figures_without_results_say_so():
    fig = R.plot_forest(None)
    assert "no precomputed results yet" in fig.axes[0].texts[0].get_text()
    assert "no ROC" in R.plot_roc_curves(None).texts[0].get_text()
    assert "no proposer-swap" in R.plot_recall_vs_metric(None).texts[0].get_text()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_auc_by_lesion_size_figure_draws_each_configuration():
    data = make_results()
    bins = lambda m: [  # noqa: E731
        {
            "lo": 0,
            "hi": 10,
            "label": "0-10 mm",
            "n_pos": 3,
            "auc": {"mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1},
        },
        {
            "lo": 10,
            "hi": None,
            "label": ">= 10 mm",
            "n_pos": 4,
            "auc": {"mean": 0.9, "ci_low": 0.8, "ci_high": 1.0},
        },
    ]
    data["by_lesion_size"] = [
        {"dataset": "mias", "scale": "cpu-smoke", "configuration": R.BASELINE, "bins": bins(0.55)},
        {"dataset": "mias", "scale": "cpu-smoke", "configuration": "roi-rope2d", "bins": bins(0.8)},
    ]
    ax = R.plot_auc_by_lesion_size(
        R.validate_ablation(data), dataset="mias", configurations=[R.BASELINE, "roi-rope2d"]
    )
    assert sorted(ax.get_legend_handles_labels()[1]) == sorted([R.BASELINE, "roi-rope2d", "chance"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-10 mm\n(3 cancers)", ">= 10 mm\n(4 cancers)"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.55, 0.9])
    assert "no AUC-by-lesion-size" in R.plot_auc_by_lesion_size(None).texts[0].get_text()
    import matplotlib.pyplot as plt

    plt.close("all")
