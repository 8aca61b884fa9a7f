"""``python -m awm_lib train --dataset D --preset P --out DIR [--root DIR] [--resume] [--set key=value ...]``.

Trains the RoI classifier, then evaluates the best checkpoint on the test split
(threshold from validation) and writes ``DIR/results.json``. Under ``torchrun``
it runs data-parallel over the launched processes. Examples::

    python -m awm_lib train --dataset mias --root ../shared/data/mini-mias --preset smoke --out runs/smoke
    python -m awm_lib train --dataset synthetic --preset smoke --out runs/synth --set optim.epochs=3
    python -m awm_lib train --dataset mias --preset default --out runs/f2 --set data.fold=2 --resume
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import sys

HELP = "train the RoI classifier (then evaluate it on the test split)"


def add_arguments(p) -> None:
    p.add_argument(
        "--dataset",
        default=None,
        choices=("synthetic", "mias", "vindr"),
        help="which data set (required, except with --print-config)",
    )
    p.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help=(
            "data folder (mias: default ../shared/data/mini-mias; synthetic: generated into the cache when "
            "omitted)"
        ),
    )
    p.add_argument(
        "--preset",
        default="default",
        choices=("smoke", "default", "paper", "frozen"),
        help=(
            "smoke (minutes on a CPU), default (ViT-S/14, 224 px), paper (ViT-B/14, 448 px), frozen (cached "
            "tokens of a frozen backbone: seconds per run once cached)"
        ),
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run folder (checkpoints, metrics.jsonl, results.json; required, except with --print-config)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its checkpoints and results are deleted)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. optim.lr_head=3e-4 or data.fold=2 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print results.json instead of a summary")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (preset + --set) and exit; builds and loads nothing",
    )


def run(args) -> int:
    import json
    from pathlib import Path

    from awm_lib.errors import ConfigError
    from awm_lib.train.run_folder import check_run_folder

    if args.print_config:  # nothing heavy: no torch model, no data, no run folder
        from awm_lib.train.config import describe_config, make_config, to_dict

        data = {k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v is not None}
        cfg = make_config(args.preset, args.overrides, **data)
        print(json.dumps(to_dict(cfg), indent=2) if args.json else describe_config(cfg))
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--out", args.out)) if value is None]
    if missing:
        raise ConfigError(f"train needs {' and '.join(missing)} (only --print-config runs without them)")
    check_run_folder(args.out, resume=args.resume, overwrite=args.overwrite)  # before importing torch
    from awm_lib.train.config import make_config
    from awm_lib.train.distributed import cleanup, init_from_env
    from awm_lib.train.evaluate import format_results
    from awm_lib.train.experiment import train

    if args.root is not None and args.dataset in ("mias", "vindr") and not Path(args.root).is_dir():
        raise ConfigError(f"--root {args.root}: no such folder (the {args.dataset} data set's folder)")
    cfg = make_config(args.preset, args.overrides, dataset=args.dataset, root=args.root)
    dist = init_from_env()
    try:
        result = train(
            cfg,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            dist=dist,
            command=["python -m awm_lib", *sys.argv[1:]],
        )
    finally:
        cleanup(dist)
    if dist.is_main:
        if args.json:
            print(json.dumps(result.results, indent=2))
        else:
            print(format_results(result.results))
            print(f"run folder: {args.out}")
    return 0

