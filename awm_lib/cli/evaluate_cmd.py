"""``python -m awm_lib evaluate --checkpoint DIR --dataset D [--root DIR] [--json]``.

Loads the best checkpoint of a run (or a given step folder), predicts the
validation and test splits, chooses the threshold on validation and prints AUC,
F1, sensitivity at FPR 0.1 / 0.3 / 0.5, specificity and accuracy with bootstrap
95% CIs. With ``--json`` the output is one JSON object whose keys ``auc``,
``f1``, ``sens@fpr0.1``, ... each hold ``{"mean", "ci_low", "ci_high"}``.
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

HELP = "evaluate a checkpoint on a data set's test split (metrics with bootstrap confidence intervals)"


def add_arguments(p) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a run folder (uses its best checkpoint) or a checkpoint step folder",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=("synthetic", "mias", "vindr"),
        help="data set (default: the one it was trained on)",
    )
    p.add_argument(
        "--root", default=None, metavar="DIR", help="data folder (default: the one it was trained on)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override data/eval settings, e.g. data.fold=1 or eval.n_boot=2000",
    )
    p.add_argument(
        "--out", default=None, metavar="DIR", help="write predictions_{val,test}.csv and results.json here"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import dataclasses
    import json
    import sys

    from awm_lib.errors import ConfigError
    from awm_lib.io_utils import run_record, write_json_atomic
    from awm_lib.train.checkpoint import load_checkpoint
    from awm_lib.train.config import apply_overrides, config_from_dict, validate
    from awm_lib.train.evaluate import format_results
    from awm_lib.train.experiment import evaluate_checkpoint

    cfg = config_from_dict(load_checkpoint(args.checkpoint).config)
    data = cfg.data
    if args.dataset is not None and args.dataset != data.dataset:
        data = dataclasses.replace(data, dataset=args.dataset, root=args.root)
    elif args.root is not None:
        data = dataclasses.replace(data, root=args.root)
    cfg = dataclasses.replace(cfg, data=data)
    for o in args.overrides:
        if not o.split("=", 1)[0].strip().startswith(("data.", "eval.", "optim.device", "seed")):
            raise ConfigError(
                f"evaluate --set only changes data.*, eval.*, optim.device or seed (got {o!r}); the model "
                "comes from the checkpoint"
            )
    cfg = validate(apply_overrides(cfg, args.overrides))
    record = run_record(["python -m awm_lib", *sys.argv[1:]], seed=cfg.seed)
    res = evaluate_checkpoint(
        args.checkpoint, cfg, progress=not args.no_progress, record=record, save_dir=args.out
    )
    if args.out:
        write_json_atomic(f"{args.out}/results.json", res)
    print(json.dumps(res, indent=2) if args.json else format_results(res))
    return 0
