"""Where is each RoI? The codes that tell the RoI transformer.

A set of RoI tokens carries no order or place by itself. The codes, and whose
choice each one is:

``"sinecat+rope1d"`` (the reference implementation's, and the ``paper`` preset's)
    Two codes at once. (1) Each box's ``(cx/W, cy/H, s/W, s/H)``, with
    ``s = max(w, h)`` the side of its square, goes through the DAB-DETR sine
    code (64 features per coordinate, 256 in all, see
    :func:`reference_box_code`), then a LEARNED ``Linear(256, 256)``, and the
    result is CONCATENATED to the backbone's CLS embedding (768 + 256 = 1024
    for ViT-B, no input projection). (2) Inside every attention block, a 1-D
    RoPE over the sequence index (the detector's rank) rotates queries and keys.
    ``"sinecat"`` is part (1) alone.

``"sine"`` (the project's variant)
    A fixed DETR-style sine/cosine embedding of the normalised box
    ``(cx, cy, w, h)`` ADDED to each (projected) token, with no learned
    projection. Attention then sees absolute positions mixed into the content.

``"rope2d"`` (the project's variant)
    A 2-D rotary embedding of the box CENTRES applied to queries and keys
    inside attention. Half of each head's (rotation) pairs turn with ``cx``,
    half with ``cy``. Because rotations compose, ``rot(a)q . rot(b)k =
    q . rot(b - a)k``: the attention logit depends only on WHERE the two RoIs
    are relative to each other (shift all boxes and nothing changes). It
    encodes centres only and DROPS BOX SIZE; ``"sine+rope2d"`` adds the size
    back through the sine code.

``"rope1d_index"``
    1-D RoPE over the sequence index alone (part (2) of the reference's code):
    token 3 is "one step after" token 2 however far apart the boxes are.

``"none"`` uses no position code.

Explained in the book: chapter 4, *Where does the model look?*
(``notebooks/04_attention_visualisation.ipynb``).
"""

from __future__ import annotations

import math

import torch

from awm_lib.errors import ConfigError

POSITION_MODES = ("none", "sine", "rope2d", "rope1d_index", "sine+rope2d", "sinecat", "sinecat+rope1d")

#: Whose choice each mode is (the book and ``--print-config`` say it beside the mode).
POSITION_ORIGIN = {
    "none": "no position code",
    "sine": "the project's variant: fixed sine code of (cx, cy, w, h) added to the token",
    "rope2d": "the project's variant: 2-D RoPE of the box centres (drops box size)",
    "rope1d_index": "1-D RoPE over the sequence index (half of the reference's code)",
    "sine+rope2d": "the project's variant: added sine code + 2-D RoPE of the centres",
    "sinecat": "sine code -> Linear(256, 256), concatenated (half of the reference's code)",
    "sinecat+rope1d": "the reference implementation's: sine code -> Linear(256, 256), concatenated, "
                      "+ 1-D RoPE over the sequence index",
}


def check_mode(mode: str) -> None:
    if mode not in POSITION_MODES:
        raise ConfigError(f"position={mode!r} is unknown; choose one of {', '.join(POSITION_MODES)}")


def uses_sine(mode: str) -> bool:
    """The fixed sine code ADDED to the token (the project's ``sine`` modes)."""
    return mode in ("sine", "sine+rope2d")


def uses_sine_concat(mode: str) -> bool:
    """The reference's sine code -> learned Linear, CONCATENATED to the token."""
    return mode in ("sinecat", "sinecat+rope1d")


def uses_rope(mode: str) -> bool:
    return mode in ("rope2d", "rope1d_index", "sine+rope2d", "sinecat+rope1d")


def uses_rope2d(mode: str) -> bool:
    return mode in ("rope2d", "sine+rope2d")


def boxes_to_cxcywh_norm(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """boxes (B, K, 4) xyxy pixels, image_sizes (B, 2) as (H, W) -> (B, K, 4) cxcywh in [0, 1]."""
    hw = image_sizes.to(boxes.dtype)
    h, w = hw[:, 0, None], hw[:, 1, None]  # (B, 1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], dim=-1)


# -- (a) sine embedding of (cx, cy, w, h) ---------------------------------------------
def sine_box_embedding(boxes_norm: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(B, K, 4) normalised cxcywh -> (B, K, dim) fixed sine/cosine code (DETR-style).

    Each of the 4 coordinates gets ``dim / 4`` features: the coordinate times
    2*pi divided by ``temperature ** (2i / (dim/4))`` for i = 0, 0, 1, 1, ...,
    with sin on even and cos on odd features.
    """
    if dim % 8:
        raise ConfigError(f"sine position code needs a dimension divisible by 8, got {dim}")
    n = dim // 4
    i = torch.arange(n, device=boxes_norm.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / n)  # (n,)
    pos = boxes_norm.float()[..., None] * (2 * math.pi) / dim_t  # (B, K, 4, n)
    code = torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=-1).flatten(-2)  # (B, K, 4, n)
    return code.flatten(-2)  # (B, K, dim): [cx features | cy | w | h]


def reference_box_code(
    boxes_norm: torch.Tensor, dim: int = 256, temperature: float = 10000.0
) -> torch.Tensor:
    """(B, K, 4) normalised cxcywh -> (B, K, dim): the reference implementation's box code.

    What the reference's ``data.py`` computes (DAB-DETR's ``gen_sineembed_for_position``
    with ``d_model=128``): the box becomes ``(cx/W, cy/H, s/W, s/H)`` with ``s = max(w, h)``
    (in pixels), each coordinate gets ``dim / 4`` sine/cosine features (64 of them for
    ``dim = 256``, frequencies ``temperature ** (2 floor(i/2) / 64)``), in the order
    ``[cy | cx | s/W | s/H]`` (DAB-DETR puts y first). A learned ``Linear(dim, dim)``
    follows in the model.

    Every RoI here is square in pixels (side ``s``), so its normalised ``(w, h)``
    already IS ``(s/W, s/H)``; our ``s`` includes the margin (the reference
    normalises the detector box's side, before the margin is added).
    """
    cx, cy, w, h = boxes_norm.float().unbind(-1)
    return sine_box_embedding(torch.stack([cy, cx, w, h], dim=-1), dim, temperature)


# -- rotary embeddings ---------------------------------------------------------------
def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs ``(x[i], x[i + d/2])`` by ``angles[i]``.

    x (B, heads, K, d); angles broadcastable to (B, heads, K, d/2).
    """
    d2 = x.shape[-1] // 2
    x1, x2 = x[..., :d2], x[..., d2:]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rope2d_angles(
    centres: torch.Tensor,
    head_dim: int,
    min_wavelength: float = 0.02,
    max_wavelength: float = 4.0,
) -> torch.Tensor:
    """(B, K, 2) box centres (cx, cy) in normalised image units -> (B, K, head_dim/2) angles.

    The first half of the ``head_dim/2`` rotation pairs turns with ``cx``, the
    second with ``cy``. Wavelengths are log-spaced from ``min_wavelength`` (2% of
    the image: finer detail than any RoI needs) to ``max_wavelength`` (longer
    than the image, so the slowest pair never wraps and far-apart boxes stay
    distinguishable). Positions are continuous: no grid, no rounding.
    """
    if head_dim % 4:
        raise ConfigError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    n = head_dim // 4
    t = torch.linspace(0.0, 1.0, n, device=centres.device, dtype=torch.float32)  # n=1 -> [0.]
    wavelengths = min_wavelength * (max_wavelength / min_wavelength) ** t  # (n,)
    freqs = 2 * math.pi / wavelengths  # radians per image width
    c = centres.float()
    return torch.cat([c[..., 0:1] * freqs, c[..., 1:2] * freqs], dim=-1)  # (B, K, head_dim/2)


def rope1d_angles(length: int, head_dim: int, base: float = 10000.0, device=None) -> torch.Tensor:
    """(length, head_dim/2) angles of standard 1-D RoPE over the sequence index 0..length-1."""
    if head_dim % 2:
        raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim // 2, device=device, dtype=torch.float32) / (head_dim // 2))
    pos = torch.arange(length, device=device, dtype=torch.float32)
    return pos[:, None] * inv_freq  # (length, head_dim/2)


def rope_angles(
    mode: str,
    boxes_norm: torch.Tensor,
    head_dim: int,
    min_wavelength: float = 0.02,
    max_wavelength: float = 4.0,
) -> torch.Tensor | None:
    """Angles for ``mode`` given (B, K, 4) normalised cxcywh boxes -> (B, K, head_dim/2) or None."""
    check_mode(mode)
    if uses_rope2d(mode):
        return rope2d_angles(boxes_norm[..., :2], head_dim, min_wavelength, max_wavelength)
    if mode in ("rope1d_index", "sinecat+rope1d"):
        b, k = boxes_norm.shape[:2]
        return rope1d_angles(k, head_dim, device=boxes_norm.device).expand(b, k, head_dim // 2)
    return None
