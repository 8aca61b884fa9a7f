"""DistributedDataParallel on two CPU processes (gloo) agrees with one process.

Two processes with batch 2 each take the same optimizer steps as one process
with batch 4: same global batches (see ``epoch_batches``), gradients averaged by DDP.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import ToyDataset, ToyModel, bce_loss, ddp_worker, make_optim, toy_collate

from awm_lib.train.checkpoint import resolve_checkpoint
from awm_lib.train.loop import fit, read_log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    torch.manual_seed(0)
    single = ToyModel()
    fit(
        single,
        ToyDataset(32, seed=0),
        ToyDataset(12, seed=1),
        make_optim(epochs=2, batch_size=4),
        tmp_path / "one",
        loss_fn=bce_loss,
        collate_fn=toy_collate,
        seed=0,
        run_config={"toy": 1},
    )

    result = tmp_path / "ddp_weights.pt"
    mp.spawn(ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), str(result)), nprocs=2, join=True)
    ddp = torch.load(result)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(
            ddp[k], v, atol=1e-5, rtol=1e-4, msg=f"{k} differs between DDP and one process"
        )
    # only rank 0 wrote the run folder, and its validation (gathered from both ranks) matches
    assert (
        resolve_checkpoint(tmp_path / "two", "last").name == resolve_checkpoint(tmp_path / "one", "last").name
    )
    val_one = [r["auc"] for r in read_log(tmp_path / "one", "val")]
    val_two = [r["auc"] for r in read_log(tmp_path / "two", "val")]
    assert val_two == pytest.approx(val_one, abs=1e-6)
    assert [r["n"] for r in read_log(tmp_path / "two", "val")] == [12, 12]
    # the logged loss is the mean over both processes' halves = the one-process loss
    loss_one = [r["loss"] for r in read_log(tmp_path / "one", "train")]
    loss_two = [r["loss"] for r in read_log(tmp_path / "two", "train")]
    assert loss_two == pytest.approx(loss_one, rel=1e-4, abs=1e-5)
