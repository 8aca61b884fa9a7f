"""Predict on a split, save one row per image, and compute the metrics.

The protocol (see :mod:`awm_lib.train.metrics`):

1. predict probabilities on the **validation** split and choose the decision
   threshold there (:func:`awm_lib.train.metrics.choose_threshold`);
2. predict on the **test** split and report AUC, F1 / specificity / accuracy at
   that threshold, sensitivity at FPR 0.1 / 0.3 / 0.5, with bootstrap 95% CIs;
3. keep the per-image predictions (``predictions_<split>.csv``: ``image_id,
   label, prob``) so any other statistic can be computed later without the model.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from awm_lib.errors import DataError
from awm_lib.io_utils import atomic_path
from awm_lib.train.batch import default_forward, logits_of, to_device
from awm_lib.train.distributed import DistInfo, single_process
from awm_lib.train.metrics import METRIC_KEYS, bootstrap_metrics, choose_threshold


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    forward_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    amp: bool = True,
    dist: DistInfo | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image_ids, labels, probabilities)`` for every item of ``dataset``, in dataset order.

    Under DDP each process predicts every ``world_size``-th item and the results
    are gathered, so all processes return the full, identically ordered arrays.
    """
    dist = dist or single_process()
    device = torch.device(device)
    forward_fn = forward_fn or default_forward
    mine = list(range(dist.rank, len(dataset), dist.world_size))
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if (amp and device.type == "cuda")
        else nullcontext()
    )
    was_training = model.training
    model.eval()
    rows: list[tuple[int, str, int, float]] = []
    try:
        for idx, batch in zip(batches, tqdm(loader, desc="predict", disable=not progress, leave=False)):
            batch = to_device(batch, device)
            with autocast:
                probs = torch.sigmoid(logits_of(forward_fn(model, batch)).float())
            labels = batch["labels"].reshape(-1).tolist()
            ids = batch.get("image_ids") or [str(i) for i in idx]
            rows.extend(zip(idx, ids, (int(v) for v in labels), probs.cpu().tolist()))
    finally:
        model.train(was_training)
    gathered = sorted(r for part in dist.all_gather_object(rows) for r in part)
    ids = [r[1] for r in gathered]
    return (
        ids,
        np.array([r[2] for r in gathered], dtype=np.int64),
        np.array([r[3] for r in gathered], dtype=np.float64),
    )


def save_predictions(
    path: str | os.PathLike, image_ids, labels, probs, extra: dict[str, list] | None = None
) -> Path:
    """Write ``image_id,label,prob[,extra...]`` (one row per image), atomically."""
    path = Path(path)
    extra = extra or {}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "label", "prob", *extra])
        for i, (iid, lab, p) in enumerate(zip(image_ids, labels, probs)):
            w.writerow([iid, int(lab), f"{float(p):.6f}", *(v[i] for v in extra.values())])
    return path


def read_predictions(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ``(image_ids, labels, probs)`` of a predictions CSV."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        ids = [r["image_id"] for r in rows]
        return ids, np.array([int(r["label"]) for r in rows]), np.array([float(r["prob"]) for r in rows])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(
            f"cannot read predictions ({e}); expected columns image_id,label,prob", path=path
        ) from e


def metrics_from_predictions(
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    criterion: str = "f1",
    n_boot: int = 1000,
    seed: int = 0,
    groups_test=None,
) -> dict:
    """Threshold from ``val = (labels, probs)``, metrics with CIs on ``test = (labels, probs)``.

    Returns ``{"metrics": {...7 keys...}, "threshold": t, "n_test": ..., "n_test_pos": ...,
    "n_val": ...}``.
    """
    y_val, p_val = val
    y_test, p_test = test
    threshold = choose_threshold(y_val, p_val, criterion=criterion)
    metrics = bootstrap_metrics(y_test, p_test, threshold, n_boot=n_boot, seed=seed, groups=groups_test)
    return {
        "metrics": metrics,
        "threshold": threshold,
        "threshold_criterion": criterion,
        "n_val": int(len(y_val)),
        "n_test": int(len(y_test)),
        "n_test_pos": int(np.sum(y_test)),
        "n_boot": n_boot,
    }


def format_results(res: dict) -> str:
    """A few readable lines of a results dict: each metric with its 95% CI."""
    head = (
        f"{res.get('dataset', '?')}: test n={res.get('n_test')} ({res.get('n_test_pos')} cancers), "
        f"threshold {res.get('threshold') or float('nan'):.3f} (chosen on validation, n={res.get('n_val')})"
    )
    lines = [head]

    def num(x) -> str:
        return "  n/a" if x is None or x != x else f"{x:.3f}"

    for k in METRIC_KEYS:
        v = res[k]
        lines.append(f"  {k:<12} {num(v['mean'])}  [95% CI {num(v['ci_low'])}, {num(v['ci_high'])}]")
    return "\n".join(lines)
