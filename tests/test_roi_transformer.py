"""RoI classifier: shapes, SDPA == explicit attention, masking, geometry, training, bf16."""

import pytest
import torch

from awm_lib.errors import ConfigError
from awm_lib.losses import LossConfig, compute_loss
from awm_lib.model.backbone import BackboneConfig, save_tiny_dinov2
from awm_lib.model.crops import extract_rois
from awm_lib.model.position import boxes_to_cxcywh_norm
from awm_lib.model.roi_transformer import RoIClassifier, RoIClassifierConfig


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2")))


def make(tiny_dir, **kw):
    torch.manual_seed(0)
    base = dict(crop_size=28, topk=2, d_model=32, heads=2, depth=2, dropout=0.0, head_dropout=0.0)
    base.update(kw)
    return RoIClassifier(RoIClassifierConfig(backbone=BackboneConfig(name_or_path=tiny_dir), **base))


def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 90, 70, generator=g)
    rois = torch.tensor(
        [
            [[0.0, 0.0, 70.0, 90.0], [10.0, 12.0, 38.0, 40.0], [30.0, 50.0, 58.0, 78.0]],
            [[0.0, 0.0, 70.0, 90.0], [5.0, 5.0, 33.0, 33.0], [0.0, 0.0, 0.0, 0.0]],  # last: padding
        ]
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return images, rois, mask


@pytest.mark.parametrize("pooling", ["anchor", "attention", "mean", "cls"])
def test_shapes_and_pool_weights(tiny_dir, pooling):
    model = make(tiny_dir, pooling=pooling).eval()
    images, rois, mask = batch()
    out = model(images, rois, roi_mask=mask, return_attention=True)
    kk = 4 if pooling == "cls" else 3
    assert out.logits.shape == (2,)
    assert out.roi_embeddings.shape == out.tokens.shape == (2, 3, 32)
    assert out.pooled.shape == (2, 32)
    assert [a.shape for a in out.attention] == [(2, 2, kk, kk)] * 2
    for a in out.attention:  # rows sum to 1, padded keys get no weight
        assert torch.allclose(a.sum(-1), torch.ones(2, 2, kk), atol=1e-5)
        assert torch.all(a[1, :, :, -1] == 0)
    if pooling == "cls":
        assert out.pool_weights is None
    else:
        w = out.pool_weights
        assert torch.allclose(w.sum(-1), torch.ones(2)) and w[1, 2] == 0
    if pooling == "anchor":
        assert torch.equal(out.pool_weights, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    if pooling == "mean":
        assert torch.allclose(out.pool_weights[1], torch.tensor([0.5, 0.5, 0.0]))


def test_sdpa_and_explicit_attention_agree(tiny_dir):
    model = make(tiny_dir, position="sine+rope2d").eval()
    images, rois, mask = batch()
    with torch.no_grad():
        fast = model(images, rois, roi_mask=mask)
        slow = model(images, rois, roi_mask=mask, return_attention=True)
    assert fast.attention is None
    assert torch.allclose(fast.logits, slow.logits, atol=1e-5)
    assert torch.allclose(fast.tokens, slow.tokens, atol=1e-5)


def test_forward_equals_forward_crops_and_backbone_runs_once(tiny_dir):
    model = make(tiny_dir).eval()
    images, rois, mask = batch()
    calls = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.no_grad():
        a = model(images, rois, roi_mask=mask)
    hook.remove()
    assert calls == [(6, 3, 28, 28)]  # all B*K crops in one ViT call
    crops = extract_rois(images, rois, 28)
    with torch.no_grad():
        b = model.forward_crops(crops, boxes_to_cxcywh_norm(rois, torch.tensor([[90, 70]] * 2)), mask)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)


@pytest.mark.parametrize("pooling", ["anchor", "attention", "mean", "cls"])
def test_padded_rois_do_not_matter(tiny_dir, pooling):
    model = make(tiny_dir, pooling=pooling).eval()
    images, rois, mask = batch()
    crops = extract_rois(images, rois, 28)
    boxes = boxes_to_cxcywh_norm(rois, torch.tensor([[90, 70]] * 2))
    noisy = crops.clone()
    noisy[1, 2] = torch.randn(3, 28, 28)
    boxes2 = boxes.clone()
    boxes2[1, 2] = torch.tensor([0.9, 0.9, 0.1, 0.1])
    with torch.no_grad():
        a = model.forward_crops(crops, boxes, mask).logits
        b = model.forward_crops(noisy, boxes2, mask).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_rope2d_model_is_translation_invariant_sine_is_not(tiny_dir):
    images, rois, mask = batch()
    crops = extract_rois(images, rois, 28)
    boxes = boxes_to_cxcywh_norm(rois, torch.tensor([[90, 70]] * 2))
    shifted = boxes + torch.tensor([0.13, -0.07, 0.0, 0.0])  # every box moves the same way
    for mode, invariant in [("rope2d", True), ("sine", False)]:
        model = make(tiny_dir, position=mode).eval()
        with torch.no_grad():
            a = model.forward_crops(crops, boxes, mask).logits
            b = model.forward_crops(crops, shifted, mask).logits
        assert torch.allclose(a, b, atol=1e-5) == invariant, mode


def test_rank_order_matters_only_for_rope1d_index(tiny_dir):
    images, rois, _ = batch()
    crops = extract_rois(images, rois, 28)
    boxes = boxes_to_cxcywh_norm(rois, torch.tensor([[90, 70]] * 2))
    perm = torch.tensor([0, 2, 1])  # swap the detector's ranks 1 and 2 (same boxes)
    for mode, same in [("rope2d", True), ("none", True), ("rope1d_index", False)]:
        model = make(tiny_dir, position=mode).eval()
        with torch.no_grad():
            a = model.forward_crops(crops, boxes).logits
            b = model.forward_crops(crops[:, perm], boxes[:, perm]).logits
        assert torch.allclose(a, b, atol=1e-5) == same, mode


def test_a_few_steps_reduce_the_loss(tiny_dir):
    model = make(tiny_dir, pooling="attention", position="rope2d")
    images, rois, mask = batch()
    labels = torch.tensor([1.0, 0.0])
    opt = torch.optim.AdamW(
        [{"params": model.backbone_parameters(), "lr": 1e-3}, {"params": model.head_parameters(), "lr": 3e-3}]
    )
    cfg = LossConfig(pos_weight=2.0, repulsive_weight=0.3)
    losses = []
    for _ in range(6):
        out = model(images, rois, roi_mask=mask)
        loss, parts = compute_loss(out, {"labels": labels}, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert torch.isfinite(parts["total"])
    assert losses[-1] < 0.8 * losses[0]


def test_parameter_groups_partition_trainable_parameters(tiny_dir):
    model = make(tiny_dir)
    ids_b = {id(p) for p in model.backbone_parameters()}
    ids_h = {id(p) for p in model.head_parameters()}
    assert not ids_b & ids_h
    assert ids_b | ids_h == {id(p) for p in model.parameters() if p.requires_grad}


def test_runs_under_bf16_autocast(tiny_dir):
    model = make(tiny_dir, position="sine+rope2d", pooling="attention")
    images, rois, mask = batch()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(images, rois, roi_mask=mask)
        loss, _ = compute_loss(out, {"labels": torch.tensor([1, 0])}, LossConfig(supcon_weight=0.5))
    loss.backward()
    assert torch.isfinite(out.logits.float()).all() and torch.isfinite(loss)


def test_config_errors(tiny_dir):
    with pytest.raises(ConfigError, match="pooling"):
        make(tiny_dir, pooling="max")
    with pytest.raises(ConfigError, match="divisible"):
        make(tiny_dir, d_model=30, heads=4)
    with pytest.raises(ConfigError, match="patch size"):
        make(tiny_dir, crop_size=30)


def test_token_norm_standardises_valid_rois_only(tiny_dir):
    """token_norm=batchnorm z-scores each backbone feature over the VALID RoIs of the batch (training),
    with running statistics at evaluation; padded rows neither count nor change."""
    model = make(tiny_dir, token_norm="batchnorm")
    g = torch.Generator().manual_seed(0)
    feats = 5.0 + 3.0 * torch.randn(16, 3, model.backbone.embed_dim, generator=g)  # (B, K, Db)
    mask = torch.ones(16, 3, dtype=torch.bool)
    mask[:, 2] = False  # the last RoI is padding everywhere
    feats[:, 2] = 1e6  # a padded row that entered the statistics would wreck them
    model.train()
    out = model._normalise_tokens(feats, mask)
    valid = out[mask]  # (32, Db)
    torch.testing.assert_close(valid.mean(0), torch.zeros(valid.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(valid.shape[1]), atol=1e-3, rtol=0)
    assert torch.equal(out[:, 2], feats[:, 2])
    model.eval()  # running statistics: a single image's output no longer depends on its batch
    one = model._normalise_tokens(feats[:1], mask[:1])
    assert torch.equal(one, model._normalise_tokens(feats, mask)[:1])
    logits = model.forward_tokens(feats, torch.rand(16, 3, 4), mask).logits
    assert torch.isfinite(logits).all()


def test_token_norm_is_validated(tiny_dir):
    with pytest.raises(ConfigError, match="token_norm"):
        make(tiny_dir, token_norm="layer")
