"""``--resume``: a run killed at any step and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
from train_helpers import ToyDataset, ToyModel, bce_loss, make_optim, state_dict_equal, toy_collate

from awm_lib.errors import CheckpointError
from awm_lib.train.loop import fit, read_log


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop after a given step."""


def _run(out, *, kill_at=None, resume=False, config=None, **optim):
    torch.manual_seed(0)
    model = ToyModel(dropout=0.2)  # dropout: the RNG state must be restored too

    def on_step(state):
        if kill_at is not None and state.step == kill_at:
            raise Killed

    opts = dict(epochs=3, ckpt_every=3, **optim)
    res = fit(
        model, ToyDataset(24, seed=0), ToyDataset(12, seed=1), make_optim(**opts), out,
        loss_fn=bce_loss, collate_fn=toy_collate, seed=0, run_config=config or {"toy": 1},
        resume=resume, on_step=on_step,
    )
    return model, res


@pytest.mark.parametrize("kill_at", [4, 6, 13])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, kill_at):
    # 24 images / batch 4 = 6 steps per epoch, 18 in all; checkpoints every 3 steps and every epoch.
    # kill at 4: last checkpoint at 3, mid-epoch; at 6: exactly at an epoch end; at 13: after the
    # epoch-2 checkpoint (12), so step 13 is redone.
    full, res_full = _run(tmp_path / "full")
    with pytest.raises(Killed):
        _run(tmp_path / "cut", kill_at=kill_at)
    resumed, res_cut = _run(tmp_path / "cut", resume=True)
    assert res_cut.state.step == res_full.state.step == 18
    assert state_dict_equal(full, resumed)
    assert read_log(tmp_path / "cut") == read_log(tmp_path / "full")  # same losses, same val AUCs
    assert res_cut.state.best_metric == res_full.state.best_metric


def test_resume_with_accumulation_and_two_kills(tmp_path):
    full, _ = _run(tmp_path / "full", batch_size=2, accum_steps=2)
    for k in (2, 7):
        with pytest.raises(Killed):
            _run(tmp_path / "cut", kill_at=k, resume=True, batch_size=2, accum_steps=2)
    resumed, _ = _run(tmp_path / "cut", resume=True, batch_size=2, accum_steps=2)
    assert state_dict_equal(full, resumed)


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    first, res = _run(tmp_path)
    again, res2 = _run(tmp_path, resume=True)
    assert res2.state.done and res2.state.step == res.state.step
    assert res2.last_checkpoint == res.last_checkpoint


def test_resume_with_another_config_is_refused(tmp_path):
    with pytest.raises(Killed):
        _run(tmp_path, kill_at=4, config={"toy": 1, "model": {"width": 8}})
    with pytest.raises(CheckpointError, match=r"model.width: 8 \(checkpoint\) vs 16 \(now\)"):
        _run(tmp_path, resume=True, config={"toy": 1, "model": {"width": 16}})


def test_without_resume_a_run_starts_afresh(tmp_path):
    with pytest.raises(Killed):
        _run(tmp_path, kill_at=4)
    _, res = _run(tmp_path)  # no --resume: start at step 0, overwrite the log
    steps = [r["step"] for r in read_log(tmp_path, "train")]
    assert steps == list(range(1, 19)) and res.state.step == 18
    # no checkpoint of the killed run survives (its step 3 would otherwise sit beside the new ones)
    assert res.best_checkpoint.name != "step-00000003"
