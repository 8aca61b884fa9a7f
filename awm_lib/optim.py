"""What training and pretraining share about optimisation: AdamW parameter groups and the schedule.

* :func:`param_groups`: which parameters get weight decay (matrices, not biases,
  norms or tokens: the nanoGPT rule), split into backbone and head when they
  learn at different rates; frozen parameters are left out.
* :func:`warmup_cosine`: a linear warm-up, then a cosine down to a floor. The
  supervised loop counts it in optimizer steps (:func:`awm_lib.train.loop.lr_factor`),
  pretraining in fractions of its time budget (:mod:`awm_lib.pretrain.loop`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from awm_lib.errors import ConfigError


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    lr: float,
    *,
    backbone_lr: float | None = None,
    no_decay_names: Sequence[str] = (),
    decay_first: bool = False,
) -> list[dict]:
    """AdamW groups, one per (part, decayed or not), each with ``name``, ``lr``, ``base_lr``,
    ``weight_decay``, ``apply_wd``.

    With ``backbone_lr``, the parameters of ``model.backbone`` (if the model has
    one) form the part ``"backbone"`` at that rate and the rest the part ``"head"``
    at ``lr``; without it everything is the part ``"all"``. Parameters with
    fewer than 2 dimensions, and those whose name contains one of
    ``no_decay_names``, get no weight decay (group ``<part>_no_decay``).
    Frozen parameters are left out; empty groups are dropped.

    The order of the groups is part of a saved optimizer state, so it is kept as
    each caller always had it: within a part, the no-decay group first
    (training) or the decayed one first (``decay_first=True``: pretraining).
    """
    backbone = getattr(model, "backbone", None) if backbone_lr is not None else None
    backbone_ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, torch.nn.Module) else set()
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if id(p) in backbone_ids else ("head" if backbone_lr is not None else "all")
        decay = p.ndim >= 2 and not any(s in name for s in no_decay_names)
        buckets.setdefault((part, decay), []).append(p)
    groups = []
    for (part, decay), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1] != decay_first)):
        rate = backbone_lr if part == "backbone" else lr
        groups.append(
            {
                "params": params,
                "lr": rate,
                "base_lr": rate,
                "weight_decay": weight_decay if decay else 0.0,
                "apply_wd": decay,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
        )
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    return groups


def warmup_cosine(t: float, *, total: float, warmup: float, peak: float = 1.0, end: float = 0.0) -> float:
    """The learning rate at time ``t``: linear from 0 to ``peak`` over ``[0, warmup]``, then a cosine to
    ``end`` at ``total``.

    ``t``, ``warmup`` and ``total`` share one unit (optimizer steps, or fractions
    of the run); after ``total`` the value stays at ``end``.
    """
    if warmup > 0 and t < warmup:
        return peak * t / warmup
    progress = min(max(t - warmup, 0) / max(total - warmup, 1e-8), 1.0)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * progress))
