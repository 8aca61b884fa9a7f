"""Shared pytest fixtures.

- ``mias_root``: the real mini-MIAS folder (``../shared/data/mini-mias`` or
  ``$AWM_MIAS_ROOT``); fails with a clear message when it is missing.
- ``breast_phantom``: a factory for small synthetic mammogram-like arrays with a
  known breast position, a bright label and a known chest-wall side.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything


@pytest.fixture(scope="session")
def mias_root():
    from awm_lib.paths import mias_root as _mias_root

    root = _mias_root()
    if not (root / "Info.txt").is_file():
        pytest.fail(
            f"mini-MIAS not found at {root}: the tests need it (Info.txt + mdbNNN.png). "
            "Put it at ../shared/data/mini-mias beside the project or set AWM_MIAS_ROOT."
        )
    return root


def make_breast_phantom(
    height: int = 256,
    width: int = 200,
    chest_wall: str = "left",
    bits: int = 12,
    label: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A (height, width) uint array: a half-disc "breast" against one edge, plus a label.

    Returns ``(pixels, breast_box)`` where ``breast_box`` is the xyxy bounding box of
    the half-disc in pixels (x1, y1 exclusive). Background is dark (~3% of full
    scale, with noise), tissue bright and textured, and a small bright square
    "label" sits in the corner opposite the chest wall, away from the breast.
    """
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    yy, xx = np.mgrid[0:height, 0:width]
    cy, r = height / 2, 0.38 * height
    dx = xx if chest_wall == "left" else (width - 1 - xx)
    breast = ((dx / (0.6 * width)) ** 2 + ((yy - cy) / r) ** 2) <= 1.0
    img = rng.normal(0.03, 0.01, size=(height, width))
    img[breast] = 0.55 + 0.15 * rng.random(breast.sum())
    if label:
        lx = width - 16 if chest_wall == "left" else 6
        img[6:16, lx : lx + 10] = 0.98
    pixels = np.clip(img, 0, 1) * top
    ys, xs = np.nonzero(breast)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return np.round(pixels).astype(np.uint16 if bits > 8 else np.uint8), box


@pytest.fixture
def breast_phantom():
    return make_breast_phantom
