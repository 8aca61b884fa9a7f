"""RoIClassifier / FullImageClassifier save and load themselves: config.json + model.safetensors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from awm_lib.config import to_dict
from awm_lib.errors import CheckpointError
from awm_lib.model import pretrained
from awm_lib.model.backbone import BackboneConfig
from awm_lib.model.baseline import FullImageClassifier
from awm_lib.model.pretrained import quiet_random_backbone
from awm_lib.model.roi_transformer import RoIClassifier, RoIClassifierConfig
from awm_lib.train import checkpoint as ckpt
from awm_lib.train.config import make_config

CFG = RoIClassifierConfig(
    backbone=BackboneConfig(name_or_path=None, random_arch="micro"),
    crop_size=28,
    topk=2,
    d_model=32,
    depth=1,
    heads=2,
    dropout=0.0,
    head_dropout=0.0,
)


def _model() -> RoIClassifier:
    torch.manual_seed(0)
    with quiet_random_backbone():
        return RoIClassifier(CFG).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 64, 64, generator=g)
    rois = torch.tensor([[[0, 0, 64, 64], [5, 5, 30, 30], [20, 20, 50, 60]]] * 2, dtype=torch.float32)
    return images, rois


def _same_outputs(a, b) -> bool:
    with torch.no_grad():
        return torch.equal(a(*_inputs()).logits, b(*_inputs()).logits)


def test_save_pretrained_round_trip(tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == "awm-roi-classifier" and saved["config"]["d_model"] == 32
    loaded = RoIClassifier.from_pretrained(folder)
    assert loaded.cfg == CFG and not loaded.training and _same_outputs(model, loaded)


def test_from_pretrained_on_a_training_run_folder(tmp_path):
    model = _model()
    run_cfg = to_dict(make_config("smoke"))
    run_cfg["model"] = to_dict(CFG)
    ckpt.save_checkpoint(tmp_path, 3, model, {"config": run_cfg}, is_best=True)
    with quiet_random_backbone():
        other = RoIClassifier(CFG)  # a later, worse checkpoint: "last", not "best"
    ckpt.save_checkpoint(tmp_path, 5, other, {"config": run_cfg})
    assert _same_outputs(
        model, RoIClassifier.from_pretrained(tmp_path)
    )  # the run folder: its best checkpoint
    assert _same_outputs(other, RoIClassifier.from_pretrained(tmp_path, which="last"))
    step = tmp_path / "checkpoints" / "step-00000003"
    assert _same_outputs(model, RoIClassifier.from_pretrained(step))
    # a checkpoint written before step folders held config.json: the model config comes from state.json
    (step / "config.json").unlink()
    assert _same_outputs(model, RoIClassifier.from_pretrained(step))
    with pytest.raises(CheckpointError, match="not the full-image baseline"):
        FullImageClassifier.from_pretrained(step)


def test_wrong_class_missing_weights_and_head_only_checkpoints_are_clear_errors(tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a 'awm-full-image-classifier'"):
        FullImageClassifier.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        RoIClassifier.from_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError, match="weights do not fit this model"
    ):  # e.g. a run's recorded config
        RoIClassifier.from_pretrained(folder, config=dataclasses.replace(CFG, d_model=16, heads=2))
    head_only = tmp_path / "head"
    head_only.mkdir()
    shutil.copy(folder / "config.json", head_only / "config.json")
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("backbone.")},
        str(head_only / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="pass backbone="):
        RoIClassifier.from_pretrained(head_only)
    loaded = RoIClassifier.from_pretrained(
        head_only, backbone=model.backbone
    )  # e.g. the frozen ViT that made the tokens
    assert _same_outputs(model, loaded)


def test_the_run_layout_the_model_reads_is_the_one_training_writes():
    assert (pretrained.RUN_CHECKPOINTS, pretrained.RUN_POINTER, pretrained.RUN_STATE) == (
        ckpt.CKPT_DIR,
        ckpt.POINTER,
        ckpt.STATE,
    )
    assert (pretrained.WEIGHTS_NAME, pretrained.CONFIG_NAME) == (ckpt.WEIGHTS, ckpt.CONFIG)
