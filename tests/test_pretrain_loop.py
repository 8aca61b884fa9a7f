"""A few optimisation steps on a tiny model: gradients, EMA teacher, no collapse, save/load round trip."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import Dinov2Model

from awm_lib.config import apply_overrides
from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.pretrain.augment import multi_crop
from awm_lib.pretrain.dino import ema_update
from awm_lib.pretrain.loop import (
    DINOStudent,
    PretrainConfig,
    StepState,
    build_backbone,
    preset_config,
    pretrain,
    save_backbone,
    training_step,
)
from awm_lib.pretrain.tissue import TissueBank, place_on_canvas

TINY = dict(hidden_size=48, depth=2, heads=2, image_size=56, global_size=56, local_size=28, n_local=2,
            out_dim=64, ibot_out_dim=64, head_hidden=64, head_bottleneck=32, batch_size=4, drop_path_rate=0.0,
            long_side=64, lr=1e-3, warmup=0.0, progress=False, device="cpu", log_every=1, command="pytest")


def toy_bank(n=6, L=64, seed=0) -> TissueBank:
    """Blobby 'breasts' (half discs of smooth random texture) on a black canvas."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:L, 0:L]
    pix, masks = [], []
    for _ in range(n):
        r = rng.uniform(0.6, 0.9) * L / 2
        m = (xx / (r * 1.4)) ** 2 + ((yy - L / 2) / r) ** 2 <= 1
        tex = rng.random((L // 8, L // 8))
        tex = np.kron(tex, np.ones((8, 8)))
        pix.append((np.clip(0.3 + 0.6 * tex, 0, 1) * m * 255).astype(np.uint8))
        masks.append(m)
    return TissueBank(np.stack(pix)[:, None], np.stack(masks), [f"toy{i}" for i in range(n)], ["toy"] * n)


def tiny_pair(cfg):
    torch.manual_seed(0)
    student = DINOStudent(build_backbone(cfg), cfg)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    return student, teacher


def fixed_views(cfg, bank):
    pix, masks = bank.to_tensors()
    return multi_crop(pix[:4].float() / 255, masks[:4], cfg.crop_config(), torch.Generator().manual_seed(0))


def test_teacher_gets_no_gradients_and_steps_reduce_loss_on_a_fixed_batch():
    cfg = PretrainConfig(**TINY)
    student, teacher = tiny_pair(cfg)
    views = fixed_views(cfg, toy_bank())
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)
    state = StepState(torch.zeros(cfg.out_dim), torch.zeros(cfg.ibot_out_dim))
    w0 = [p.clone() for p in student.parameters()]
    losses, mean_entropies = [], []
    for _ in range(8):
        # the same views and the same iBOT masks every step: a fixed batch
        out = training_step(student, teacher, views, state, cfg, 0.04, torch.Generator().manual_seed(1))
        opt.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in teacher.parameters()), "the teacher is trained only by EMA"
        opt.step()
        ema_update(teacher, student, 0.99)
        losses.append(out["loss"].item())
        mean_entropies.append(out["teacher_mean_entropy"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(w0, student.parameters()))
    # collapse check: the batch-average teacher distribution stays spread over prototypes
    assert min(mean_entropies) > 0.5 * math.log(cfg.out_dim)
    assert torch.isfinite(state.center).all() and state.center.abs().sum() > 0


def test_pretrain_saves_a_dinov2_that_round_trips(tmp_path):
    cfg = PretrainConfig(**TINY, max_steps=3, save_dtype="float32")
    bank = toy_bank()
    assert pretrain(cfg, tmp_path / "ckpt", bank=bank) is True
    out = tmp_path / "ckpt"
    for name in (
        "config.json",
        "model.safetensors",
        "README.md",
        "loss_curve.png",
        "loss_log.jsonl",
        "pretrain_config.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "train_state.pt").exists()
    log = [json.loads(x) for x in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    card = (out / "README.md").read_text()
    assert "pytest" in card and "seed" in card and "loss_curve.png" in card
    model = Dinov2Model.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.float32
    meta = json.loads((out / "pretrain_config.json").read_text())
    assert meta["steps"] == 3 and meta["seed"] == 0


def test_save_round_trip_identical_outputs_and_half_storage(tmp_path):
    cfg = PretrainConfig(**TINY)
    torch.manual_seed(0)
    backbone = build_backbone(cfg).eval()
    x = torch.randn(2, 3, 56, 56)
    save_backbone(backbone, tmp_path / "f32", "float32")
    loaded = Dinov2Model.from_pretrained(tmp_path / "f32").eval()
    with torch.no_grad():
        assert torch.equal(
            backbone(pixel_values=x).last_hidden_state, loaded(pixel_values=x).last_hidden_state
        )
    # float16 storage: half the bytes, loads as float32, equals the fp16-rounded model
    save_backbone(backbone, tmp_path / "f16", "float16")
    half = Dinov2Model.from_pretrained(tmp_path / "f16").eval()
    assert next(half.parameters()).dtype == torch.float32
    size = lambda d: (tmp_path / d / "model.safetensors").stat().st_size  # noqa: E731
    assert size("f16") < 0.6 * size("f32")
    rounded = copy.deepcopy(backbone).half().float()
    with torch.no_grad():
        assert torch.equal(rounded(pixel_values=x).last_hidden_state, half(pixel_values=x).last_hidden_state)
    # sharded: several files plus an index, the same model once loaded
    save_backbone(backbone, tmp_path / "sharded", "float32", shard_mb=0.1)
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) >= 2
    sharded = Dinov2Model.from_pretrained(tmp_path / "sharded").eval()
    with torch.no_grad():
        assert torch.equal(
            backbone(pixel_values=x).last_hidden_state, sharded(pixel_values=x).last_hidden_state
        )


def test_resume_continues_from_saved_state(tmp_path):
    bank = toy_bank()
    out = tmp_path / "run"
    pretrain(PretrainConfig(**TINY, max_steps=2, keep_train_state=True), out, bank=bank)
    assert (out / "train_state.pt").is_file()
    pretrain(PretrainConfig(**TINY, max_steps=4), out, bank=bank)
    steps = [json.loads(x)["step"] for x in (out / "loss_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first call, 3-4 resumed
    assert json.loads((out / "pretrain_config.json").read_text())["steps"] == 4
    # a state from a different architecture is refused
    pretrain(PretrainConfig(**TINY, max_steps=1, keep_train_state=True), tmp_path / "b", bank=bank)
    with pytest.raises(CheckpointError):
        pretrain(PretrainConfig(**{**TINY, "hidden_size": 64}, max_steps=2), tmp_path / "b", bank=bank)


def test_continued_pretraining_from_a_saved_checkpoint(tmp_path):
    cfg = PretrainConfig(**TINY)
    torch.manual_seed(0)
    save_backbone(build_backbone(cfg), tmp_path / "init", "float32")
    cfg2 = PretrainConfig(
        **{**TINY, "hidden_size": 999}, init_from=str(tmp_path / "init")
    )  # arch comes from init
    assert build_backbone(cfg2).config.hidden_size == 48


def test_config_overrides_and_presets():
    cfg = preset_config(
        "cpu-smoke", ["lr=0.01", "mask_ratio=0.2,0.3", "init_from=none", "bf16=false", "time_limit_minutes=2"]
    )
    assert cfg.lr == 0.01 and cfg.mask_ratio == (0.2, 0.3) and cfg.init_from is None and cfg.bf16 is False
    assert cfg.time_limit_minutes == 2.0
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["no_such_key=1"])
    with pytest.raises(ConfigError):
        preset_config("nope")
    with pytest.raises(ConfigError):
        PretrainConfig(global_size=100).validate()  # not a multiple of 14
    gpu = preset_config("gpu-20min")
    gpu.validate()
    n = sum(p.numel() for p in build_backbone(gpu).parameters())
    assert n * 2 < 25e6, "the GPU preset's float16 weights must stay under 25 MB"


def test_place_on_canvas_keeps_aspect_and_mask():
    pix = np.full((100, 50), 0.4, np.float32)
    mask = np.ones((100, 50), bool)
    p, m = place_on_canvas(pix, mask, 40)
    assert p.shape == (40, 40) and m[:, :20].all() and not m[:, 20:].any()
    assert (p[:, :20] == 102).all() and (p[:, 20:] == 0).all()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from awm_lib.cli import main

    assert main(["pretrain", "--preset", "cpu-smoke"]) == 2  # no --out
    assert main(["pretrain", "--out", str(tmp_path / "x"), "--set", "no_such=1"]) == 2
    assert (
        main(
            [
                "pretrain",
                "--out",
                str(tmp_path / "x"),
                "--init-from",
                str(tmp_path / "missing"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert main(["pretrain", "--probe"]) == 2  # no --checkpoint
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("python -m awm_lib pretrain: error:") for line in err)
