"""The ablation study's results file, as tables and figures for the book.

``python -m awm_lib ablation`` writes ``results/ablation.json``: one *record* per
(dataset, configuration), each with the configuration's ``settings`` (proposer,
top-k, crop size, position code, pooling, loss, contrastive weight, backbone
init) and its test metrics, each a point estimate with a bootstrap 95% interval::

    {"schema": 2, "notes": "...", "records": [
        {"dataset": "mias", "configuration": "roi-rope2d", "scale": "cpu-smoke",
         "settings": {"proposer": "blob", "topk": 5, ...},
         "auc": {"mean": 0.71, "ci_low": 0.60, "ci_high": 0.81, "sd": 0.05},
         "f1": {...}, "sens@fpr0.1": {...}, "sens@fpr0.3": {...}, "sens@fpr0.5": {...},
         "lesion_recall": 0.8, "n_test": 322, "n_test_pos": 51, "seeds": [0], "folds": [0, 1, 2, 3, 4],
         "n_runs": 5, "backbone": "random:small",
         "roc": {"fpr": [...], "tpr": [...]}, "example_overlay": "results/ablation_overlays/...png",
         "command": "...", "device": "cpu", "date": "...", "versions": {...}}],
     "contrasts": [
        {"dataset": "mias", "scale": "cpu-frozen", "name": "loss: repulsive", "factor": "loss",
         "from": "roi-rope2d", "to": "roi-rope2d-repulsive", "claim": "loss",
         "d_auc": {"mean": 0.012, "ci_low": -0.01, "ci_high": 0.035}, "d_f1": {...}, "n_women": 161, ...}]}

The schema (its version :data:`SCHEMA` and :data:`METRICS`) is defined with its
writer, :mod:`awm_lib.experiments.ablation_records`. The paired contrasts come from
:mod:`awm_lib.experiments.ablation_contrasts`; the claims are decided on them
(:func:`claims_table`), never on whether two marginal intervals overlap.

This module reads and checks that file (:func:`load_ablation`), turns it into
tables (:func:`ablation_table`, with ``"mean [ci_low, ci_high]"`` strings), finds
the record of a choice of settings (:func:`find_record`, used by the widget of
:mod:`awm_lib.book.widgets`), draws the figures of the results chapter
(:func:`plot_forest`, :func:`plot_roc_curves`, :func:`plot_recall_vs_metric`,
:func:`plot_paper_comparison`) and compares our one-factor contrasts with the
paper's claims (:func:`contrasts`, :func:`claims_markdown`).

Metrics in the file are fractions in [0, 1]; the paper reports percentages, so
:data:`PAPER_TABLE` is kept in percent and every comparison says which is which.

The code is in three modules, all re-exported here (import from
:mod:`awm_lib.book.results`): :mod:`awm_lib.book.results.file` (schema, reading and
checking, tables, lookup), :mod:`awm_lib.book.results.plots` (figures) and
:mod:`awm_lib.book.results.claims` (contrasts, claims, generated text).
"""

from __future__ import annotations

from awm_lib.book.results.claims import (  # noqa: F401 - re-exported (private helpers too: tests use them)
    _full_method,
    _pp,
    _verdict,
    claims_markdown,
    claims_table,
    contrasts,
    findings_markdown,
    headline_configurations,
    paired_runs_table,
    paired_table,
    paired_verdict,
    proposer_swap,
    summary_markdown,
)
from awm_lib.book.results.file import (  # noqa: F401 - re-exported (private helpers too: tests use them)
    BASELINE,
    METRICS,
    PAPER_ABLATION,
    PAPER_CITATION,
    PAPER_F1_NOTE,
    PAPER_TABLE,
    SCHEMA,
    SETTING_KEYS,
    AblationResults,
    ResultsFileError,
    _get,
    _is_num,
    _records,
    _runs,
    ablation_table,
    default_path,
    find_record,
    format_ci,
    load_ablation,
    metric_frame,
    paper_table,
    same_settings,
    setting_choices,
    validate_ablation,
)
from awm_lib.book.results.plots import (  # noqa: F401 - re-exported
    _placeholder,
    plot_auc_by_lesion_size,
    plot_forest,
    plot_paper_comparison,
    plot_recall_vs_metric,
    plot_roc_curves,
)

__all__ = [
    "METRICS",
    "SETTING_KEYS",
    "BASELINE",
    "PAPER_CITATION",
    "PAPER_F1_NOTE",
    "PAPER_TABLE",
    "PAPER_ABLATION",
    "ResultsFileError",
    "AblationResults",
    "default_path",
    "load_ablation",
    "validate_ablation",
    "format_ci",
    "ablation_table",
    "metric_frame",
    "find_record",
    "setting_choices",
    "same_settings",
    "paper_table",
    "proposer_swap",
    "headline_configurations",
    "plot_forest",
    "plot_roc_curves",
    "plot_recall_vs_metric",
    "plot_paper_comparison",
    "plot_auc_by_lesion_size",
    "contrasts",
    "claims_markdown",
    "summary_markdown",
    "findings_markdown",
    "claims_table",
    "paired_table",
    "paired_verdict",
    "paired_runs_table",
]
