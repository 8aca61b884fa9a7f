"""awm_lib.model.cost: token counts, FLOPs and attention memory, against hand-computed values
and against the FLOPs PyTorch itself counts on a (tiny, random) transformers Dinov2Model."""

from __future__ import annotations

import doctest
import json
import math

import pytest

from awm_lib.errors import ConfigError, DataError
from awm_lib.model import cost

# --- tokens ---------------------------------------------------------------------------


def test_full_mammogram_is_50201_tokens():
    # floor(3514 / 14) = 251, floor(2800 / 14) = 200, + [CLS]
    assert cost.num_patches(3514, 2800) == 251 * 200
    assert cost.num_tokens(3514, 2800) == 50_201


def test_partial_patches_are_dropped():
    assert cost.num_tokens(27, 27) == 1 + 1  # one whole patch, the 13-px remainder dropped
    assert cost.num_tokens(28, 41) == 2 * 2 + 1
    assert cost.num_tokens(224, cls_token=False) == 256
    assert cost.num_tokens(224, patch_size=16) == 14 * 14 + 1


def test_image_smaller_than_a_patch_is_an_error():
    with pytest.raises(ConfigError, match="smaller than one 14-px patch"):
        cost.num_tokens(13, 100)


def test_roi_paths_of_the_performance_table():
    assert cost.roi_path_tokens(5, 448) == 5 * (32 * 32 + 1) == 5_125
    assert cost.roi_path_tokens(6, 224) == 6 * (16 * 16 + 1) == 1_542
    with pytest.raises(ConfigError):
        cost.roi_path_tokens(0, 448)


# --- FLOPs by hand ----------------------------------------------------------------------


def test_one_linear_layer_by_hand():
    # nn.Linear(3, 5) on 7 tokens: 7 * 5 outputs, each 3 multiplies + 3 adds
    assert cost.linear_flops(7, 3, 5) == 2 * 7 * 3 * 5 == 210


def test_transformer_layer_formula():
    n, d = 10, 8
    f = cost.transformer_layer_flops(n, d)
    # QKV 2*n*d*3d + proj 2*n*d*d + MLP 2*n*d*4d + 2*n*4d*d = 24 n d^2
    assert f.linear == 24 * n * d * d == 15_360
    # Q K^T and P V: 2 * (2 n^2 d)
    assert f.attention == 4 * n * n * d == 3_200
    assert f.patch_embed == 0
    assert f.total == 18_560


def test_vit_b14_on_one_224_crop_by_hand():
    spec = cost.VIT_B14
    n, d = 257, 768
    expected = 12 * (24 * n * d * d + 4 * n * n * d) + 2 * 256 * (3 * 14 * 14) * d
    assert cost.vit_forward_flops(spec, 224).total == expected
    assert cost.vit_forward_flops("ViT-B/14", 224, 224) == cost.vit_forward_flops(spec, 224)


def test_attention_is_quadratic_and_linear_layers_linear():
    a = cost.transformer_layer_flops(1000, 384)
    b = cost.transformer_layer_flops(2000, 384)
    assert b.attention == 4 * a.attention
    assert b.linear == 2 * a.linear


def test_attention_equals_linear_at_six_times_the_width():
    d = 768
    f = cost.transformer_layer_flops(6 * d, d)
    assert f.attention == f.linear
    assert (
        cost.transformer_layer_flops(6 * d + 1, d).attention
        > cost.transformer_layer_flops(6 * d + 1, d).linear
    )


def test_roi_crops_are_separate_sequences():
    one = cost.vit_forward_flops(cost.VIT_S14, 448)
    five = cost.roi_path_forward_flops(cost.VIT_S14, 5, 448)
    assert five.total == pytest.approx(5 * one.total)
    # one long sequence of the same 5 * 1025 tokens would cost 5x more attention
    joint = cost.vit_flops_for_tokens(cost.VIT_S14, 5 * 1025, 5 * 1024)
    assert joint.attention == pytest.approx(5 * five.attention)


def test_training_is_three_forwards_and_tflops():
    f = cost.vit_forward_flops(cost.VIT_B14, 448)
    assert cost.training_flops(f) == 3 * f.total
    assert cost.training_flops(2.0e12) == 6.0e12
    assert cost.tflops_per_second(6.0e12, 0.5) == pytest.approx(12.0)
    with pytest.raises(ConfigError):
        cost.tflops_per_second(1.0, 0.0)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ConfigError, match="ViT-B/14"):
        cost.vit_forward_flops("ViT-Z/14", 224)


def test_analytic_count_matches_pytorch_flop_counter_on_a_tiny_dinov2():
    """The same count as PyTorch's FlopCounterMode on a real (random, tiny) Dinov2Model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                          patch_size=14, image_size=56, attn_implementation="eager")
    model = Dinov2Model(config).eval()
    spec = cost.ViTSpec("tiny", embed_dim=64, depth=2, num_heads=4, patch_size=14, mlp_ratio=4.0)
    x = torch.randn(1, 3, 56, 70)  # 4 x 5 patches + CLS = 21 tokens
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixel_values=x)
    # transformers' bias terms and the pooler/layernorms are not matmuls: the counts agree exactly
    assert counter.get_total_flops() == cost.vit_forward_flops(spec, 56, 70).total


# --- attention memory -------------------------------------------------------------------


def test_attention_matrix_bytes_by_hand():
    # ViT-B/14 on one 448 crop: 12 heads x 1025^2 scores x 2 bytes (bf16)
    assert cost.attention_matrix_bytes(cost.VIT_B14, 1025) == 12 * 1025**2 * 2
    assert cost.attention_matrix_bytes(cost.VIT_B14, 1025, batch=4, bytes_per_element=4, layers=12) == (
        4 * 12 * 1025**2 * 4 * 12
    )
    # the full mammogram: more than 50 GiB for ONE layer's matrix
    assert cost.attention_matrix_bytes(cost.VIT_B14, 50_201) / cost.GIB > 50


def test_flash_memory_is_linear():
    a = cost.flash_attention_bytes(cost.VIT_B14, 1000)
    assert a == 4 * 1000 * 768 * 2 + 4 * 12 * 1000
    assert cost.flash_attention_bytes(cost.VIT_B14, 2000) == 2 * a
    assert cost.attention_matrix_bytes(cost.VIT_B14, 50_201) > 100 * cost.flash_attention_bytes(
        cost.VIT_B14, 50_201
    )


# --- attention dilution -------------------------------------------------------------------


def test_dilution_without_advantage_is_uniform():
    assert cost.attention_dilution(0.0, 50_201) == pytest.approx(1 / 50_201)
    assert cost.attention_dilution(0.0, 1) == 1.0


def test_dilution_by_hand_and_monotone():
    assert cost.attention_dilution(math.log(9), 10) == pytest.approx(0.5)  # e^Δ = 9 = N - 1
    w = [cost.attention_dilution(4.0, n) for n in (2, 10, 100, 1000, 10_000)]
    assert all(x > y for x, y in zip(w, w[1:]))
    assert cost.attention_dilution(1000.0, 10**6) == pytest.approx(1.0)  # no overflow
    with pytest.raises(ConfigError):
        cost.attention_dilution(1.0, 0)


def test_logit_advantage_round_trip():
    for n in (6, 1025, 50_201):
        for w in (0.1, 0.5, 0.9):
            delta = cost.logit_advantage_for_weight(w, n)
            assert cost.attention_dilution(delta, n) == pytest.approx(w)
    # ten times more tokens costs ln(10) more logit at the same weight (exactly, for N - 1)
    assert cost.logit_advantage_for_weight(0.5, 1001) - cost.logit_advantage_for_weight(
        0.5, 101
    ) == pytest.approx(math.log(10))
    with pytest.raises(ConfigError):
        cost.logit_advantage_for_weight(1.0, 10)


# --- table rows and benchmark files ---------------------------------------------------------


def test_cost_row_full_vs_roi():
    full = cost.cost_row("ViT-B/14", "full", 1, 3514, 2800)
    roi = cost.cost_row("ViT-B/14", "roi", 5, 448)
    assert full["tokens"] == 50_201
    assert roi["tokens"] == 5_125
    assert roi["train TFLOP"] == pytest.approx(3 * 5 * cost.vit_forward_flops("ViT-B/14", 448).total / 1e12)
    assert full["attention share"] > 0.9 > roi["attention share"]
    assert full["naive attn GiB/layer"] == pytest.approx(12 * 50_201**2 * 2 / 2**30)
    rows = cost.cost_table("ViT-S/14", [("a", 1, 224, 224), ("b", 2, 448, 448)])
    assert [r["configuration"] for r in rows] == ["a", "b"]


def test_load_bench_table(tmp_path):
    assert cost.load_bench_table(tmp_path / "bench.json") is None  # not measured: no table, no numbers
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"device": "GPU X", "date": "2026-01-01", "runs": [
        {"name": "full", "step_ms": 10.0, "memory": {"peak_gib": 1.5}},
        {"name": "roi", "step_ms": 2.0, "memory": {"peak_gib": 0.5}},
    ]}))
    table = cost.load_bench_table(path)
    assert list(table["name"]) == ["full", "roi"]
    assert list(table["memory.peak_gib"]) == [1.5, 0.5]
    assert table.attrs["device"] == "GPU X"
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read benchmark results"):
        cost.load_bench_table(path)
    path.write_text(json.dumps({"runs": 3}))
    with pytest.raises(DataError, match="list of runs"):
        cost.load_bench_table(path)


def test_docstring_examples():
    result = doctest.testmod(cost)
    assert result.attempted >= 5 and result.failed == 0
