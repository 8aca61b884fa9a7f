"""Run one benchmark configuration: forward and training steps, images/s, memory, TFLOP/s, MFU.

A training step here is the whole thing the training loop does per batch:
crop extraction (one batched ``grid_sample``), the ViT on all crops, the RoI
transformer, the losses (weighted BCE + repulsive), backward, and the AdamW
step. The fast path adds what makes it fast:

* many images per step (at one image per step the RoI path is *launch-bound*:
  thousands of small kernels, each too short to fill the GPU);
* bf16 autocast (tensor cores) with fused SDPA attention (flash kernels);
* the fused AdamW (one kernel for all parameters instead of one per tensor);
* optionally ``torch.compile`` (``"default"``, ``"max-autotune"``: fused
  kernels; ``"reduce-overhead"``: CUDA graphs, which replay the whole launch
  sequence at once and remove the launch cost);
* a loader from the preprocessing cache with workers, pinned memory and a
  side-stream prefetch.

(Channels-last memory layout helps convolutional nets; a ViT has one patch
convolution, so it is not applied.)

The reference path runs the same model the way the public implementation
does: fp32, batch 4, and per item every DICOM decoded, the breast found and
cropped, every RoI cut with PIL on the CPU.

:func:`run_config` returns a JSON-ready dict; :mod:`awm_lib.bench.results`
merges it into ``results/bench.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from awm_lib import paths
from awm_lib.bench import data as bdata
from awm_lib.bench.configs import (
    BenchConfig,
    build_model,
    full_canvas,
    full_forward_flops,
    roi_forward_flops,
)
from awm_lib.bench.timing import (
    load_average,
    matmul_peak,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
    time_steps,
    time_wall,
)
from awm_lib.io_utils import write_text_atomic
from awm_lib.losses import LossConfig, compute_loss, weighted_bce
from awm_lib.model.cost import training_flops
from awm_lib.proposals.blob import BlobProposer


# --- pieces of a step ------------------------------------------------------------------------
def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked; everything else runs in fp32."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, device: torch.device, fused: bool) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda" and fused:
        return torch.optim.AdamW(params, lr=1e-5, fused=True)
    return torch.optim.AdamW(params, lr=1e-5)


def loss_of(model: torch.nn.Module, out, batch: dict) -> torch.Tensor:
    """The training objective of either model (RoI: BCE + repulsive; full image: BCE)."""
    if torch.is_tensor(out):
        return weighted_bce(out, batch["labels"], pos_weight=10.0)
    loss, _ = compute_loss(out, batch, LossConfig())
    return loss


def forward(model, fwd, batch: dict):
    """One forward pass of ``model`` (``fwd`` is the model or its compiled version)."""
    if "crops" in batch:  # the reference path: crops were made on the CPU
        return model.forward_crops(batch["crops"], batch["boxes_norm"])
    if hasattr(model, "blocks"):  # RoI classifier
        return fwd(batch["images"], batch["rois"], batch.get("image_sizes"), batch.get("roi_mask"))
    return fwd(batch["images"])  # full image: the whole image is the breast


def train_step(model, fwd, opt, batch: dict, device: torch.device, precision: str) -> torch.Tensor:
    with autocast(device, precision):
        out = forward(model, fwd, batch)
        loss = loss_of(model, out, batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def forward_step(model, fwd, batch: dict, device: torch.device, precision: str):
    with torch.inference_mode(), autocast(device, precision):
        out = forward(model, fwd, batch)
    return out if torch.is_tensor(out) else out.logits


def compile_model(model, mode: str | None):
    """``torch.compile`` the model's forward (crops + ViT + RoI transformer fuse into few kernels)."""
    if mode is None:
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


# --- measurements --------------------------------------------------------------------------------
def _rates(timing, images_per_step: int, flops_per_step: float, peak_tflops: float | None) -> dict:
    tflops = flops_per_step / timing.median_s / 1e12
    return {**timing.summary(), "images_per_s": images_per_step / timing.median_s,
            "tflops": tflops, "mfu": (tflops / peak_tflops) if peak_tflops else None}


def _measure(fn, device, steps, warmup, images, flops, peak, wall=False, queue=0) -> dict:
    """Time ``fn``. With a loader, ``queue`` batches may wait ready-made in its prefetch queue: at least
    that many warm-up steps drain it, and at least that many are timed, so the figure is the steady
    state (a queue filled while the GPU warmed up would otherwise hide a slow loader)."""
    reset_peak_memory(device)
    timing = (time_wall if wall else time_steps)(
        fn, device, steps=max(steps, queue), warmup=max(warmup, queue)
    )
    return {**_rates(timing, images, flops, peak), "peak_memory_bytes": peak_memory_bytes(device)}


def _flops(model, cfg: BenchConfig) -> dict:
    if cfg.model == "full":
        return full_forward_flops(model, full_canvas(cfg, model.backbone.patch_size), cfg.batch_size)
    return roi_forward_flops(model, cfg.batch_size)


def _source_rois(cache, sources, topk: int, seed: int = 0) -> np.ndarray:
    """Seeded random RoIs inside each cached image (the proposals are precomputed offline in training)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in sources:
        h, w = np.load(cache.entry(s)[0], mmap_mode="r").shape
        out.append(bdata.random_rois(1, topk, h, w, rng)[0])
    return np.stack(out)  # (n_sources, K, 4)


def run_config(cfg: BenchConfig, device: str | torch.device = "cuda", steps: int = 10, warmup: int = 3,
               data_root: str | Path | None = None, source_size: int = 2048, peak=None,
               profile_dir: str | Path | None = None, seed: int = 0, progress: bool = False) -> dict:
    """Measure ``cfg`` on ``device``; returns one run record (without the file-level fields).

    ``peak`` (a :class:`~awm_lib.bench.timing.MatmulPeak`) is measured once per
    device and reused; ``data_root`` holds generated sources and the cache
    (needed by the ``cache`` / ``dicom`` data modes). ``profile_dir``: also run
    :func:`profile_steps` and write its table there.
    """
    cfg.validate()
    device = torch.device(device)
    torch.manual_seed(seed)
    peak = peak or matmul_peak(device)
    precision = cfg.precision if device.type == "cuda" else "fp32"
    model = build_model(cfg).to(device)
    fwd = compile_model(model, cfg.compile if cfg.path == "fast" else None)
    flops = _flops(model, cfg)
    fwd_flops, train_fl = flops["total"], training_flops(flops["total"])
    b = cfg.batch_size
    record = {
        "config": cfg.run_name, "model": cfg.model, "arch": cfg.arch, "path": cfg.path, "data": cfg.data,
        "mode": cfg.mode, "batch_size": b, "precision": precision, "compile": cfg.compile,
        "crop_size": cfg.crop_size if cfg.model == "roi" else None,
        "num_crops": cfg.num_crops if cfg.model == "roi" else None,
        "image_size": list(cfg.image_size), "long_side": cfg.long_side if cfg.model == "full" else None,
        "tokens_per_image": flops["tokens_per_image"],
        "flops_forward_per_image": fwd_flops / b, "flops_train_per_image": train_fl / b,
        "peak_matmul": peak.as_dict(), "steps": steps, "warmup": warmup,
        "threads": torch.get_num_threads(), "loadavg": load_average(), "note": cfg.note,
        "sdpa": _sdpa_backends(device),
    }
    opt = make_optimizer(model, device, fused=cfg.path == "fast")
    def run(fn, fl, wall=False, queue=0):
        return _measure(fn, device, steps, warmup, b, fl, peak.tflops, wall, queue)

    queue = bdata.PREFETCH_FACTOR * cfg.workers + 1  # batches a loader (+ the prefetcher) can hold ready

    if cfg.data == "dicom" or cfg.data == "cache":
        root = Path(data_root) if data_root else default_data_root()
        sources = bdata.prepare_sources(root, cfg.n_images, source_size, progress=progress)
        cache = bdata.warm_cache(
            sources, root, cfg.image_size[0], workers=max(1, cfg.workers), progress=progress
        )
        rois = _source_rois(cache, sources, cfg.topk, seed)
        record["data_source"] = {"n_images": len(sources), "source_size": source_size, "workers": cfg.workers}

    model.train()
    if cfg.path == "reference":  # fp32, batch 4, per-item DICOM decoding and PIL crops, plain AdamW
        batch = _crop_batch(cfg, device, seed)
        record["train"] = run(lambda: train_step(model, model, opt, batch, device, "fp32"), train_fl)
        ds = bdata.ReferenceDataset(sources, rois, cfg.image_size[0], cfg.crop_size, length=10**9)
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=b,
            num_workers=cfg.workers,
            prefetch_factor=bdata.PREFETCH_FACTOR if cfg.workers else None,
            worker_init_fn=bdata._single_thread_worker if cfg.workers else None,
        )
        it = _cycle(loader)

        def ref_step():
            ref_batch = {k: v.to(device) for k, v in next(it).items()}
            return train_step(model, model, opt, ref_batch, device, "fp32")

        record["train_end_to_end"] = run(ref_step, train_fl, wall=True, queue=queue)
        record["train_end_to_end"]["fraction_of_model_only"] = (
            record["train_end_to_end"]["images_per_s"] / record["train"]["images_per_s"])
    else:  # model only: synthetic tensors already on the device
        batch = bdata.device_batch(b, cfg.image_size, cfg.topk, device, seed)
        if cfg.mode == "train":
            record["forward"] = run(lambda: forward_step(model, fwd, batch, device, precision), fwd_flops)
            model.train()
            record["train"] = run(lambda: train_step(model, fwd, opt, batch, device, precision), train_fl)
        else:
            model.eval()
            record["forward"] = run(lambda: forward_step(model, fwd, batch, device, precision), fwd_flops)

    if cfg.data == "cache":  # end to end: the loader from the preprocessing cache feeds every step
        proposer = None
        if cfg.mode == "infer":
            proposer = BlobProposer()
        ds = bdata.CacheDataset(
            cache, sources, cfg.image_size, rois, length=10**9, topk=cfg.topk, proposer=proposer
        )
        pref = bdata.Prefetcher(
            bdata.cache_loader(ds, b, cfg.workers, pin_memory=device.type == "cuda"), device
        )

        def next_batch():
            raw = pref.next()
            return {**raw, "images": bdata.to_unit(raw["images"], raw["max_value"])}

        if cfg.mode == "train":
            fn, fl, key, ref = (lambda: train_step(model, fwd, opt, next_batch(), device, precision),
                                train_fl, "train_end_to_end", "train")
        else:
            fn, fl, key, ref = (lambda: forward_step(model, fwd, next_batch(), device, precision),
                                fwd_flops, "infer_end_to_end", "forward")
        record[key] = run(fn, fl, wall=True, queue=queue)
        record[key]["fraction_of_model_only"] = record[key]["images_per_s"] / record[ref]["images_per_s"]
    if profile_dir is not None:
        record["profile"] = profile_steps(model, fwd, opt, batch, device, precision, cfg, profile_dir)
    return record


def _crop_batch(cfg: BenchConfig, device: torch.device, seed: int) -> dict:
    """Ready-made normalised crops on the device: the reference model's input without its loader."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, k, s = cfg.batch_size, cfg.num_crops, cfg.crop_size
    boxes = torch.rand(b, k, 4, generator=g)  # (B, K, 4) cxcywh in [0, 1]
    return {"crops": torch.randn(b, k, 3, s, s, generator=g).to(device), "boxes_norm": boxes.to(device),
            "labels": (torch.arange(b) % 2).float().to(device)}


def default_data_root() -> Path:
    """Where generated sources and their cache live: ``$AWM_BENCH_DATA`` or ``.cache/bench``."""
    env = os.environ.get("AWM_BENCH_DATA")
    return Path(env) if env else paths.cache_root() / "bench"


def rescale_mfu(record: dict, peak) -> dict:
    """Recompute every MFU of ``record`` against ``peak`` (a better measurement of the same device).

    On a shared machine the peak measured before a run can be depressed by
    other processes; the CLI measures again afterwards and keeps the higher one.
    """
    record["peak_matmul"] = peak.as_dict()
    for m in record.values():
        if isinstance(m, dict) and "tflops" in m:
            m["mfu"] = m["tflops"] / peak.tflops
    return record


def _cycle(loader):
    while True:
        yield from loader


def _sdpa_backends(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None
    b = torch.backends.cuda
    return {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(),
            "cudnn": b.cudnn_sdp_enabled(), "math": b.math_sdp_enabled()}


# --- where the time goes ------------------------------------------------------------------------------
def profile_steps(model, fwd, opt, batch: dict, device: torch.device, precision: str, cfg: BenchConfig,
                  out_dir: str | Path, steps: int = 3, top: int = 25) -> dict:
    """``torch.profiler`` over a few training (or forward) steps; writes the top-ops table.

    The table (sorted by device time on CUDA, CPU time otherwise) answers
    "where does the time go": attention kernels, GEMMs, ``grid_sample``, the
    optimizer, or launch overhead (many tiny kernels, CPU time >> GPU time).
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step = ((lambda: train_step(model, fwd, opt, batch, device, precision)) if cfg.mode == "train"
            else (lambda: forward_step(model, fwd, batch, device, precision)))
    step()
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    table = events.table(sort_by=sort, row_limit=top)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if device.type == "cuda" else "cpu"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.run_name)  # plain file names travel everywhere
    path = out / f"profile-{dev}-{safe}.txt"

    write_text_atomic(path, table)
    rows = sorted(events, key=lambda e: getattr(e, sort, 0.0), reverse=True)[:10]
    return {
        "table": str(path),
        "sorted_by": sort,
        "steps": steps,
        "top_ops": [
            {"name": e.key, "self_ms": getattr(e, sort, 0.0) / 1e3 / steps, "calls": e.count // steps}
            for e in rows
        ],
    }
