"""``python -m awm_lib bench``: measure forward/training speed, memory, TFLOP/s and MFU per configuration.

Results are merged into ``--out`` (default ``results/bench.json``) keyed by
(device, config): runs of other devices and other configurations are kept.
The file is rewritten (atomically) after every configuration, so a run that
is cut short keeps what it measured.
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

HELP = "benchmark training/inference speed (images/s, memory, TFLOP/s, MFU) of named configurations"


def add_arguments(p) -> None:
    p.add_argument(
        "--config", action="append", metavar="NAME", help="configuration to run (repeatable); see --list"
    )
    p.add_argument("--all", action="store_true", help="run every configuration (GPU scale)")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="discarded warm-up steps (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="override every configuration's batch size")
    p.add_argument(
        "--workers", type=int, default=None, help="override the loader workers of data-backed configs"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of every configuration, type-checked (e.g. crop_size=112; repeatable)",
    )
    p.add_argument("--device", default="auto", help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=("default", "max-autotune", "reduce-overhead"),
        help="torch.compile the model (bare flag: mode 'default'; 'reduce-overhead' uses CUDA graphs)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (e.g. 2 on the 2-core machine)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="smoke scale: micro backbone, 128-px images (runs on any CPU)"
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="where generated sources and their cache live (default .cache/bench)",
    )
    p.add_argument(
        "--source-size", type=int, default=2048, help="long side of the generated DICOMs (default 2048)"
    )
    p.add_argument(
        "--profile", action="store_true", help="also profile a few steps; top-ops table next to --out"
    )
    p.add_argument(
        "--out", default="results/bench.json", help="results file to merge into (default results/bench.json)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images and the random weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


_ARCH = {
    "micro": "micro ViT",
    "small": "ViT-S/14",
    "base": "ViT-B/14",
    "large": "ViT-L/14",
    "giant": "ViT-g/14",
}
_DATA = {"device": "random images already on the device (model only)",
         "cache": "images read from the preprocessing cache (end to end)",
         "dicom": "every DICOM decoded per image"}


def describe_configs(configs) -> list[str]:
    """``bench --list`` in a reader's words: what is measured, on what input, in which implementation."""
    lines = [
        "Configurations (run one with --config NAME, all with --all; --tiny shrinks any to CPU scale):",
        "",
    ]
    for c in configs:
        arch = _ARCH.get(c.arch, c.arch)
        if c.model == "full":
            what = f"one {arch} over the whole breast, {c.long_side} px"
        else:
            what = f"RoI classifier, {arch}, {c.topk} RoIs + anchor, {c.crop_size}-px crops"
        step = "a training step" if c.mode == "train" else "inference (with the blob proposer)"
        way = (
            "the public implementation's way (fp32, per-image crops)"
            if c.path == "reference"
            else "this library's batched path"
        )
        lines.append(f"  {c.name:18s} {what}")
        lines.append(f"  {'':18s} {step} of {c.batch_size} image{'s' if c.batch_size > 1 else ''}; {way}")
        lines.append(f"  {'':18s} input: {_DATA.get(c.data, c.data)}")
    return lines


def _configs(args):
    import dataclasses

    from awm_lib.bench.configs import CONFIGS, get_config, tiny
    from awm_lib.config import apply_overrides
    from awm_lib.errors import ConfigError

    if args.all:
        names = list(CONFIGS)
    elif args.config:
        names = args.config
    else:
        raise ConfigError(
            "say which configurations to run: --config NAME (repeatable) or --all; --list shows them"
        )
    out = []
    for name in names:
        cfg = get_config(name)
        suffix = ""
        if args.tiny:
            cfg, suffix = tiny(cfg), suffix + "@tiny"
        if args.batch_size is not None and args.batch_size != cfg.batch_size:
            cfg, suffix = (
                dataclasses.replace(cfg, batch_size=args.batch_size),
                suffix + f"@b{args.batch_size}",
            )
        if args.workers is not None:
            cfg = dataclasses.replace(cfg, workers=args.workers)
        if args.compile and cfg.path == "fast":
            cfg = dataclasses.replace(cfg, compile=args.compile)
        sets = getattr(args, "set", None) or []
        if sets:  # the same typed --set parser as train and pretrain; the results key names the change
            cfg, suffix = apply_overrides(cfg, sets), suffix + "@" + ",".join(sets)
            cfg.validate()
        out.append(dataclasses.replace(cfg, name=cfg.name + suffix))
    return out


def run(args) -> int:
    import traceback
    from pathlib import Path

    import torch

    from awm_lib.bench.configs import CONFIGS
    from awm_lib.bench.pipeline import rescale_mfu, run_config
    from awm_lib.bench.results import write_results
    from awm_lib.bench.timing import matmul_peak
    from awm_lib.device import choose_device
    from awm_lib.io_utils import run_record

    if args.list:
        print("\n".join(describe_configs(CONFIGS.values())))
        return 0
    configs = _configs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    command = _command(args)
    peak = matmul_peak(device)
    print(f"device {device}: measured matmul peak {peak.tflops:.2f} TFLOP/s ({peak.dtype}, n={peak.n})")
    out = Path(args.out)
    failures, done = 0, []
    for cfg in configs:
        print(f"-- {cfg.run_name}: {cfg.note or ''}", flush=True)
        try:
            rec = run_config(
                cfg,
                device,
                steps=args.steps,
                warmup=args.warmup,
                data_root=args.data_root,
                source_size=args.source_size,
                peak=peak,
                seed=args.seed,
                progress=not args.no_progress,
                profile_dir=out.parent / "bench_profiles" if args.profile else None,
            )
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:  # record it and go on with the others
            failures += 1
            traceback.print_exc()
            rec = {"config": cfg.run_name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        header = run_record(command, seed=args.seed, device=device)
        write_results(out, header, [rec])
        done.append(rec)
        print(_line(rec), flush=True)
    again = matmul_peak(device)  # a busy machine depresses a peak: keep the best measurement
    if again.tflops > peak.tflops:
        print(f"re-measured matmul peak {again.tflops:.2f} TFLOP/s: MFU recomputed against it")
        write_results(out, header, [rescale_mfu(r, again) for r in done if "error" not in r] +
                      [r for r in done if "error" in r])
    print(f"wrote {out}")
    return 1 if failures else 0


def _command(args) -> str:
    """The command line that reproduces this run, rebuilt from the parsed options."""
    parts = ["python -m awm_lib bench"]
    parts += ["--all"] if args.all else [f"--config {c}" for c in args.config or []]
    for opt in ("steps", "warmup", "batch_size", "workers", "device", "compile", "threads", "data_root",
                "source_size", "out", "seed"):
        v = getattr(args, opt)
        if v is not None:
            parts.append(f"--{opt.replace('_', '-')} {v}")
    parts += [f"--{f}" for f in ("tiny", "profile") if getattr(args, f)]
    return " ".join(parts)


def _line(rec: dict) -> str:
    if "error" in rec:
        return f"   {rec['config']}: FAILED {rec['error']}"
    parts = []
    for key in ("forward", "train", "train_end_to_end", "infer_end_to_end"):
        m = rec.get(key)
        if m:
            mfu = f", MFU {m['mfu']:.1%}" if m.get("mfu") is not None else ""
            mem = m.get("peak_memory_bytes")
            mem = f", peak {mem / 2**30:.2f} GiB" if mem else ""
            parts.append(f"{key}: {m['median_s'] * 1e3:.1f} ms/step, {m['images_per_s']:.2f} img/s, "
                         f"{m['tflops']:.3f} TFLOP/s{mfu}{mem}")
    return "   " + "\n   ".join(parts)
