"""The RoI encoder: a DINOv2 vision transformer that turns one crop into one vector.

We reuse Hugging Face ``transformers``' ``Dinov2Model`` (and its registers
variant) rather than re-implementing the ViT, so that

* ``facebook/dinov2-small`` / ``-base`` (for readers with network access) and
  our own pretrained checkpoints (``save_pretrained`` folders) load the same
  way: ``BackboneConfig(name_or_path="facebook/dinov2-small")`` or a path;
* attention runs through PyTorch's fused ``scaled_dot_product_attention``.

When the weights cannot be loaded (no network, no local copy), and only when
``allow_random_fallback`` is true, we build the same architecture with RANDOM
weights and say so loudly: a random ViT gives random features, and every number
computed with it must be read that way. ``Backbone.is_pretrained`` and
``Backbone.source`` record which weights were used.

The RoI embedding is the final CLS token (``embedding="cls"``), optionally
concatenated with the mean patch token (``"cls+mean"``, twice the width).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from awm_lib.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Offline architectures for the random fallback (ViT/14, MLP ratio 4, like DINOv2).
#: "small" and "base" match facebook/dinov2-small / -base; "micro" is for smoke runs.
ARCHITECTURES: dict[str, dict[str, int]] = {
    "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2),
    "tiny": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
}

EMBEDDINGS = ("cls", "cls+mean")


class RandomBackboneWarning(UserWarning):
    """The backbone has random weights: its features mean nothing until trained."""


@dataclass
class BackboneConfig:
    """Which ViT encodes the RoI crops, and which of its parts are trained.

    name_or_path: a hub id (``"facebook/dinov2-small"``) or a local
        ``save_pretrained`` folder; ``None`` asks for the random architecture.
    registers: build ``Dinov2WithRegistersModel`` for the random architecture;
        for loaded weights it is checked against the checkpoint.
    random_arch: a key of :data:`ARCHITECTURES` used when nothing is loaded.
    allow_random_fallback: if loading fails, use random weights (with a loud
        warning) instead of raising :class:`~awm_lib.errors.CheckpointError`.
    freeze_patch_embed: freeze the patch-embedding convolution.
    freeze_blocks: freeze the first N transformer blocks.
    freeze_tokens: with ``freeze_blocks > 0``, also freeze the CLS token, the
        registers and the position embeddings, so nothing below a frozen block
        moves (the project's choice). The reference implementation freezes only
        the patch embedding and blocks 0-2 and trains these tokens
        (``freeze_tokens=False`` in the ``paper`` preset).

    Parameters the forward pass never uses are always frozen: HF's
    ``embeddings.mask_token`` only enters with ``bool_masked_pos`` (masked-image
    pretraining), which the RoI encoder never passes. A trainable parameter
    without a gradient makes DistributedDataParallel fail ("Expected to have
    finished reduction in the prior iteration").
    embedding: ``"cls"`` or ``"cls+mean"`` (CLS concatenated with the mean patch token).
    attn_implementation: ``"sdpa"`` (fast) or ``"eager"``.
    pixel_mean / pixel_std: per-channel normalisation the weights expect (ImageNet).
    """

    name_or_path: str | None = None
    registers: bool = False
    random_arch: str = "small"
    allow_random_fallback: bool = True
    freeze_patch_embed: bool = False
    freeze_blocks: int = 0
    freeze_tokens: bool = True
    embedding: str = "cls"
    attn_implementation: str = "sdpa"
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def validate(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"backbone.embedding={self.embedding!r}; choose one of {EMBEDDINGS}")
        if self.random_arch not in ARCHITECTURES:
            raise ConfigError(
                f"backbone.random_arch={self.random_arch!r}; choose one of {sorted(ARCHITECTURES)}"
            )
        if self.freeze_blocks < 0:
            raise ConfigError(f"backbone.freeze_blocks={self.freeze_blocks} must be >= 0")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ConfigError(
                f"backbone.attn_implementation={self.attn_implementation!r}; use 'sdpa' or 'eager'"
            )


@dataclass
class BackboneTokens:
    """What :meth:`Backbone.forward_tokens` returns.

    cls: (N, C) final CLS token; patches: (N, P, C) final patch tokens, row-major
    on a (grid_h, grid_w) grid; cls_attention: (N, heads, grid_h, grid_w) the last
    layer's attention from CLS to each patch (``None`` unless asked for).
    """

    cls: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]
    cls_attention: torch.Tensor | None = None


class Backbone(nn.Module):
    """A DINOv2 ``transformers`` model plus the facts the rest of the library needs."""

    #: ``model.embeddings`` parameters the forward pass never touches (always frozen).
    UNUSED_PARAMETERS = ("mask_token",)

    def __init__(self, model: nn.Module, cfg: BackboneConfig, is_pretrained: bool, source: str):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.is_pretrained = is_pretrained
        self.source = source
        mcfg = model.config
        self.hidden_size: int = mcfg.hidden_size
        self.patch_size: int = mcfg.patch_size
        self.num_heads: int = mcfg.num_attention_heads
        self.depth: int = mcfg.num_hidden_layers
        self.num_registers: int = getattr(mcfg, "num_register_tokens", 0) or 0
        self.embed_dim: int = self.hidden_size * (2 if cfg.embedding == "cls+mean" else 1)
        self._freeze()

    # -- training setup ------------------------------------------------------
    def _freeze(self) -> None:
        cfg = self.cfg
        if cfg.freeze_blocks > self.depth:
            raise ConfigError(
                f"backbone.freeze_blocks={cfg.freeze_blocks} but the backbone has {self.depth} blocks"
            )
        emb = self.model.embeddings
        if cfg.freeze_blocks > 0:
            if cfg.freeze_tokens:
                emb.requires_grad_(False)  # everything below a frozen block is frozen
            for block in self.model.encoder.layer[: cfg.freeze_blocks]:
                block.requires_grad_(False)
        if cfg.freeze_patch_embed:
            emb.patch_embeddings.requires_grad_(False)
        # Never used here (only with bool_masked_pos): a trainable parameter without a
        # gradient breaks DDP's reduction, so it is frozen whatever the config says.
        for name in self.UNUSED_PARAMETERS:
            param = getattr(emb, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)

    # -- forward ---------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised crops -> (N, embed_dim) RoI embeddings."""
        hidden = self.model(pixel_values=pixels).last_hidden_state  # (N, 1+R+P, C)
        cls = hidden[:, 0]  # (N, C)
        if self.cfg.embedding == "cls":
            return cls
        patches = hidden[:, 1 + self.num_registers :]  # (N, P, C)
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)  # (N, 2C)

    def forward_tokens(self, pixels: torch.Tensor, output_attentions: bool = False) -> BackboneTokens:
        """All final tokens of each crop, and (optionally) the last layer's CLS attention.

        SDPA never materialises the attention matrix, so for attention maps we
        switch this one call to the "eager" implementation and switch back after;
        ordinary forwards keep the fused kernel.
        """
        n, _, h, w = pixels.shape
        grid = (h // self.patch_size, w // self.patch_size)
        ctx = self._eager_attention() if output_attentions else contextlib.nullcontext()
        with ctx:
            out = self.model(pixel_values=pixels, output_attentions=output_attentions)
        hidden = out.last_hidden_state  # (N, 1+R+P, C)
        start = 1 + self.num_registers
        cls_att = None
        if output_attentions:
            last = out.attentions[-1]  # (N, heads, T, T)
            cls_att = last[:, :, 0, start:].reshape(n, self.num_heads, *grid)
        return BackboneTokens(cls=hidden[:, 0], patches=hidden[:, start:], grid=grid, cls_attention=cls_att)

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.model.set_attn_implementation(previous)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, embed_dim={self.embed_dim}, patch_size={self.patch_size}"


# -- construction ---------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _random_model(cfg: BackboneConfig) -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    arch = ARCHITECTURES[cfg.random_arch]
    common = dict(
        patch_size=14,
        image_size=518,  # DINOv2's 37x37 position grid, interpolated to any crop size
        intermediate_size=4 * arch["hidden_size"],
        layerscale_value=1.0,
        attn_implementation=cfg.attn_implementation,
        **arch,
    )
    if cfg.registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common))
    return Dinov2Model(Dinov2Config(**common))


def _load_model(cfg: BackboneConfig) -> nn.Module:
    """``AutoModel.from_pretrained`` (the class comes from the checkpoint's config.json)."""
    from transformers import AutoModel

    name = cfg.name_or_path
    local = Path(name).expanduser()
    is_dir = local.is_dir()
    if not is_dir and (name.startswith((".", "/", "~")) or local.exists()):
        raise OSError(f"{name} is not a folder with a save_pretrained checkpoint")
    model = AutoModel.from_pretrained(
        str(local) if is_dir else name,
        attn_implementation=cfg.attn_implementation,
        local_files_only=is_dir or _offline(),
    )
    kind = type(model).__name__
    if kind not in ("Dinov2Model", "Dinov2WithRegistersModel"):
        raise CheckpointError(
            f"{name} holds a {kind}, not a Dinov2Model / Dinov2WithRegistersModel; "
            "give a DINOv2 hub id or a folder written by Dinov2Model.save_pretrained",
            path=name if is_dir else None,
        )
    if cfg.registers and not getattr(model.config, "num_register_tokens", 0):
        raise ConfigError(
            f"backbone.registers=True but {name} has no register tokens; use a "
            "'facebook/dinov2-with-registers-*' checkpoint or set registers=False"
        )
    return model


def _warn_random(cfg: BackboneConfig, reason: str) -> None:
    msg = (
        f"RANDOM BACKBONE: {reason} Using a randomly initialised '{cfg.random_arch}' "
        "DINOv2 architecture: its features are random and every result computed with it "
        "says nothing about pretrained DINOv2. For real weights, download once with network "
        "access (huggingface-cli download facebook/dinov2-small) and set "
        "backbone.name_or_path to the hub id or to a local save_pretrained folder "
        "(e.g. the checkpoint written by `python -m awm_lib pretrain`)."
    )
    logger.warning(msg)
    warnings.warn(msg, RandomBackboneWarning, stacklevel=3)


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Load the configured weights, or (if allowed) fall back to random ones, loudly."""
    cfg.validate()
    if cfg.name_or_path:
        try:
            model = _load_model(cfg)
        except OSError as err:  # no network / not cached / no such folder
            if not cfg.allow_random_fallback:
                raise CheckpointError(
                    f"cannot load backbone weights {cfg.name_or_path!r}: {err}. Give a local "
                    "save_pretrained folder, or allow the random fallback "
                    "(backbone.allow_random_fallback=true).",
                    path=cfg.name_or_path,
                ) from err
            _warn_random(cfg, f"could not load {cfg.name_or_path!r} ({type(err).__name__}).")
        else:
            return Backbone(model, cfg, is_pretrained=True, source=f"pretrained: {cfg.name_or_path}")
    else:
        _warn_random(cfg, "no backbone.name_or_path given.")
    reg = "+registers" if cfg.registers else ""
    return Backbone(_random_model(cfg), cfg, is_pretrained=False, source=f"random: {cfg.random_arch}{reg}")


def save_tiny_dinov2(
    directory: str | os.PathLike,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    image_size: int = 28,
    patch_size: int = 14,
    num_register_tokens: int = 0,
    seed: int = 0,
) -> Path:
    """Write a tiny random DINOv2 with ``save_pretrained`` (offline tests and demos).

    The folder loads with ``BackboneConfig(name_or_path=directory)`` exactly like a
    real checkpoint, which is the code path we want tests to exercise.
    """
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    common = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=4 * hidden_size,
        image_size=image_size,
        patch_size=patch_size,
        layerscale_value=1.0,
    )
    if num_register_tokens:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=num_register_tokens, **common)
        )
    else:
        model = Dinov2Model(Dinov2Config(**common))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory
