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

import numpy as np
import torch
import torch.nn.functional as F

from awm_lib.pretrain.augment import to_model_input


def prepare_breast(pixels: np.ndarray, long_side: int = 448, patch: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Breast crop of ``(H, W)`` in ``[0, 1]`` (chest wall left), resized so sides are multiples of ``patch``.

    Returns the resized image and its breast mask, both ``(h, w)``.
    """
    from awm_lib.pretrain.tissue import breast_tissue

    crop, mask = breast_tissue(pixels)
    h, w = crop.shape
    s = long_side / max(h, w)
    nh, nw = max(patch, round(h * s / patch) * patch), max(patch, round(w * s / patch) * patch)
    img = F.interpolate(torch.from_numpy(crop.astype(np.float32))[None, None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    m = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(nh, nw), mode="nearest")[0, 0] > 0.5
    return img.clamp(0, 1).numpy(), m.numpy()


@torch.no_grad()
def patch_tokens(model, image: np.ndarray) -> torch.Tensor:
    """``(h, w)`` image in ``[0, 1]`` (sides multiples of the patch) -> ``(h/p, w/p, D)`` final patch tokens."""
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
