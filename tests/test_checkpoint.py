"""Checkpoints: round trip, atomic layout, pruning, and clear errors on mismatch or damage."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import ToyModel, state_dict_equal

from awm_lib.errors import CheckpointError
from awm_lib.train import checkpoint as ck


def _save(tmp_path, step, model, best=False, keep_last=2, config=None):
    state = {"config": config or {"model": {"width": 8}, "optim": {"lr": 0.1}}}
    return ck.save_checkpoint(
        tmp_path, step, model, state, {"optimizer": {"x": torch.ones(2)}}, is_best=best, keep_last=keep_last
    )


def test_round_trip_weights_state_and_trainer_state(tmp_path):
    torch.manual_seed(0)
    a = ToyModel()
    path = _save(tmp_path, 3, a, best=True)
    assert path.name == "step-00000003"
    assert sorted(p.name for p in path.iterdir()) == [
        "COMPLETE",
        "model.safetensors",
        "state.json",
        "trainer.pt",
    ]
    torch.manual_seed(1)
    b = ToyModel()
    assert not state_dict_equal(a, b)
    loaded = ck.load_checkpoint(tmp_path, b, which="best", with_trainer_state=True)
    assert state_dict_equal(a, b)
    assert loaded.step == 3 and loaded.config["model"] == {"width": 8}
    assert torch.equal(loaded.trainer_state["optimizer"]["x"], torch.ones(2))


def test_pointer_best_and_last_and_pruning(tmp_path):
    m = ToyModel()
    _save(tmp_path, 1, m, best=True)
    for step in (2, 3, 4, 5):
        _save(tmp_path, step, m, keep_last=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    # the last two, plus the best one, which is never pruned
    assert kept == ["step-00000001", "step-00000004", "step-00000005"]
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text()) == {
        "last": "step-00000005",
        "best": "step-00000001",
    }
    assert ck.resolve_checkpoint(tmp_path, "best").name == "step-00000001"
    assert ck.resolve_checkpoint(tmp_path, "last").name == "step-00000005"
    # a step folder can be given directly
    assert ck.resolve_checkpoint(tmp_path / "checkpoints" / "step-00000004").name == "step-00000004"


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    m = ToyModel()
    _save(tmp_path, 1, m)

    def boom(*a, **k):
        raise KeyboardInterrupt  # killed while writing trainer.pt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, m)
    monkeypatch.undo()
    assert ck.resolve_checkpoint(tmp_path, "last").name == "step-00000001"
    assert not (tmp_path / "checkpoints" / "step-00000002").exists()
    assert not list((tmp_path / "checkpoints").glob(".step-*"))  # the temp folder was removed


def test_incomplete_folder_is_refused(tmp_path):
    path = _save(tmp_path, 1, ToyModel())
    (path / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        ck.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        ck.load_checkpoint(tmp_path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        ck.load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ck.load_checkpoint(tmp_path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    _save(tmp_path, 1, ToyModel(width=8))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        ck.load_checkpoint(tmp_path, ToyModel(width=16))

    class Other(ToyModel):
        def __init__(self):
            super().__init__()
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match="missing"):
        ck.load_checkpoint(tmp_path, Other())


def test_config_mismatch_names_the_keys(tmp_path):
    _save(tmp_path, 1, ToyModel(), config={"model": {"width": 8, "depth": 2}, "optim": {"lr": 0.1}})
    with pytest.raises(CheckpointError, match=r"model.width: 8 \(checkpoint\) vs 16 \(now\)"):
        ck.load_checkpoint(
            tmp_path, expected_config={"model": {"width": 16, "depth": 2}, "optim": {"lr": 0.1}}
        )
    # a sub-config can be compared on its own, and ignored keys may differ
    ck.load_checkpoint(tmp_path, expected_config={"width": 8, "depth": 2}, config_key="model")
    ck.load_checkpoint(
        tmp_path,
        expected_config={"model": {"width": 8, "depth": 2}, "optim": {"lr": 1.0}},
        ignore=("optim.lr",),
    )


def test_missing_trainer_state_cannot_resume(tmp_path):
    m = ToyModel()
    path = ck.save_checkpoint(tmp_path, 1, m, {"config": {}}, trainer_state=None)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        ck.load_checkpoint(path, with_trainer_state=True)


def test_unwrap_ddp_like_wrappers():
    m = ToyModel()
    wrapper = torch.nn.Module()
    wrapper.module = m
    assert ck.unwrap(wrapper) is m
