"""``python -m awm_lib ablation``: run (or resume) the paper's ablation and aggregate it.

Examples::

    python -m awm_lib ablation --list
    python -m awm_lib ablation --dataset mias --scale cpu-smoke --configs roi-nopos,roi-rope2d --folds 0,1,2
    python -m awm_lib ablation --dataset synthetic --scale gpu --seeds 0,1,2
    python -m awm_lib ablation --dataset mias --scale cpu-frozen --time-limit 60   # 5 folds x 5 seeds
    python -m awm_lib ablation --dataset vindr --root /data/vindr-mammo --scale gpu

Every run lands in ``<runs-dir>/<dataset>/<configuration>/<fold|seed>/``; finished
runs are skipped and interrupted ones resumed, so rerunning the same command
after an interruption continues where it stopped. The aggregate goes to
``--out`` (records of other datasets/configurations already there are kept).
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import argparse
import sys

HELP = "run the ablation study (configurations x folds/seeds), resumable; write results/ablation.json"


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from awm_lib.cli.args import int_in

    p.add_argument(
        "--dataset",
        choices=("mias", "synthetic", "vindr"),
        default="mias",
        help="which data set to run the study on",
    )
    p.add_argument(
        "--root", default=None, help="dataset folder (required for vindr; default location otherwise)"
    )
    p.add_argument(
        "--scale",
        choices=("cpu-smoke", "cpu-frozen", "gpu"),
        default="cpu-smoke",
        help="cpu-smoke: random micro ViT, minutes per run; cpu-frozen: crops embedded once by a frozen "
        "ViT-S/14 and cached, seconds per run; gpu: ViT-S/14 fine-tuned, 224-px crops (default: cpu-smoke)",
    )
    p.add_argument(
        "--configs",
        default=None,
        help="comma-separated configuration names (default: the standard ladder; see --list)",
    )
    p.add_argument("--seeds", type=_ints, default=None, help="e.g. 0,1,2 (default: the scale's seeds)")
    p.add_argument(
        "--folds", type=_ints, default=[0, 1, 2, 3, 4], help="mini-MIAS test folds (default 0,1,2,3,4)"
    )
    p.add_argument(
        "--out",
        default="results/ablation.json",
        metavar="JSON",
        help="the aggregated results file (records of other data sets/configurations in it are kept)",
    )
    p.add_argument(
        "--runs-dir",
        default="runs/ablation",
        metavar="DIR",
        help=(
            "one run folder per configuration and fold/seed; finished runs are reused, interrupted ones "
            "resumed"
        ),
    )
    p.add_argument(
        "--overlays-dir", default="results/ablation_overlays", help="example overlay PNGs ('' for none)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override applied to every run"
    )
    p.add_argument(
        "--threads", type=int_in(1), default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--aggregate-only", action="store_true",
                   help="train nothing: aggregate the runs already finished (e.g. after a time limit)")
    p.add_argument(
        "--n-boot",
        type=int_in(0),
        default=None,
        help="bootstrap resamples of the pooled CIs (default: the scale's)",
    )
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="start no new run after this many minutes, then aggregate what is finished; "
                        "rerun the same command to go on (default: no limit)")
    p.add_argument("--list", action="store_true", help="print the configurations and scales, then exit")


def run(args: argparse.Namespace) -> int:
    from awm_lib.errors import ConfigError
    from awm_lib.experiments import ablation

    if args.list:
        print(ablation.describe())
        return 0
    if args.dataset == "vindr" and args.root is None:
        raise ConfigError("--dataset vindr needs --root DIR (the folder with breast-level_annotations.csv)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    configs = args.configs.split(",") if args.configs else list(ablation.DEFAULT_CONFIGS)
    out = ablation.run_study(
        args.dataset,
        [c.strip() for c in configs if c.strip()],
        args.scale,
        seeds=args.seeds,
        folds=args.folds,
        root=args.root,
        runs_dir=args.runs_dir,
        out=args.out,
        overlays_dir=args.overlays_dir or None,
        progress=not args.no_progress,
        extra=args.set,
        n_boot=args.n_boot,
        train_missing=not args.aggregate_only,
        time_limit_s=None if args.time_limit is None else 60 * args.time_limit,
        log=lambda m: print(m, file=sys.stderr),
    )
    mine = [r for r in out["records"] if r["dataset"] == args.dataset and r["scale"] == args.scale]
    print(f"wrote {args.out} ({len(mine)} {args.dataset}/{args.scale} records)")
    for r in mine:
        a, f = r["auc"], r["f1"]
        rec = "  n/a" if r["lesion_recall"] is None else f"{r['lesion_recall']:.2f}"

        def fmt(v):
            return "  n/a" if v is None else f"{v:.3f}"

        print(f"  {r['configuration']:<28} AUC {fmt(a['mean'])} [{fmt(a['ci_low'])}, {fmt(a['ci_high'])}] "
              f"F1 {fmt(f['mean'])}  lesion recall {rec}  (n={r['n_test']}, {r['n_test_pos']} cancers)")
    return 0
