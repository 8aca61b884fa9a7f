"""Which frozen backbone embeds the crops, and the identity its tokens are cached under.

Three kinds, in the order a CPU reader meets them:

* **random** (``name_or_path=None``): the DINOv2 architecture with random weights,
  drawn from a fixed seed, so every run shares the same "random ViT-S/14" and its
  cache. The honest baseline: whatever it reaches, a learned backbone must beat.
  Identity: ``random:<arch>:<seed>``.
* **the project's own self-supervised checkpoint** (``checkpoints/awm-dino-cpu``,
  written by ``python -m awm_lib pretrain``): any ``save_pretrained`` folder loads
  through ``from_pretrained``. Identity: ``sha256:`` of its weight files.
* **facebook/dinov2-small / -base** for readers with network access (or a filled
  Hugging Face cache). Offline they are skipped with a one-line reason.

:func:`resolve` turns a :class:`~awm_lib.model.backbone.BackboneConfig` into a
:class:`ResolvedBackbone` WITHOUT building the model (a warm cache never loads
it); :meth:`ResolvedBackbone.build` builds it frozen, in eval mode.
:class:`TokenInput` is what stands where the ViT stands inside a
:class:`~awm_lib.model.roi_transformer.RoIClassifier` that trains on cached tokens.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from awm_lib import paths
from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.features.key import files_sha256
from awm_lib.model.backbone import (
    ARCHITECTURES,
    Backbone,
    BackboneConfig,
    RandomBackboneWarning,
    build_backbone,
)

SSL_CHECKPOINT = "checkpoints/awm-dino-cpu"  # the pretraining issue's CPU checkpoint (project-relative)
HUB_BACKBONES = ("facebook/dinov2-small", "facebook/dinov2-base")
HUB_WIDTHS = {
    "facebook/dinov2-small": 384,
    "facebook/dinov2-base": 768,
    "facebook/dinov2-large": 1024,
    "facebook/dinov2-giant": 1536,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class BackboneUnavailable(CheckpointError):
    """The backbone's weights are not here (offline hub id, missing folder)."""


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def find_local(name: str) -> Path | None:
    """A ``save_pretrained`` folder named by ``name``: as given, else relative to the project root."""
    for p in (Path(name).expanduser(), paths.project_root() / name):
        if (p / "config.json").is_file():
            return p.resolve()
    return None


def default_ssl_checkpoint() -> str | None:
    """``checkpoints/awm-dino-cpu`` when it holds a checkpoint, else None."""
    return SSL_CHECKPOINT if find_local(SSL_CHECKPOINT) is not None else None


def _hub_snapshot(name: str) -> Path:
    """The local snapshot folder of a hub id (downloaded once when online)."""
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise BackboneUnavailable(f"{name}: huggingface_hub is not installed") from e
    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        folder = Path(cached).parent
        if any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()):
            return folder
    if _offline():
        raise BackboneUnavailable(
            f"{name}: not in the Hugging Face cache and HF_HUB_OFFLINE is set (download it once with network "
            "access)"
        )
    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # no network, unknown id, ...: one line, never a traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise BackboneUnavailable(f"{name}: cannot be downloaded ({type(e).__name__}: {first})") from e


def _looks_local(name: str) -> bool:
    """A path rather than a hub id: starts like one, or its parent folder exists here."""
    p = Path(name).expanduser()
    return (
        name.startswith((".", "/", "~", "checkpoints/"))
        or "/" not in name
        or p.exists()
        or p.parent.is_dir()
        or (paths.project_root() / name).parent.is_dir()
    )


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise BackboneUnavailable(f"{folder}: a config.json but no weight files (*.safetensors / *.bin)")
    return [folder / "config.json", *files]


@dataclass(frozen=True)
class ResolvedBackbone:
    """A backbone named precisely enough to key a cache on, not yet built.

    ``kind``: "random", "local" or "hub"; ``weights``: the cache identity;
    ``folder``: where the weights are read from (None for random).
    """

    cfg: BackboneConfig
    kind: str
    name: str
    weights: str
    arch: dict
    folder: Path | None = None
    random_seed: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hidden_size(self) -> int:
        return int(self.arch["hidden_size"])

    @property
    def patch_size(self) -> int:
        return int(self.arch.get("patch_size", 14))

    def record(self) -> dict:
        """What every result records about the backbone."""
        return {
            "name": self.name,
            "kind": self.kind,
            "weights": self.weights,
            "pretrained": self.kind != "random",
            "hidden_size": self.hidden_size,
            "patch_size": self.patch_size,
        }

    def build(self) -> Backbone:
        """The backbone, frozen and in eval mode. Random weights come from ``random_seed``
        (the global RNG is left as it was)."""
        log = logging.getLogger("awm_lib.model.backbone")
        disabled, log.disabled = log.disabled, True  # resolve() already said it is random
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomBackboneWarning)
            try:
                bb = self._build()
            finally:
                log.disabled = disabled
        bb.requires_grad_(False)
        return bb.eval()

    def _build(self) -> Backbone:
        if self.kind == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.random_seed)
                return build_backbone(replace(self.cfg, name_or_path=None))
        return build_backbone(replace(self.cfg, name_or_path=str(self.folder), allow_random_fallback=False))


def _arch_from_config(folder: Path) -> dict:
    c = json.loads((folder / "config.json").read_text())
    keys = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "num_register_tokens",
        "image_size",
    )
    return {k: c[k] for k in keys if k in c}


def resolve(cfg: BackboneConfig, random_seed: int = 0, *, warn: bool = True) -> ResolvedBackbone:
    """Name the weights ``cfg`` asks for, without building the model.

    A hub id or folder that is not available falls back to the random architecture
    when ``cfg.allow_random_fallback`` (with a :class:`RandomBackboneWarning`, like
    :func:`~awm_lib.model.backbone.build_backbone`), else raises :class:`BackboneUnavailable`.
    """
    cfg.validate()
    notes: tuple[str, ...] = ()
    if cfg.name_or_path:
        try:
            local = find_local(cfg.name_or_path)
            if local is not None:
                kind, folder = "local", local
            elif _looks_local(cfg.name_or_path):
                raise BackboneUnavailable(
                    f"{cfg.name_or_path}: no such save_pretrained folder (a folder with config.json and "
                    "weights)"
                )
            else:
                kind, folder = "hub", _hub_snapshot(cfg.name_or_path)
            files = _weight_files(folder)
            arch = _arch_from_config(folder)
            return ResolvedBackbone(
                cfg, kind, cfg.name_or_path, "sha256:" + files_sha256(files), arch, folder, random_seed
            )
        except BackboneUnavailable as e:
            if not cfg.allow_random_fallback:
                raise
            notes = (str(e),)
            if warn:
                warnings.warn(
                    f"RANDOM BACKBONE for the feature cache: {e}. Using random '{cfg.random_arch}' weights "
                    f"(seed {random_seed}); every result records it.",
                    RandomBackboneWarning,
                    stacklevel=2,
                )
    from importlib.metadata import version  # not `import transformers`: seconds on a busy CPU

    if warn and not cfg.name_or_path:
        warnings.warn(
            "RANDOM BACKBONE for the feature cache: no backbone.name_or_path given; random "
            f"'{cfg.random_arch}' "
            f"weights (seed {random_seed}), the honest baseline; every result records it.",
            RandomBackboneWarning,
            stacklevel=2,
        )
    reg = "+registers" if cfg.registers else ""
    arch = {**ARCHITECTURES[cfg.random_arch], "patch_size": 14, "registers": cfg.registers,
            "transformers": version("transformers"), "torch": torch.__version__.split("+")[0]}
    return ResolvedBackbone(cfg, "random", f"random-{cfg.random_arch}{reg}-seed{random_seed}",
                            f"random:{cfg.random_arch}{reg}:{random_seed}", arch, None, random_seed, notes)


def token_dim(cfg: BackboneConfig, random_seed: int = 0) -> int:
    """Width of one cached RoI embedding: hidden size (x2 for ``embedding="cls+mean"``)."""
    h = resolve(cfg, random_seed, warn=False).hidden_size
    return h * (2 if cfg.embedding == "cls+mean" else 1)


def standard_backbones() -> list[BackboneConfig]:
    """The backbones the book and the ablation compare: random ViT-S/14, the project's
    SSL checkpoint, DINOv2-small and -base (without a random fallback)."""
    out = [BackboneConfig(name_or_path=None, random_arch="small")]
    out.append(BackboneConfig(name_or_path=SSL_CHECKPOINT, allow_random_fallback=False))
    out += [
        BackboneConfig(name_or_path=h, random_arch=h.rsplit("-", 1)[1], allow_random_fallback=False)
        for h in HUB_BACKBONES
    ]
    return out


def available_backbones(
    configs: list[BackboneConfig] | None = None, random_seed: int = 0
) -> tuple[list[ResolvedBackbone], list[str]]:
    """``(usable, skipped)``: the resolved backbones that are here, and one line per one that is not."""
    usable, skipped = [], []
    for cfg in configs or standard_backbones():
        try:
            usable.append(resolve(replace(cfg, allow_random_fallback=False), random_seed))
        except BackboneUnavailable as e:
            skipped.append(f"skipped {e}")
    return usable, skipped


class TokenInput(nn.Module):
    """Stands where the ViT stands in a RoI classifier that trains on cached tokens.

    It has the facts the classifier reads (``embed_dim``, ``patch_size``, ``cfg``)
    and no parameters, so a checkpoint holds only the RoI head. Calling it on
    pixels is an error that says how to get tokens instead.
    """

    is_pretrained = False

    def __init__(self, cfg: BackboneConfig, embed_dim: int, patch_size: int = 14, source: str = ""):
        super().__init__()
        self.cfg, self.embed_dim, self.patch_size, self.source = cfg, int(embed_dim), int(patch_size), source

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        raise ConfigError(
            "this RoI classifier trains on cached tokens of a frozen backbone (features.cached=true): "
            "get the tokens from awm_lib.features.FeatureCache and call model.forward_tokens"
        )

    def extra_repr(self) -> str:
        return f"cached tokens: {self.source!r}, embed_dim={self.embed_dim}"


def token_input(cfg: BackboneConfig, random_seed: int = 0) -> TokenInput:
    rb = resolve(cfg, random_seed, warn=False)
    return TokenInput(
        cfg, rb.hidden_size * (2 if cfg.embedding == "cls+mean" else 1), rb.patch_size, rb.weights
    )


__all__ = [
    "BackboneUnavailable",
    "HUB_BACKBONES",
    "ResolvedBackbone",
    "SSL_CHECKPOINT",
    "TokenInput",
    "available_backbones",
    "default_ssl_checkpoint",
    "find_local",
    "resolve",
    "standard_backbones",
    "token_dim",
    "token_input",
]
