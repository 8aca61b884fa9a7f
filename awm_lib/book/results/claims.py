"""One-factor contrasts of an ablation results file, the paper's claims, and text read off the numbers.

:func:`contrasts` pairs every two records that differ in one setting;
:func:`claims_markdown` compares those gains with the paper's
(:data:`~awm_lib.book.results.file.PAPER_ABLATION`); :func:`summary_markdown` and
:func:`findings_markdown` write the chapter's text from the numbers, so it stays
true whatever they are. "Our full method" is chosen by its settings, never by
its score (:func:`headline_configurations`, :func:`proposer_swap`).
Re-exported by :mod:`awm_lib.book.results`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from awm_lib.book.results.file import (
    BASELINE,
    PAPER_ABLATION,
    SETTING_KEYS,
    AblationResults,
    _get,
    _is_num,
    _records,
    format_ci,
    same_settings,
)


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
