"""The figures of the results chapter, drawn from an ablation results file.

A forest plot of every configuration's metrics with their 95% intervals
(:func:`plot_forest`), the stored ROC curves (:func:`plot_roc_curves`),
classification against the proposer's lesion recall (:func:`plot_recall_vs_metric`)
and the paper's numbers beside ours (:func:`plot_paper_comparison`). An empty
results file gives a placeholder panel that says why. Re-exported by
:mod:`awm_lib.book.results`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from awm_lib.book.results.claims import proposer_swap
from awm_lib.book.results.file import BASELINE, PAPER_TABLE, AblationResults, _get, _records
from awm_lib.book.viz import PALETTE, _ax, plot_roc, subplots
from awm_lib.experiments.ablation_study import PAPER_METHOD


def plot_forest(results: AblationResults | Iterable[dict], metrics: Sequence[str] = ("auc", "f1"),
                dataset: str | None = None, width: float = 4.2):
    """A forest plot: per configuration (rows), each metric's estimate with its 95% CI (one panel each)."""
    recs = _records(results or [], dataset)
    if not recs:
        return _placeholder("no precomputed results yet: run `python -m awm_lib ablation`").figure
    labels = [r["configuration"] if dataset or len({x["dataset"] for x in recs}) == 1
              else f"{r['dataset']}: {r['configuration']}" for r in recs]
    fig, axes = subplots(1, len(metrics), width=width, height=0.9 + 0.32 * max(len(recs), 1),
                         squeeze=False, sharey=True)
    y = np.arange(len(recs))
    for j, (m, ax) in enumerate(zip(metrics, axes[0])):
        mean = np.array([_get(r, m, "mean") for r in recs])
        lo = np.array([_get(r, m, "ci_low") for r in recs])
        hi = np.array([_get(r, m, "ci_high") for r in recs])
        err = np.vstack([np.where(np.isnan(lo), 0, mean - lo), np.where(np.isnan(hi), 0, hi - mean)])
        ax.errorbar(mean, y, xerr=err, fmt="o", color=PALETTE[j % len(PALETTE)], capsize=3, markersize=5)
        base = [r for r in recs if r["configuration"] == BASELINE]
        if base and _get(base[0], m, "mean") == _get(base[0], m, "mean"):
            ax.axvline(_get(base[0], m, "mean"), color="grey", linestyle="--", linewidth=1)
        if m == "auc":
            ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"{m.upper() if m in ('auc', 'f1') else m} (95% CI)")
        ax.set_xlim(0, 1)
    axes[0][0].set_yticks(y, labels)
    axes[0][0].invert_yaxis()
    return fig


def plot_roc_curves(results: AblationResults | Iterable[dict], configurations: Sequence[str] | None = None,
                    dataset: str | None = None, ax=None):
    """The test ROC curves of some configurations (all with a stored curve by default)."""
    ax = _ax(ax, width=4.8, height=4.8)
    recs = _records(results or [], dataset)
    if not any(r.get("roc") for r in recs):
        return _placeholder("no ROC curves yet: run `python -m awm_lib ablation`", ax)
    for r in recs:
        if configurations is not None and r["configuration"] not in configurations:
            continue
        if r.get("roc"):
            plot_roc(
                r["roc"]["fpr"], r["roc"]["tpr"], auc=_get(r, "auc", "mean"), label=r["configuration"], ax=ax
            )
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_recall_vs_metric(results: AblationResults | Iterable[dict], metric: str = "auc",
                          dataset: str | None = None, ax=None):
    """Classification (``metric`` with its CI) against the proposer's lesion recall.

    One point per record of the proposer swap (:func:`proposer_swap`: the full
    method with the detector's, the oracle's or random boxes). If the method only
    works with a good detector, the points climb from left to right.
    """
    ax = _ax(ax, width=5.2, height=4.0)
    pts = proposer_swap(results, dataset)
    if not pts:
        return _placeholder("no proposer-swap results yet: run `python -m awm_lib ablation`", ax)
    for i, r in enumerate(sorted(pts, key=lambda r: r["lesion_recall"])):
        x, m = r["lesion_recall"], _get(r, metric, "mean")
        lo, hi = _get(r, metric, "ci_low"), _get(r, metric, "ci_high")
        err = [[0 if np.isnan(lo) else m - lo], [0 if np.isnan(hi) else hi - m]]
        ax.errorbar([x], [m], yerr=err, fmt="o", color=PALETTE[i % len(PALETTE)], capsize=3,
                    label=f"{r['configuration']} ({r['settings']['proposer']})")
    base = [r for r in _records(results, dataset) if r["configuration"] == BASELINE]
    if base:
        ax.axhline(
            _get(base[0], metric, "mean"),
            color="grey",
            linestyle="--",
            linewidth=1,
            label="full-image baseline",
        )
    if metric == "auc":
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("lesion recall of the proposer (share of lesions hit by a top-k box)")
    ax.set_ylabel(f"{metric.upper() if metric in ('auc', 'f1') else metric} (95% CI)")
    if pts or base:
        ax.legend(fontsize=8, loc="best")
    return ax


def _placeholder(text: str, ax=None):
    """An empty panel that says why it is empty (the chapter still has its figure)."""
    ax = _ax(ax, width=6.0, height=1.6)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="grey")
    ax.set_axis_off()
    return ax


def plot_paper_comparison(results: AblationResults | Iterable[dict] | None = None, dataset: str | None = None,
                          configurations: Sequence[str] | None = None, ax=None):
    """AUC and F1 (percent) of the paper's models beside ours (when given), as grouped bars.

    Bars are labelled with their source: the paper's numbers are VinDr-Mammo, ours
    are whatever dataset and scale the results file holds — not the same test. A
    note under the axes says what the paper's F1 means (:data:`PAPER_F1_NOTE`: its
    threshold was chosen on the test set, ours on validation).
    """
    ax = _ax(ax, width=7.5, height=4.0)
    labels = [f"paper: {p['model']}" for p in PAPER_TABLE]
    auc = [p["auc"] for p in PAPER_TABLE]
    f1 = [p["f1"] for p in PAPER_TABLE]
    for r in _records(results or [], dataset):
        if configurations is not None and r["configuration"] not in configurations:
            continue
        labels.append(f"ours ({r['dataset']}, {r['scale']}): {r['configuration']}")
        auc.append(100 * _get(r, "auc", "mean"))
        f1.append(100 * _get(r, "f1", "mean"))
    pos = np.arange(len(labels), dtype=float)
    for j, (name, vals) in enumerate((("AUC", auc), ("F1", f1))):
        bars = ax.barh(pos - 0.2 + 0.4 * j, vals, 0.4, label=name, color=PALETTE[j])
        ax.bar_label(bars, labels=["n/a" if v != v else f"{v:.1f}" for v in vals], fontsize=7, padding=2)
    ax.set_yticks(pos, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("percent")
    ax.legend(loc="lower right")
    ax.annotate("Paper's F1: threshold picked on the TEST set by its eval.py; ours: on validation. "
                "Its 'cancer' = BI-RADS 4/5 (suspicion, not biopsy).",
                xy=(0, 0), xycoords="axes fraction", xytext=(0, -34), textcoords="offset points",
                fontsize=7, color="dimgrey", va="top")
    return ax


def plot_auc_by_lesion_size(results: AblationResults | None, dataset: str = "synthetic",
                            configurations: Sequence[str] | None = None, scale: str | None = None, ax=None):
    """AUC of each size bin's cancers against all normals, per configuration, with 95% intervals.

    Reads the results file's ``by_lesion_size`` (:mod:`awm_lib.experiments.lesion_size`).
    By default: the full-image baseline and the paper's method, the two the premise is about
    (and the oracle proposer, where the file has it: the RoI model with every lesion boxed).
    """
    ax = _ax(ax, width=6.4, height=3.8)
    entries = [] if results is None else [e for e in results.meta.get("by_lesion_size") or []
                                          if e.get("dataset") == dataset]
    scale = scale or (results.main_scale(dataset) if results is not None else None)
    entries = [e for e in entries if e.get("scale") == scale]
    if configurations is None:
        configurations = (
            [BASELINE]
            + [e["configuration"] for e in entries if e["configuration"] == PAPER_METHOD]
            + [e["configuration"] for e in entries if e["configuration"] == "proposer-oracle"]
        )
    entries = sorted((e for e in entries if e["configuration"] in configurations),
                     key=lambda e: list(configurations).index(e["configuration"]))
    if not entries:
        return _placeholder(
            f"no AUC-by-lesion-size results for {dataset} yet: run `python -m awm_lib ablation`", ax
        )
    labels = [b["label"] + f"\n({b['n_pos']} cancers)" for b in entries[0]["bins"]]
    x = np.arange(len(labels), dtype=float)
    width = 0.8 / len(entries)
    for j, e in enumerate(entries):
        mean = np.array([np.nan if b["auc"]["mean"] is None else b["auc"]["mean"] for b in e["bins"]])
        lo = np.array([np.nan if b["auc"]["ci_low"] is None else b["auc"]["ci_low"] for b in e["bins"]])
        hi = np.array([np.nan if b["auc"]["ci_high"] is None else b["auc"]["ci_high"] for b in e["bins"]])
        err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
        ax.errorbar(
            x - 0.4 + width * (j + 0.5),
            mean,
            yerr=err,
            fmt="o",
            capsize=3,
            color=PALETTE[j % len(PALETTE)],
            label=e["configuration"],
        )
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("size of the largest malignant lesion (box side)")
    ax.set_ylabel("AUC: these cancers vs all normals (95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    return ax
