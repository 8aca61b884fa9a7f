"""What the loop and the evaluator both do with a batch: move it, run the model, read its logits.

A batch is a dict from the dataset's collate function (``images``, ``rois``,
``labels``, ``image_ids``, ...). :mod:`~awm_lib.train.loop` and
:mod:`~awm_lib.train.evaluate` import these from here, so neither imports the other
for them.
"""

from __future__ import annotations

from typing import Any

import torch


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device`` (non-blocking from pinned memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def default_forward(model: torch.nn.Module, batch: dict) -> Any:
    """``model(images, rois)`` -- the RoI classifier's signature."""
    return model(batch["images"], batch["rois"])


def logits_of(output: Any) -> torch.Tensor:
    """The ``(B,)`` logits from a model output (an object with ``.logits`` or a tensor)."""
    logits = output.logits if hasattr(output, "logits") else output
    return logits.reshape(-1)
