"""Grounding DINO through the same from_pretrained path, on a tiny random offline model."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from awm_lib.errors import ProposalError  # noqa: E402
from awm_lib.proposals.base import make_proposer  # noqa: E402
from awm_lib.proposals.gdino import make_tiny_gdino  # noqa: E402
from awm_lib.proposals.select import SelectConfig, select_rois  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_gdino(tmp_path_factory.mktemp("gdino") / "tiny")


def test_tiny_model_saved_and_reloaded(tiny):
    assert (tiny / "config.json").is_file() and any(tiny.glob("*.safetensors"))
    rng = np.random.default_rng(0)
    images = [
        rng.random((200, 160), dtype=np.float32),
        rng.random((150, 190), dtype=np.float32),
        rng.random((180, 180), dtype=np.float32),
    ]
    prop = make_proposer("gdino", model=str(tiny), batch_size=2, device="cpu")
    out = prop.propose_batch(images)
    assert len(out) == 3
    for p, im in zip(out, images):
        assert len(p) == 20  # every query of the tiny model (threshold 0)
        assert p.boxes.dtype == torch.float32 and p.boxes.shape == (20, 4)
        assert (p.scores[:-1] >= p.scores[1:]).all()
        assert (p.scores >= 0).all() and (p.scores <= 1).all()
        # boxes are in the input image's pixels
        H, W = im.shape
        assert p.boxes[:, 2].max() <= W + 1 and p.boxes[:, 3].max() <= H + 1
        assert p.image_size == im.shape
        s = select_rois(p, im.shape, cfg=SelectConfig(topk=5))
        assert s.rois.shape == (6, 4)
    # deterministic (eval mode); a batch of one is the same as propose()
    again = prop.propose_batch(images[:1])[0]
    assert torch.equal(prop.propose(images[0]).boxes, again.boxes)


def test_thresholds_and_prompt_are_settings(tiny):
    p = make_proposer("gdino", model=str(tiny), box_threshold=0.99, prompt="a mass.", max_boxes=3)
    out = p.propose(np.random.default_rng(1).random((140, 140), dtype=np.float32))
    assert len(out) <= 3 and (out.scores >= 0.99).all()
    assert p.settings()["prompt"] == "a mass."


def test_missing_model_is_a_clear_error(tmp_path):
    p = make_proposer("gdino", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ProposalError, match="save_pretrained"):
        p.propose(np.random.default_rng(0).random((140, 140), dtype=np.float32))
