"""The training loop: AdamW, warm-up + cosine, accumulation, early stopping, exact resume.

:func:`fit` trains any model that maps a batch to logits. It knows nothing about
RoIs: the caller passes ``loss_fn(output, batch) -> (total, parts)`` (see
:mod:`awm_lib.losses`) and, if the model is not called as
``model(images, rois)``, a ``forward_fn(model, batch)``.

What makes the loop trustworthy:

* **Seeded and deterministic.** The order of images in epoch ``e`` is a
  permutation drawn from ``(seed, e)``; each image's augmentation is drawn from
  ``(seed, e, index)`` by the dataset; every DataLoader gets its own seeded
  generator, so no hidden global random state decides anything. On CPU two runs
  give bit-identical weights; on GPU ``torch.use_deterministic_algorithms``
  is asked for (``warn_only`` where an op has no deterministic kernel).
* **Resume ends where an uninterrupted run would have.** A checkpoint holds the
  weights, the optimizer's moments, the RNG states and the position in the epoch
  (``batch_in_epoch``). Resuming skips the batches already seen and continues with
  the very same ones. The learning rate is a pure function of the step
  (:func:`lr_factor`), so there is no scheduler state to lose.
* **Bad numbers stop the run.** A NaN/inf loss or gradient raises
  :class:`awm_lib.errors.NonFiniteLossError` naming the step and the images of
  the batch, instead of training on garbage for hours.
* **A log notebooks can plot.** ``metrics.jsonl`` gets one JSON object per
  optimizer step (``"kind": "train"``) and per validation (``"kind": "val"``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from awm_lib.device import choose_device
from awm_lib.errors import ConfigError, NonFiniteLossError
from awm_lib.io_utils import write_text_atomic
from awm_lib.optim import param_groups, warmup_cosine
from awm_lib.train import checkpoint as ckpt
from awm_lib.train.batch import default_forward, to_device
from awm_lib.train.distributed import DistInfo, single_process, wrap_model
from awm_lib.train.evaluate import predict_probabilities
from awm_lib.train.metrics import roc_auc

LOG_FILE = "metrics.jsonl"


# --- small pure helpers -----------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global RNG, for third-party code that uses it
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    The library's one schedule (:func:`awm_lib.optim.warmup_cosine`) counted in
    optimizer steps: linear warm-up from ``1/warmup`` to 1 over ``warmup_steps``
    (a warm-up step takes the value at its end, so the first step does not learn
    at 0), then a cosine from 1 down to ``min_ratio`` at ``total_steps``.
    """
    t = step + 1 if step < warmup_steps else step
    return warmup_cosine(t, total=total_steps, warmup=warmup_steps, end=min_ratio)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, *, rank: int = 0, world: int = 1, accum_steps: int = 1
) -> list[list[int]]:
    """The micro-batches (lists of dataset indices) this process sees in ``epoch``.

    One permutation per ``(seed, epoch)`` shared by all processes; it is cut into
    global batches of ``batch_size * world`` (an incomplete last one is dropped, and
    so are micro-batches that would not fill an accumulation group), and process
    ``rank`` takes its contiguous slice of each. With ``world=1, batch_size=2B``
    one process sees exactly the union of what two processes with ``B`` see.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    global_batch = batch_size * world
    n_batches = (n // global_batch) // accum_steps * accum_steps
    return [
        perm[b * global_batch + rank * batch_size : b * global_batch + (rank + 1) * batch_size].tolist()
        for b in range(n_batches)
    ]


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: derive NumPy / Python seeds from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002 - the legacy global RNG, for third-party code
    random.seed(s)


def make_loader(
    dataset: Dataset,
    batches: list[list[int]],
    collate_fn: Callable | None,
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader over fixed batches with its own generator (no global RNG is touched)."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
    }
    np_state = np.random.get_state()  # noqa: NPY002
    state["numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    state["numpy_pos"] = int(np_state[2])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- state --------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where the run is. Saved in every checkpoint's ``state.json``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    total_steps: int = 0
    best_metric: float | None = None  # best validation AUC so far
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    done: bool = False


@dataclass
class FitResult:
    out_dir: Path
    state: TrainState
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict] = field(default_factory=list)


class MetricsLog:
    """Append-only JSON-lines log (``metrics.jsonl``); only the main process writes."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (they are redone after a resume)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        write_text_atomic(self.path, "".join(line + "\n" for line in keep))


def read_log(out_dir: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (optionally only one ``kind``), for plotting."""
    path = Path(out_dir) / LOG_FILE
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if kind is None or r.get("kind") == kind]


# --- the loop --------------------------------------------------------------------------------
def fit(
    model: torch.nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    optim_cfg,
    out_dir: str | os.PathLike,
    *,
    loss_fn: Callable[[Any, dict], tuple[torch.Tensor, dict]],
    forward_fn: Callable[[torch.nn.Module, dict], Any] = default_forward,
    collate_fn: Callable | None = None,
    seed: int = 0,
    run_config: dict | None = None,
    resume: bool = False,
    resume_ignore: tuple[str, ...] = (),
    num_workers: int = 0,
    dist: DistInfo | None = None,
    on_step: Callable[[TrainState], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_set``, validating on ``val_set``; checkpoints under ``out_dir``.

    ``optim_cfg`` is an :class:`awm_lib.train.config.OptimConfig`. ``run_config``
    (the whole run's configuration as a dict) is stored in every checkpoint and
    compared on ``resume`` (keys in ``resume_ignore`` may differ). ``on_step`` is
    called after every optimizer step (and its checkpoint); tests use it to
    "kill" a run by raising.
    """
    o = optim_cfg
    dist = dist or single_process()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = choose_device(o.device) if dist.world_size == 1 or o.device != "auto" else dist.device
    seed_everything(seed, o.deterministic)
    run_config = run_config or {}
    amp = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if (o.amp and device.type == "cuda")
        else nullcontext()
    )

    # --- schedule: everything in optimizer steps ---------------------------------------
    micro_per_epoch = len(
        epoch_batches(len(train_set), o.batch_size, seed, 0, world=dist.world_size, accum_steps=o.accum_steps)
    )
    if micro_per_epoch == 0:
        raise ConfigError(
            f"the training set has {len(train_set)} images, fewer than one effective batch "
            f"({o.batch_size} x {o.accum_steps} accumulation x {dist.world_size} processes); lower "
            "optim.batch_size"
        )
    steps_per_epoch = micro_per_epoch // o.accum_steps
    total_steps = (
        o.epochs * steps_per_epoch if o.max_steps is None else min(o.max_steps, o.epochs * steps_per_epoch)
    )

    model.to(device)
    optimizer = torch.optim.AdamW(
        param_groups(ckpt.unwrap(model), o.weight_decay, o.lr_head, backbone_lr=o.lr_backbone),
        betas=(0.9, 0.999),
    )
    state = TrainState(total_steps=total_steps)
    log = MetricsLog(out_dir / LOG_FILE, enabled=dist.is_main)

    if resume and ckpt.has_checkpoint(out_dir):
        ck = ckpt.load_checkpoint(
            out_dir,
            model,
            which="last",
            expected_config=run_config,
            ignore=resume_ignore,
            with_trainer_state=True,
        )
        optimizer.load_state_dict(ck.trainer_state["optimizer"])
        _set_rng_state(ck.trainer_state["rng"])
        state = TrainState(**ck.state["train_state"])
        log.truncate_after(state.step)
        if state.done:
            return _result(out_dir, state)
    elif dist.is_main:  # a fresh start: nothing of an earlier run in this folder may survive
        (out_dir / LOG_FILE).unlink(missing_ok=True)
        shutil.rmtree(out_dir / ckpt.CKPT_DIR, ignore_errors=True)
    model = wrap_model(model, dist, device)

    def save(is_best: bool = False) -> None:
        if dist.is_main:
            trainer_state = {"optimizer": optimizer.state_dict(), "rng": _rng_state()}
            body = {
                "config": run_config, "train_state": dataclasses.asdict(state),
                "epoch": state.epoch, "best_metric": state.best_metric, "done": state.done,
            }
            ckpt.save_checkpoint(
                out_dir, state.step, model, body, trainer_state, is_best=is_best, keep_last=o.keep_last
            )
        dist.barrier()

    def validate() -> bool:
        """Validation AUC, early-stopping bookkeeping; returns whether it improved."""
        ids, labels, probs = predict_probabilities(
            model, val_set, batch_size=o.batch_size, device=device, forward_fn=forward_fn,
            collate_fn=collate_fn, amp=o.amp, dist=dist, num_workers=num_workers,
        )
        auc = roc_auc(labels, probs) if len(labels) else float("nan")
        improved = not math.isnan(auc) and (state.best_metric is None or auc > state.best_metric)
        if improved:
            state.best_metric, state.best_step, state.evals_without_improvement = auc, state.step, 0
        else:
            state.evals_without_improvement += 1
            if o.patience and state.evals_without_improvement >= o.patience:
                state.stopped_early = True
        log.write(
            {
                "kind": "val",
                "step": state.step,
                "epoch": state.epoch,
                "auc": None if math.isnan(auc) else auc,
                "n": len(labels),
                "best_auc": state.best_metric,
                "improved": improved,
            }
        )
        model.train()
        return improved

    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        disable=not (o.progress and dist.is_main),
        dynamic_ncols=True,
    )
    model.train()
    while state.step < total_steps and not state.stopped_early:
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(state.epoch)
        batches = epoch_batches(
            len(train_set),
            o.batch_size,
            seed,
            state.epoch,
            rank=dist.rank,
            world=dist.world_size,
            accum_steps=o.accum_steps,
        )
        loader = make_loader(
            train_set,
            batches[state.batch_in_epoch :],
            collate_fn,
            num_workers,
            device.type == "cuda",
            seed * 100_003 + state.epoch,
        )
        running: dict[str, float] = {}
        for batch in loader:
            batch = to_device(batch, device)
            last_micro = (state.batch_in_epoch + 1) % o.accum_steps == 0
            sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with amp:
                    output = forward_fn(model, batch)
                    loss, parts = loss_fn(output, batch)
                _check_finite(loss, parts, state, batch)
                (loss / o.accum_steps).backward()
            for k, v in {"loss": loss, **parts}.items():
                running[k] = (
                    running.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / o.accum_steps
                )
            state.batch_in_epoch += 1
            if not last_micro:
                continue
            # --- one optimizer step -------------------------------------------------
            factor = lr_factor(state.step, o.warmup_steps, total_steps, o.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            grad_norm = _clip_and_check(model, o.grad_clip, state, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            epoch_done = state.batch_in_epoch >= len(batches)
            if epoch_done:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if state.step % o.log_every == 0 or state.step == total_steps:
                running = {k: running[k] for k in sorted(running)}
                running = dist.mean_scalars(running)  # the whole global batch, not one process's slice
                lrs = {
                    f"lr_{g['name']}": g["lr"]
                    for g in optimizer.param_groups
                    if not g["name"].endswith("no_decay")
                }
                log.write(
                    {
                        "kind": "train",
                        "step": state.step,
                        "epoch": state.epoch,
                        **running,
                        "grad_norm": grad_norm,
                        **lrs,
                    }
                )
            bar.update(1)
            bar.set_postfix(
                loss=f"{running['loss']:.4f}",
                best_auc="-" if state.best_metric is None else f"{state.best_metric:.3f}",
            )
            running = {}
            finished = state.step >= total_steps
            due_eval = (epoch_done if o.eval_every == 0 else state.step % o.eval_every == 0) or finished
            improved = validate() if due_eval and val_set is not None else False
            state.done = finished or state.stopped_early
            if due_eval or state.done or (o.ckpt_every and state.step % o.ckpt_every == 0):
                save(is_best=improved)
            if on_step is not None:
                on_step(state)
            if state.done:
                break
    bar.close()
    if not state.done:  # a run with max_steps = 0 or resumed after the end
        state.done = True
        save()
    if dist.is_main:
        pointer = ckpt.read_pointer(out_dir)
        if "best" not in pointer:
            ckpt.mark_best(out_dir, state.step)
    dist.barrier()
    return _result(out_dir, state)


def _result(out_dir: Path, state: TrainState) -> FitResult:
    return FitResult(
        out_dir=out_dir,
        state=state,
        best_checkpoint=ckpt.resolve_checkpoint(out_dir, "best"),
        last_checkpoint=ckpt.resolve_checkpoint(out_dir, "last"),
        history=read_log(out_dir),
    )


def _batch_ids(batch: Any) -> list:
    ids = batch.get("image_ids") if isinstance(batch, dict) else None
    return list(ids) if ids is not None else ["<no image ids in batch>"]


def _check_finite(loss: torch.Tensor, parts: dict, state: TrainState, batch: Any) -> None:
    if torch.isfinite(loss).all():
        return
    shown = {k: float(v) for k, v in parts.items()}
    raise NonFiniteLossError(
        f"loss is {float(loss.detach())} at step {state.step + 1} (epoch {state.epoch}, micro-batch "
        f"{state.batch_in_epoch}); "
        f"loss parts {shown}; images in the batch: {_batch_ids(batch)}. "
        "Check these images for NaN pixels or empty RoIs, or lower the learning rate."
    )


def _clip_and_check(model: torch.nn.Module, grad_clip: float | None, state: TrainState, batch: Any) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    if not torch.isfinite(norm):
        raise NonFiniteLossError(
            f"gradient norm is {float(norm)} at step {state.step + 1} (epoch {state.epoch}); "
            f"images in the last micro-batch: {_batch_ids(batch)}. Lower the learning rate or enable grad "
            "clipping."
        )
    return float(norm)


__all__ = ["fit", "FitResult", "TrainState", "lr_factor", "epoch_batches", "read_log", "seed_everything"]
