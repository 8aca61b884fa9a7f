"""The ablation results file: its schema, reading and checking it, tables, and finding records.

The schema's version and metric list (:data:`SCHEMA`, :data:`METRICS`) are
defined once, beside the writer, in :mod:`awm_lib.experiments.ablation_records`
and imported here. Holds the reader's constants (:data:`SETTING_KEYS`,
:data:`BASELINE`) and the paper's numbers (:data:`PAPER_TABLE`,
:data:`PAPER_ABLATION`), :func:`load_ablation` / :func:`validate_ablation`
(the schema itself is described in :mod:`awm_lib.book.results`), the tables
(:func:`ablation_table`, :func:`metric_frame`, :func:`paper_table`) and the
widget's lookup by settings (:func:`find_record`, :func:`setting_choices`).
Everything here is re-exported by :mod:`awm_lib.book.results`; figures are in
:mod:`awm_lib.book.results.plots`, contrasts and generated text in
:mod:`awm_lib.book.results.claims`.
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

from awm_lib.errors import DataError
from awm_lib.experiments.ablation_records import METRICS, SCHEMA  # noqa: F401 - one definition, with its writer
from awm_lib.paths import results_root

SETTING_KEYS = (
    "proposer",
    "topk",
    "crop_size",
    "position",
    "pooling",
    "loss",
    "contrastive_weight",
    "backbone_init",
)
BASELINE = "baseline-full-image"  # the configuration name of the full-image ViT baseline
SCALE_RANK = ("gpu", "cpu-frozen", "cpu-smoke")  # the scale the book discusses first, when a file has several

# --- the paper's numbers (percent), for comparison only ------------------------------------
PAPER_CITATION = (
    "Arora, Borgavi, Miglani, Sanghvi, Shashikumar and Singla, 'Attend what matters: Leveraging vision "
    "foundational models for breast cancer classification using mammograms', ISBI 2026, arXiv 2604.19350 "
    "— VinDr-Mammo test split, cancer = BI-RADS 4/5"
)
#: What the paper's numbers mean; said beside every comparison with its F1 of 54.5.
PAPER_F1_NOTE = (
    "The paper's F1 (54.5) uses the threshold that the reference's public eval.py picks on the TEST set "
    "(its README evaluates checkpoints on test); our F1 uses a threshold chosen on validation. VinDr-Mammo "
    "'cancer' there is breast-level BI-RADS 4 or 5: a radiologist's suspicion, not biopsy-confirmed cancer. "
    "A VinDr-Mammo study is one woman."
)
#: The paper's main table (VinDr-Mammo, percent). Ranges are the spread over its ViT variants.
PAPER_TABLE = (
    {"model": "RoI tokens (full method)", "auc": 86.6, "f1": 54.5},
    {"model": "Mammo-CLIP EfficientNet-B5", "auc": 85.8, "f1": 50.8},
    {"model": "ViT variants (best)", "auc": 83.0, "f1": 50.0},
    {"model": "ViT variants (worst)", "auc": 78.4, "f1": 31.1},
)
#: The paper's ablation, as approximate gains (percentage points) of one change.
PAPER_ABLATION = (
    {
        "factor": "position",
        "from": "none",
        "to": "sinecat+rope1d",
        "d_auc": None,
        "d_f1": 2.0,
        "claim": "the paper's position code (sine code of the box -> Linear, concatenated, + 1-D RoPE) "
        "adds about 2 F1",
    },
    {
        "factor": "loss",
        "from": "bce",
        "to": "bce+repulsive",
        "d_auc": 1.0,
        "d_f1": 1.0,
        "claim": "the repulsive loss on the RoI transformer's outputs adds about 1 F1 and 1 AUC",
    },
    {
        "factor": "method",
        "from": BASELINE,
        "to": "RoI tokens",
        "d_auc": 3.6,
        "d_f1": 4.5,
        "claim": "RoI tokens beat a full-image ViT (by 3.6–8.2 AUC over its variants)",
    },
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

    @property
    def paired(self) -> list[dict]:
        """The paired contrasts (the file's top-level ``contrasts``; see
        :mod:`awm_lib.experiments.ablation_contrasts`)."""
        return [c for c in self.meta.get("contrasts") or [] if isinstance(c, Mapping)]

    def main_scale(self, dataset: str | None = None) -> str | None:
        """The scale the book discusses: the strongest one the file has (gpu > cpu-frozen > cpu-smoke)."""
        have = {r["scale"] for r in self.for_dataset(dataset)}
        for sc in SCALE_RANK:
            if sc in have:
                return sc
        return sorted(have)[0] if have else None


# =====================================================================================
# Reading and checking
# =====================================================================================
def default_path() -> Path:
    return results_root() / "ablation.json"


def load_ablation(
    path: str | os.PathLike | None = None, *, missing_ok: bool = False
) -> AblationResults | None:
    """Read and check an ablation results file (default ``results/ablation.json``).

    A missing file returns ``None`` when ``missing_ok`` (the book's chapters then
    say "no results yet"), else raises :class:`ResultsFileError`; so does a file
    that is not JSON or does not follow the schema.
    """
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        if missing_ok:
            return None
        raise ResultsFileError(
            "no results file here; run `python -m awm_lib ablation` to make it", path=str(path)
        )
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFileError(
            f"not valid JSON ({e}); rerun `python -m awm_lib ablation`", path=str(path)
        ) from e
    res = validate_ablation(obj, path=path)
    return res


def validate_ablation(obj, path: str | os.PathLike | None = None) -> AblationResults:
    """Check a parsed results file against the schema; return it as :class:`AblationResults`."""
    where = None if path is None else str(path)

    def fail(msg: str):
        raise ResultsFileError(
            msg + "; the file must follow the schema of awm_lib/experiments/ablation_records.py", path=where
        )

    if not isinstance(obj, Mapping):
        fail(f"expected a JSON object at the top, got {type(obj).__name__}")
    if obj.get("schema") != SCHEMA:
        fail(f"schema is {obj.get('schema')!r}, this library reads schema {SCHEMA} "
             "(rerun `python -m awm_lib ablation`, which upgrades an older file)")
    records = obj.get("records")
    if not isinstance(records, list):
        fail("'records' must be a list")
    seen = set()
    for i, rec in enumerate(records):
        _check_record(rec, f"records[{i}]", fail)
        key = (rec["dataset"], rec["configuration"], rec["scale"])
        if key in seen:
            fail(
                f"records[{i}]: a second record for dataset {key[0]!r}, configuration {key[1]!r}, scale "
                f"{key[2]!r}"
            )
        seen.add(key)
    contrasts = obj.get("contrasts", [])
    if not isinstance(contrasts, list):
        fail("'contrasts' must be a list")
    for i, c in enumerate(contrasts):
        _check_contrast(c, f"contrasts[{i}]", fail)
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
        if not (
            isinstance(roc, Mapping)
            and isinstance(roc.get("fpr"), list)
            and isinstance(roc.get("tpr"), list)
            and len(roc["fpr"]) == len(roc["tpr"])
        ):
            fail(f"{at}: 'roc' must be null or {{'fpr': [...], 'tpr': [...]}} of equal length")
    if not isinstance(rec.get("seeds"), list):
        fail(f"{at}: 'seeds' must be a list")
    n_runs = rec.get("n_runs")
    if not isinstance(n_runs, int) or isinstance(n_runs, bool) or n_runs < 1:
        fail(f"{at}: 'n_runs' must be a positive integer, got {n_runs!r}")
    if not isinstance(rec.get("backbone"), str) or not rec["backbone"]:
        fail(f"{at}: 'backbone' must name the weights that produced the record, got {rec.get('backbone')!r}")


def _check_contrast(c, at: str, fail) -> None:
    if not isinstance(c, Mapping):
        fail(f"{at} is not an object")
    for key in ("dataset", "scale", "name", "from", "to"):
        if not isinstance(c.get(key), str) or not c[key]:
            fail(f"{at}: '{key}' must be a non-empty string")
    at = f"{at} ({c['name']})"
    for m in ("d_auc", "d_f1"):
        d = c.get(m)
        if not isinstance(d, Mapping):
            fail(f"{at}: {m!r} must be an object with mean, ci_low, ci_high")
        vals = {k: d.get(k) for k in ("mean", "ci_low", "ci_high")}
        if any(v is not None and not (_is_num(v) and -1 <= v <= 1) for v in vals.values()):
            fail(f"{at}: {m!r} values must be differences of fractions in [-1, 1] (or null), got {vals}")
        if None not in vals.values() and not vals["ci_low"] - 1e-9 <= vals["mean"] <= vals["ci_high"] + 1e-9:
            fail(f"{at}: {m} {vals['mean']} lies outside its interval [{vals['ci_low']}, {vals['ci_high']}]")


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
            rows.append(
                {
                    "dataset": r["dataset"],
                    "configuration": r["configuration"],
                    "metric": m,
                    **{
                        k: (np.nan if v.get(k) is None else float(v[k]))
                        for k in ("mean", "ci_low", "ci_high", "sd")
                    },
                }
            )
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


def _get(r: dict, metric: str, key: str) -> float:
    v = (r.get(metric) or {}).get(key)
    return np.nan if v is None else float(v)


def paper_table() -> pd.DataFrame:
    """:data:`PAPER_TABLE` as a DataFrame (percent, VinDr-Mammo), labelled as the paper's.

    ``df.attrs["note"]`` is :data:`PAPER_F1_NOTE` (its F1 threshold was chosen on the test set).
    """
    df = pd.DataFrame(PAPER_TABLE)
    df["source"] = "paper (VinDr-Mammo; F1 threshold chosen on test)"
    df.attrs["note"] = PAPER_F1_NOTE
    return df
