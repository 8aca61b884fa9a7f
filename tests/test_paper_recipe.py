"""The ``paper`` preset is the reference implementation's recipe, point by point.

The reference (SamyakSS83/attend-what-matters: model.py, data.py, train.py and
its README's training command) is re-stated here in a few lines of plain
tensor code, and our modules are checked against it with the SAME weights: the
box code, the 1-D RoPE, a post-norm block, the head. The preset runs ViT-B/14
at 448 px, far too heavy for a CPU test, so the model tests override the
backbone with the random "micro" architecture (2 blocks, width 64).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from awm_lib.cli import main
from awm_lib.model.backbone import BackboneConfig, build_backbone
from awm_lib.model.position import reference_box_code
from awm_lib.model.roi_transformer import RoIClassifier
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.select import SelectConfig, select_rois
from awm_lib.train.config import PROJECT_DIFFERENCES, make_config

pytestmark = pytest.mark.filterwarnings("ignore::awm_lib.model.backbone.RandomBackboneWarning")

MICRO = [
    "model.backbone.name_or_path=none",
    "model.backbone.random_arch=micro",
    "model.backbone.freeze_blocks=1",
    "model.crop_size=56",
    "model.d_model=320",
]  # micro width 64 + the 256-d box code


def paper_micro(extra=()):
    return make_config("paper", [*MICRO, *extra])


# -- the preset ----------------------------------------------------------------------------
def test_paper_preset_holds_every_point_of_the_recipe():
    cfg = make_config("paper")
    m, bb, lc, d, o = cfg.model, cfg.model.backbone, cfg.loss, cfg.data, cfg.optim
    assert m.topk + 1 == 5  # k = 5 tokens counting the anchor: the breast box + 4 proposals
    assert (
        d.square_anchor and d.roi_margin == 40.0 and d.roi_border == "pad"
    )  # side max(w, h) + 2 x 20 px, anchor too
    assert not d.anchor_in_nms and d.pad_rois == "repeat"
    assert (bb.name_or_path, m.crop_size, bb.embedding) == ("facebook/dinov2-base", 448, "cls")
    assert (m.position, m.pos_dim, m.input_proj, m.d_model) == ("sinecat+rope1d", 256, False, 768 + 256)
    assert (m.depth, m.heads, m.pre_norm, m.mlp) == (3, 1, False, "relu")
    assert (m.attn_dropout, m.head_dropout, m.dropout) == (0.25, 0.25, 0.0)
    assert (m.head, m.head_hidden, m.pooling, m.init_std) == ("mlp", 256, "anchor", None)
    assert (lc.repulsive_on, lc.repulsive_include_anchor, lc.repulsive_weight, lc.pos_weight) == (
        "tokens",
        False,
        0.3,
        10.0,
    )
    assert (o.lr_backbone, o.lr_head, o.batch_size, o.accum_steps, o.weight_decay) == (1e-6, 1e-6, 4, 1, 0.01)
    assert (o.warmup_steps, o.min_lr_ratio, o.grad_clip) == (0, 1.0, None)  # constant lr, no clipping
    assert (bb.freeze_patch_embed, bb.freeze_blocks, bb.freeze_tokens) == (True, 3, False)
    assert tuple(bb.pixel_mean) == (0.485, 0.456, 0.406) and tuple(bb.pixel_std) == (0.229, 0.224, 0.225)


def test_project_presets_name_their_own_choices():
    default, smoke = make_config("default"), make_config("smoke")
    for cfg in (default, smoke):
        assert cfg.loss.repulsive_on == "embeddings" and cfg.model.pre_norm and cfg.model.position == "rope2d"
    assert default.model.heads == 4 and default.model.topk + 1 == 6
    named = " ".join(what for what, _, _ in PROJECT_DIFFERENCES)
    for point in (
        "tokens per image",
        "anchor box",
        "position code",
        "blocks",
        "head",
        "repulsive loss",
        "optimiser",
    ):
        assert point in named


def test_print_config_shows_the_recipe_and_builds_nothing(capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("--print-config must not build a backbone")

    monkeypatch.setattr("awm_lib.model.backbone.build_backbone", refuse)
    assert main(["train", "--preset", "paper", "--print-config"]) == 0
    text = capsys.readouterr().out
    for point in (
        "k = 5 per image: the anchor (breast box) + 4 proposals",
        "anchor squared too",
        "sinecat+rope1d",
        "768 + 256 (box code) -> input projection none -> width 1024",
        "3 x post-norm, 1 head(s), MLP Linear+ReLU",
        "0.25 (attention weights)",
        "BatchNorm -> dropout 0.25 -> Linear(1024 -> 256) -> ReLU -> Linear(256 -> 1)",
        "repulsive on the transformer outputs, anchor excluded",
        "AdamW lr 1e-06 (backbone) / 1e-06 (rest)",
        "batch 4",
        "frozen: patch embedding, blocks 0-2",
        "ImageNet mean/std",
    ):
        assert point in text, point
    assert main(["train", "--preset", "paper", "--print-config", "--set", "model.pooling=mean"]) == 0
    assert "pooling, head mean" in capsys.readouterr().out


# -- the model against the reference's maths ------------------------------------------------
def dab_detr_code(boxes_norm: torch.Tensor) -> torch.Tensor:
    """The reference's data.py: gen_sineembed_for_position(pos, d_model=128) on (cx, cy, s/W, s/H)."""
    scale = 2 * math.pi
    dim_t = torch.arange(64, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / 64)

    def one(v):
        p = v[:, None] * scale / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    x, y, w, h = boxes_norm.unbind(-1)
    return torch.cat((one(y), one(x), one(w), one(h)), dim=1)


def test_box_code_is_dab_detr_with_y_first():
    boxes = torch.rand(7, 4)
    torch.testing.assert_close(reference_box_code(boxes[None])[0], dab_detr_code(boxes))


def rope_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The reference's RotaryEmbeddingSmall.apply: 1-D RoPE over the sequence index, base 10000."""
    length, d = x.shape[-2:]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.arange(length).float()[:, None] * inv
    emb = torch.cat([freqs, freqs], dim=-1)
    half = torch.cat((-x[..., d // 2:], x[..., : d // 2]), dim=-1)
    return x * emb.cos() + half * emb.sin()


def reference_block(block, x):
    """The reference's TransformerBlock (eval mode) with our block's weights."""
    d = x.shape[-1]
    q, k, v = block.attn.qkv(x).split(d, dim=-1)
    q, k = rope_rotate_half(q), rope_rotate_half(k)
    att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    a = block.attn.proj(att @ v) + x
    n1 = block.norm1(a)
    return block.norm2(F.relu(block.mlp[0](n1)) + n1)


def test_paper_model_is_the_reference_forward_pass():
    cfg = paper_micro()
    torch.manual_seed(0)
    model = RoIClassifier(cfg.model).eval()
    b, k = 3, cfg.model.topk + 1
    feats = torch.randn(b, k, model.backbone.embed_dim)
    boxes = torch.rand(b, k, 4)
    out = model.forward_tokens(feats, boxes)
    # the reference: cat(CLS, fc_positions(code)), no input projection, 3 blocks, anchor pooling, BN head
    x = torch.cat([feats, model.pos_proj(dab_detr_code(boxes.flatten(0, 1)).view(b, k, -1))], dim=-1)
    assert x.shape[-1] == model.cfg.d_model and isinstance(model.proj, torch.nn.Identity)
    for block in model.blocks:
        x = reference_block(block, x)
    torch.testing.assert_close(out.tokens, x, atol=1e-5, rtol=1e-4)
    bn, _, fc1, _, fc2 = model.head
    logits = fc2(F.relu(fc1(bn(x[:, 0])))).view(-1)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-4)
    assert len(model.blocks) == 3 and all(blk.attn.heads == 1 and not blk.pre_norm for blk in model.blocks)


def test_input_projection_off_needs_the_concatenated_width():
    with pytest.raises(Exception, match="model.d_model=320"):
        RoIClassifier(make_config("paper", [*MICRO, "model.d_model=256"]).model)


@pytest.mark.parametrize(
    "preset,extra",
    [
        ("paper", MICRO),
        ("paper", [*MICRO, "model.pooling=cls"]),
        ("paper", [*MICRO, "model.pooling=attention"]),
        ("paper", [*MICRO, "model.pooling=anchor_attention"]),
        ("smoke", []),
        ("smoke", ["model.position=sine+rope2d"]),
        ("smoke", ["model.backbone.freeze_blocks=1", "model.backbone.freeze_tokens=false"]),
    ],
)
def test_every_trainable_parameter_gets_a_gradient(preset, extra):
    """A trainable parameter without a gradient breaks DistributedDataParallel (issue 14)."""
    cfg = make_config(preset, list(extra))
    torch.manual_seed(0)
    model = RoIClassifier(cfg.model).train()
    b, k = 4, cfg.model.topk + 1
    xy = torch.rand(b, k, 2) * 100
    rois = torch.cat([xy, xy + 20 + torch.rand(b, k, 2) * 40], dim=-1)
    out = model(torch.rand(b, 1, 180, 150), rois)
    from awm_lib.losses import compute_loss

    loss, _ = compute_loss(out, {"labels": torch.tensor([0.0, 1.0, 0.0, 1.0])}, cfg.loss)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_backbone_freezing_paper_and_project():
    # never used, so never trainable: HF's mask token, even with nothing frozen
    bb = build_backbone(BackboneConfig(random_arch="micro"))
    assert not bb.model.embeddings.mask_token.requires_grad
    assert bb.model.embeddings.cls_token.requires_grad and all(
        p.requires_grad for p in bb.model.encoder.layer[0].parameters()
    )
    # the reference: patch embedding + first blocks frozen, CLS and position tokens train
    ref = build_backbone(
        BackboneConfig(random_arch="micro", freeze_patch_embed=True, freeze_blocks=1, freeze_tokens=False)
    )
    emb = ref.model.embeddings
    assert not any(p.requires_grad for p in emb.patch_embeddings.parameters())
    assert not any(p.requires_grad for p in ref.model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in ref.model.encoder.layer[1].parameters())
    assert emb.cls_token.requires_grad and emb.position_embeddings.requires_grad
    # ours: nothing below a frozen block moves
    ours = build_backbone(BackboneConfig(random_arch="micro", freeze_blocks=1))
    assert (
        not ours.model.embeddings.cls_token.requires_grad
        and not ours.model.embeddings.position_embeddings.requires_grad
    )


# -- boxes ----------------------------------------------------------------------------------
def test_reference_box_selection():
    """Anchor squared (side max(w, h) + 40 px), NMS without the anchor, padding by repeats."""
    whole = Proposals(torch.tensor([[0.0, 0, 100, 200], [40, 40, 60, 70]]), torch.tensor([0.9, 0.5]))
    ref = SelectConfig(
        topk=4, margin=40, border="pad", square_anchor=True, anchor_in_nms=False, pad="repeat", seed=3
    )
    sel = select_rois(whole, (200, 100), None, ref)
    assert sel.rois[0].tolist() == [
        -70.0,
        -20.0,
        170.0,
        220.0,
    ]  # square, side 200 + 40, around the anchor's centre
    assert sel.rois[1].tolist() == [
        -70.0,
        -20.0,
        170.0,
        220.0,
    ]  # the detector's whole-breast box survives NMS
    assert sel.rois[2].tolist() == [15.0, 20.0, 85.0, 90.0]  # 20 x 30 -> side 30 + 40
    assert sel.n_padded == 2 and all(r.tolist() in sel.rois[1:3].tolist() for r in sel.rois[3:])
    ours = select_rois(whole, (200, 100), None, SelectConfig(topk=4, margin=40))
    assert (
        ours.rois[0].tolist() == [0.0, 0.0, 100.0, 200.0] and ours.n_kept == 1
    )  # the anchor removed its repeat


def test_random_fillers_do_not_depend_on_the_kept_boxes():
    """With the oracle, a filler's size must not reveal the lesion's size (or that there is one)."""
    cfg = SelectConfig(topk=3, margin=10, pad="random", seed=7)
    small = select_rois(Proposals(torch.tensor([[10.0, 10, 14, 14]]), torch.ones(1)), (400, 300), None, cfg)
    large = select_rois(Proposals(torch.tensor([[10.0, 10, 150, 150]]), torch.ones(1)), (400, 300), None, cfg)
    torch.testing.assert_close(small.rois[2:], large.rois[2:])  # same fillers whatever was kept
    sides = small.rois[2:, 2] - small.rois[2:, 0]
    assert bool(((sides >= 0.05 * 300 + 10 - 1e-3) & (sides <= 0.4 * 300 + 10 + 1e-3)).all())


def test_crop_margin_in_pixels_or_millimetres_per_dataset():
    from awm_lib.data.synthetic import FIELD_MM
    from awm_lib.train.config import DEFAULT_MARGIN
    from awm_lib.train.dataset import RoISettings, roi_margin_px, roi_settings

    assert DEFAULT_MARGIN == {"vindr": ("px", 40.0), "synthetic": ("px", 40.0), "mias": ("mm", 3.4)}
    assert roi_margin_px(make_config("default", dataset="vindr").data) == 40.0
    assert roi_margin_px(make_config("default", dataset="mias").data) == pytest.approx(
        3.4 / 0.2
    )  # 17 px at 0.2 mm/px
    assert roi_margin_px(make_config("default", ["data.roi_margin=25"], dataset="mias").data) == 25.0
    mm = make_config("default", ["data.roi_margin=25", "data.roi_margin_mm=2"], dataset="synthetic").data
    assert roi_margin_px(mm) == pytest.approx(2 / (FIELD_MM / mm.synthetic_size))  # millimetres win
    assert (
        roi_margin_px(make_config("paper", dataset="mias").data) == 40.0
    )  # the paper preset: the reference's 40 px
    with pytest.raises(Exception, match="roi_margin_mm"):
        make_config("default", ["data.roi_margin_mm=-1"])
    # RoIs cached before the reference's options existed keep their key; the options change it
    s = roi_settings(make_config("default", dataset="vindr"))
    assert set(s.key()) == {"proposer", "topk", "nms_iou", "margin", "min_overlap", "seed", "pad"}
    assert s.key() != RoISettings(**{**s.__dict__, "square_anchor": True}).key()
    assert "filler" in RoISettings(pad="random").key()  # random fillers changed: never reuse the old ones


def test_runs_saved_before_the_new_keys_still_match_when_they_did_the_same():
    from awm_lib.train.checkpoint import ADDED_KEYS, config_differences
    from awm_lib.train.config import to_dict

    current = to_dict(make_config("smoke"))
    old = to_dict(make_config("smoke"))
    for key in ADDED_KEYS:  # what a run saved before issue 14 holds
        section, *rest = key.split(".")
        d = old[section]
        for part in rest[:-1]:
            d = d[part]
        d.pop(rest[-1])
    assert config_differences(old, current) == []
    now_reference = to_dict(make_config("smoke", ["loss.repulsive_on=tokens"]))
    assert config_differences(old, now_reference) == [
        "loss.repulsive_on: '<missing>' (checkpoint) vs 'tokens' (now)"
    ]


def test_anchor_attention_pooling_is_the_reference_attn_pooling():
    """The reference's pool_mode='attn': weights = block 3's attention row of the anchor, over the block-3
    tokens."""
    model = RoIClassifier(paper_micro(["model.pooling=anchor_attention"]).model).eval()
    out = model.forward_tokens(torch.randn(2, 5, 64), torch.rand(2, 5, 4), return_attention=True)
    weights = out.attention[-1][:, 0, 0, :]  # (B, K): single head, the anchor's row
    torch.testing.assert_close(out.pooled, (weights[..., None] * out.tokens).sum(dim=1))
    torch.testing.assert_close(out.pool_weights.sum(dim=-1), torch.ones(2))
