"""Backbone: loading by path, the loud random fallback, freezing, tokens and attention maps."""

import warnings

import pytest
import torch

from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.model.backbone import (
    BackboneConfig,
    RandomBackboneWarning,
    build_backbone,
    save_tiny_dinov2,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_loads_saved_weights_by_path(tiny_dir):
    from transformers import Dinov2Model

    bb = build_backbone(BackboneConfig(name_or_path=str(tiny_dir)))
    assert bb.is_pretrained and str(tiny_dir) in bb.source
    assert (bb.embed_dim, bb.patch_size, bb.depth, bb.num_registers) == (32, 14, 2, 0)
    ref = Dinov2Model.from_pretrained(tiny_dir)
    for (name, p), (_, q) in zip(bb.model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(p, q), name
    x = torch.randn(3, 3, 28, 28)
    bb.eval()
    with torch.no_grad():
        assert torch.allclose(bb(x), ref.eval()(pixel_values=x).pooler_output, atol=1e-6)


def test_cls_plus_mean_concatenates_cls_and_mean_patch(tiny_dir):
    bb = build_backbone(BackboneConfig(name_or_path=str(tiny_dir), embedding="cls+mean")).eval()
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        emb = bb(x)
        tok = bb.forward_tokens(x)
    assert bb.embed_dim == 64 and emb.shape == (2, 64)
    assert tok.grid == (3, 3) and tok.patches.shape == (2, 9, 32)
    assert torch.allclose(emb, torch.cat([tok.cls, tok.patches.mean(1)], -1), atol=1e-6)


def test_attention_maps_use_eager_once_and_match_sdpa(tiny_dir):
    bb = build_backbone(BackboneConfig(name_or_path=str(tiny_dir))).eval()
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        plain = bb.forward_tokens(x)
        with_att = bb.forward_tokens(x, output_attentions=True)
    assert bb.model.config._attn_implementation == "sdpa"  # switched back
    att = with_att.cls_attention
    assert att.shape == (2, 2, 3, 3)
    # CLS attends to itself and the 9 patches: the patch part is positive and sums below 1
    s = att.sum(dim=(-1, -2))
    assert torch.all(att > 0) and torch.all(s < 1)
    assert torch.allclose(plain.cls, with_att.cls, atol=1e-5)
    assert torch.allclose(plain.patches, with_att.patches, atol=1e-5)


def test_registers_are_skipped_in_patch_tokens(tmp_path):
    d = save_tiny_dinov2(tmp_path / "reg", num_register_tokens=2)
    bb = build_backbone(BackboneConfig(name_or_path=str(d), registers=True))
    assert bb.num_registers == 2
    tok = bb.forward_tokens(torch.randn(1, 3, 28, 28), output_attentions=True)
    assert tok.patches.shape == (1, 4, 32) and tok.cls_attention.shape == (1, 2, 2, 2)


def test_registers_flag_checked_against_checkpoint(tiny_dir):
    with pytest.raises(ConfigError, match="register"):
        build_backbone(BackboneConfig(name_or_path=str(tiny_dir), registers=True))


def test_missing_weights_raise_without_fallback(tmp_path):
    cfg = BackboneConfig(name_or_path=str(tmp_path / "nope"), allow_random_fallback=False)
    with pytest.raises(CheckpointError, match="cannot load"):
        build_backbone(cfg)


def test_offline_hub_id_falls_back_loudly():
    cfg = BackboneConfig(name_or_path="facebook/dinov2-small", random_arch="micro")
    with pytest.warns(RandomBackboneWarning, match="RANDOM BACKBONE"):
        bb = build_backbone(cfg)
    assert not bb.is_pretrained and bb.source.startswith("random: micro")
    assert bb.embed_dim == 64 and bb.depth == 2
    assert bb(torch.randn(1, 3, 28, 28)).shape == (1, 64)


def test_no_name_gives_random_with_warning_and_registers():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = build_backbone(BackboneConfig(random_arch="micro", registers=True))
    assert any(issubclass(w.category, RandomBackboneWarning) for w in caught)
    assert bb.num_registers == 4 and not bb.is_pretrained


def test_freezing(tiny_dir):
    bb = build_backbone(BackboneConfig(name_or_path=str(tiny_dir), freeze_patch_embed=True))
    emb = bb.model.embeddings
    assert not any(p.requires_grad for p in emb.patch_embeddings.parameters())
    assert emb.cls_token.requires_grad
    assert all(p.requires_grad for p in bb.model.encoder.parameters())

    bb = build_backbone(BackboneConfig(name_or_path=str(tiny_dir), freeze_blocks=1))
    assert not any(p.requires_grad for p in bb.model.embeddings.parameters())
    assert not any(p.requires_grad for p in bb.model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bb.model.encoder.layer[1].parameters())
    bb(torch.randn(1, 3, 28, 28)).sum().backward()
    assert bb.model.encoder.layer[1].mlp.fc1.weight.grad is not None
    assert bb.model.encoder.layer[0].mlp.fc1.weight.grad is None

    with pytest.raises(ConfigError, match="freeze_blocks"):
        build_backbone(BackboneConfig(name_or_path=str(tiny_dir), freeze_blocks=3))


def test_bad_config_values():
    with pytest.raises(ConfigError, match="embedding"):
        build_backbone(BackboneConfig(embedding="mean"))
    with pytest.raises(ConfigError, match="random_arch"):
        build_backbone(BackboneConfig(random_arch="huge"))
