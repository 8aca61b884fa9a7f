"""The pieces training and pretraining share: parameter groups, the schedule, the device choice."""

import math

import torch
import torch.nn as nn

from awm_lib.device import choose_device
from awm_lib.optim import param_groups, warmup_cosine
from awm_lib.train.loop import lr_factor


class WithTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.cls_token = nn.Parameter(
            torch.zeros(1, 1, 4)
        )  # 3-D, but a token: no weight decay in pretraining
        self.head = nn.Linear(4, 2)


def test_pretraining_groups_decay_first_and_spare_tokens():
    m = WithTokens()
    groups = param_groups(m, 0.04, 5e-4, no_decay_names=("token", "position_embeddings"), decay_first=True)
    assert [g["name"] for g in groups] == [
        "all",
        "all_no_decay",
    ]  # no backbone / head split without backbone_lr
    assert [g["apply_wd"] for g in groups] == [True, False]
    assert [id(p) for p in groups[0]["params"]] == [id(m.backbone.weight), id(m.head.weight)]
    assert [id(p) for p in groups[1]["params"]] == [id(m.cls_token), id(m.backbone.bias), id(m.head.bias)]
    assert groups[0]["weight_decay"] == 0.04 and groups[1]["weight_decay"] == 0.0


def test_training_groups_keep_their_order():
    names = [g["name"] for g in param_groups(WithTokens(), 0.05, 1e-4, backbone_lr=1e-5)]
    assert names == [
        "backbone_no_decay",
        "backbone",
        "head_no_decay",
        "head",
    ]  # the order saved optimizer states have


def test_one_schedule_in_steps_and_in_fractions_of_a_run():
    assert warmup_cosine(0.0, total=1.0, warmup=0.1, peak=2.0) == 0.0  # pretraining starts from 0
    assert warmup_cosine(0.1, total=1.0, warmup=0.1, peak=2.0) == 2.0
    assert math.isclose(warmup_cosine(0.55, total=1.0, warmup=0.1, peak=2.0, end=0.0), 1.0)  # half-way down
    assert warmup_cosine(5.0, total=1.0, warmup=0.1, peak=2.0, end=0.5) == 0.5  # stays at the floor
    # training counts optimizer steps, and a warm-up step takes its value at its end
    assert [lr_factor(s, 4, 14, 0.0) for s in range(5)] == [
        warmup_cosine(t, total=14, warmup=4) for t in (1, 2, 3, 4, 4)
    ]


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert (
        choose_device() == expected and choose_device("auto") == expected and choose_device(None) == expected
    )
