"""One-factor contrasts of an ablation results file, the paper's claims, and text read off the numbers.

:func:`contrasts` pairs every two records that differ in one setting;
:func:`claims_markdown` compares those gains with the paper's
(:data:`~awm_lib.book.results.file.PAPER_ABLATION`); :func:`summary_markdown` and
:func:`findings_markdown` write the chapter's text from the numbers, so it stays
true whatever they are. "Our full method" is chosen by its settings, never by
its score (:func:`headline_configurations`, :func:`proposer_swap`).
Re-exported by :mod:`awm_lib.book.results`.

Explained in the book: chapter 8, *Results* (``notebooks/08_results.ipynb``).
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
from awm_lib.experiments.ablation import paired_contrast, run_predictions
from awm_lib.experiments.ablation_contrasts import resolved
from awm_lib.experiments.ablation_study import PAPER_METHOD


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
            # pad_rois and repulsive_on are held fixed too (records written before they existed: the old
            # defaults)
            diff = [k for k in (*SETTING_KEYS, "pad_rois", "repulsive_on")
                    if not same_settings(_with_defaults(a["settings"]), _with_defaults(b["settings"]), (k,))]
            if "loss" in diff:  # the weight, and where the repulsive term acts, belong to the loss terms
                diff = [k for k in diff if k not in ("contrastive_weight", "repulsive_on")]
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
    cols = [
        "dataset",
        "factor",
        "from",
        "to",
        "from_config",
        "to_config",
        "d_auc",
        "d_f1",
        "overlap_auc",
        "overlap_f1",
    ]
    return pd.DataFrame(rows, columns=cols)


def _with_defaults(settings: dict) -> dict:
    """Settings of records written before ``pad_rois`` / ``repulsive_on`` were recorded: what they used
    then."""
    repulsive = "repulsive" in str(settings.get("loss", ""))
    return {"pad_rois": "mask", "repulsive_on": "embeddings" if repulsive else "none", **settings}


_ORDER = {
    "position": ["none", "sine", "rope2d"],
    "loss": ["bce", "bce+repulsive", "bce+supcon", "bce+repulsive+supcon"],
    "backbone_init": ["random", "ssl", "dinov2"],
    "proposer": ["random", "none", "blob", "gdino", "oracle"],
}


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
    """Our "full method", chosen by its settings, never by its score: ``roi-paper`` (the
    reference's position code and repulsive loss, blob proposer) when the file has it, else
    ``roi-rope2d-repulsive``, else the recipe (a real proposer, 2-D RoPE, BCE + repulsive
    loss) with the baseline's backbone init."""
    recs = [r for r in _records(results, dataset) if r["configuration"] != BASELINE]
    for name in (
        PAPER_METHOD,
        "roi-rope2d-repulsive",
    ):  # the reference's recipe; older files: the project's variant
        named = [r for r in recs if r["configuration"] == name]
        if named:
            return named[0]
    base = [r for r in _records(results, dataset) if r["configuration"] == BASELINE]
    init = base[0]["settings"]["backbone_init"] if base else "random"
    recipe = [
        r
        for r in recs
        if r["settings"]["proposer"] in ("blob", "gdino")
        and r["settings"]["position"] == "rope2d"
        and r["settings"]["loss"] == "bce+repulsive"
    ]
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
    swap = [
        r
        for r in recs
        if fulls[r["dataset"]] is None or same_settings(r["settings"], fulls[r["dataset"]]["settings"], keys)
    ]
    return sorted(swap, key=lambda r: (r["dataset"], r["lesion_recall"]))


def _verdict(d: float, paper: float | None, overlap: bool | None) -> str:
    """The old verdict on MARGINAL intervals (kept for :func:`contrasts`' descriptive table only)."""
    if paper is None or d != d:
        return "—"
    if overlap is None:
        return "no interval to judge"
    same = (d > 0) == (paper > 0) and d != 0
    if overlap:
        return "same direction, not resolved (CIs overlap)" if same else "not reproduced (CIs overlap)"
    return "held" if same else "contradicted"


def paired_verdict(delta: dict | None, paper: float | None) -> str:
    """A claim's verdict on a PAIRED interval: held / contradicted when it excludes 0, else not resolved."""
    if paper is None:
        return "—"
    if not delta or delta.get("mean") is None:
        return "no estimate"
    lo, hi = delta.get("ci_low"), delta.get("ci_high")
    if lo is None or hi is None:
        return "no interval to judge"
    if lo <= 0 <= hi:
        return "not resolved (interval includes 0)"
    return "held" if (lo > 0) == (paper > 0) else "contradicted"


def _pp_delta(d: dict | None) -> str:
    """A difference of fractions as signed percentage points with its interval: ``+2.1 [-0.4, +4.6]``."""
    if not d or d.get("mean") is None:
        return "—"
    s = f"{100 * d['mean']:+.1f}"
    if d.get("ci_low") is not None and d.get("ci_high") is not None:
        s += f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
    return s


def _paired(results, dataset: str | None, scale: str | None) -> list[dict]:
    if results is None or not isinstance(results, AblationResults):
        return []
    return [
        c
        for c in results.paired
        if (dataset is None or c["dataset"] == dataset) and (scale is None or c["scale"] == scale)
    ]


def paired_table(
    results: AblationResults | None, dataset: str | None = None, scale: str | None = None
) -> pd.DataFrame:
    """The file's paired contrasts as a table: ΔAUC and ΔF1 in percentage points with their paired 95%
    intervals.

    ``scale`` defaults to the file's main scale (:meth:`AblationResults.main_scale`).
    Empty cells are "—", never NaN.
    """
    cols = [
        "dataset",
        "contrast",
        "from",
        "to",
        "ΔAUC (pp) [95% CI]",
        "ΔF1 (pp) [95% CI]",
        "AUC resolved",
        "women",
        "scale",
    ]
    if results is None:
        return pd.DataFrame(columns=cols)
    scale = scale or results.main_scale(dataset)
    rows = []
    for c in _paired(results, dataset, scale):
        res = resolved(c["d_auc"])
        rows.append({"dataset": c["dataset"], "contrast": c["name"], "from": c["from"], "to": c["to"],
                     "ΔAUC (pp) [95% CI]": _pp_delta(c["d_auc"]), "ΔF1 (pp) [95% CI]": _pp_delta(c["d_f1"]),
                     "AUC resolved": "—" if res is None else ("yes" if res else "no"),
                     "women": c.get("n_women", "—"), "scale": c["scale"]})
    return pd.DataFrame(rows, columns=cols)


def claims_table(
    results: AblationResults | None, dataset: str | None = None, scale: str | None = None
) -> pd.DataFrame:
    """The paper's claims (:data:`PAPER_ABLATION`) against our PAIRED contrasts, one row per claim.

    A claim is *held* when the paired 95% interval of our difference excludes 0 on
    the paper's side, *contradicted* when it excludes 0 on the other side, and *not
    resolved* when it includes 0 (two configurations' marginal intervals are never
    compared: they share the test women, and the paired bootstrap keeps that).
    Empty cells are "—", never NaN.
    """
    cols = ["paper's claim", "our contrast", "ΔAUC (pp) [95% CI]", "ΔF1 (pp) [95% CI]", "verdict (AUC / F1)"]
    if results is None or not results.records:
        return pd.DataFrame(columns=cols)
    scale = scale or results.main_scale(dataset)
    pairs = _paired(results, dataset, scale)
    rows = []
    for claim in PAPER_ABLATION:
        mine = [c for c in pairs if c.get("claim") == claim["factor"]]
        if not mine:
            rows.append(
                {
                    cols[0]: claim["claim"],
                    cols[1]: "not in this grid (no paired contrast)",
                    cols[2]: "—",
                    cols[3]: "—",
                    cols[4]: "not tested",
                }
            )
            continue
        for c in mine:
            verdict = (
                f"{paired_verdict(c['d_auc'], claim['d_auc'])} / {paired_verdict(c['d_f1'], claim['d_f1'])}"
            )
            rows.append({cols[0]: claim["claim"], cols[1]: f"{c['dataset']}: {c['from']} → {c['to']}",
                         cols[2]: _pp_delta(c["d_auc"]), cols[3]: _pp_delta(c["d_f1"]), cols[4]: verdict})
    return pd.DataFrame(rows, columns=cols)


def claims_markdown(
    results: AblationResults | None, dataset: str | None = None, scale: str | None = None
) -> str:
    """The sentence under :func:`claims_table`: how many claims were tested, at which scale, and the rule."""
    if results is None or not results.records:
        return ("*No ablation results yet*: `results/ablation.json` does not exist, so no claim of the "
                "paper can be checked here. Run `python -m awm_lib ablation` to make it.")
    scale = scale or results.main_scale(dataset)
    table = claims_table(results, dataset, scale)
    n = int((table["verdict (AUC / F1)"] != "not tested").sum())
    return (
        f"{n} of {len(PAPER_ABLATION)} claims of the paper have a paired contrast in the grid (scale "
        f"`{scale}`). "
        "ΔAUC and ΔF1 are in percentage points, the second configuration minus the first, with a 95% "
        "interval "
        "from a paired bootstrap that resamples women for both configurations at once. A claim is *held* "
        "only "
        "if that interval excludes 0 on the paper's side, *contradicted* if it excludes 0 on the other side."
    )


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
    return format_ci(
        None
        if m is None
        else {k: (None if m.get(k) is None else 100 * m[k]) for k in ("mean", "ci_low", "ci_high")},
        1,
    )


def findings_markdown(results: AblationResults | None, dataset: str | None = None) -> str:
    """Bullet points read off the numbers: chance level, best and worst, baseline vs method, proposer swap."""
    if results is None or not results.records:
        return "*No results to discuss yet.*"
    out = []
    for ds in ([dataset] if dataset else results.datasets):
        scale = results.main_scale(ds)
        recs = [
            r
            for r in results.for_dataset(ds)
            if _get(r, "auc", "mean") == _get(r, "auc", "mean") and r["scale"] == scale
        ]
        if not recs:
            continue
        at_chance = [
            r["configuration"] for r in recs if _get(r, "auc", "ci_low") <= 0.5 <= _get(r, "auc", "ci_high")
        ]
        above = [r for r in recs if _get(r, "auc", "ci_low") > 0.5]
        out.append(
            f"- **{ds}** (scale `{scale}`): {len(at_chance)} of {len(recs)} configurations have an AUC "
            "interval that "
            f"includes 0.5 (chance){': ' + ', '.join(f'`{c}`' for c in at_chance) if at_chance else ''}."
        )
        out.append(
            f"- {len(above)} of {len(recs)} have an AUC interval whose lower end is above 0.5"
            + (
                ": "
                + "; ".join(f"`{r['configuration']}` {_pp(r['auc'])}" for r in above)
                + " (percent, 95% CI)."
                if above
                else "."
            )
        )
        if at_chance and len(at_chance) == len(recs):
            out.append(
                "- With every AUC interval covering chance, no difference between these configurations "
                "can be read as an effect of the change that separates them."
            )
        pos, n = recs[0].get("n_test_pos"), recs[0]["n_test"]
        if isinstance(pos, int) and 0 < pos <= n:
            p = pos / n
            out.append(
                f"- For scale: calling *every* image cancer gives F1 = 2p/(1+p) = {2 * p / (1 + p):.3f} at "
                "this "
                f"test prevalence ({pos} of {n}); an F1 near that number is no skill."
            )
        best = max(recs, key=lambda r: _get(r, "auc", "mean"))
        worst = min(recs, key=lambda r: _get(r, "auc", "mean"))
        out.append(f"- Highest AUC: `{best['configuration']}`, {_pp(best['auc'])}; lowest: "
                   f"`{worst['configuration']}`, {_pp(worst['auc'])} (percent, 95% CI).")
        base = [r for r in recs if r["configuration"] == BASELINE]
        full = _full_method(recs, ds)
        pairs = {c["name"]: c for c in _paired(results, ds, scale)}
        if base and full is not None:
            d = 100 * (_get(full, "auc", "mean") - _get(base[0], "auc", "mean"))
            rel = "above" if d > 0 else "below" if d < 0 else "equal to"
            m = pairs.get("method")
            if m is not None and m["to"] == full["configuration"]:
                res = resolved(m["d_auc"])
                tail = f"; paired ΔAUC {_pp_delta(m['d_auc'])} pp, " + (
                    "an interval that excludes 0." if res else "an interval that includes 0: not resolved."
                )
            else:
                tail = (
                    "; their intervals overlap."
                    if _overlap(full, base[0], "auc")
                    else "; their intervals are disjoint."
                )
            out.append(
                f"- The paper's recipe (`{full['configuration']}`, AUC {_pp(full['auc'])}) is {abs(d):.1f} "
                f"points {rel} the full-image baseline (AUC {_pp(base[0]['auc'])})" + tail
            )
        swap = [r for r in proposer_swap(recs, ds) if r in recs]
        if len(swap) >= 2:
            aucs = [_get(r, "auc", "mean") for r in swap]
            trend = ("rises with every step up in lesion recall" if all(b > a for a, b in zip(aucs, aucs[1:]))
                     else "does not rise monotonically with lesion recall")
            pts = "; ".join(f"`{r['configuration']}` recall {r['lesion_recall']:.2f} → AUC {100 * a:.1f}"
                            for r, a in zip(swap, aucs))
            out.append(f"- Proposer swap: AUC {trend} ({pts}).")
            for c in pairs.values():
                if c["factor"] == "proposer":
                    res = resolved(c["d_auc"])
                    out.append(
                        f"  - `{c['from']}` → `{c['to']}`: paired ΔAUC {_pp_delta(c['d_auc'])} pp"
                        + (
                            ""
                            if res is None
                            else (" (resolved)" if res else " (not resolved: the interval includes 0)")
                        )
                        + "."
                    )
        others = [
            f"{c['name']} (`{c['from']}` → `{c['to']}`) {_pp_delta(c['d_auc'])} pp"
            for c in pairs.values()
            if c["factor"] not in ("proposer", "method") and resolved(c["d_auc"])
        ]
        out.append("- Other paired contrasts whose ΔAUC interval excludes 0: "
                   + ("; ".join(others) + "." if others else "none."))
    return "\n".join(out)


def paired_runs_table(
    run_dirs: dict, reference: str, patient_of: dict[str, str], *, n_boot: int = 1000
) -> pd.DataFrame:
    """Each run against ``reference`` on the same test women: ΔAUC and ΔF1 (pp) with paired 95% intervals.

    ``run_dirs``: name -> finished run folder (all tested on the same images);
    ``patient_of``: image id -> woman (the bootstrap unit). Empty cells are "—".
    """
    ref = [run_predictions(run_dirs[reference], patient_of)]
    rows = []
    for name, d in run_dirs.items():
        if name == reference:
            continue
        c = paired_contrast(ref, [run_predictions(d, patient_of)], n_boot=n_boot)
        res = resolved(c["auc"])
        rows.append({"run": name, "against": reference, "ΔAUC (pp) [95% CI]": _pp_delta(c["auc"]),
                     "ΔF1 (pp) [95% CI]": _pp_delta(c["f1"]),
                     "AUC resolved": "—" if res is None else ("yes" if res else "no"), "women": c["n_women"]})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()
