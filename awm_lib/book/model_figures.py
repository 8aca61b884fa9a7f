"""Plots and small measurements for looking inside the RoI classifier (book chapters 4 and 5).

Everything here reads what a model already computed (attention weights, RoI
embeddings, a run's ``metrics.jsonl``) or evaluates a position code on
hand-made boxes; nothing trains. Figures follow :mod:`awm_lib.book.viz`: each
function draws on an axis (a new one if ``ax`` is None) and returns it.

* :func:`attention_stats` - entropy, maximum weight and "effective number of
  tokens" of attention rows: the dilution measure of chapter 2, made concrete.
* :func:`show_roi_attention` - the RoIs on the mammogram, coloured and
  thickened by a weight per RoI (pooling weight, or the anchor's attention).
* :func:`plot_attention_matrices` - head-averaged RoI-to-RoI attention, one
  panel per block.
* :func:`show_patch_attention` - CLS -> patch attention of the ViT inside a crop.
* :func:`position_logits` / :func:`plot_position_logits` - the attention logit
  between two IDENTICAL tokens as a function of where their boxes are (sine,
  2-D RoPE, 1-D index RoPE): what each position code lets attention see.
* :func:`collect_roi_embeddings` / :func:`plot_embeddings` - RoI embeddings of
  a dataset projected to 2-D (PCA or t-SNE) with hard negatives marked.
* :func:`plot_loss_curves` / :func:`metrics_table` - a run's recorded log and
  its test metrics with bootstrap confidence intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from awm_lib.book import viz
from awm_lib.errors import ConfigError
from awm_lib.features import token_input
from awm_lib.losses import label_rois
from awm_lib.model.position import (
    apply_rope,
    boxes_to_cxcywh_norm,
    check_mode,
    rope_angles,
    sine_box_embedding,
    uses_rope,
    uses_sine,
)
from awm_lib.model.roi_transformer import RoIClassifier
from awm_lib.train.batch import to_device
from awm_lib.train.dataset import collate as collate_images
from awm_lib.train.dataset import lesion_boxes_in
from awm_lib.train.experiment import forward_batch
from awm_lib.train.tokens import collate_tokens

__all__ = [
    "attention_stats",
    "show_roi_attention",
    "plot_attention_matrices",
    "show_patch_attention",
    "position_logits",
    "plot_position_logits",
    "collect_roi_embeddings",
    "hard_negative_mask",
    "project_2d",
    "plot_embeddings",
    "plot_loss_curves",
    "metrics_table",
]


# --- measuring attention --------------------------------------------------------------------
def attention_stats(weights) -> dict[str, float]:
    """How concentrated attention rows are, averaged over rows (e.g. heads or queries).

    weights (..., N): each row sums to 1. Returns the mean over rows of

    * ``entropy``: ``-sum p log p`` in nats (0 = all weight on one token);
    * ``entropy_ratio``: entropy / log N (1 = uniform over all N tokens);
    * ``effective_tokens``: ``exp(entropy)``, the number of tokens a uniform row
      with the same entropy would spread over;
    * ``max_weight``: the largest single weight (1/N when uniform);

    and ``n_tokens`` = N. With thousands of background patches a softmax row
    must be very peaked to give a small lesion much weight; these numbers show
    how peaked it is.
    """
    p = torch.as_tensor(weights, dtype=torch.float64)
    n = p.shape[-1]
    p = p.reshape(-1, n)
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1)  # (rows,)
    return {
        "n_tokens": int(n),
        "entropy": float(ent.mean()),
        "entropy_ratio": float((ent / np.log(n)).mean()) if n > 1 else 0.0,
        "effective_tokens": float(ent.exp().mean()),
        "max_weight": float(p.max(-1).values.mean()),
    }


# --- RoI attention on the mammogram -----------------------------------------------------------
def show_roi_attention(image, rois, weights, ax: Axes | None = None, title: str | None = None,
                       valid=None, lesion=None, cmap: str = "autumn_r", size: float = 5.0,
                       colorbar: bool = True) -> Axes:
    """The mammogram with each RoI coloured (and thickened) by its weight; the anchor dashed.

    image (H, W); rois (K, 4) xyxy pixels of ``image``, anchor first; weights (K,)
    e.g. ``RoIOutput.pool_weights[0]`` or the anchor's attention row. ``valid``
    (K,) bool hides padding; ``lesion`` (K,) bool (e.g. ``roi_labels == 1``) adds
    "(lesion)" to the label of RoIs over a malignant lesion. Each box is labelled ``rank: weight``.
    """
    import matplotlib as mpl

    rois = np.asarray(torch.as_tensor(rois).detach().cpu(), dtype=float).reshape(-1, 4)
    w = np.asarray(torch.as_tensor(weights).detach().cpu().float(), dtype=float).reshape(-1)
    if len(w) != len(rois):
        raise ConfigError(f"{len(rois)} RoIs but {len(w)} weights; give one weight per RoI")
    keep = np.ones(len(rois), bool) if valid is None else np.asarray(torch.as_tensor(valid).cpu(), bool)
    on_lesion = (
        np.zeros(len(rois), bool) if lesion is None else np.asarray(torch.as_tensor(lesion).cpu(), bool)
    )
    ax = viz.show_mammogram(image, ax=ax, title=title, size=size)
    top = max(float(w[keep].max()) if keep.any() else 1.0, 1e-12)
    colours = mpl.colormaps[cmap]
    for j in np.argsort(w):  # heaviest drawn last, on top
        if not keep[j]:
            continue
        x0, y0, x1, y1 = rois[j]
        c = colours(0.15 + 0.85 * w[j] / top)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                               linewidth=1.0 + 3.0 * w[j] / top, linestyle="--" if j == 0 else "-"))
        name = "anchor" if j == 0 else f"#{j}"
        ax.text(
            x0 + 2,
            y0 + 2,
            f"{name}: {w[j]:.2f}" + (" (lesion)" if on_lesion[j] else ""),
            color="black",
            fontsize=7,
            va="top",
            bbox={"facecolor": c, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
        )
    if colorbar:
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, top))
        ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.02, label="weight")
    return ax


def plot_attention_matrices(attention: Sequence, labels: Sequence[str] | None = None, axes=None,
                            size: float = 3.0, titles: Sequence[str] | None = None):
    """Head-averaged attention (query rows, key columns), one panel per entry.

    attention: a list of (h, K, K) or (K, K) arrays (e.g. ``RoIOutput.attention``
    for one image: ``[a[0] for a in out.attention]``). Returns the figure.
    """
    mats = [np.asarray(torch.as_tensor(a).detach().cpu().float()) for a in attention]
    mats = [m.mean(0) if m.ndim == 3 else m for m in mats]
    if axes is None:
        fig, axes = viz.subplots(1, len(mats), width=size, height=size, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    k = mats[0].shape[-1]
    labels = list(labels) if labels is not None else ["anchor"] + [f"#{j}" for j in range(1, k)]
    for i, (ax, m) in enumerate(zip(axes, mats)):
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=max(float(m.max()), 1e-6))
        ax.set_xticks(range(k), labels[:k], rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels[:k], fontsize=7)
        ax.grid(False)
        ax.set_xlabel("key (attended to)")
        if i == 0:
            ax.set_ylabel("query")
        ax.set_title(titles[i] if titles is not None else f"block {i + 1}", fontsize=9)
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 * m.max() else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return fig


def show_patch_attention(crop, cls_attention, ax: Axes | None = None, title: str | None = None,
                         alpha: float = 0.5) -> Axes:
    """CLS -> patch attention (heads, gh, gw) or (gh, gw), head-averaged, over a crop.

    crop: (S, S) grey or (3, S, S) normalised crop (shown min-max stretched).
    """
    arr = np.asarray(torch.as_tensor(crop).detach().cpu().float())
    if arr.ndim == 3:
        arr = arr.mean(0)
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8)
    heat = np.asarray(torch.as_tensor(cls_attention).detach().cpu().float())
    if heat.ndim == 3:
        heat = heat.mean(0)
    return viz.show_heatmap(arr, heat, alpha=alpha, ax=ax, title=title, colorbar=True)


# --- position codes: what attention can see ---------------------------------------------------
def position_logits(mode: str, boxes_norm, head_dim: int = 32, seed: int = 0) -> np.ndarray:
    """q.k logits (K, K) between K IDENTICAL tokens placed at ``boxes_norm`` (K, 4) cxcywh in [0, 1].

    The content is the same for every token (one random query vector q and key
    vector k, seeded), so every difference between entries comes from the
    position code alone:

    * ``"rope2d"``: q and k are rotated by angles of the box centres
      (:func:`awm_lib.model.position.rope_angles`): logit(i, j) depends only on
      ``centre_j - centre_i``;
    * ``"rope1d_index"``: rotated by the token's INDEX (detector rank):
      logit(i, j) depends only on ``j - i``, not on where the boxes are;
    * ``"sine"``: the code of each box is added to the token before a (random,
      seeded) query/key projection, as in the model: absolute positions mix
      with content;
    * ``"none"``: every entry is equal.

    Uses the library's own position functions, so the figure shows what the model does.
    """
    check_mode(mode)
    g = torch.Generator().manual_seed(seed)
    b = torch.as_tensor(boxes_norm, dtype=torch.float32).reshape(1, -1, 4)  # (1, K, 4)
    k = b.shape[1]
    x = torch.randn(head_dim, generator=g)  # the shared content of every token
    wq = torch.randn(head_dim, head_dim, generator=g) / head_dim**0.5
    wk = torch.randn(head_dim, head_dim, generator=g) / head_dim**0.5
    tok = x.expand(1, k, head_dim)
    if uses_sine(mode):
        tok = tok + sine_box_embedding(b, head_dim)  # (1, K, hd)
    q, kk = tok @ wq.T, tok @ wk.T  # (1, K, hd)
    if uses_rope(mode):
        ang = rope_angles(mode, b, head_dim)  # (1, K, hd/2)
        q, kk = apply_rope(q, ang), apply_rope(kk, ang)
    return ((q @ kk.transpose(-2, -1)) * head_dim**-0.5)[0].numpy()  # (K, K)


def plot_position_logits(
    layouts: Mapping[str, np.ndarray],
    modes: Sequence[str] = ("sine", "rope2d", "rope1d_index"),
    head_dim: int = 32,
    seed: int = 0,
    size: float = 2.6,
):
    """A grid of :func:`position_logits` matrices: one row per box layout, one column per mode.

    layouts: name -> (K, 4) normalised cxcywh boxes (e.g. "original", "all shifted",
    "ranks 1 and 2 swapped"). Each column shares one colour scale, so equal
    colours down a column mean the code did not notice the change. Returns the figure.
    """
    mats = {(r, m): position_logits(m, boxes, head_dim, seed) for r, boxes in layouts.items() for m in modes}
    fig, axes = viz.subplots(len(layouts), len(modes), width=size, height=size, squeeze=False)
    for c, m in enumerate(modes):
        col = [mats[(r, m)] for r in layouts]
        lo, hi = min(float(a.min()) for a in col), max(float(a.max()) for a in col)
        for r, name in enumerate(layouts):
            ax, mat = axes[r, c], mats[(name, m)]
            ax.imshow(mat, cmap="coolwarm", vmin=lo, vmax=hi)
            ax.grid(False)
            k = mat.shape[0]
            ax.set_xticks(range(k), [str(j) for j in range(k)], fontsize=7)
            ax.set_yticks(range(k), [str(j) for j in range(k)], fontsize=7)
            if r == 0:
                ax.set_title(m, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{name}\nquery token", fontsize=8)
            if r == len(layouts) - 1:
                ax.set_xlabel("key token", fontsize=8)
    return fig


# --- RoI embeddings ---------------------------------------------------------------------------
@torch.no_grad()
def collect_roi_embeddings(model, dataset, batch_size: int = 8, device: str | torch.device = "cpu",
                           max_images: int | None = None) -> dict[str, np.ndarray]:
    """RoI embeddings (``RoIOutput.roi_embeddings``, what the contrastive losses act on) of a dataset.

    dataset: a :class:`~awm_lib.train.dataset.MammoRoIDataset`, or a
    :class:`~awm_lib.train.tokens.TokenDataset` of cached tokens. Returns flat arrays over
    the real RoIs of every image: ``embeddings`` (N, D), ``roi_labels`` (N,) in {1, 0, -1},
    ``image_labels`` (N,), ``image_index`` (N,), ``rank`` (N,) (0 = anchor),
    ``prob`` (N,) the image's predicted probability and ``lookalike`` (N,) bool: the
    RoI overlaps a BENIGN lesion (same overlap rule as the RoI labels; needs a dataset
    with ``samples`` and ``cache``, else all False).
    """
    collate = collate_tokens if hasattr(dataset, "tokens") else collate_images  # cached tokens or pixels

    model = model.to(device).eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    keys = ("embeddings", "roi_labels", "image_labels", "image_index", "rank", "prob", "lookalike")
    out: dict[str, list] = {k: [] for k in keys}
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        batch = to_device(collate([dataset[i] for i in idx]), torch.device(device))
        res = forward_batch(model, batch)
        mask = batch["roi_mask"].cpu()  # (B, K)
        k = mask.shape[1]
        prob = torch.sigmoid(res.logits.float()).cpu()
        out["embeddings"].append(res.roi_embeddings.float().cpu()[mask])
        out["roi_labels"].append(batch["roi_labels"].cpu()[mask])
        out["image_labels"].append(batch["labels"].cpu()[:, None].expand(-1, k)[mask])
        out["image_index"].append(torch.tensor(idx)[:, None].expand(-1, k)[mask])
        out["rank"].append(torch.arange(k)[None].expand(len(idx), -1)[mask])
        out["prob"].append(prob[:, None].expand(-1, k)[mask])
        look = torch.stack([_benign_overlap(dataset, i, batch["rois"][b].cpu()) for b, i in enumerate(idx)])
        out["lookalike"].append(look[mask])
    return {key: torch.cat(v).numpy() for key, v in out.items()}


def _benign_overlap(dataset, i: int, rois: torch.Tensor, min_overlap: float = 0.5) -> torch.Tensor:
    """(K,) bool: which RoIs of item ``i`` overlap one of its benign lesions (the anchor never)."""
    if not (hasattr(dataset, "samples") and hasattr(dataset, "cache")):
        return torch.zeros(len(rois), dtype=torch.bool)

    sample = dataset.samples[i]
    boxes, malignant = lesion_boxes_in(dataset.cache.get(sample.path), sample)
    benign = torch.from_numpy(~malignant)
    # label_rois marks RoIs over the lesions flagged True: flag the benign ones instead
    return label_rois(rois, torch.from_numpy(boxes), benign, min_overlap) == 1


def hard_negative_mask(embeddings, roi_labels, quantile: float = 0.9) -> np.ndarray:
    """Negative RoIs (label 0) most similar to the malignant RoIs: the hard negatives.

    Similarity of a negative = its largest cosine similarity to any malignant RoI
    (label 1), the quantity the hard-negative weighting of
    :func:`awm_lib.losses.supcon_loss` exponentiates. The negatives at or above
    the ``quantile`` of that similarity are marked. No malignant RoI -> none marked.
    """
    z = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=-1)
    lab = np.asarray(roi_labels)
    hard = np.zeros(len(lab), bool)
    neg, pos = np.flatnonzero(lab == 0), np.flatnonzero(lab == 1)
    if len(neg) == 0 or len(pos) == 0:
        return hard
    sim = (z[neg] @ z[pos].T).max(dim=1).values.numpy()  # (n_neg,)
    hard[neg[sim >= np.quantile(sim, quantile)]] = True
    return hard


def project_2d(embeddings, method: str = "pca", seed: int = 0, threads: int | None = 1) -> np.ndarray:
    """(N, D) -> (N, 2) with scikit-learn's PCA or t-SNE (perplexity adapted to small N).

    ``threads`` caps the OpenMP/BLAS threads of the projection: a few hundred points
    gain nothing from threads, and on a busy 2-core machine t-SNE with all threads was
    ~7x slower than with one (27 s vs 3.8 s for 264 points, measured 2026-11-22).
    ``None`` leaves the default.
    """
    import contextlib

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads) if threads else contextlib.nullcontext():
        return _project(embeddings, method, seed)


def _project(embeddings, method: str, seed: int) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # the losses use cosines
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ConfigError(f"method={method!r}; use 'pca' or 'tsne'")


def plot_embeddings(points, roi_labels, hard=None, lookalike=None, ax: Axes | None = None,
                    title: str | None = None) -> Axes:
    """2-D RoI embeddings: malignant RoIs, other RoIs, ignored ones (anchor, partial overlaps);
    hard negatives ringed, RoIs on benign lesions (look-alikes) as green diamonds.
    points (N, 2) from :func:`project_2d`."""
    ax = viz._ax(ax, width=4.5, height=4.0)
    p = np.asarray(points)
    lab = np.asarray(roi_labels)
    groups = [(-1, "ignored (anchor / partial)", "#BBBBBB", 10), (0, "not malignant", viz.PALETTE[0], 14),
              (1, "malignant lesion", viz.PALETTE[3], 30)]
    for value, name, colour, s in groups:
        sel = lab == value
        if sel.any():
            ax.scatter(
                p[sel, 0],
                p[sel, 1],
                s=s,
                c=colour,
                label=f"{name} ({int(sel.sum())})",
                alpha=0.8,
                linewidths=0,
            )
    if lookalike is not None and np.asarray(lookalike).any():
        b = np.asarray(lookalike, bool)
        ax.scatter(
            p[b, 0],
            p[b, 1],
            s=36,
            marker="D",
            c=viz.PALETTE[2],
            label=f"on a benign lesion ({int(b.sum())})",
            linewidths=0,
        )
    if hard is not None and np.asarray(hard).any():
        h = np.asarray(hard, bool)
        ax.scatter(p[h, 0], p[h, 1], s=60, facecolors="none", edgecolors="black", linewidths=1.0,
                   label=f"hard negative ({int(h.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return ax


# --- runs: loss curves and metrics ------------------------------------------------------------
def plot_loss_curves(logs: Mapping[str, Sequence[dict]], key: str = "loss", ax: Axes | None = None,
                     smooth: int = 1, title: str | None = None, ylabel: str | None = None) -> Axes:
    """One curve per run of ``key`` against the optimizer step.

    logs: run name -> records of :func:`awm_lib.train.loop.read_log` (kind "train").
    ``smooth`` > 1 draws a running mean over that many steps (the raw values faint).
    Runs whose log lacks ``key`` are skipped.
    """
    ax = viz._ax(ax)
    for i, (name, recs) in enumerate(logs.items()):
        recs = [r for r in recs if r.get(key) is not None]
        if not recs:
            continue
        x = np.array([r["step"] for r in recs])
        y = np.array([r[key] for r in recs], dtype=float)
        colour = viz.PALETTE[i % len(viz.PALETTE)]
        if smooth > 1 and len(y) >= smooth:
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=1)
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            x = x[smooth - 1:]
        ax.plot(x, y, color=colour, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel or key)
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return ax


def metrics_table(results: Mapping[str, dict], keys: Sequence[str] = ("auc", "f1", "sens@fpr0.3")):
    """A pandas table ``run x metric`` of "mean [95% CI low, high]" strings from ``results.json`` dicts."""
    import pandas as pd

    def cell(m):
        if not isinstance(m, dict) or m.get("mean") is None:
            return "n/a"
        lo, hi = m.get("ci_low"), m.get("ci_high")
        ci = "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"
        return f"{m['mean']:.3f}{ci}"

    rows = {
        name: {k: cell(r.get(k)) for k in keys} | {"n test": r.get("n_test")} for name, r in results.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def load_trained(run_dir, cfg, device: str | torch.device = "cpu"):
    """The best checkpoint of a training run as a RoI classifier, whether it read pixels or cached tokens.

    A head trained on cached tokens of a frozen backbone (``features.cached``, the ``frozen``
    preset) holds no ViT weights: it is loaded with a token input in place of the backbone.
    """
    backbone = token_input(cfg.model.backbone, cfg.features.random_seed) if cfg.features.cached else None
    return RoIClassifier.from_pretrained(run_dir, device=device, backbone=backbone)


def forward_one(
    model, dataset, index: int, device: str | torch.device = "cpu", return_attention: bool = True
):
    """The model on one item of a dataset of pixels or of cached tokens, with its attention.

    Returns ``(output, batch)``: the :class:`~awm_lib.model.roi_transformer.RoIOutput` (``pool_weights``,
    ``attention`` per block) and the collated one-item batch (``rois``, ``roi_mask``, ``roi_labels``).
    """
    model = model.to(device).eval()
    with torch.no_grad():
        if hasattr(dataset, "tokens"):  # cached tokens of a frozen backbone
            batch = to_device(collate_tokens([dataset[index]]), torch.device(device))
            boxes = boxes_to_cxcywh_norm(batch["rois"].float(), batch["image_sizes"])
            out = model.forward_tokens(
                batch["tokens"], boxes, batch["roi_mask"], return_attention=return_attention
            )
        else:
            batch = to_device(collate_images([dataset[index]]), torch.device(device))
            out = model(
                batch["images"],
                batch["rois"],
                image_sizes=batch["image_sizes"],
                roi_mask=batch["roi_mask"],
                return_attention=return_attention,
            )
    return out, batch


def attention_change(trained, initial):  # -> pandas.DataFrame
    """How far training moved the attention of one image: per block (and the pooling weights),
    the mean and largest absolute change of a weight, and the largest weight before and after."""
    import pandas as pd

    rows = {}
    pairs = [
        (f"block {i + 1}", a[0], b[0])
        for i, (a, b) in enumerate(zip(trained.attention or [], initial.attention or []))
    ]
    if trained.pool_weights is not None and initial.pool_weights is not None:
        pairs.append(("pooling weights", trained.pool_weights[0], initial.pool_weights[0]))
    for name, a, b in pairs:
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        d = (a - b).abs()
        rows[name] = {"mean |change|": float(d.mean()), "max |change|": float(d.max()),
                      "largest weight, initial": float(b.max()), "largest weight, trained": float(a.max())}
    return pd.DataFrame(rows).T
