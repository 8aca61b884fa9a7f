"""Looking inside a ViT: PCA of patch features and CLS attention maps on a mammogram.

Two pictures from the DINO / DINOv2 papers that show, without any labels,
what a self-supervised backbone has learned:

* **PCA of patch features** (DINOv2, Fig. 1): embed every 14x14 patch, fit a
  3-component PCA on the breast's patches, and paint components 1-3 as R, G,
  B. Patches the network considers alike get alike colours; a good backbone
  paints anatomy (skin line, fat, dense tissue, pectoral muscle) in coherent
  regions, a random one paints noise.
* **CLS attention** (DINO, Fig. 1): in the last layer, where each head's CLS
  token looks. Pretrained heads attend to structures; random heads to
  everything a little.

Both need only a ``Dinov2Model``; attention maps switch that call to the
"eager" attention implementation (the fused SDPA kernel never forms the
attention matrix) and switch back afterwards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from awm_lib.book.viz import PALETTE, hline, plot_curves, show_mammogram, subplots, vline
from awm_lib.pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    intensity_augment,
    sample_crop_boxes,
    to_model_input,
)
from awm_lib.pretrain.dino import entropy, teacher_probs
from awm_lib.pretrain.loop import build_backbone, preset_config
from awm_lib.pretrain.probe import crop_resize, random_init_like
from awm_lib.pretrain.tissue import breast_tissue


def prepare_breast(
    pixels: np.ndarray, long_side: int = 448, patch: int = 14
) -> tuple[np.ndarray, np.ndarray]:
    """Breast crop of ``(H, W)`` in ``[0, 1]`` (chest wall left), resized so sides are multiples of ``patch``.

    Returns the resized image and its breast mask, both ``(h, w)``.
    """
    crop, mask = breast_tissue(pixels)
    h, w = crop.shape
    s = long_side / max(h, w)
    nh, nw = max(patch, round(h * s / patch) * patch), max(patch, round(w * s / patch) * patch)
    img = F.interpolate(
        torch.from_numpy(crop.astype(np.float32))[None, None],
        size=(nh, nw),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0, 0]
    m = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(nh, nw), mode="nearest")[0, 0] > 0.5
    return img.clamp(0, 1).numpy(), m.numpy()


@torch.no_grad()
def patch_tokens(model, image: np.ndarray) -> torch.Tensor:
    """``(h, w)`` image in ``[0, 1]`` (sides multiples of the patch) -> ``(h/p, w/p, D)`` final patch
    tokens."""
    p = model.config.patch_size
    x = to_model_input(torch.from_numpy(np.asarray(image, np.float32))[None, None])  # (1, 3, h, w)
    hidden = model.eval()(pixel_values=x).last_hidden_state[0, 1:]  # (P, D)
    return hidden.reshape(image.shape[0] // p, image.shape[1] // p, -1)


def _patch_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A patch is foreground when at least half of its pixels are breast."""
    m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    return (F.adaptive_avg_pool2d(m, grid)[0, 0] >= 0.5).numpy()


def pca_rgb(tokens: torch.Tensor, foreground: np.ndarray | None = None) -> np.ndarray:
    """``(gh, gw, D)`` tokens -> ``(gh, gw, 3)`` RGB in ``[0, 1]`` from the first 3 principal components.

    The PCA is fitted on ``foreground`` patches only (background is black).
    Without a mask we use DINOv2's trick: a first PCA over all patches, and
    the patches above the median of its first component are the foreground.
    """
    gh, gw, D = tokens.shape
    X = tokens.reshape(-1, D).float()
    if foreground is None:
        Xc = X - X.mean(0)
        pc1 = Xc @ torch.linalg.svd(Xc, full_matrices=False).Vh[0]
        fg = (pc1 > pc1.median()).numpy()
    else:
        fg = np.asarray(foreground, bool).reshape(-1)
    Xf = X[torch.from_numpy(fg)]
    mean = Xf.mean(0)
    V = torch.linalg.svd(Xf - mean, full_matrices=False).Vh[:3]  # (3, D)
    comp = (Xf - mean) @ V.T  # (Nf, 3)
    lo, hi = comp.quantile(0.01, dim=0), comp.quantile(0.99, dim=0)  # robust min-max per component
    comp = ((comp - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    rgb = torch.zeros(gh * gw, 3)
    rgb[torch.from_numpy(fg)] = comp
    return rgb.reshape(gh, gw, 3).numpy()


@contextlib.contextmanager
def eager_attention(model):
    """Temporarily use the attention implementation that returns attention weights."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


@torch.no_grad()
def cls_attention(model, image: np.ndarray) -> np.ndarray:
    """``(heads, h/p, w/p)`` attention of the CLS token to each patch in the LAST layer (rows sum to <= 1)."""
    p = model.config.patch_size
    gh, gw = image.shape[0] // p, image.shape[1] // p
    x = to_model_input(torch.from_numpy(np.asarray(image, np.float32))[None, None])
    with eager_attention(model.eval()):
        att = model(pixel_values=x, output_attentions=True).attentions[-1]  # (1, heads, T, T)
    return att[0, :, 0, 1:].reshape(-1, gh, gw).numpy()


def plot_pca_and_attention(models: dict, pixels: np.ndarray, long_side: int = 448, title: str | None = None):
    """One row per model: the breast, PCA of its patch features, mean CLS attention. Returns the figure.

    ``models`` maps a label (say which weights!) to a ``Dinov2Model``.
    """
    import matplotlib.pyplot as plt

    image, mask = prepare_breast(pixels, long_side)
    fig, axes = plt.subplots(len(models), 3, figsize=(9, 3.6 * len(models)), squeeze=False)
    for row, (label, model) in zip(axes, models.items()):
        tok = patch_tokens(model, image)
        fg = _patch_mask(mask, tok.shape[:2])
        att = cls_attention(model, image).mean(0)
        att = np.where(fg, att, np.nan)
        row[0].imshow(image, cmap="gray")
        row[0].set_title("breast crop")
        row[1].imshow(pca_rgb(tok, fg), interpolation="nearest")
        row[1].set_title(f"{label}\nPCA of patch features")
        row[2].imshow(att, cmap="inferno", interpolation="nearest")
        row[2].set_title("CLS attention, last layer (mean of heads)")
        for ax in row:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- the chapter's figures: views, augmentations, collapse, logs, probes ---------------------
# (book chapter 6, "Self-supervised pretraining", draws every figure with these)

GPU_RUN_COMMANDS = """\
python -m awm_lib pretrain --build-bank .cache/pretrain/mias512.npz --long-side 512
python -m awm_lib pretrain --out checkpoints/awm-dino-s14 --preset gpu-20min --set bank_path=.cache/pretrain/mias512.npz
python -m awm_lib pretrain --probe --checkpoint checkpoints/awm-dino-s14"""  # noqa: E501 - whole commands a reader copies

# The committed CPU run (checkpoints/awm-dino-cpu): mini-MIAS women of the "pretrain" half plus synthetic
# images.
CPU_RUN_COMMANDS = """\
python -m awm_lib pretrain --build-bank .cache/pretrain/bank512-half-syn240.npz --long-side 512 --n-synthetic 240 --set mias_half=pretrain
python -m awm_lib pretrain --out checkpoints/awm-dino-cpu --preset cpu-75min --set bank_path=.cache/pretrain/bank512-half-syn240.npz
python -m awm_lib pretrain --probe --checkpoint checkpoints/awm-dino-cpu   # the held-out half of the women only"""  # noqa: E501 - whole commands a reader copies


def to_grey(x: torch.Tensor) -> np.ndarray:
    """Undo :func:`~awm_lib.pretrain.augment.to_model_input`: ``(..., 3, S, S)`` -> grey ``(..., S, S)`` in
    ``[0, 1]``."""
    grey = x[..., 0, :, :].float() * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # every channel holds the same grey
    return grey.clamp(0, 1).cpu().numpy()


def _breast_limits(ax, mask: np.ndarray, margin: int = 8) -> None:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    ax.set_xlim(max(0, xs.min() - margin), min(w, xs.max() + 1 + margin))
    ax.set_ylim(min(h, ys.max() + 1 + margin), max(0, ys.min() - margin))


def plot_multi_crop(image, mask, views, index: int = 0, local_cols: int = 4):
    """Where the views of image ``index`` come from (left) and what they look like (right).

    ``image`` ``(H, W)`` and ``mask`` ``(H, W)`` are the tissue-bank canvas the
    views were cut from; ``views`` is a :class:`~awm_lib.pretrain.augment.MultiCropViews`.
    Boxes are drawn before rotation and flipping; the crops are shown as the
    network receives them (augmented), converted back to grey.
    """
    import matplotlib.pyplot as plt

    n_g, n_l = views.global_crops.shape[0], views.local_crops.shape[0]
    boxes = torch.cat([views.global_boxes[index], views.local_boxes[index]]).cpu().numpy()
    labels = [f"G{i + 1}" for i in range(n_g)] + [f"L{i + 1}" for i in range(n_l)]
    colors = [PALETTE[0]] * n_g + [PALETTE[1]] * n_l
    crops = [to_grey(views.global_crops[i, index]) for i in range(n_g)] + [
        to_grey(views.local_crops[i, index]) for i in range(n_l)
    ]
    cols = max(n_g, min(local_cols, max(n_l, 1)))
    rows = 1 + -(-n_l // cols)
    fig = plt.figure(figsize=(3.2 + 1.9 * cols, 1.9 * rows + 0.6), layout="constrained")
    gs = fig.add_gridspec(rows, cols + 2)
    ax = fig.add_subplot(gs[:, :2])
    show_mammogram(np.asarray(image), boxes=boxes, labels=labels, colors=colors, ax=ax, linewidth=1.2,
                   title=f"{n_g} global (G, blue), {n_l} local (L, orange)")
    ax.title.set_fontsize(9)
    _breast_limits(ax, np.asarray(mask))
    for i, (crop, label) in enumerate(zip(crops, labels)):
        r, c = (0, i) if i < n_g else (1 + (i - n_g) // cols, (i - n_g) % cols)
        a = fig.add_subplot(gs[r, 2 + c])
        show_mammogram(crop, ax=a)
        a.set_title(f"{label} ({crop.shape[-1]} px)", color=colors[i], fontsize=9)
    return fig


def plot_intensity_augmentations(image, mask, cfg, size: int = 224, scale: float = 0.12, seed: int = 0):
    """One tissue crop under each intensity augmentation of ``cfg`` alone, at its extremes, then all together.

    ``cfg`` is a :class:`~awm_lib.pretrain.augment.MultiCropConfig`; the crop
    (``scale`` of the breast box's area, centred on tissue) is drawn with ``seed``.
    """
    import dataclasses

    g = torch.Generator().manual_seed(seed)
    box = sample_crop_boxes(torch.as_tensor(np.asarray(mask, bool))[None], 1, (scale, scale), generator=g)[
        0, 0
    ]
    crop = crop_resize(np.asarray(image, np.float32), box.tolist(), size)[None]  # (1, 1, S, S)
    none = dataclasses.replace(cfg, window=0.0, gamma=(1.0, 1.0), blur_p=0.0, noise_std=(0.0, 0.0))
    panels = {
        "original": none,
        f"gamma {cfg.gamma[0]:g} (brighter)": dataclasses.replace(none, gamma=(cfg.gamma[0],) * 2),
        f"gamma {cfg.gamma[1]:g} (darker)": dataclasses.replace(none, gamma=(cfg.gamma[1],) * 2),
        f"random window (w = {cfg.window:g})": dataclasses.replace(none, window=cfg.window),
        f"blur, sigma {cfg.blur_sigma[1]:g} px": dataclasses.replace(
            none, blur_p=1.0, blur_sigma=(cfg.blur_sigma[1],) * 2
        ),
        f"noise, std {cfg.noise_std[1]:g}": dataclasses.replace(none, noise_std=(cfg.noise_std[1],) * 2),
        "all of them, draw 1": cfg,
        "all of them, draw 2": cfg,
    }
    fig, axes = subplots(2, 4, width=2.4, height=2.6)
    for ax, (title, c) in zip(axes.flat, panels.items()):
        show_mammogram(intensity_augment(crop, c, g)[0, 0].numpy(), ax=ax, title=title)
        ax.title.set_fontsize(9)
    return fig


def plot_patch_masks(crops: torch.Tensor, masks: torch.Tensor, patch: int = 14):
    """Global crops ``(N, 3, S, S)`` with the iBOT-masked patches ``(N, P)`` painted over."""
    n, S = crops.shape[0], crops.shape[-1]
    gh = S // patch
    fig, axes = subplots(1, n, width=2.6, height=2.9, squeeze=False)
    for ax, crop, m in zip(axes[0], crops, masks):
        show_mammogram(to_grey(crop), ax=ax, title=f"{int(m.sum())} of {m.numel()} patches masked")
        grid = m.reshape(gh, gh).float().numpy()
        ax.imshow(np.where(grid > 0, 1.0, np.nan), cmap="cool", vmin=0, vmax=1, alpha=0.6,
                  extent=(0, gh * patch, gh * patch, 0), interpolation="nearest")
        ax.title.set_fontsize(9)
    return fig


def toy_teacher_logits(
    n_images: int = 32, n_prototypes: int = 64, common_std: float = 0.3, image_std: float = 0.1, seed: int = 0
) -> torch.Tensor:
    """Constructed teacher logits ``(n_images, n_prototypes)``: one part shared by every image plus a smaller
    part of its own.

    That is what a network on the way to collapse outputs: a bias towards some
    prototypes whatever the image (``common_std``), and a little information
    about the image (``image_std``). Values are cosine-like (a few tenths).
    """
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, n_prototypes, generator=g) * common_std
    return common + torch.randn(n_images, n_prototypes, generator=g) * image_std


def centering_sharpening_table(
    teacher_logits: torch.Tensor, temps: tuple[float, ...] = (1.0, 0.04)
) -> list[dict]:
    """Teacher distributions with centering off / on at each temperature, summarised.

    For ``(B, K)`` logits, each row reports the mean per-image entropy (low =
    confident), the entropy of the batch-mean distribution (low = every image
    gets the same answer: collapse) and the share of images whose top
    prototype is the most common top prototype. The center is the batch mean
    (the EMA the loop keeps converges to it).
    """
    center = teacher_logits.mean(dim=0)
    rows = []
    for centered in (False, True):
        for t in temps:
            p = teacher_probs(teacher_logits, center if centered else torch.zeros_like(center), t)
            top = p.argmax(dim=-1)
            rows.append({
                "centering": "on" if centered else "off",
                "temperature": t,
                "entropy per image (nats)": round(float(entropy(p)), 3),
                "entropy of batch mean (nats)": round(float(entropy(p.mean(dim=0))), 3),
                "images on the top prototype": round(float((top == top.mode().values).float().mean()), 3),
            })
    return rows


def plot_centering_sharpening(teacher_logits: torch.Tensor, temps: tuple[float, float] = (1.0, 0.04)):
    """2 x 2 heat maps of teacher probabilities (images x prototypes): centering off/on x two temperatures."""
    center = teacher_logits.mean(dim=0)
    rows = centering_sharpening_table(teacher_logits, temps)
    fig, axes = subplots(2, 2, width=3.6, height=2.9)
    for ax, row in zip(axes.flat, rows):
        c = center if row["centering"] == "on" else torch.zeros_like(center)
        p = teacher_probs(teacher_logits, c, row["temperature"]).numpy()
        im = ax.imshow(p, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(
            f"centering {row['centering']}, T = {row['temperature']:g}\n"
            f"H per image {row['entropy per image (nats)']:.2f}, H of mean "
            f"{row['entropy of batch mean (nats)']:.2f}",
            fontsize=9,
        )
        ax.set_xlabel("prototype")
        ax.set_ylabel("image")
        ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="teacher probability")
    return fig


def plot_pretrain_logs(logs: dict[str, list[dict]], n_prototypes: dict[str, int] | None = None):
    """One row per run (label -> ``loss_log.jsonl`` records): losses and teacher entropies against step.

    Read a run's log with :func:`~awm_lib.pretrain.card.read_loss_log`.
    ``n_prototypes`` (label -> K) adds the ``log K`` line: the entropy of a
    uniform distribution, the ceiling of both entropies.
    """
    fig, axes = subplots(len(logs), 2, width=4.4, height=3.0, squeeze=False)
    for (ax, ax2), (label, log) in zip(axes, logs.items()):
        steps = [r["step"] for r in log]
        marker = "o" if len(log) <= 30 else None
        plot_curves(
            steps,
            {k: [r[k] for r in log] for k in ("loss", "dino", "ibot") if k in log[0]},
            "step",
            "loss",
            title=f"{label}\nself-distillation loss",
            ax=ax,
            marker=marker,
        )
        entropies = {
            "per image": [r["teacher_entropy"] for r in log],
            "of the batch mean": [r["teacher_mean_entropy"] for r in log],
        }
        plot_curves(
            steps,
            entropies,
            "step",
            "nats",
            title="teacher entropy (collapse monitor)",
            ax=ax2,
            marker=marker,
        )
        k = (n_prototypes or {}).get(label)
        if k:
            hline(ax2, float(np.log(k)), f"log K, K = {k}")
        ax.title.set_fontsize(9)
        ax2.title.set_fontsize(9)
    return fig


# --- which weights: the checkpoint when it exists, always a random init beside it -------------
def checkpoint_summary(checkpoint: str | Path) -> dict | None:
    """What the model card of a pretraining run records (``pretrain_config.json``), or None if there is no
    run."""
    import json

    path = Path(checkpoint) / "pretrain_config.json"
    if not (Path(checkpoint) / "config.json").is_file() or not path.is_file():
        return None
    meta = json.loads(path.read_text())
    keys = ("steps", "train_seconds", "n_images", "sources", "seed", "device", "date", "command")
    return {k: meta.get(k) for k in keys}


def figure_backbones(checkpoint: str | Path | None = None, seed: int = 0) -> dict:
    """``{label: Dinov2Model}`` for the chapter's pictures, labels naming the weights.

    With a pretraining run at ``checkpoint``: a random init of its architecture
    (seed ``seed``) and the checkpoint, loaded with the same
    ``Dinov2Model.from_pretrained(path)`` call that loads ``facebook/dinov2-*``.
    Without one: only a random init of the ``gpu-20min`` preset's architecture.
    """
    from transformers import Dinov2Model

    info = checkpoint_summary(checkpoint) if checkpoint else None
    if info is None:
        torch.manual_seed(seed)
        model = build_backbone(preset_config("gpu-20min")).eval()
        c = model.config
        name = f"random init (seed {seed}), width {c.hidden_size}, {c.num_hidden_layers} blocks, untrained"
        return {name: model}
    pre = Dinov2Model.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    c = pre.config
    untrained = f"random init (seed {seed}), width {c.hidden_size}, {c.num_hidden_layers} blocks, untrained"
    return {
        untrained: random_init_like(pre, seed),
        f"{Path(checkpoint).name}: {info['steps']} steps, {info['device']}, {str(info['date'])[:10]}": pre,
    }


def max_weight_change(checkpoint: str | Path, seed: int = 0) -> float:
    """Largest absolute difference between a saved backbone's weights and a random init of it with ``seed``.

    ``pretrain`` seeds its initialisation with the run's seed and
    :func:`~awm_lib.pretrain.probe.random_init_like` does the same, so for a
    run made from random weights this says how far training moved the saved
    (teacher) weights from where they started.
    """
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(str(checkpoint), dtype=torch.float32)
    init = random_init_like(model, seed)
    return max(
        float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), init.state_dict().values())
    )


def status_markdown(checkpoint: str | Path, probe_path: str | Path) -> str:
    """A visible note (Markdown) saying which GPU artefacts exist and, if not, how to make them."""
    info = checkpoint_summary(checkpoint)
    has_probe = Path(probe_path).is_file()
    if info is not None and has_probe:
        return (
            f"> **Pretrained weights present.** `{checkpoint}`: {info['steps']} steps on {info['n_images']} "
            "images, "
            f"{info['device']}, {info['date']}, seed {info['seed']}; probe results in `{probe_path}`.\n>\n"
            f"> Command: `{info['command']}`"
        )
    missing = [f"`{p}`" for p, ok in ((checkpoint, info is not None), (probe_path, has_probe)) if not ok]
    lines = [
        f"> **Pending a GPU run.** {' and '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist "
        "yet, "
        "so the pretrained figures and numbers of this chapter are not shown: every picture of a backbone "
        "below comes from a randomly initialised one (or from the few CPU steps run here), "
        "and is labelled so. On a machine with one GPU (about 20 minutes on an H100):",
        ">",
        "> ```",
    ]
    lines += [f"> {c}" for c in GPU_RUN_COMMANDS.splitlines()] + [
        "> ```",
        ">",
        "> Rebuild the book afterwards and this chapter shows them.",
    ]
    return "\n".join(lines)


# --- the probe's results ---------------------------------------------------------------------
def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def probe_table(res: dict):
    """The probe results (``run_probe``'s dict) as a DataFrame: balanced accuracy and AUC with 95% CIs."""
    import pandas as pd

    rows = []
    for task, t in res["tasks"].items():
        if "skipped" in t:
            rows.append(
                {
                    "task": task,
                    "model": "-",
                    "probe": "-",
                    "balanced accuracy [95% CI]": f"skipped: {t['skipped']}",
                    "AUC [95% CI]": "",
                }
            )
            continue
        label = f"{task} (n = {t['n']}, {t['n_women']} women)"
        for name, per in t["results"].items():
            for method, r in per.items():
                rows.append(
                    {
                        "task": label,
                        "model": name,
                        "probe": method,
                        "balanced accuracy [95% CI]": _fmt(r["balanced_accuracy"]),
                        "AUC [95% CI]": _fmt(r["auc"]),
                    }
                )
        for name, per in t.get("difference_vs_random_init", {}).items():
            for method, d in per.items():
                rows.append(
                    {
                        "task": label,
                        "model": f"{name} minus random-init",
                        "probe": method,
                        "balanced accuracy [95% CI]": _fmt(d["balanced_accuracy"]),
                        "AUC [95% CI]": _fmt(d["auc"]),
                    }
                )
    return pd.DataFrame(rows).set_index(["task", "model", "probe"])


def plot_probe(res: dict, metric: str = "balanced_accuracy"):
    """Point estimates with 95% bootstrap CIs, one panel per task, one row per (model, probe); 0.5 =
    chance."""
    tasks = {k: t for k, t in res["tasks"].items() if "skipped" not in t}
    fig, axes = subplots(
        1,
        max(1, len(tasks)),
        width=4.6,
        height=0.5
        + 0.45 * max((sum(len(p) for p in t["results"].values()) for t in tasks.values()), default=1),
        squeeze=False,
    )
    for ax, (task, t) in zip(axes[0], tasks.items()):
        labels, y = [], 0
        for j, (name, per) in enumerate(t["results"].items()):
            for method, r in per.items():
                m = r[metric]
                lo, hi = m["ci95"]
                ax.errorbar(
                    m["value"],
                    y,
                    xerr=[[m["value"] - lo], [hi - m["value"]]],
                    fmt="o",
                    color=PALETTE[j % len(PALETTE)],
                    capsize=3,
                )
                labels.append(f"{name}, {method}")
                y += 1
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        vline(ax, 0.5, "chance")
        ax.set_xlabel(f"{metric.replace('_', ' ')} (95% CI, women resampled)")
        ax.set_title(f"{task.replace('_', ' ')} (n = {t['n']}, {t['n_women']} women)", fontsize=10)
    return fig


def plot_probe_differences(res: dict, metric: str = "auc"):
    """Pretrained minus random init, per task and probe: paired bootstrap 95% CIs (women resampled); 0 = no
    gain."""
    rows = []
    for task, t in res["tasks"].items():
        for name, per in t.get("difference_vs_random_init", {}).items():
            for method, d in per.items():
                rows.append(
                    (
                        f"{task.replace('_', ' ')}\n{method} (n = {t['n']}, {t['n_women']} women)",
                        d[metric],
                        name,
                    )
                )
    fig, ax = subplots(1, 1, width=6.4, height=0.6 + 0.55 * max(1, len(rows)))
    for y, (_label, d, _name) in enumerate(rows):
        lo, hi = d["ci95"]
        color = PALETTE[2] if lo > 0 else (PALETTE[3] if hi < 0 else PALETTE[0])
        ax.errorbar(
            d["value"], y, xerr=[[d["value"] - lo], [hi - d["value"]]], fmt="o", color=color, capsize=3
        )
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    vline(ax, 0.0, "no difference")
    name = rows[0][2] if rows else "pretrained"
    ax.set_xlabel(
        f"{metric.upper() if metric == 'auc' else metric.replace('_', ' ')}: {name} minus random init "
        "(paired "
        "95% CI)"
    )
    return fig


def probe_verdict(res: dict, metric: str = "auc") -> str:
    """One Markdown line per task and probe: the paired difference and whether its 95% CI excludes 0, read
    from ``res``."""
    lines = []
    for task, t in res["tasks"].items():
        for name, per in t.get("difference_vs_random_init", {}).items():
            for method, d in per.items():
                lo, hi = d[metric]["ci95"]
                word = "better than" if lo > 0 else ("worse than" if hi < 0 else "not distinguishable from")
                ours = t["results"][name][method][metric]["value"]
                base = t["results"]["random-init"][method][metric]["value"]
                note = (" (random init is below chance here: a gain up to 0.5 is no evidence of useful "
                        "features)") if lo > 0 and base < 0.5 else ""
                lines.append(
                    f"* **{task}**, {method}: `{name}` is {word} random init "
                    f"({metric.upper()} {ours:.3f} vs {base:.3f}, difference {d[metric]['value']:+.3f}, "
                    f"95% CI [{lo:+.3f}, {hi:+.3f}], {t['n_women']} held-out women){note}"
                )
    return "\n".join(lines)


def hygiene_markdown(res: dict) -> str:
    """Which mini-MIAS images pretraining saw and whether any probe image is among them (from the probe's
    ``hygiene`` record)."""
    h = res.get("hygiene")
    if not h:
        return "> This probe file records no data-hygiene check (made with `--all-women`)."
    seen = h["pretraining_mias_images"]
    leaked = h["probe_images_seen_by_pretraining"]
    n_seen = len(seen) if isinstance(seen, list) else seen
    verdict = (
        "none of them: every probe figure is on women pretraining never saw"
        if leaked == []
        else f"**{len(leaked)} of them were seen by pretraining** ({', '.join(leaked[:6])}...): "
        "the probe figures are flattered"
    )
    return (
        f"> Pretraining saw **{n_seen} mini-MIAS images** (the women of the `pretrain` half, split seed "
        f"{res['data'].get('split_seed')}) plus the synthetic images listed in the model card. The probe "
        "uses "
        "the other "
        f"half: {res['data']['images']} images of {res['data']['women']} women, {verdict}."
    )
