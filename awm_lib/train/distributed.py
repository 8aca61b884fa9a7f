"""Several processes, one model: DistributedDataParallel under ``torchrun``.

Launch::

    torchrun --nproc_per_node 4 -m awm_lib train --dataset vindr --root DIR --preset paper --out runs/paper

``torchrun`` starts one process per GPU and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in each one's environment.
:func:`init_from_env` reads them, joins the process group (NCCL on GPUs, gloo on
CPUs) and returns a :class:`DistInfo`. Without those variables it returns a
single-process :class:`DistInfo`, so the same code runs both ways.

How the work is split (see :func:`awm_lib.train.loop.epoch_batches`): every
process draws the same permutation of the training set; each global batch of
``batch_size * world_size`` images is cut into one contiguous slice per process.
DDP averages the gradients across processes during ``backward``, so N processes
with batch B take the same optimizer step as one process with batch N*B (for
losses that average over images; a loss that couples the images of a batch,
like a batch-level contrastive loss, only sees each process's slice).
Only the main process (rank 0) writes files; validation predictions are
gathered from all processes, and the logged losses are averaged over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and tdist.is_available() and tdist.is_initialized()

    @property
    def device(self) -> torch.device:
        if self.backend == "nccl" and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def mean_scalars(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over all processes (for logging losses)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def all_gather_object(self, obj) -> list:
        """Every process's ``obj``, in rank order (just ``[obj]`` in a single process)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out


def single_process() -> DistInfo:
    return DistInfo()


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment, if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return single_process()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def cleanup(info: DistInfo) -> None:
    if info.active:
        tdist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, wrapped in DDP when several processes run.

    ``find_unused_parameters`` stays off (it costs a graph traversal per step); a
    model with frozen parts is fine because frozen parameters have no gradient hook.
    """
    model = model.to(device)
    if not info.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
