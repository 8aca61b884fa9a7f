"""``python -m awm_lib pretrain``: DINO-style self-supervised pretraining, its data bank, and its probe.

python -m awm_lib pretrain --build-bank .cache/pretrain/mias512.npz --long-side 512
python -m awm_lib pretrain --out checkpoints/awm-dino-s14 --preset gpu-20min --set bank_path=.cache/pretrain/mias512.npz
python -m awm_lib pretrain --probe --checkpoint checkpoints/awm-dino-cpu [--json]   # held-out women only
"""  # noqa: E501 - whole commands a reader copies

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import argparse
import json
import sys

HELP = "self-supervised DINO pretraining of a ViT/14 on mammograms (and its k-NN / linear probe)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder for the pretrained backbone (save_pretrained + model card); "
        "an interrupted run there (train_state.pt) continues, a finished one is kept unless --overwrite",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a finished pretraining run already in --out"
    )
    p.add_argument(
        "--preset",
        choices=["cpu-smoke", "cpu-75min", "gpu-20min"],
        default=None,
        help="a named configuration (default: the dataclass defaults)",
    )
    p.add_argument(
        "--time-limit-minutes",
        type=float,
        default=None,
        help="whole-run time budget; the schedules anneal within it",
    )
    p.add_argument(
        "--stop-after-minutes",
        type=float,
        default=None,
        help="leave after M minutes with a resumable state (rerun the same command to continue)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="continue pretraining from a save_pretrained folder or hub id (e.g. facebook/dinov2-small)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any PretrainConfig field (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("tissue bank (the compact preprocessed data)")
    g.add_argument(
        "--build-bank", metavar="NPZ", help="only build and save a tissue bank from the configured sources"
    )
    g.add_argument("--long-side", type=int, default=None, help="bank image size (default from the preset)")
    g.add_argument("--n-synthetic", type=int, default=None, help="synthetic images to add")
    g.add_argument("--no-mias", action="store_true", help="do not use mini-MIAS")
    g.add_argument("--workers", type=int, default=None, help="processes for rendering synthetic images")
    g = p.add_argument_group("probe (evidence of learning)")
    g.add_argument(
        "--probe",
        action="store_true",
        help="k-NN / linear probes of a checkpoint against its random init on the held-out mini-MIAS women",
    )
    g.add_argument(
        "--all-women",
        action="store_true",
        help=(
            "probe on every mini-MIAS woman with cross-validation (only for backbones that never saw "
            "mini-MIAS)"
        ),
    )
    g.add_argument(
        "--split-seed", type=int, default=0, help="seed of the mini-MIAS pretrain/probe half split"
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="whole-breast size for the image-level probe (multiple of the patch size)",
    )
    g.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of women")
    g.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help=(
            "backbone(s) to probe (repeatable); a random init of the first one's architecture is always "
            "added"
        ),
    )
    g.add_argument("--crop-size", type=int, default=112, help="probe crop size (multiple of 14)")
    g.add_argument("--results", default=None, help="probe output JSON (default results/pretrain_probe.json)")
    g.add_argument("--json", action="store_true", help="print the probe results as JSON")


def _config(args):
    from awm_lib.pretrain.loop import preset_config

    sets = list(args.set)
    for flag, key in (
        ("time_limit_minutes", "time_limit_minutes"),
        ("stop_after_minutes", "stop_after_minutes"),
        ("init_from", "init_from"),
        ("long_side", "long_side"),
        ("n_synthetic", "n_synthetic"),
        ("workers", "workers"),
    ):
        v = getattr(args, flag)
        if v is not None:
            sets.insert(0, f"{key}={v}")
    if args.no_mias:
        sets.insert(0, "mias_root=none")
    kw = {"command": "python -m awm_lib " + " ".join(sys.argv[1:])}
    if args.no_progress:
        kw["progress"] = False
    return preset_config(args.preset, sets, **kw)


# what a pretraining folder holds: the resumable state, or the finished backbone (save_pretrained)
STATE_FILE, WEIGHTS_FILE = "train_state.pt", "model.safetensors"
PRETRAIN_FILES = (
    STATE_FILE,
    WEIGHTS_FILE,
    "config.json",
    "README.md",
    "loss_log.jsonl",
    "loss_curve.png",
    "pretrain_config.json",
)


def _holds_pretraining(out) -> bool:
    from pathlib import Path

    return any((Path(out) / f).is_file() for f in (STATE_FILE, WEIGHTS_FILE))


def _check_out(args) -> None:
    """Refuse to pretrain over a finished backbone unless --overwrite (before any work)."""
    from pathlib import Path

    from awm_lib.errors import RunExistsError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RunExistsError("is a file, not a folder for the pretrained backbone", out)
    finished = (out / WEIGHTS_FILE).is_file() and not (out / STATE_FILE).is_file()
    if finished and not args.overwrite:
        raise RunExistsError("holds a finished pretraining run; use --overwrite to replace it "
                             "(an interrupted one, with train_state.pt, continues by itself)", out)
    if finished and args.overwrite:
        for name in PRETRAIN_FILES:
            (out / name).unlink(missing_ok=True)


def run(args) -> int:
    from awm_lib.errors import ConfigError

    if args.probe:
        from awm_lib.pretrain.probe import ProbeConfig, run_probe

        if not args.checkpoint:
            raise ConfigError("--probe needs --checkpoint DIR (a save_pretrained folder)")
        pcfg = ProbeConfig(crop_size=args.crop_size, n_boot=args.n_boot, progress=not args.no_progress)
        command = "python -m awm_lib " + " ".join(sys.argv[1:])
        if args.all_women:
            res = run_probe(args.checkpoint, pcfg, out_path=args.results, command=command)
        else:
            from awm_lib.pretrain.heldout import run_heldout_probe

            if len(args.checkpoint) != 1:
                raise ConfigError("the held-out probe takes one --checkpoint (use --all-women for several)")
            res = run_heldout_probe(
                args.checkpoint[0],
                pcfg,
                image_size=args.image_size,
                split_seed=args.split_seed,
                out_path=args.results,
                command=command,
            )
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            from awm_lib.pretrain.probe import summary_lines

            print("\n".join(summary_lines(res)))
        return 0

    cfg = _config(args)
    if args.build_bank:
        from awm_lib.pretrain.loop import load_bank

        bank = load_bank(cfg)
        path = bank.save(args.build_bank)
        print(
            f"tissue bank: {len(bank)} images at {bank.long_side} px -> {path} "
            f"({path.stat().st_size / 1e6:.1f} MB)"
        )
        return 0
    if not args.out:
        raise ConfigError("give --out DIR for the pretrained backbone (or --build-bank / --probe)")
    from awm_lib.pretrain.loop import pretrain
    from awm_lib.train.run_folder import cleanup_on_failure

    _check_out(args)
    with cleanup_on_failure(args.out, holds=_holds_pretraining):
        finished = pretrain(cfg, args.out)
    if finished:
        print(f"pretrained backbone: {args.out} (model card: {args.out}/README.md)")
        return 0
    print(
        f"stopped after --stop-after-minutes; state saved in {args.out}/train_state.pt: rerun the same "
        "command to continue"
    )
    return 3
