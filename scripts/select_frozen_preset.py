"""Choose frozen-backbone settings on VALIDATION AUC only (mini-MIAS, the validation women of each fold).

    .venv/bin/python scripts/select_frozen_preset.py base,lr1e-3-bs32 [--folds 0,1,2,3,4]
    .venv/bin/python scripts/select_frozen_preset.py k5,k2,k1 --config proposer-oracle --seeds 0,1 \\
        --out results/frozen_k_selection.json

Without ``--config`` the variants apply to the first ``frozen`` preset (``base``, how the preset's
optimiser was chosen: ``results/frozen_preset_selection.json``); with ``--config NAME`` they apply
on top of that ablation configuration at scale ``cpu-frozen`` (how ``proposer-oracle-k1``'s k was
chosen: ``results/frozen_k_selection.json``). Prints one JSON line per variant: the mean and per-run
best validation AUC (what early stopping selects on) and the seconds per run; ``--out`` also writes
them with the command, date and device. The choice reads validation only; the test metrics that
``train`` computes are ignored here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

from awm_lib.experiments.ablation_study import config_for
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.train.config import make_config
from awm_lib.train.experiment import train

warnings.simplefilter("ignore")
BASE = ["optim.lr_head=3e-4", "optim.batch_size=16", "optim.epochs=40"]  # the first frozen preset (182a0a8)
TINY = ["model.d_model=32", "model.depth=1", "model.heads=2"]
VARIANTS = {
    # the frozen preset's optimiser (applied on top of BASE when no --config is given)
    "base": [],
    "cls+mean": ["model.backbone.embedding=cls+mean"],
    "lr1e-3": ["optim.lr_head=1e-3"],
    "small": ["model.d_model=64", "model.depth=1"],
    "bs32-ep30": ["optim.batch_size=32", "optim.epochs=30"],
    "bce": ["loss.repulsive_weight=0"],
    "pw3": ["loss.pos_weight=3"],
    "lr1e-3-bs32": ["optim.lr_head=1e-3", "optim.batch_size=32", "optim.epochs=30"],
    "meanpool": ["model.pooling=mean"],
    "lr1e-3-bs32-bce": [
        "optim.lr_head=1e-3", "optim.batch_size=32", "optim.epochs=30", "loss.repulsive_weight=0"
    ],
    # the RoI head on a configuration's cached tokens (with --config)
    "k5": [],
    "k2": ["model.topk=2"],
    "k1": ["model.topk=1"],
    "tiny": TINY,
    "depth1": ["model.depth=1"],
    "token-bn": ["model.token_norm=batchnorm"],
    "weight-decay-5": ["optim.weight_decay=5"],
    "attention-pool": ["model.pooling=attention"],
}


def run_config(args, name: str, seed: int, fold: int):
    if args.config is None:
        over = ["model.backbone.name_or_path=none", f"data.fold={fold}", f"seed={seed}", "eval.n_boot=50",
                *BASE, *VARIANTS[name]]
        return make_config("frozen", over, dataset="mias")
    return config_for(args.config, "mias", "cpu-frozen", seed=seed, fold=fold,
                      extra=["eval.n_boot=20", *VARIANTS[name]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--config", default=None, help="an ablation configuration (scale cpu-frozen)")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default=None, help="write the results (JSON) here")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    folds = [int(f) for f in args.folds.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {}
    for name in names:
        vals, secs = [], []
        for seed in seeds:
            for fold in folds:
                cfg = run_config(args, name, seed, fold)
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.time()
                    res = train(cfg, os.path.join(tmp, "run"), progress=False).results
                    secs.append(time.time() - t)
                vals.append(res["train"]["best_val_auc"])
        out[name] = {"overrides": VARIANTS[name], "val_auc_mean": float(np.mean(vals)), "val_auc": vals,
                     "seconds": secs}
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "overrides"}), flush=True)
    if args.out:
        write_json_atomic(args.out, {
            "what": "best validation AUC (early stopping's criterion) per run, mini-MIAS validation women of "
                    "each fold; test folds are not read",
            "configuration": args.config, "scale": "cpu-frozen" if args.config else "frozen preset (base)",
            "folds": folds, "seeds": seeds,
            **run_record(["python", *sys.argv], seed=seeds, device="cpu"),
            "variants": out,
        })


if __name__ == "__main__":
    main()
