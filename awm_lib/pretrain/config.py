"""Pretraining settings: :class:`PretrainConfig`, the named :data:`PRESETS`, and ``key=value`` overrides.

:func:`preset_config` builds a config from a preset name, ``--set key=value``
strings and keyword overrides; the strings are parsed and type-checked by the
library's one override parser (:func:`awm_lib.config.apply_overrides`), so
``bf16=ture`` is an error, not False. The loop that uses it is
:mod:`awm_lib.pretrain.loop`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from awm_lib.config import apply_overrides, from_dict, preset_from, to_dict
from awm_lib.errors import ConfigError
from awm_lib.pretrain.augment import MultiCropConfig


@dataclass
class PretrainConfig:
    # --- architecture (ignored when init_from is set) ---
    hidden_size: int = 384
    depth: int = 6
    heads: int = 6
    patch_size: int = 14
    image_size: int = 224  # size of the position-embedding grid (interpolated for other sizes)
    drop_path_rate: float = 0.1  # student only: the teacher runs in eval mode
    init_from: str | None = None  # save_pretrained folder or hub id (e.g. "facebook/dinov2-small")
    # --- data ---
    bank_path: str | None = None  # a saved TissueBank (.npz); if set, mias/vindr are not read
    mias_root: str | None = "auto"  # "auto" = awm_lib.paths.mias_root(); None = do not use
    mias_half: str | None = (
        None  # "pretrain" = only the women of that half (awm_lib.pretrain.split); None = all
    )
    split_seed: int = 0  # seed of the mini-MIAS half split
    n_synthetic: int = 0
    vindr_root: str | None = None  # a folder of DICOMs (searched recursively)
    workers: int = 1  # processes for rendering synthetic images
    long_side: int = 512
    max_images: int | None = None  # per real source, for quick runs
    # --- views ---
    n_global: int = 2
    n_local: int = 8
    global_size: int = 224
    local_size: int = 98
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.02, 0.15)
    # --- heads and loss ---
    out_dim: int = 8192  # prototypes
    head_hidden: int = 2048
    head_bottleneck: int = 256
    ibot_weight: float = 1.0  # 0 disables the masked-patch term
    ibot_out_dim: int = 8192
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.07)  # warm-up start, final
    teacher_temp_warmup: float = 0.3  # fraction of the run
    center_momentum: float = 0.9
    # --- optimisation ---
    batch_size: int = 256
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup: float = 0.1  # fraction of the run
    weight_decay: tuple[float, float] = (0.04, 0.2)
    ema_momentum: tuple[float, float] = (0.996, 1.0)
    clip_grad: float = 3.0
    freeze_prototypes: float = 0.02  # fraction of the run with prototypes frozen (DINO's first epoch)
    max_steps: int = 100_000
    time_limit_minutes: float | None = None  # the whole run's budget: schedules anneal within it
    stop_after_minutes: float | None = None  # leave THIS invocation after M minutes, resumable
    bf16: bool = True  # autocast on CUDA only
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch (None = torch's default)
    seed: int = 0
    # --- bookkeeping ---
    log_every: int = 10
    checkpoint_every_minutes: float = 5.0
    resume: bool = True
    keep_train_state: bool = False  # keep out_dir/train_state.pt after a finished run
    save_dtype: str = "float16"  # storage dtype of the saved weights; they load as float32
    save_shard_mb: float | None = None  # split the weights into files of at most this many MB
    progress: bool = True
    command: str | None = None  # recorded in the model card; default sys.argv

    def crop_config(self) -> MultiCropConfig:
        return MultiCropConfig(
            n_global=self.n_global,
            n_local=self.n_local,
            global_size=self.global_size,
            local_size=self.local_size,
            global_scale=tuple(self.global_scale),
            local_scale=tuple(self.local_scale),
        )

    def validate(self) -> None:
        for name in ("global_size", "local_size", "image_size"):
            if getattr(self, name) % self.patch_size:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be a multiple of patch_size={self.patch_size}"
                )
        if self.hidden_size % self.heads:
            raise ConfigError(f"hidden_size={self.hidden_size} is not divisible by heads={self.heads}")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ConfigError("max_steps and batch_size must be >= 1")
        if self.save_dtype not in ("float16", "bfloat16", "float32"):
            raise ConfigError(f"save_dtype={self.save_dtype!r}; use float16, bfloat16 or float32")
        if self.mias_half not in (None, "pretrain", "probe"):
            raise ConfigError(f"mias_half={self.mias_half!r}; use pretrain, probe or none")
        self.crop_config().validate()


# Named starting points (their settings); anything else via --set key=value.
_PRESET_SETTINGS: dict[str, dict[str, Any]] = {
    # minutes on a laptop CPU: proves the pipeline, learns little
    "cpu-smoke": dict(
        hidden_size=96,
        depth=4,
        heads=3,
        image_size=112,
        long_side=256,
        global_size=112,
        local_size=56,
        n_local=4,
        out_dim=1024,
        ibot_out_dim=1024,
        head_hidden=512,
        head_bottleneck=128,
        batch_size=16,
        lr=5e-4,
        max_steps=100_000,
        time_limit_minutes=5.0,
        bf16=False,
        log_every=5,
        checkpoint_every_minutes=2.0,
    ),
    # the committed CPU run (checkpoints/awm-dino-cpu): 72 minutes on a shared 2-core CPU. A narrow ViT
    # (width 192, 6 blocks, 3 heads, 2.7M parameters, 5.6 MB in float16) at small crops, chosen by
    # measurement among short candidate runs (results/pretrain_candidates.json,
    # scripts/pretrain_candidates.py).
    # Point bank_path at a bank of synthetic images + the "pretrain" half of the mini-MIAS women.
    # Settings for a run of a few hundred steps (try 2; try 1 used K = 2048 prototypes, teacher temperature
    # 0.04 -> 0.07, lr 5e-4, EMA 0.99, and its teacher stayed near uniform for 75 steps): 256 prototypes,
    # a constant sharp teacher (0.04), lr 1e-3 and a faster EMA teacher (0.98 -> 1).
    "cpu-75min": dict(
        hidden_size=192,
        depth=6,
        heads=3,
        patch_size=14,
        image_size=112,
        long_side=512,
        global_size=112,
        local_size=56,
        n_local=6,
        out_dim=256,
        ibot_out_dim=256,
        head_hidden=512,
        head_bottleneck=128,
        batch_size=32,
        lr=1e-3,
        min_lr=1e-5,
        warmup=0.05,
        teacher_temp=(0.04, 0.04),
        ema_momentum=(0.98, 1.0),
        drop_path_rate=0.05,
        max_steps=1_000_000,
        time_limit_minutes=72.0,
        bf16=False,
        log_every=10,
        checkpoint_every_minutes=4.0,
        mias_half="pretrain",
        threads=1,  # measured: on a 2-core machine shared with other jobs, 2 threads made 8 steps in 8.6 min
        # (each thread waits for the other at every barrier), 1 thread about 6 steps a minute
    ),
    # one H100, 16 training minutes (~20 with start-up and saving): ViT-S/14 width, 6 blocks,
    # 11.0M parameters (22 MB in float16). Point bank_path at a tissue bank built beforehand.
    "gpu-20min": dict(
        hidden_size=384,
        depth=6,
        heads=6,
        image_size=224,
        long_side=512,
        global_size=224,
        local_size=98,
        n_local=8,
        out_dim=8192,
        ibot_out_dim=8192,
        batch_size=256,
        lr=5e-4,
        max_steps=1_000_000,
        time_limit_minutes=16.0,
        bf16=True,
        log_every=20,
        save_shard_mb=15,  # two weight files under 16 MiB each: they fit file-size limits on transfers
    ),
}


#: ``{name: function}``: each builds a fresh :class:`PretrainConfig` (presets are functions, as in training).
PRESETS: dict[str, Callable[[], PretrainConfig]] = {
    name: functools.partial(PretrainConfig, **settings) for name, settings in _PRESET_SETTINGS.items()
}


def preset_config(name: str | None = None, overrides: list[str] | None = None, **kw: Any) -> PretrainConfig:
    """A :class:`PretrainConfig` from a preset name, ``key=value`` strings, and keyword overrides.

    Every value is type-checked: an unknown key or a value of the wrong type
    (``bf16=ture``, ``lr=fast``) raises :class:`awm_lib.errors.ConfigError`
    naming the key and the closest valid choice.
    """
    cfg = preset_from(PRESETS, name) if name is not None else PretrainConfig()
    cfg = apply_overrides(cfg, overrides)
    cfg = dataclasses.replace(cfg, **kw)
    from_dict(PretrainConfig, to_dict(cfg))  # the keyword overrides are checked too
    return cfg
