"""The ablation study's results file, as tables and figures for the book.

``python -m awm_lib ablation`` writes ``results/ablation.json``: one *record* per
(dataset, configuration), each with the configuration's ``settings`` (proposer,
top-k, crop size, position code, pooling, loss, contrastive weight, backbone
init) and its test metrics, each a point estimate with a bootstrap 95% interval::

    {"schema": 1, "notes": "...", "records": [
        {"dataset": "mias", "configuration": "roi-rope2d", "scale": "cpu-smoke",
         "settings": {"proposer": "blob", "topk": 5, ...},
         "auc": {"mean": 0.71, "ci_low": 0.60, "ci_high": 0.81, "sd": 0.05},
         "f1": {...}, "sens@fpr0.1": {...}, "sens@fpr0.3": {...}, "sens@fpr0.5": {...},
         "lesion_recall": 0.8, "n_test": 322, "n_test_pos": 51, "seeds": [0], "folds": [0, 1, 2, 3, 4],
         "roc": {"fpr": [...], "tpr": [...]}, "example_overlay": "results/ablation_overlays/...png",
         "command": "...", "device": "cpu", "date": "...", "versions": {...}}]}

This module reads and checks that file (:func:`load_ablation`), turns it into
tables (:func:`ablation_table`, with ``"mean [ci_low, ci_high]"`` strings), finds
the record of a choice of settings (:func:`find_record`, used by the widget of
:mod:`awm_lib.widgets`), draws the figures of the results chapter
(:func:`plot_forest`, :func:`plot_roc_curves`, :func:`plot_recall_vs_metric`,
:func:`plot_paper_comparison`) and compares our one-factor contrasts with the
paper's claims (:func:`contrasts`, :func:`claims_markdown`).

Metrics in the file are fractions in [0, 1]; the paper reports percentages, so
:data:`PAPER_TABLE` is kept in percent and every comparison says which is which.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .paths import results_root
from .viz import PALETTE, _ax, subplots

__all__ = [
    "METRICS", "SETTING_KEYS", "BASELINE", "PAPER_CITATION", "PAPER_TABLE", "PAPER_ABLATION",
    "ResultsFileError", "AblationResults", "default_path", "load_ablation", "validate_ablation",
    "format_ci", "ablation_table", "metric_frame", "find_record", "setting_choices", "same_settings",
    "paper_table", "proposer_swap", "headline_configurations", "plot_forest", "plot_roc_curves", "plot_recall_vs_metric", "plot_paper_comparison",
    "contrasts", "claims_markdown", "summary_markdown", "findings_markdown",
]

SCHEMA = 1
METRICS = ("auc", "f1", "sens@fpr0.1", "sens@fpr0.3", "sens@fpr0.5")
SETTING_KEYS = ("proposer", "topk", "crop_size", "position", "pooling", "loss", "contrastive_weight", "backbone_init")
BASELINE = "baseline-full-image"  # the configuration name of the full-image ViT baseline

# --- the paper's numbers (percent), for comparison only ------------------------------------
PAPER_CITATION = ("Arora et al., 'Attend What Matters: RoI tokens for mammography', ISBI 2026, "
                  "arXiv 2604.19350 — VinDr-Mammo test split, cancer = BI-RADS 4/5")
#: The paper's main table (VinDr-Mammo, percent). Ranges are the spread over its ViT variants.
PAPER_TABLE = (
    {"model": "RoI tokens (full method)", "auc": 86.6, "f1": 54.5},
    {"model": "Mammo-CLIP EfficientNet-B5", "auc": 85.8, "f1": 50.8},
    {"model": "ViT variants (best)", "auc": 83.0, "f1": 50.0},
    {"model": "ViT variants (worst)", "auc": 78.4, "f1": 31.1},
)
#: The paper's ablation, as approximate gains (percentage points) of one change.
PAPER_ABLATION = (
    {"factor": "position", "from": "none", "to": "rope2d", "d_auc": None, "d_f1": 2.0,
     "claim": "a 2-D position code adds about 2 F1"},
    {"factor": "loss", "from": "bce", "to": "bce+repulsive", "d_auc": 1.0, "d_f1": 1.0,
     "claim": "the repulsive contrastive loss adds about 1 F1 and 1 AUC"},
    {"factor": "method", "from": BASELINE, "to": "RoI tokens", "d_auc": 3.6, "d_f1": 4.5,
     "claim": "RoI tokens beat a full-image ViT (by 3.6–8.2 AUC over its variants)"},
)


class ResultsFileError(DataError):
    """``results/ablation.json`` is not a valid results file (the message says where)."""


@dataclass
class AblationResults:
    """The checked contents of an ablation results file."""

    records: list[dict]
    notes: str = ""
    path: Path | None = None
    schema: int = SCHEMA
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def datasets(self) -> list[str]:
        return sorted({r["dataset"] for r in self.records})

    @property
    def scales(self) -> list[str]:
        return sorted({r["scale"] for r in self.records})

    @property
    def skipped(self) -> list[dict]:
        """Configurations the study could not run here (``{"dataset", "configuration", "reason"}``)."""
        return [s for s in self.meta.get("skipped") or [] if isinstance(s, Mapping)]

    def for_dataset(self, dataset: str | None) -> list[dict]:
        return [r for r in self.records if dataset is None or r["dataset"] == dataset]


# =====================================================================================
# Reading and checking
# =====================================================================================
def default_path() -> Path:
    return results_root() / "ablation.json"


def load_ablation(path: str | os.PathLike | None = None, *, missing_ok: bool = False) -> AblationResults | None:
    """Read and check an ablation results file (default ``results/ablation.json``).

    A missing file returns ``None`` when ``missing_ok`` (the book's chapters then
    say "no results yet"), else raises :class:`ResultsFileError`; so does a file
    that is not JSON or does not follow the schema.
    """
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        if missing_ok:
            return None
        raise ResultsFileError("no results file here; run `python -m awm_lib ablation` to make it", path=str(path))
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFileError(f"not valid JSON ({e}); rerun `python -m awm_lib ablation`", path=str(path)) from e
    res = validate_ablation(obj, path=path)
    return res


def validate_ablation(obj, path: str | os.PathLike | None = None) -> AblationResults:
    """Check a parsed results file against the schema; return it as :class:`AblationResults`."""
    where = None if path is None else str(path)

    def fail(msg: str):
        raise ResultsFileError(msg + "; the file must follow the schema in awm_lib/results.py", path=where)

    if not isinstance(obj, Mapping):
        fail(f"expected a JSON object at the top, got {type(obj).__name__}")
    if obj.get("schema") != SCHEMA:
        fail(f"schema is {obj.get('schema')!r}, this library reads schema {SCHEMA}")
    records = obj.get("records")
    if not isinstance(records, list):
        fail("'records' must be a list")
    seen = set()
    for i, rec in enumerate(records):
        _check_record(rec, f"records[{i}]", fail)
        key = (rec["dataset"], rec["configuration"], rec["scale"])
        if key in seen:
            fail(f"records[{i}]: a second record for dataset {key[0]!r}, configuration {key[1]!r}, scale {key[2]!r}")
        seen.add(key)
    meta = {k: v for k, v in obj.items() if k not in ("schema", "records", "notes")}
    return AblationResults(records=list(records), notes=str(obj.get("notes") or ""),
                           path=None if path is None else Path(path), meta=meta)


def _check_record(rec, at: str, fail) -> None:
    if not isinstance(rec, Mapping):
        fail(f"{at} is not an object")
    for key in ("dataset", "configuration", "scale"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            fail(f"{at}: '{key}' must be a non-empty string")
    at = f"{at} ({rec['configuration']})"
    settings = rec.get("settings")
    if not isinstance(settings, Mapping):
        fail(f"{at}: 'settings' must be an object")
    missing = [k for k in SETTING_KEYS if k not in settings]
    if missing:
        fail(f"{at}: settings lack {missing}")
    for m in METRICS:
        _check_metric(rec.get(m), f"{at}: {m!r}", fail)
    n = rec.get("n_test")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        fail(f"{at}: 'n_test' must be a positive integer, got {n!r}")
    lr = rec.get("lesion_recall")
    if lr is not None and not (_is_num(lr) and 0 <= lr <= 1):
        fail(f"{at}: 'lesion_recall' must be null or a number in [0, 1], got {lr!r}")
    roc = rec.get("roc")
    if roc is not None:
        if not (isinstance(roc, Mapping) and isinstance(roc.get("fpr"), list) and isinstance(roc.get("tpr"), list)
                and len(roc["fpr"]) == len(roc["tpr"])):
            fail(f"{at}: 'roc' must be null or {{'fpr': [...], 'tpr': [...]}} of equal length")
    if not isinstance(rec.get("seeds"), list):
        fail(f"{at}: 'seeds' must be a list")


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_metric(m, at: str, fail) -> None:
    if not isinstance(m, Mapping):
        fail(f"{at} must be an object with mean, ci_low, ci_high")
    vals = {}
    for k in ("mean", "ci_low", "ci_high"):
        v = m.get(k)
        if v is None:  # undefined (e.g. no cancers in a test fold): allowed, shown as "n/a"
            continue
        if not _is_num(v) or not 0 <= v <= 1:
            fail(f"{at}.{k} must be a fraction in [0, 1] (or null), got {v!r}")
        vals[k] = v
    if len(vals) == 3 and not vals["ci_low"] - 1e-9 <= vals["mean"] <= vals["ci_high"] + 1e-9:
        fail(f"{at}: mean {vals['mean']} lies outside its interval [{vals['ci_low']}, {vals['ci_high']}]")


# =====================================================================================
# Tables
# =====================================================================================
def format_ci(m: Mapping | None, digits: int = 3) -> str:
    """``{"mean": .8123, "ci_low": .7, "ci_high": .9}`` -> ``"0.812 [0.700, 0.900]"``."""
    if not m or m.get("mean") is None:
        return "n/a"
    s = f"{m['mean']:.{digits}f}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        s += f" [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"
    return s


def _records(results: AblationResults | Iterable[dict], dataset: str | None = None) -> list[dict]:
    recs = results.records if isinstance(results, AblationResults) else list(results)
    return [r for r in recs if dataset is None or r["dataset"] == dataset]


def ablation_table(results: AblationResults | Iterable[dict], metrics: Sequence[str] = METRICS,
                   dataset: str | None = None, digits: int = 3, settings: bool = False) -> pd.DataFrame:
    """One row per record: the metrics as ``"mean [ci_low, ci_high]"``, lesion recall, test size.

    ``settings=True`` adds a column per setting (proposer, top-k, ...).
    """
    rows = []
    for r in _records(results, dataset):
        row = {"dataset": r["dataset"], "configuration": r["configuration"]}
        if settings:
            row.update({k: r["settings"].get(k) for k in SETTING_KEYS})
        row.update({m: format_ci(r.get(m), digits) for m in metrics})
        lr = r.get("lesion_recall")
        row["lesion recall"] = "n/a" if lr is None else f"{lr:.{digits}f}"
        row["n_test (pos)"] = f"{r['n_test']} ({r.get('n_test_pos', '?')})"
        row["runs"] = _runs(r)
        row["scale"] = r["scale"]
        rows.append(row)
    return pd.DataFrame(rows)


def _runs(r: dict) -> str:
    folds, seeds = r.get("folds") or [], r.get("seeds") or []
    parts = []
    if folds:
        parts.append(f"{len(folds)} folds")
    if seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
    return " × ".join(parts) or "?"


def metric_frame(results: AblationResults | Iterable[dict], metrics: Sequence[str] = METRICS,
                 dataset: str | None = None) -> pd.DataFrame:
    """Long numeric table: one row per (record, metric) with mean, ci_low, ci_high, sd."""
    rows = []
    for r in _records(results, dataset):
        for m in metrics:
            v = r.get(m) or {}
            rows.append({"dataset": r["dataset"], "configuration": r["configuration"], "metric": m,
                         **{k: (np.nan if v.get(k) is None else float(v[k])) for k in ("mean", "ci_low", "ci_high", "sd")}})
    return pd.DataFrame(rows)


# =====================================================================================
# Selecting a record by its settings (the widget's lookup)
# =====================================================================================
def same_settings(a: Mapping, b: Mapping, keys: Sequence[str] = SETTING_KEYS) -> bool:
    """Whether two settings agree on ``keys`` (numbers compared with a tolerance)."""
    for k in keys:
        x, y = a.get(k), b.get(k)
        if _is_num(x) and _is_num(y):
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def find_record(results: AblationResults | Iterable[dict] | None, settings: Mapping,
                dataset: str | None = None) -> dict | None:
    """The record whose settings equal ``settings`` (on every key of :data:`SETTING_KEYS`), or None.

    The contrastive weight does not matter when the loss is plain BCE, so it is
    ignored then. With several datasets, pass ``dataset``; otherwise the first match wins.
    """
    if results is None:
        return None
    keys = [k for k in SETTING_KEYS if not (k == "contrastive_weight" and settings.get("loss") == "bce")]
    for r in _records(results, dataset):
        if same_settings(r["settings"], settings, keys):
            return r
    return None


def setting_choices(results: AblationResults | Iterable[dict] | None,
                    defaults: Mapping[str, Sequence] | None = None) -> dict[str, list]:
    """For each setting, the values the grid has (plus ``defaults``), sorted."""
    out: dict[str, set] = {k: set((defaults or {}).get(k, ())) for k in SETTING_KEYS}
    for r in _records(results or []):
        for k in SETTING_KEYS:
            out[k].add(r["settings"][k])
    return {k: sorted(v, key=lambda x: (isinstance(x, str), x)) for k, v in out.items()}


# =====================================================================================
# Figures
# =====================================================================================
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


def _get(r: dict, metric: str, key: str) -> float:
    v = (r.get(metric) or {}).get(key)
    return np.nan if v is None else float(v)


def plot_roc_curves(results: AblationResults | Iterable[dict], configurations: Sequence[str] | None = None,
                    dataset: str | None = None, ax=None):
    """The test ROC curves of some configurations (all with a stored curve by default)."""
    from .viz import plot_roc

    ax = _ax(ax, width=4.8, height=4.8)
    recs = _records(results or [], dataset)
    if not any(r.get("roc") for r in recs):
        return _placeholder("no ROC curves yet: run `python -m awm_lib ablation`", ax)
    for r in recs:
        if configurations is not None and r["configuration"] not in configurations:
            continue
        if r.get("roc"):
            plot_roc(r["roc"]["fpr"], r["roc"]["tpr"], auc=_get(r, "auc", "mean"), label=r["configuration"], ax=ax)
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
        ax.axhline(_get(base[0], metric, "mean"), color="grey", linestyle="--", linewidth=1, label="full-image baseline")
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


def paper_table() -> pd.DataFrame:
    """:data:`PAPER_TABLE` as a DataFrame (percent, VinDr-Mammo), labelled as the paper's."""
    df = pd.DataFrame(PAPER_TABLE)
    df["source"] = "paper (VinDr-Mammo)"
    return df


def plot_paper_comparison(results: AblationResults | Iterable[dict] | None = None, dataset: str | None = None,
                          configurations: Sequence[str] | None = None, ax=None):
    """AUC and F1 (percent) of the paper's models beside ours (when given), as grouped bars.

    Bars are labelled with their source: the paper's numbers are VinDr-Mammo, ours
    are whatever dataset and scale the results file holds — not the same test.
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
    return ax


# =====================================================================================
# One-factor contrasts, and the paper's claims
# =====================================================================================
def contrasts(results: AblationResults | Iterable[dict], dataset: str | None = None) -> pd.DataFrame:
    """Every pair of records that differ in exactly one setting, as a row of gains.

    Columns: dataset, factor, from, to, the two configurations, d_auc and d_f1 (in
    percentage points, ``to`` minus ``from``), and ``overlap``: whether the two
    configurations' 95% intervals of AUC overlap (then the difference is not resolved).
    """
    rows = []
    recs = [r for r in _records(results, dataset) if r["configuration"] != BASELINE]
    for i, a in enumerate(recs):
        for b in recs[i + 1:]:
            if a["dataset"] != b["dataset"]:
                continue
            diff = [k for k in SETTING_KEYS if not same_settings(a["settings"], b["settings"], (k,))]
            if "loss" in diff and "contrastive_weight" in diff:  # the weight belongs to the loss terms
                diff.remove("contrastive_weight")
            if len(diff) != 1:
                continue
            k = diff[0]
            lo, hi = sorted((a, b), key=lambda r: _order(k, r["settings"][k]))
            rows.append(_contrast_row(a["dataset"], k, lo, hi))
    base = {r["dataset"]: r for r in _records(results, dataset) if r["configuration"] == BASELINE}
    for ds, b in base.items():
        best = _full_method(results, ds)
        if best is not None:
            rows.append(_contrast_row(ds, "method", b, best))
    cols = ["dataset", "factor", "from", "to", "from_config", "to_config", "d_auc", "d_f1", "overlap_auc", "overlap_f1"]
    return pd.DataFrame(rows, columns=cols)


_ORDER = {"position": ["none", "sine", "rope2d"], "loss": ["bce", "bce+repulsive", "bce+supcon", "bce+repulsive+supcon"],
          "backbone_init": ["random", "ssl", "dinov2"], "proposer": ["random", "none", "blob", "gdino", "oracle"]}


def _order(key: str, value):
    order = _ORDER.get(key)
    if order and value in order:
        return (0, order.index(value), "")
    return (1, value if _is_num(value) else 0, str(value))


def _overlap(a: dict, b: dict, m: str) -> bool | None:
    vals = [_get(a, m, "ci_low"), _get(a, m, "ci_high"), _get(b, m, "ci_low"), _get(b, m, "ci_high")]
    if any(np.isnan(vals)):
        return None
    return not (vals[1] < vals[2] or vals[3] < vals[0])


def _contrast_row(ds: str, k: str, lo: dict, hi: dict) -> dict:
    return {"dataset": ds, "factor": k,
            "from": BASELINE if k == "method" else lo["settings"][k],
            "to": hi["configuration"] if k == "method" else hi["settings"][k],
            "from_config": lo["configuration"], "to_config": hi["configuration"],
            "d_auc": 100 * (_get(hi, "auc", "mean") - _get(lo, "auc", "mean")),
            "d_f1": 100 * (_get(hi, "f1", "mean") - _get(lo, "f1", "mean")),
            "overlap_auc": _overlap(lo, hi, "auc"), "overlap_f1": _overlap(lo, hi, "f1")}


def _full_method(results, dataset: str) -> dict | None:
    """Our "full method", chosen by its settings, never by its score: the paper's recipe
    (a real proposer, 2-D RoPE, BCE + repulsive loss) with the baseline's backbone init;
    ``roi-rope2d-repulsive`` when the file has it."""
    recs = [r for r in _records(results, dataset) if r["configuration"] != BASELINE]
    named = [r for r in recs if r["configuration"] == "roi-rope2d-repulsive"]
    if named:
        return named[0]
    base = [r for r in _records(results, dataset) if r["configuration"] == BASELINE]
    init = base[0]["settings"]["backbone_init"] if base else "random"
    recipe = [r for r in recs if r["settings"]["proposer"] in ("blob", "gdino") and r["settings"]["position"] == "rope2d"
              and r["settings"]["loss"] == "bce+repulsive"]
    same_init = [r for r in recipe if r["settings"]["backbone_init"] == init]
    pool = same_init or recipe
    return pool[0] if pool else None


def headline_configurations(results: AblationResults | None, dataset: str | None = None) -> list[str]:
    """The baseline and our full method (chosen by settings, see :func:`contrasts`), where present."""
    if results is None:
        return []
    out = []
    for ds in ([dataset] if dataset else results.datasets):
        if any(r["configuration"] == BASELINE for r in results.for_dataset(ds)):
            out.append(BASELINE)
        full = _full_method(results, ds)
        if full is not None:
            out.append(full["configuration"])
    return list(dict.fromkeys(out))


def proposer_swap(results: AblationResults | Iterable[dict] | None, dataset: str | None = None) -> list[dict]:
    """The records that differ from the full method only in the proposer (and the full
    method itself), with a lesion recall, sorted by it. Without a full method: every
    record with a lesion recall."""
    recs = [r for r in _records(results or [], dataset) if r.get("lesion_recall") is not None]
    fulls = {ds: _full_method(results, ds) for ds in {r["dataset"] for r in recs}}
    keys = [k for k in SETTING_KEYS if k != "proposer"]
    swap = [r for r in recs if fulls[r["dataset"]] is None or same_settings(r["settings"], fulls[r["dataset"]]["settings"], keys)]
    return sorted(swap, key=lambda r: (r["dataset"], r["lesion_recall"]))


def _verdict(d: float, paper: float | None, overlap: bool | None) -> str:
    if paper is None or d != d:
        return "—"
    if overlap is None:
        return "no interval to judge"
    same = (d > 0) == (paper > 0) and d != 0
    if overlap:
        return "same direction, not resolved (CIs overlap)" if same else "not reproduced (CIs overlap)"
    return "held" if same else "contradicted"


def claims_markdown(results: AblationResults | None, dataset: str | None = None) -> str:
    """A Markdown table (and a sentence per claim) comparing our contrasts with :data:`PAPER_ABLATION`.

    Written from the numbers, so it stays true whatever they are. A claim is
    "held" only when our gain has the paper's sign AND the two configurations'
    95% intervals do not overlap — a conservative test (overlapping intervals can
    still hide a real difference), which is the honest one for small test sets.
    """
    if results is None or not results.records:
        return ("*No ablation results yet*: `results/ablation.json` does not exist, so no claim of the "
                "paper can be checked here. Run `python -m awm_lib ablation` to make it.")
    table = contrasts(results, dataset)
    lines = ["| paper's claim | our contrast | ΔAUC (pp) | ΔF1 (pp) | verdict (AUC / F1) |",
             "|---|---|---|---|---|"]
    n = 0
    for claim in PAPER_ABLATION:
        rows = table[(table["factor"] == claim["factor"])]
        if claim["factor"] != "method":
            rows = rows[(rows["from"] == claim["from"]) & (rows["to"] == claim["to"])]
        if rows.empty:
            lines.append(f"| {claim['claim']} | *not in this grid* | — | — | not tested |")
            continue
        for _, row in rows.iterrows():
            n += 1
            v_auc = _verdict(row["d_auc"], claim["d_auc"], row["overlap_auc"])
            v_f1 = _verdict(row["d_f1"], claim["d_f1"], row["overlap_f1"])
            lines.append(f"| {claim['claim']} | {row['dataset']}: {row['from_config']} → {row['to_config']} | "
                         f"{row['d_auc']:+.1f} | {row['d_f1']:+.1f} | {v_auc} / {v_f1} |")
    scales = ", ".join(results.scales)
    lines.append("")
    lines.append(f"{n} contrast(s) of the paper's claims found in the grid (scale: {scales}). "
                 "ΔAUC and ΔF1 are in percentage points, the second configuration minus the first; "
                 "a claim is *held* only if the sign matches the paper's and the two 95% intervals are disjoint.")
    return "\n".join(lines)


# =====================================================================================
# Text generated from the numbers (so the chapter stays true whatever they are)
# =====================================================================================
def summary_markdown(results: AblationResults | None) -> str:
    """Where the numbers come from: datasets, scales, devices, dates, what was skipped and why."""
    if results is None or not results.records:
        return ("**No precomputed results yet.** `results/ablation.json` does not exist; run "
                "`python -m awm_lib ablation` (add `--scale gpu` on a GPU) to make it. The tables and "
                "figures below are empty until then; the paper's numbers are shown for reference.")
    recs = results.records
    devices = sorted({str(r.get("device")) for r in recs})
    dates = sorted(str(r["date"]) for r in recs if r.get("date"))
    lines = [f"**{len(recs)} configurations** on {', '.join(results.datasets)}, scale "
             f"{', '.join(f'`{x}`' for x in results.scales)}; trained on {', '.join(devices)}"
             + (f", {dates[0][:10]} to {dates[-1][:10]}." if dates else ".")]
    for sk in results.skipped:
        lines.append(f"- skipped `{sk.get('configuration')}` ({sk.get('dataset')}): {sk.get('reason')}")
    return "\n".join(lines)


def _pp(m: dict | None) -> str:
    return format_ci(None if m is None else {k: (None if m.get(k) is None else 100 * m[k]) for k in ("mean", "ci_low", "ci_high")}, 1)


def findings_markdown(results: AblationResults | None, dataset: str | None = None) -> str:
    """Bullet points read off the numbers: chance level, best and worst, baseline vs method, proposer swap."""
    if results is None or not results.records:
        return "*No results to discuss yet.*"
    out = []
    for ds in ([dataset] if dataset else results.datasets):
        recs = [r for r in results.for_dataset(ds) if _get(r, "auc", "mean") == _get(r, "auc", "mean")]
        if not recs:
            continue
        at_chance = [r["configuration"] for r in recs if _get(r, "auc", "ci_low") <= 0.5 <= _get(r, "auc", "ci_high")]
        out.append(f"- **{ds}**: {len(at_chance)} of {len(recs)} configurations have an AUC interval that "
                   f"includes 0.5 (chance){': ' + ', '.join(f'`{c}`' for c in at_chance) if at_chance else ''}.")
        if at_chance and len(at_chance) == len(recs):
            out.append("- With every AUC interval covering chance, no difference between these configurations "
                       "can be read as an effect of the change that separates them.")
        pos, n = recs[0].get("n_test_pos"), recs[0]["n_test"]
        if isinstance(pos, int) and 0 < pos <= n:
            p = pos / n
            out.append(f"- For scale: calling *every* image cancer gives F1 = 2p/(1+p) = {2 * p / (1 + p):.3f} at this "
                       f"test prevalence ({pos} of {n}); an F1 near that number is no skill.")
        best = max(recs, key=lambda r: _get(r, "auc", "mean"))
        worst = min(recs, key=lambda r: _get(r, "auc", "mean"))
        out.append(f"- Highest AUC: `{best['configuration']}`, {_pp(best['auc'])}; lowest: "
                   f"`{worst['configuration']}`, {_pp(worst['auc'])} (percent, 95% CI).")
        base = [r for r in recs if r["configuration"] == BASELINE]
        full = _full_method(results, ds)
        if base and full is not None:
            d = 100 * (_get(full, "auc", "mean") - _get(base[0], "auc", "mean"))
            rel = "above" if d > 0 else "below" if d < 0 else "equal to"
            out.append(f"- The paper's recipe (`{full['configuration']}`, AUC {_pp(full['auc'])}) is {abs(d):.1f} "
                       f"points {rel} the full-image baseline (AUC {_pp(base[0]['auc'])})"
                       + ("; their intervals overlap." if _overlap(full, base[0], "auc") else "; their intervals are disjoint."))
        swap = [r for r in proposer_swap(results, ds) if r in recs]
        if len(swap) >= 2:
            aucs = [_get(r, "auc", "mean") for r in swap]
            trend = ("rises with every step up in lesion recall" if all(b > a for a, b in zip(aucs, aucs[1:]))
                     else "does not rise monotonically with lesion recall")
            pts = "; ".join(f"`{r['configuration']}` recall {r['lesion_recall']:.2f} → AUC {100 * a:.1f}"
                            for r, a in zip(swap, aucs))
            out.append(f"- Proposer swap: AUC {trend} ({pts}).")
    return "\n".join(out)
