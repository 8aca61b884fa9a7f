"""The training configuration's ``features`` section: train on cached tokens instead of pixels."""

from __future__ import annotations

from dataclasses import dataclass

from awm_lib.errors import ConfigError


@dataclass
class FeatureConfig:
    """``TrainConfig.features``. With ``cached=True`` (the ``frozen`` preset) every RoI crop is
    embedded once by the frozen backbone ``model.backbone`` and the RoI head trains on the cached
    (B, K, D) tokens; ``model.backbone.embedding`` picks "cls" or "cls+mean" from the cache.

    random_seed: the seed of a random backbone's weights (its identity is
        ``random:<arch>:<seed>``); fixed across runs so that every run shares one cache.
    batch_size / threads / root: how the cache is filled and where it lives
        (None: ``.cache/features``); they never change a token.
    train_threads: torch threads while the head trains on tokens; its matmuls are tiny,
        and one thread was ~20x faster than two on the busy 2-core CPU (50 ms vs 2 s a step).
    """

    cached: bool = False
    random_seed: int = 0
    batch_size: int = 32
    threads: int | None = None
    train_threads: int = 1
    root: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"features.batch_size={self.batch_size} must be >= 1")
        if self.train_threads < 1:
            raise ConfigError(f"features.train_threads={self.train_threads} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"features.threads={self.threads} must be >= 1 (or none)")


#: keys of the section that never change a result (a resumed run may change them)
RESUME_IGNORE = ("features.batch_size", "features.threads", "features.train_threads", "features.root")

__all__ = ["FeatureConfig", "RESUME_IGNORE"]
