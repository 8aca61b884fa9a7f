"""DistributedDataParallel with the REAL RoI classifier on two CPU processes (gloo).

The toy-model DDP test (test_ddp.py) could not see issue 14's crash: HF's
``Dinov2Model.embeddings.mask_token`` is never used by a forward pass without
``bool_masked_pos``, and when it was left trainable (``freeze_blocks == 0``, as in
the smoke preset) DDP failed on the second step with "Expected to have finished
reduction in the prior iteration". Here the real model (a micro ViT) trains a
few steps in two processes, for the project's smoke recipe and the paper recipe,
and both ranks end with the same weights. A negative control puts the unused
parameter back and shows the test would catch the crash.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

MICRO_PAPER = [
    "model.backbone.name_or_path=none",
    "model.backbone.random_arch=micro",
    "model.backbone.freeze_blocks=1",
    "model.crop_size=56",
    "model.d_model=320",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, preset: str, overrides: list[str], out_dir: str, unused_trainable: bool
) -> None:
    import os
    import warnings

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from train_helpers import ToyDataset, make_optim, toy_collate

    from awm_lib.losses import compute_loss
    from awm_lib.model.backbone import Backbone
    from awm_lib.model.roi_transformer import RoIClassifier
    from awm_lib.train.config import make_config
    from awm_lib.train.distributed import cleanup, init_from_env
    from awm_lib.train.loop import fit

    if unused_trainable:  # the bug: leave HF's never-used mask token trainable
        Backbone.UNUSED_PARAMETERS = ()
    cfg = make_config(preset, overrides)
    dist = init_from_env()
    try:
        torch.manual_seed(0)
        model = RoIClassifier(cfg.model)
        if unused_trainable:
            model.backbone.model.embeddings.mask_token.requires_grad_(True)
        k = cfg.model.topk + 1
        fit(
            model,
            ToyDataset(16, seed=0, k=k),
            ToyDataset(8, seed=1, k=k),
            make_optim(epochs=1, batch_size=2, lr_backbone=1e-3, lr_head=1e-3, warmup_steps=0),
            f"{out_dir}/run",
            loss_fn=lambda out, batch: compute_loss(out, batch, cfg.loss),
            collate_fn=toy_collate,
            seed=0,
            run_config={"preset": preset},
            dist=dist,
        )
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, f"{out_dir}/rank{rank}.pt")
    finally:
        cleanup(dist)


def _run(tmp_path, preset, overrides, unused_trainable=False):
    mp.spawn(
        _worker,
        args=(2, _free_port(), preset, overrides, str(tmp_path), unused_trainable),
        nprocs=2,
        join=True,
    )
    return torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset,overrides", [("smoke", []), ("paper", MICRO_PAPER)], ids=["smoke", "paper-micro"]
)
def test_roi_classifier_trains_in_two_gloo_processes(tmp_path, preset, overrides):
    w0, w1 = _run(tmp_path, preset, overrides)
    assert w0.keys() == w1.keys() and len(w0) > 10
    for name in w0:  # DDP averaged the gradients: both ranks took the same steps
        torch.testing.assert_close(w0[name], w1[name], msg=f"{name} differs between the ranks")
    assert (tmp_path / "run").is_dir()


@pytest.mark.slow
def test_an_unused_trainable_parameter_would_crash_ddp(tmp_path):
    """The negative control: with the mask token trainable again, DDP fails as issue 14 reported."""
    with pytest.raises(Exception, match="finished reduction in the prior iteration"):
        _run(tmp_path, "smoke", [], unused_trainable=True)
