"""Where things live: the project root, the shared data, default caches."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    return PROJECT_ROOT


def mias_root() -> Path:
    """mini-MIAS: ``$AWM_MIAS_ROOT`` if set, else ``../shared/data/mini-mias`` beside the project."""
    env = os.environ.get("AWM_MIAS_ROOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "mini-mias"


def gdino_vindr_root() -> Path:
    """The paper's published Grounding DINO boxes for VinDr-Mammo's test split."""
    env = os.environ.get("AWM_GDINO_VINDR_ROOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "awm-gdino-vindr"


def cache_root() -> Path:
    """Default cache folder (preprocessed images, proposals): ``$AWM_CACHE`` or ``.cache/`` in the project."""
    env = os.environ.get("AWM_CACHE")
    return Path(env) if env else PROJECT_ROOT / ".cache"


def results_root() -> Path:
    return PROJECT_ROOT / "results"


def checkpoints_root() -> Path:
    return PROJECT_ROOT / "checkpoints"
