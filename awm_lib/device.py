"""Where to run: the one device choice of the library.

``"auto"`` means the first CUDA GPU when there is one, else the CPU; any other
name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is taken as it is.
Training, pretraining, the benchmark, the Grounding DINO proposer and the
chapters all choose through :func:`choose_device`.
"""

from __future__ import annotations

import torch


def choose_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): ``cuda`` if a GPU is visible, else ``cpu``; anything else as given."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
