"""The benchmark at smoke scale on the CPU: every code path runs, numbers are sane, FLOPs agree with
awm_lib.model.cost, results merge per device, and the reference and fast paths compute the same logits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from awm_lib.bench import data as bdata
from awm_lib.bench.configs import (
    CONFIGS,
    BenchConfig,
    build_model,
    full_canvas,
    full_forward_flops,
    roi_forward_flops,
    tiny,
)
from awm_lib.bench.pipeline import run_config
from awm_lib.bench.results import goals, load_results, write_results
from awm_lib.bench.timing import MatmulPeak, matmul_peak, time_steps
from awm_lib.model import cost
from awm_lib.model.crops import extract_rois

PEAK = MatmulPeak(tflops=0.1, n=64, dtype="float32", device="cpu")  # a stand-in denominator for MFU


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-data")


def _check_measure(m: dict, flops_per_image: float, batch: int) -> None:
    for key in ("median_s", "mean_s", "images_per_s", "tflops", "mfu"):
        assert math.isfinite(m[key]) and m[key] > 0, (key, m[key])
    assert m["images_per_s"] == pytest.approx(batch / m["median_s"])
    assert m["tflops"] == pytest.approx(flops_per_image * batch / m["median_s"] / 1e12)
    assert m["mfu"] == pytest.approx(m["tflops"] / PEAK.tflops)
    assert m["peak_memory_bytes"] is None or m["peak_memory_bytes"] > 0


@pytest.mark.parametrize("name", ["default", "full-518"])
def test_model_only_configs_run_at_tiny_scale(name):
    cfg = tiny(CONFIGS[name], image_side=64)
    rec = run_config(cfg, "cpu", steps=1, warmup=0, peak=PEAK)
    assert rec["config"] == name and rec["precision"] == "fp32"  # the CPU never runs bf16
    assert rec["tokens_per_image"] > 0
    assert rec["loadavg"] is None or len(rec["loadavg"]) == 3
    _check_measure(rec["forward"], rec["flops_forward_per_image"], cfg.batch_size)
    _check_measure(rec["train"], rec["flops_train_per_image"], cfg.batch_size)
    assert rec["flops_train_per_image"] == pytest.approx(3 * rec["flops_forward_per_image"])


@pytest.mark.parametrize("name, key", [("default-e2e", "train_end_to_end"), ("reference", "train_end_to_end"),
                                       ("default-infer", "infer_end_to_end")])
def test_data_backed_configs_run_at_tiny_scale(name, key, data_root):
    cfg = tiny(CONFIGS[name], image_side=64)
    rec = run_config(cfg, "cpu", steps=1, warmup=0, peak=PEAK, data_root=data_root, source_size=256)
    per_image = rec["flops_forward_per_image"] if key.startswith("infer") else rec["flops_train_per_image"]
    _check_measure(rec[key], per_image, cfg.batch_size)
    assert rec[key]["fraction_of_model_only"] > 0
    assert rec["data_source"]["n_images"] == cfg.n_images


def test_every_config_is_valid_and_has_a_tiny_version():
    for cfg in CONFIGS.values():
        cfg.validate()
        tiny(cfg).validate()
    with pytest.raises(Exception, match="reference path"):
        BenchConfig("bad", path="reference", data="device").validate()


# --- analytic FLOPs agree with awm_lib.model.cost ---------------------------------------------------
def test_flops_match_cost_module_for_the_paper_and_full_image():
    paper = build_model(CONFIGS["paper"])
    spec = cost.VIT_B14
    got = roi_forward_flops(paper, batch_size=3)
    assert got["backbone"] == pytest.approx(3 * cost.roi_path_forward_flops(spec, 6, 448).total)
    assert got["tokens_per_image"] == 6 * (32 * 32 + 1) == cost.roi_path_tokens(6, 448)
    assert 0 < got["head"] < 1e-2 * got["backbone"]  # the RoI transformer is a rounding error
    full = CONFIGS["full-3514"]
    canvas = full_canvas(full)
    assert canvas == (3514, 2800)
    f = full_forward_flops(paper, canvas, batch_size=1)  # only its (ViT-B/14) backbone is used
    assert f["tokens_per_image"] == 50_201
    assert f["backbone"] == pytest.approx(cost.vit_forward_flops(spec, 3514, 2800).total)


def test_full_canvas_matches_what_the_model_feeds_the_vit():
    cfg = BenchConfig("t", model="full", arch="micro", image_size=(70, 50), long_side=56, batch_size=1)
    model = build_model(cfg)
    pixels = model.prepare(torch.rand(1, 1, 70, 50))
    assert tuple(pixels.shape[-2:]) == full_canvas(cfg)


# --- results file -----------------------------------------------------------------------------------------
def test_results_merge_keeps_other_devices_and_replaces_same_key(tmp_path):
    path = tmp_path / "bench.json"
    h_gpu = {"device": "NVIDIA H100", "date": "d1", "command": "c1", "versions": {"torch": "x"}}
    h_cpu = {"device": "CPU: test", "date": "d2", "command": "c2", "versions": {"torch": "y"}}
    write_results(path, h_gpu, [{"config": "paper", "train": {"mfu": 0.5}}, {"config": "default"}])
    write_results(path, h_cpu, [{"config": "paper", "train": {"mfu": 0.01}}])
    data = write_results(path, h_cpu, [{"config": "paper", "train": {"mfu": 0.02}}])
    keys = sorted((r["device"], r["config"]) for r in data["runs"])
    assert keys == [("CPU: test", "paper"), ("NVIDIA H100", "default"), ("NVIDIA H100", "paper")]
    runs = {(r["device"], r["config"]): r for r in load_results(path)["runs"]}
    assert (
        runs[("NVIDIA H100", "paper")]["train"]["mfu"] == 0.5
        and runs[("NVIDIA H100", "paper")]["date"] == "d1"
    )
    assert runs[("CPU: test", "paper")]["train"]["mfu"] == 0.02
    assert data["goals"]["NVIDIA H100"]["paper_train_mfu"]["measured"] == 0.5
    assert data["goals"]["NVIDIA H100"]["speedup_vs_reference"]["measured"] is None  # never invented
    table = cost.load_bench_table(path)  # the book reads the same file
    assert len(table) == 3 and table.attrs["device"] == "CPU: test"
    assert json.loads(path.read_text())["device"] == "CPU: test"


def test_goals_take_the_best_real_scale_variant_and_ratios_of_measured_figures():
    runs = [
        {"device": "g", "config": "paper-e2e", "train_end_to_end": {"images_per_s": 50.0}},
        {"device": "g", "config": "paper-e2e+compile=default", "train_end_to_end": {"images_per_s": 60.0}},
        {"device": "g", "config": "paper-e2e@tiny", "train_end_to_end": {"images_per_s": 900.0}},
        {"device": "g", "config": "reference", "train_end_to_end": {"images_per_s": 4.0}},
        {"device": "g", "config": "default@b2", "train": {"median_s": 3.0}},
        {"device": "g", "config": "default", "train": {"median_s": 2.0}},
    ]
    g = goals(runs)["g"]
    assert g["speedup_vs_reference"]["measured"] == pytest.approx(15.0)
    assert g["default_train_step_s"]["measured"] == 2.0
    assert g["paper_train_mfu"]["measured"] is None


# --- reference path == fast path ----------------------------------------------------------------------------
def _image(h=96, w=80, seed=0):
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


def test_reference_crops_equal_batched_gpu_crops_on_the_pixel_grid():
    pixels = _image()
    native = np.array(
        [[0, 0, 28, 28], [10, 20, 38, 48], [-14, 70, 14, 98]], np.float32
    )  # scale 1, one half outside
    ref = bdata.reference_crops(pixels, native, 28)
    fast = extract_rois(torch.from_numpy(pixels)[None, None], torch.from_numpy(native)[None], 28)[0]
    np.testing.assert_allclose(ref, fast.numpy(), atol=5e-5)  # fp32 rounding of the sample points
    halved = np.array([[0, 0, 56, 56], [20, 36, 76, 92]], np.float32)  # exactly 2x, aligned with 2x2 blocks
    ref = bdata.reference_crops(pixels, halved, 28, resample="box")
    fast = extract_rois(torch.from_numpy(pixels)[None, None], torch.from_numpy(halved)[None], 28)[0]
    np.testing.assert_allclose(ref, fast.numpy(), atol=5e-5)  # fp32 rounding of the sample points


def test_reference_and_fast_paths_give_the_same_logits():
    from awm_lib.model.position import boxes_to_cxcywh_norm

    cfg = BenchConfig("t", arch="micro", crop_size=28, topk=2, image_size=(96, 80), batch_size=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = [_image(seed=s) for s in (1, 2)]
    rois = np.array([[[0, 0, 56, 56], [10, 20, 38, 48], [40, 30, 68, 58]],
                     [[20, 36, 76, 92], [0, 0, 28, 28], [52, 68, 80, 96]]], np.float32)  # 2x or native
    with torch.no_grad():
        fast = model(torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(rois)).logits
        crops = torch.stack([torch.from_numpy(bdata.reference_crops(im, r, 28, resample="box"))
                             for im, r in zip(images, rois)])
        sizes = torch.tensor([[96, 80]] * 2)
        ref = model.forward_crops(crops, boxes_to_cxcywh_norm(torch.from_numpy(rois), sizes)).logits
    torch.testing.assert_close(ref, fast, atol=1e-5, rtol=1e-5)


# --- small pieces ------------------------------------------------------------------------------------------
def test_uint16_travels_as_int16_and_comes_back_exact():
    stored = np.array([[0, 1, 32767, 32768, 65535]], np.uint16)
    t = bdata._as_tensor(stored)
    assert t.dtype == torch.int16
    np.testing.assert_array_equal(bdata.to_unit(t, 65535.0).numpy(), stored.astype(np.float32) / 65535)
    u8 = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(bdata.to_unit(bdata._as_tensor(u8), torch.tensor([255.0])).numpy(), u8 / 255)


def test_random_rois_lie_inside_with_the_anchor_first():
    r = bdata.random_rois(5, 4, 100, 60, np.random.default_rng(0))
    assert r.shape == (5, 5, 4)
    np.testing.assert_array_equal(r[:, 0], np.broadcast_to([0, 0, 60, 100], (5, 4)))
    assert (r[..., 0] >= 0).all() and (r[..., 2] <= 60 + 1e-4).all() and (r[..., 3] <= 100 + 1e-4).all()
    np.testing.assert_allclose(r[:, 1:, 2] - r[:, 1:, 0], r[:, 1:, 3] - r[:, 1:, 1], rtol=1e-5)  # squares


def test_timing_and_matmul_peak():
    calls = []
    t = time_steps(lambda: calls.append(1), "cpu", steps=4, warmup=2)
    assert len(calls) == 6 and t.steps == 4 and t.min_s <= t.median_s
    peak = matmul_peak("cpu", n=64, steps=2, warmup=1)
    assert peak.tflops > 0 and peak.dtype == "float32" and peak.n == 64


def test_cli_writes_a_run_record_and_rejects_unknown_configs(tmp_path, capsys):
    from awm_lib.cli import main

    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--tiny",
            "--config",
            "default-b1",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["config"] == "default-b1@tiny" and run["device"].startswith("CPU")
    assert {"command", "date", "versions"} <= set(run)
    assert (
        run["command"].startswith("python -m awm_lib bench --config default-b1")
        and "--tiny" in run["command"]
    )
    assert main(["bench", "--config", "nope", "--device", "cpu", "--out", str(out)]) == 2
    assert "unknown bench config" in capsys.readouterr().err


def test_rescale_mfu_uses_the_better_peak():
    from awm_lib.bench.pipeline import rescale_mfu

    rec = {"train": {"tflops": 2.0, "mfu": 2.0}, "forward": {"tflops": 1.0, "mfu": 1.0}, "config": "x"}
    rescale_mfu(rec, MatmulPeak(tflops=4.0, n=8, dtype="float32", device="cpu"))
    assert (
        rec["train"]["mfu"] == 0.5 and rec["forward"]["mfu"] == 0.25 and rec["peak_matmul"]["tflops"] == 4.0
    )
