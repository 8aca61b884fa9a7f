"""The training loop on a tiny stand-in model: schedule, groups, batches, logs, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import ToyDataset, ToyModel, bce_loss, make_optim, state_dict_equal, toy_collate

from awm_lib.errors import ConfigError, NonFiniteLossError
from awm_lib.optim import param_groups
from awm_lib.train.checkpoint import load_checkpoint, resolve_checkpoint
from awm_lib.train.loop import epoch_batches, fit, lr_factor, read_log


def _fit(tmp_path, model=None, train=None, val=None, **optim):
    model = model or ToyModel()
    return model, fit(
        model,
        train or ToyDataset(32, seed=0),
        val if val is not None else ToyDataset(16, seed=1),
        make_optim(**optim),
        tmp_path,
        loss_fn=bce_loss,
        collate_fn=toy_collate,
        seed=0,
        run_config={"toy": True},
    )


def test_lr_factor_warmup_then_cosine_by_hand():
    # warm-up over 4 steps: 1/4, 2/4, 3/4, 4/4
    assert [lr_factor(s, 4, 14, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 14, 0.0) == pytest.approx(1.0)  # cosine starts at 1
    assert lr_factor(9, 4, 14, 0.0) == pytest.approx(0.5)  # half-way: cos(pi/2) = 0 -> 0.5
    assert lr_factor(14, 4, 14, 0.1) == pytest.approx(0.1)  # the end: min_ratio
    assert lr_factor(9, 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)


def test_param_groups_split_backbone_head_and_decay():
    m = ToyModel()
    m.backbone[0].bias.requires_grad_(False)  # frozen: left out
    groups = {g["name"]: g for g in param_groups(m, 0.05, 1e-3, backbone_lr=1e-5)}
    assert set(groups) == {"backbone", "head", "head_no_decay"}
    assert groups["backbone"]["lr"] == 1e-5 and groups["head"]["lr"] == 1e-3
    assert groups["backbone"]["params"] == [m.backbone[0].weight]
    assert groups["head"]["weight_decay"] == 0.05 and groups["head_no_decay"]["weight_decay"] == 0.0
    # LayerNorm weight/bias and the Linear bias are 1-D: no weight decay
    assert len(groups["head_no_decay"]["params"]) == 3
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        param_groups(m, 0.05, 1e-3, backbone_lr=1e-5)


def test_epoch_batches_are_seeded_disjoint_and_shard_like_one_big_batch():
    a = epoch_batches(22, 4, seed=0, epoch=0)
    assert a == epoch_batches(22, 4, seed=0, epoch=0)
    assert a != epoch_batches(22, 4, seed=0, epoch=1)
    assert len(a) == 5 and all(len(b) == 4 for b in a)  # 22 // 4 = 5, the last 2 dropped
    flat = [i for b in a for i in b]
    assert len(set(flat)) == 20
    # accumulation: micro-batches come in whole groups
    assert len(epoch_batches(22, 4, seed=0, epoch=0, accum_steps=2)) == 4
    # two processes with batch 2 see exactly one process's batches of 4, split in halves
    r0 = epoch_batches(22, 2, seed=0, epoch=0, rank=0, world=2)
    r1 = epoch_batches(22, 2, seed=0, epoch=0, rank=1, world=2)
    assert [x + y for x, y in zip(r0, r1)] == a


def test_fit_learns_writes_log_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model, res = _fit(tmp_path, epochs=4)
    assert res.state.done and res.state.step == 4 * 8  # 32 images / batch 4 = 8 steps per epoch
    train = read_log(tmp_path, "train")
    val = read_log(tmp_path, "val")
    assert [r["step"] for r in train] == list(range(1, 33))
    assert [r["step"] for r in val] == [8, 16, 24, 32]  # once per epoch
    assert {"loss", "bce", "grad_norm", "lr_backbone", "lr_head"} <= set(train[0])
    assert np.mean([r["loss"] for r in train[-8:]]) < np.mean([r["loss"] for r in train[:8]])
    assert val[-1]["auc"] > 0.8  # the toy task is easy
    best = load_checkpoint(tmp_path, which="best")
    assert best.state["best_metric"] == max(r["auc"] for r in val)
    assert resolve_checkpoint(tmp_path, "last").name == "step-00000032"


def test_fit_is_deterministic(tmp_path):
    torch.manual_seed(0)
    m1, _ = _fit(tmp_path / "a", model=ToyModel(dropout=0.3), epochs=2)
    torch.manual_seed(0)
    m2, _ = _fit(tmp_path / "b", model=ToyModel(dropout=0.3), epochs=2)
    assert state_dict_equal(m1, m2)
    assert read_log(tmp_path / "a") == read_log(tmp_path / "b")


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    torch.manual_seed(0)
    init = ToyModel()
    m1, m2 = ToyModel(), ToyModel()
    m1.load_state_dict(init.state_dict())
    m2.load_state_dict(init.state_dict())
    _fit(tmp_path / "acc", model=m1, epochs=1, batch_size=4, accum_steps=2, grad_clip=None)
    _fit(tmp_path / "big", model=m2, epochs=1, batch_size=8, accum_steps=1, grad_clip=None)
    assert state_dict_equal(m1, m2, atol=1e-6)


def test_early_stopping_on_flat_validation_auc(tmp_path):
    # a model that ignores its input has validation AUC 0.5 forever
    _, res = _fit(tmp_path, model=ToyModel(constant=True), epochs=10, patience=2)
    assert res.state.stopped_early
    # epoch 1 sets the best (0.5), epochs 2 and 3 do not improve -> stop after 3 epochs
    assert [r["step"] for r in read_log(tmp_path, "val")] == [8, 16, 24]
    assert res.state.best_step == 8 and res.best_checkpoint.name == "step-00000008"


def test_nan_loss_names_step_and_images(tmp_path):
    calls = {"n": 0}

    def flaky(output, batch):
        calls["n"] += 1
        loss = F.binary_cross_entropy_with_logits(output.logits, batch["labels"])
        if calls["n"] == 3:
            loss = loss * float("nan")
        return loss, {"bce": loss.detach()}

    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at step 3 \(epoch 0.*images in the batch: \['toy\d+'"
    ) as e:
        fit(ToyModel(), ToyDataset(32), None, make_optim(), tmp_path, loss_fn=flaky, collate_fn=toy_collate)
    assert "toy" in str(e.value)


def test_too_small_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="fewer than one effective batch"):
        fit(
            ToyModel(),
            ToyDataset(3),
            None,
            make_optim(batch_size=4),
            tmp_path,
            loss_fn=bce_loss,
            collate_fn=toy_collate,
        )


def test_without_validation_and_with_max_steps(tmp_path):
    res = fit(
        ToyModel(),
        ToyDataset(32),
        None,
        make_optim(epochs=5, max_steps=5),
        tmp_path,
        loss_fn=bce_loss,
        collate_fn=toy_collate,
    )
    assert res.state.step == 5 and res.state.done
    # the learning rate reached the end of its cosine at step 5, not at epoch 5
    assert read_log(tmp_path, "train")[-1]["lr_head"] == pytest.approx(3e-2 * lr_factor(4, 2, 5, 0.01))
    assert read_log(tmp_path, "val") == []
    # with nothing to compare, the best checkpoint is the last one
    assert res.best_checkpoint == res.last_checkpoint and res.last_checkpoint.name == "step-00000005"


def test_worker_processes_do_not_change_the_result(tmp_path):
    runs = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = ToyModel(dropout=0.2)
        fit(model, ToyDataset(16), ToyDataset(8, seed=1), make_optim(epochs=1), tmp_path / str(workers),
            loss_fn=bce_loss, collate_fn=toy_collate, num_workers=workers)
        runs.append(model)
    assert state_dict_equal(*runs)
