"""What a Vision Transformer costs: tokens, FLOPs and attention memory, counted by hand.

A ViT cuts an image into ``patch_size x patch_size`` squares (14 px for DINOv2),
turns each square into one token and lets every token attend to every other.
Two kinds of work follow:

* **linear layers** (QKV, output projection, the two MLP matrices) touch each
  token once: their cost grows *linearly* with the number of tokens ``N``;
* **attention** itself (``Q K^T`` and ``softmax(.) V``) compares every token with
  every other: its cost, and the memory of a materialised ``N x N`` attention
  matrix, grow *quadratically* with ``N``.

A full-field mammogram at native resolution is ~50,000 tokens, where the
quadratic term dominates everything; a handful of 448-px RoI crops is ~5,000
tokens split into independent sequences of ~1,000, where it is small. That is
the paper's efficiency argument, and this module is the arithmetic behind it
(the tokenization chapter plots it; the benchmark divides it by measured time
to get TFLOP/s).

Conventions
-----------
* FLOPs count multiply-adds of matrix products as **2 FLOPs** (one multiply,
  one add), the usual convention for TFLOP/s and model FLOP utilisation.
  Element-wise work (softmax, LayerNorm, GELU, residual adds) is left out: it
  is memory-bound and a few percent of the total.
* Token counts follow DINOv2 / ``transformers.Dinov2Model``: the patch grid is
  ``floor(H / p) x floor(W / p)`` (a partial patch at the border is dropped)
  plus one ``[CLS]`` token: a 3514 x 2800 image gives 251 x 200 + 1 = 50,201.
* A training step costs about **3x** the forward pass: the backward pass
  computes two matrix products (gradient w.r.t. inputs and w.r.t. weights) for
  each one of the forward pass.

Explained in the book: chapter 2, *What a token costs* (``notebooks/02_tokenization_cost.ipynb``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from awm_lib.errors import ConfigError, DataError

__all__ = [
    "ViTSpec",
    "VIT_S14",
    "VIT_B14",
    "VIT_L14",
    "BACKBONES",
    "FlopCount",
    "num_patches",
    "num_tokens",
    "roi_path_tokens",
    "linear_flops",
    "transformer_layer_flops",
    "vit_flops_for_tokens",
    "vit_forward_flops",
    "roi_path_forward_flops",
    "training_flops",
    "attention_matrix_bytes",
    "flash_attention_bytes",
    "attention_dilution",
    "logit_advantage_for_weight",
    "tflops_per_second",
    "cost_row",
    "cost_table",
    "GIB",
    "load_bench_table",
]

GIB = 1024**3


# --- the architectures --------------------------------------------------------
@dataclass(frozen=True)
class ViTSpec:
    """The shape of a plain ViT: all its cost follows from these numbers."""

    name: str
    embed_dim: int  # D, the token width
    depth: int  # number of transformer blocks
    num_heads: int
    patch_size: int = 14
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    in_chans: int = 3

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


VIT_S14 = ViTSpec("ViT-S/14", embed_dim=384, depth=12, num_heads=6)  # DINOv2 small, 21M params
VIT_B14 = ViTSpec("ViT-B/14", embed_dim=768, depth=12, num_heads=12)  # DINOv2 base, 86M params
VIT_L14 = ViTSpec("ViT-L/14", embed_dim=1024, depth=24, num_heads=16)  # DINOv2 large, 300M params
BACKBONES = {s.name: s for s in (VIT_S14, VIT_B14, VIT_L14)}


def _spec(spec: ViTSpec | str) -> ViTSpec:
    if isinstance(spec, ViTSpec):
        return spec
    if spec not in BACKBONES:
        raise ConfigError(f"unknown backbone {spec!r}; choose one of {sorted(BACKBONES)} or pass a ViTSpec")
    return BACKBONES[spec]


# --- tokens ------------------------------------------------------------------
def num_patches(height: int, width: int | None = None, patch_size: int = 14) -> int:
    """Patches of an ``height x width`` image (square if ``width`` is None): floor on each side."""
    width = height if width is None else width
    if height < patch_size or width < patch_size:
        raise ConfigError(
            f"image {height}x{width} is smaller than one {patch_size}-px patch; use an image of at least "
            f"{patch_size} px"
        )
    return (height // patch_size) * (width // patch_size)


def num_tokens(height: int, width: int | None = None, patch_size: int = 14, cls_token: bool = True) -> int:
    """Tokens a ViT sees for one image: the patch grid plus the ``[CLS]`` token.

    >>> num_tokens(3514, 2800)   # a full-field mammogram
    50201
    >>> num_tokens(448)          # one 448-px RoI crop: 32 x 32 + 1
    1025
    """
    return num_patches(height, width, patch_size) + int(cls_token)


def roi_path_tokens(num_crops: int, crop_size: int, patch_size: int = 14) -> int:
    """Tokens of the RoI path: ``num_crops`` independent square crops of ``crop_size`` px.

    ``num_crops`` counts every crop fed to the backbone: the top-k RoIs *plus*
    the anchor (full-breast) crop when there is one.

    >>> roi_path_tokens(5, 448)   # 5 crops of 448 px
    5125
    """
    if num_crops < 1:
        raise ConfigError(f"num_crops must be at least 1, got {num_crops}")
    return num_crops * num_tokens(crop_size, crop_size, patch_size)


# --- FLOPs ---------------------------------------------------------------------
@dataclass(frozen=True)
class FlopCount:
    """FLOPs split by kind, so plots can show which part dominates."""

    linear: float = 0.0  # QKV, projection, MLP: linear in tokens
    attention: float = 0.0  # Q K^T and softmax(.) V: quadratic in tokens
    patch_embed: float = 0.0  # the patch-embedding convolution (a matmul per patch)

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.patch_embed

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.linear + other.linear, self.attention + other.attention,
                         self.patch_embed + other.patch_embed)

    def __mul__(self, k: float) -> FlopCount:
        return FlopCount(self.linear * k, self.attention * k, self.patch_embed * k)

    __rmul__ = __mul__


def linear_flops(n_tokens: int, in_features: int, out_features: int) -> float:
    """FLOPs of ``nn.Linear(in_features, out_features)`` on ``n_tokens`` rows: 2 * N * in * out."""
    return 2.0 * n_tokens * in_features * out_features


def transformer_layer_flops(n_tokens: int, embed_dim: int, mlp_ratio: float = 4.0) -> FlopCount:
    """One pre-norm transformer block on a sequence of ``n_tokens`` tokens of width ``embed_dim``.

    Linear part: QKV (D -> 3D) + projection (D -> D) + MLP (D -> rD -> D)
    = 2N(3D² + D² + 2rD²) = 24 N D² for r = 4.
    Attention part: for every head, ``Q K^T`` is (N, hd) @ (hd, N) and ``P V`` is
    (N, N) @ (N, hd); summed over heads (heads * hd = D) that is 2 * 2 N² D = 4 N² D.
    """
    n, d = n_tokens, embed_dim
    hidden = int(round(mlp_ratio * d))
    linear = (
        linear_flops(n, d, 3 * d)  # QKV
        + linear_flops(n, d, d)  # output projection
        + linear_flops(n, d, hidden)  # MLP up
        + linear_flops(n, hidden, d)  # MLP down
    )
    attention = 2.0 * (2.0 * n * n * d)  # Q K^T and P V
    return FlopCount(linear=linear, attention=attention)


def vit_flops_for_tokens(spec: ViTSpec | str, n_tokens: int, n_patches: int | None = None) -> FlopCount:
    """Forward FLOPs of a ViT on ONE sequence of ``n_tokens`` tokens (``n_patches`` of them from pixels)."""
    spec = _spec(spec)
    n_patches = n_tokens - 1 if n_patches is None else n_patches
    blocks = transformer_layer_flops(n_tokens, spec.embed_dim, spec.mlp_ratio) * spec.depth
    patch_in = spec.in_chans * spec.patch_size**2
    return blocks + FlopCount(patch_embed=linear_flops(n_patches, patch_in, spec.embed_dim))


def vit_forward_flops(spec: ViTSpec | str, height: int, width: int | None = None) -> FlopCount:
    """Forward FLOPs of a ViT on one whole ``height x width`` image (one sequence).

    >>> f = vit_forward_flops("ViT-B/14", 3514, 2800)
    >>> round(f.total / 1e12)   # TFLOPs for ONE forward pass of one mammogram
    101
    """
    spec = _spec(spec)
    n_p = num_patches(height, width, spec.patch_size)
    return vit_flops_for_tokens(spec, n_p + 1, n_p)


def roi_path_forward_flops(spec: ViTSpec | str, num_crops: int, crop_size: int) -> FlopCount:
    """Forward FLOPs of the backbone on ``num_crops`` crops: each crop is its own sequence.

    The crops never attend to each other inside the backbone, so the quadratic
    term is ``num_crops * n²`` rather than ``(num_crops * n)²``.
    """
    spec = _spec(spec)
    if num_crops < 1:
        raise ConfigError(f"num_crops must be at least 1, got {num_crops}")
    return vit_forward_flops(spec, crop_size, crop_size) * num_crops


def training_flops(forward: FlopCount | float) -> float:
    """FLOPs of one training step (forward + backward) ~ 3x the forward FLOPs."""
    total = forward.total if isinstance(forward, FlopCount) else float(forward)
    return 3.0 * total


def tflops_per_second(flops: float, seconds: float) -> float:
    """Achieved throughput in TFLOP/s (1e12 FLOP per second)."""
    if seconds <= 0:
        raise ConfigError(f"seconds must be positive, got {seconds}")
    return flops / seconds / 1e12


# --- attention memory -----------------------------------------------------------
def attention_matrix_bytes(spec: ViTSpec | str, n_tokens: int, batch: int = 1,
                           bytes_per_element: int = 2, layers: int = 1) -> float:
    """Memory of the materialised attention matrix in naive (non-fused) softmax attention.

    A naive implementation builds the ``(B, heads, N, N)`` score matrix for each
    layer. At inference one layer's matrix is alive at a time (``layers=1``); for
    training it is kept for the backward pass (``layers=spec.depth``).
    bf16 / fp16 is 2 bytes per element.
    """
    spec = _spec(spec)
    return float(batch) * spec.num_heads * float(n_tokens) ** 2 * bytes_per_element * layers


def flash_attention_bytes(spec: ViTSpec | str, n_tokens: int, batch: int = 1,
                          bytes_per_element: int = 2, layers: int = 1) -> float:
    """Memory that fused (flash) attention keeps: Q, K, V, the output and a row statistic.

    Flash attention never stores the ``N x N`` matrix: it streams over blocks of
    keys and keeps only the output and the log-sum-exp of each row (fp32), so
    its memory grows linearly with ``N``.
    """
    spec = _spec(spec)
    qkvo = 4.0 * batch * n_tokens * spec.embed_dim * bytes_per_element
    logsumexp = 4.0 * batch * spec.num_heads * n_tokens
    return (qkvo + logsumexp) * layers


# --- why attention dilutes -------------------------------------------------------
def attention_dilution(delta: float, n_tokens: int) -> float:
    """Softmax weight that ONE lesion token gets when its logit beats ``n_tokens - 1`` others by ``delta``.

    ``softmax`` gives the lesion ``e^Δ / (e^Δ + N - 1)``: with thousands of
    background tokens even a large advantage is diluted. Computed as
    ``1 / (1 + (N - 1) e^{-Δ})`` so that large ``delta`` does not overflow.

    >>> round(attention_dilution(0.0, 4), 2)   # no advantage: 1 / N
    0.25
    """
    if n_tokens < 1:
        raise ConfigError(f"n_tokens must be at least 1, got {n_tokens}")
    return 1.0 / (1.0 + (n_tokens - 1) * math.exp(-delta))


def logit_advantage_for_weight(weight: float, n_tokens: int) -> float:
    """The logit advantage Δ a single token needs to receive softmax weight ``weight`` among ``n_tokens``.

    Inverse of :func:`attention_dilution`: Δ = log(w (N - 1) / (1 - w)). It grows
    with log N: every 10x more background tokens costs ln(10) ≈ 2.3 more logit.
    """
    if not 0.0 < weight < 1.0:
        raise ConfigError(f"weight must be in (0, 1), got {weight}")
    if n_tokens < 2:
        raise ConfigError(f"n_tokens must be at least 2, got {n_tokens}")
    return math.log(weight * (n_tokens - 1) / (1.0 - weight))


# --- one row of the chapter's table -------------------------------------------------
def cost_row(spec: ViTSpec | str, name: str, num_crops: int, height: int,
             width: int | None = None, bytes_per_element: int = 2) -> dict:
    """Tokens, FLOPs and attention memory of one configuration, as a dict (one table row).

    ``num_crops`` sequences of ``height x width`` pixels each (``num_crops=1``
    and the full image size for the full-image path). Memory is for one layer
    in bf16 (``bytes_per_element=2``), all crops of one image together.
    """
    spec = _spec(spec)
    width = height if width is None else width
    per_seq = num_tokens(height, width, spec.patch_size)
    fwd = vit_forward_flops(spec, height, width) * num_crops
    return {
        "configuration": name,
        "crops": num_crops,
        "tokens": num_crops * per_seq,
        "forward GFLOP": fwd.total / 1e9,
        "train TFLOP": training_flops(fwd) / 1e12,
        "attention share": fwd.attention / fwd.total,
        "naive attn GiB/layer": num_crops * attention_matrix_bytes(spec, per_seq, 1, bytes_per_element) / GIB,
        "flash attn MiB/layer": num_crops
        * flash_attention_bytes(spec, per_seq, 1, bytes_per_element)
        / 2**20,
    }


def cost_table(spec: ViTSpec | str, configurations: Iterable[tuple[str, int, int, int]]) -> list[dict]:
    """Rows of :func:`cost_row` for ``(name, num_crops, height, width)`` tuples."""
    return [cost_row(spec, name, k, h, w) for name, k, h, w in configurations]


# --- measured figures (written by the benchmark) ------------------------------------
def load_bench_table(path):
    """The measured GPU runs in ``results/bench.json`` as a DataFrame, or None if not measured yet.

    The benchmark writes ``{"device", "date", "command", ..., "runs": [{...}, ...]}``;
    each run becomes one row (nested dicts flattened as ``a.b``). The file's
    device and date travel with the table in ``table.attrs``. This function
    never makes up a figure: no file, no table.
    """
    import json
    from pathlib import Path

    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read benchmark results: {e}; re-run `python -m awm_lib bench`", path) from e
    runs = data.get("runs", data.get("results")) if isinstance(data, dict) else data
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise DataError(
            "expected a list of runs under the key 'runs'; re-run `python -m awm_lib bench`", path
        )
    table = pd.json_normalize(runs)
    if isinstance(data, dict):
        table.attrs.update({k: data[k] for k in ("device", "date", "command") if k in data})
    return table
