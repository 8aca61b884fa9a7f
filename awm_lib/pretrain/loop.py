"""The pretraining loop: student, EMA teacher, multi-crop views, DINO (+ iBOT) loss.

One step, in the order the code runs it::

    images, masks  = a random batch from the tissue bank           # on the device
    views          = multi_crop(images, masks)                     # 2 global + n local
    teacher(global views)            -> t_cls (2, B, K), t_patch   # no gradients
    student(global views, masked)    -> s_cls, s_patch             # iBOT masks
    student(local views)             -> s_cls (n, B, K)
    loss = dino_loss(s_cls, teacher_probs(t_cls)) + w * ibot_loss(...)
    loss.backward(); clip; AdamW step
    teacher <- EMA(teacher, student);  center <- EMA(center, t_cls)

Schedules (learning rate, weight decay, teacher momentum and temperature)
run on *progress* in ``[0, 1]``: the larger of ``step / max_steps`` and
``elapsed / time_limit``. So a run given "20 minutes" anneals properly in 20
minutes whatever the machine's speed, and a run given "300 steps" is exactly
reproducible.

At the end the TEACHER's backbone (the EMA average: smoother and better than
the student, as in DINO) is saved with ``save_pretrained``; it loads with
``transformers.Dinov2Model.from_pretrained(out_dir)`` like any DINOv2.

The settings (:class:`PretrainConfig`, :data:`PRESETS`, :func:`preset_config`)
live in :mod:`awm_lib.pretrain.config` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from awm_lib.data.mias import load_mias
from awm_lib.device import choose_device
from awm_lib.errors import CheckpointError, ConfigError, NonFiniteLossError
from awm_lib.io_utils import atomic_path, run_record
from awm_lib.optim import param_groups, warmup_cosine
from awm_lib.paths import mias_root
from awm_lib.pretrain.augment import multi_crop
from awm_lib.pretrain.card import write_model_card
from awm_lib.pretrain.config import PRESETS, PretrainConfig, preset_config  # noqa: F401
from awm_lib.pretrain.dino import (
    DINOHead,
    cosine_schedule,
    dino_loss,
    ema_update,
    entropy,
    ibot_loss,
    random_patch_masks,
    teacher_probs,
    teacher_temperature,
    update_center,
)
from awm_lib.pretrain.split import samples_of_half
from awm_lib.pretrain.tissue import TissueBank, concat_banks, files_bank, mias_bank, synthetic_bank


# --- the networks ------------------------------------------------------------------
class DINOStudent(nn.Module):
    """A ``Dinov2Model`` backbone with a CLS head (DINO) and a patch head (iBOT).

    The teacher is a ``deepcopy`` of this module: the same class, never trained
    by gradients, updated by :func:`ema_update`.
    """

    def __init__(self, backbone: nn.Module, cfg: PretrainConfig):
        super().__init__()
        d = backbone.config.hidden_size
        self.backbone = backbone
        self.head = DINOHead(d, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)
        self.patch_head = (
            DINOHead(d, cfg.ibot_out_dim, cfg.head_hidden, cfg.head_bottleneck)
            if cfg.ibot_weight > 0
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        patch_masks: torch.Tensor | None = None,
        patch_select: torch.Tensor | None = None,
    ):
        """``x`` ``(N, 3, S, S)`` -> CLS logits ``(N, K)`` and patch logits ``(M, K')`` at ``patch_select``.

        ``patch_masks`` ``(N, P)`` replaces those patches by the mask token;
        ``patch_select`` ``(N, P)`` picks the patches whose logits we need
        (the masked ones: computing the head on all patches would be waste).
        """
        hidden = self.backbone(pixel_values=x, bool_masked_pos=patch_masks).last_hidden_state  # (N, 1+P, D)
        # the heads run in float32 even under bf16 autocast: cosine logits divided
        # by a temperature of 0.04 would magnify bf16's rounding 25-fold
        with torch.autocast(device_type=x.device.type, enabled=False):
            hidden = hidden.float()
            cls_logits = self.head(hidden[:, 0])
            patch_logits = None
            if self.patch_head is not None and patch_select is not None:
                patch_logits = self.patch_head(hidden[:, 1:][patch_select])  # (M, K')
        return cls_logits, patch_logits


def build_backbone(cfg: PretrainConfig) -> nn.Module:
    """A ``Dinov2Model``: loaded from ``init_from`` (continued pretraining) or freshly initialised."""
    from transformers import Dinov2Config, Dinov2Model

    if cfg.init_from:
        try:
            model = Dinov2Model.from_pretrained(
                cfg.init_from, dtype=torch.float32, drop_path_rate=cfg.drop_path_rate
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot load a Dinov2Model from {cfg.init_from!r} ({e}); give a save_pretrained folder, or "
                "a "
                "hub id with network access",
                path=cfg.init_from,
            ) from e
        if model.config.patch_size != cfg.patch_size:
            raise ConfigError(
                f"init_from has patch_size {model.config.patch_size}; set "
                f"patch_size={model.config.patch_size} and crop sizes to its multiples"
            )
        return model
    config = Dinov2Config(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
        drop_path_rate=cfg.drop_path_rate,
        use_mask_token=True,
    )
    return Dinov2Model(config)


# --- data ------------------------------------------------------------------------------
def load_bank(cfg: PretrainConfig) -> TissueBank:
    """The pretraining images the config asks for, as one :class:`TissueBank`."""
    banks = []
    if cfg.bank_path:
        banks.append(TissueBank.load(cfg.bank_path))
    else:
        if cfg.mias_root:
            root = mias_root() if cfg.mias_root == "auto" else Path(cfg.mias_root)
            if cfg.mias_half:  # only the women of one half (the other is kept for the probe)

                paths = [s.path for s in samples_of_half(load_mias(root), cfg.mias_half, cfg.split_seed)]
                banks.append(files_bank(sorted(paths)[: cfg.max_images], cfg.long_side, "mias", cfg.progress))
            else:
                banks.append(mias_bank(root, cfg.long_side, cfg.max_images, cfg.progress))
        if cfg.vindr_root:
            dicoms = sorted(Path(cfg.vindr_root).rglob("*.dicom")) + sorted(
                Path(cfg.vindr_root).rglob("*.dcm")
            )
            banks.append(files_bank(dicoms[: cfg.max_images], cfg.long_side, "vindr", cfg.progress))
    if cfg.n_synthetic > 0:
        side = banks[0].long_side if banks else cfg.long_side
        banks.append(synthetic_bank(cfg.n_synthetic, side, cfg.seed, cfg.progress, cfg.workers))
    return concat_banks(banks)


# --- one step ---------------------------------------------------------------------------
@dataclass
class StepState:
    """Everything besides the networks that a step reads and updates."""

    center: torch.Tensor  # (K,)
    patch_center: torch.Tensor  # (K',)
    step: int = 0
    elapsed_s: float = 0.0
    centered: bool = False  # has the center been set from a first batch?


def training_step(
    student: DINOStudent,
    teacher: DINOStudent,
    views,
    state: StepState,
    cfg: PretrainConfig,
    teacher_temp: float,
    generator: torch.Generator | None = None,
    autocast=contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """Forward both networks on one batch of views and return the losses (no optimiser step).

    Also updates ``state.center`` / ``state.patch_center`` (teacher centering).
    """
    G = views.global_crops.flatten(0, 1)  # (nG*B, 3, g, g)
    nG, B = views.global_crops.shape[:2]
    use_ibot = student.patch_head is not None
    masks = None
    if use_ibot:
        n_patches = (G.shape[-1] // cfg.patch_size) * (G.shape[-2] // cfg.patch_size)
        masks = random_patch_masks(
            G.shape[0], n_patches, tuple(cfg.mask_ratio), cfg.mask_probability, generator, G.device
        )

    with torch.no_grad(), autocast():
        t_cls, t_patch = teacher(G, patch_select=masks)
    t_cls = t_cls.float().view(nG, B, -1)  # (nG, B, K)
    if not state.centered:
        # Start the center at the first batch's mean, not at zero: a random
        # network gives every image almost the same logits, and a zero center
        # would send every image to the same prototype for the first ~20 steps.
        state.center = update_center(state.center, t_cls, 0.0)
        if use_ibot and t_patch.shape[0] > 0:
            state.patch_center = update_center(state.patch_center, t_patch.float(), 0.0)
        state.centered = True
    t_p = teacher_probs(t_cls, state.center, teacher_temp)

    with autocast():
        s_cls_g, s_patch = student(G, patch_masks=masks, patch_select=masks)
        s_cls = [s_cls_g.float().view(nG, B, -1)]
        if views.local_crops.shape[0] > 0:
            s_cls_l, _ = student(views.local_crops.flatten(0, 1))
            s_cls.append(s_cls_l.float().view(-1, B, s_cls_l.shape[-1]))
    s_cls_all = torch.cat(s_cls)  # (nG + nL, B, K)

    out = {"dino": dino_loss(s_cls_all, t_p, cfg.student_temp)}
    loss = out["dino"]
    if use_ibot:
        t_pp = teacher_probs(t_patch.float(), state.patch_center, teacher_temp)
        out["ibot"] = ibot_loss(s_patch.float(), t_pp, masks, cfg.student_temp)
        loss = loss + cfg.ibot_weight * out["ibot"]
        if t_patch.shape[0] > 0:
            state.patch_center = update_center(state.patch_center, t_patch.float(), cfg.center_momentum)
    state.center = update_center(state.center, t_cls, cfg.center_momentum)
    out["loss"] = loss
    out["teacher_entropy"] = entropy(t_p).detach()  # per image: low = confident
    out["teacher_mean_entropy"] = entropy(
        t_p.mean(dim=(0, 1))
    ).detach()  # of the batch average: low = collapse
    return out


# --- checkpoints ------------------------------------------------------------------------
def _state_path(out_dir: Path) -> Path:
    return out_dir / "train_state.pt"


def _save_state(
    out_dir: Path, student, teacher, opt, state: StepState, cfg: PretrainConfig, generator: torch.Generator
) -> None:
    blob = {
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": opt.state_dict(),
        "center": state.center,
        "patch_center": state.patch_center,
        "step": state.step,
        "elapsed_s": state.elapsed_s,
        "centered": state.centered,
        "config": asdict(cfg),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state(),
    }
    with atomic_path(_state_path(out_dir)) as tmp:
        torch.save(blob, tmp)


ARCH_KEYS = (
    "hidden_size",
    "depth",
    "heads",
    "patch_size",
    "image_size",
    "init_from",
    "out_dim",
    "ibot_out_dim",
    "head_hidden",
    "head_bottleneck",
    "ibot_weight",
)


def _load_state(
    out_dir: Path, student, teacher, opt, cfg: PretrainConfig, generator: torch.Generator
) -> StepState | None:
    path = _state_path(out_dir)
    if not (cfg.resume and path.is_file()):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn or foreign file
        raise CheckpointError(
            f"cannot read the training state ({e}); delete it to start over", path=str(path)
        ) from e
    saved = blob["config"]
    diff = [
        k
        for k in ARCH_KEYS
        if saved.get(k) != getattr(cfg, k)
        and not (isinstance(getattr(cfg, k), tuple) and tuple(saved.get(k)) == getattr(cfg, k))
    ]
    if diff:
        raise CheckpointError(
            f"the training state was made with different {', '.join(diff)}; use another --out or delete it",
            path=str(path),
        )
    student.load_state_dict(blob["student"])
    teacher.load_state_dict(blob["teacher"])
    opt.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    generator.set_state(blob["generator"])
    dev = next(student.parameters()).device
    return StepState(
        blob["center"].to(dev),
        blob["patch_center"].to(dev),
        blob["step"],
        blob["elapsed_s"],
        blob["centered"],
    )


# --- the loop ------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, out_dir: str | Path, bank: TissueBank | None = None) -> bool:
    """Pretrain, save the teacher backbone under ``out_dir`` with a model card.

    Returns True when the run finished, False when it stopped early because of
    ``stop_after_minutes`` (then ``train_state.pt`` is saved: call again with
    the same config and ``out_dir`` to continue where it left off).

    ``out_dir`` gets ``config.json`` + ``model.safetensors`` (the teacher
    ``Dinov2Model``), ``README.md`` (model card), ``loss_log.jsonl``,
    ``loss_curve.png``, ``pretrain_config.json``; while running also
    ``train_state.pt`` (resumable; removed at the end unless ``keep_train_state``).

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = choose_device(cfg.device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 heads on tensor cores
        torch.backends.cudnn.allow_tf32 = True

    backbone = build_backbone(cfg)  # first: a bad init_from fails before minutes of data loading
    bank = bank if bank is not None else load_bank(cfg)
    bank_pixels, bank_masks = bank.to_tensors(dev)  # whole bank on the device
    student = DINOStudent(backbone, cfg).to(dev)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)  # drop-path off
    # weight decay on matrices only; biases, norms, tokens and position embeddings are not decayed
    groups = param_groups(
        student,
        cfg.weight_decay[0],
        cfg.lr,
        no_decay_names=("token", "position_embeddings"),
        decay_first=True,
    )
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    state = _load_state(out_dir, student, teacher, opt, cfg, gen) or StepState(
        torch.zeros(cfg.out_dim, device=dev), torch.zeros(cfg.ibot_out_dim, device=dev)
    )
    log_path = out_dir / "loss_log.jsonl"
    _truncate_log(log_path, state.step)
    crop_cfg = cfg.crop_config()
    use_amp = cfg.bf16 and dev.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    time_limit = cfg.time_limit_minutes * 60 if cfg.time_limit_minutes else math.inf

    def progress() -> float:
        return max(state.step / cfg.max_steps, state.elapsed_s / time_limit)

    n_images = len(bank)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="pretrain", disable=not cfg.progress)
    last_ckpt = time.time()
    window_t, window_steps = time.time(), 0
    student.train()
    segment_end = time.time() + cfg.stop_after_minutes * 60 if cfg.stop_after_minutes else math.inf
    while progress() < 1.0:
        if time.time() > segment_end:
            bar.close()
            _save_state(out_dir, student, teacher, opt, state, cfg, gen)
            return False
        t0 = time.time()
        p = progress()
        lr = warmup_cosine(p, total=1.0, warmup=cfg.warmup, peak=cfg.lr, end=cfg.min_lr)
        wd = cosine_schedule(p, *cfg.weight_decay)
        for g in opt.param_groups:
            g["lr"], g["weight_decay"] = lr, (wd if g["apply_wd"] else 0.0)
        momentum = cosine_schedule(p, *cfg.ema_momentum)
        t_temp = teacher_temperature(p, *cfg.teacher_temp, cfg.teacher_temp_warmup)

        idx = torch.randint(n_images, (cfg.batch_size,), device=dev, generator=gen)
        images = bank_pixels[idx].float().div_(255)  # (B, 1, L, L)
        views = multi_crop(images, bank_masks[idx], crop_cfg, gen)
        out = training_step(student, teacher, views, state, cfg, t_temp, gen, autocast)
        if not torch.isfinite(out["loss"]):
            raise NonFiniteLossError(
                f"loss is {out['loss'].item()} at step {state.step}; lower lr or check the data"
            )
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if p < cfg.freeze_prototypes:  # DINO: keep the prototypes still while the MLP settles
            for head in (student.head, student.patch_head):
                if head is not None:
                    head.prototypes.grad = None
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.clip_grad)
        opt.step()
        ema_update(teacher, student, momentum)

        state.step += 1
        window_steps += 1
        state.elapsed_s += time.time() - t0
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == 1 or progress() >= 1.0:
            now = time.time()
            rec = {k: round(float(v.detach()), 5) for k, v in out.items()}
            rec.update(
                step=state.step,
                progress=round(progress(), 4),
                lr=lr,
                wd=round(wd, 4),
                momentum=round(momentum, 5),
                teacher_temp=round(t_temp, 4),
                elapsed_s=round(state.elapsed_s, 1),
                images_per_s=round(window_steps * cfg.batch_size / max(now - window_t, 1e-9), 1),
                load1=_load_average(),
                threads=torch.get_num_threads(),
            )
            window_t, window_steps = now, 0
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=rec["loss"], H_t=rec["teacher_entropy"])
        if time.time() - last_ckpt > cfg.checkpoint_every_minutes * 60:
            _save_state(out_dir, student, teacher, opt, state, cfg, gen)
            last_ckpt = time.time()
    bar.close()
    if cfg.keep_train_state:
        _save_state(out_dir, student, teacher, opt, state, cfg, gen)

    save_backbone(teacher.backbone, out_dir, cfg.save_dtype, cfg.save_shard_mb)
    meta = run_record(
        cfg.command,
        seed=cfg.seed,
        device=dev,
        steps=state.step,
        train_seconds=round(state.elapsed_s, 1),
        wall_seconds=round(time.time() - t_start, 1),
        n_images=len(bank),
        sources={s: bank.sources.count(s) for s in sorted(set(bank.sources))},
        image_ids=list(bank.image_ids),
        config=asdict(cfg),
    )
    write_model_card(out_dir, meta)
    if not cfg.keep_train_state:
        _state_path(out_dir).unlink(missing_ok=True)
    return True


def _load_average() -> float | None:
    """The machine's 1-minute load average (other processes share the CPU: the log says how much)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _truncate_log(log_path: Path, step: int) -> None:
    """On resume, forget log lines written after the state we resume from."""
    if not log_path.exists():
        return
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines))


def save_backbone(
    backbone: nn.Module, out_dir: str | Path, dtype: str = "float16", shard_mb: float | None = None
) -> Path:
    """``save_pretrained`` a ``Dinov2Model``, stored in ``dtype`` but declared float32.

    Half-precision storage halves the file; setting ``config.dtype`` back to
    float32 makes ``from_pretrained`` upcast on load, so CPU users get an
    ordinary float32 model with weights rounded to 3 significant digits.
    ``shard_mb`` splits the weights into several ``.safetensors`` files plus an
    index (standard Hugging Face sharding; ``from_pretrained`` reassembles them).
    """
    out_dir = Path(out_dir)
    model = copy.deepcopy(backbone).to(device="cpu", dtype=getattr(torch, dtype))
    model.config.drop_path_rate = 0.0
    for old in list(out_dir.glob("model*.safetensors")) + list(out_dir.glob("model.safetensors.index.json")):
        old.unlink()  # a previous save with other sharding must not linger
    model.save_pretrained(out_dir, **({"max_shard_size": f"{int(shard_mb * 1000)}KB"} if shard_mb else {}))
    cfg_path = out_dir / "config.json"
    c = json.loads(cfg_path.read_text())
    c["dtype"] = "float32"
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    return out_dir
