"""Choose the frozen preset's optimiser settings on VALIDATION AUC only (mini-MIAS, the validation women of
each fold).

    .venv/bin/python scripts/select_frozen_preset.py base,lr1e-3-bs32 [0,1,2,3,4]

Prints one JSON line per variant: the mean and per-fold best validation AUC (what early
stopping selects on) and the seconds per fold. ``results/frozen_preset_selection.json`` keeps
the run that chose the preset. The choice reads validation only; the test metrics that
``train`` computes are ignored here. Every variant spells out its settings relative to the
first ``frozen`` preset (``base``), so the script means the same after the preset changed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

from awm_lib.train.config import make_config
from awm_lib.train.experiment import train

warnings.simplefilter("ignore")
BASE = ["optim.lr_head=3e-4", "optim.batch_size=16", "optim.epochs=40"]  # the first frozen preset (182a0a8)
VARIANTS = {
    "base": BASE,
    "cls+mean": [*BASE, "model.backbone.embedding=cls+mean"],
    "lr1e-3": [*BASE, "optim.lr_head=1e-3"],
    "small": [*BASE, "model.d_model=64", "model.depth=1"],
    "bs32-ep30": [*BASE, "optim.batch_size=32", "optim.epochs=30"],
    "bce": [*BASE, "loss.repulsive_weight=0"],
    "pw3": [*BASE, "loss.pos_weight=3"],
    "lr1e-3-bs32": [*BASE, "optim.lr_head=1e-3", "optim.batch_size=32", "optim.epochs=30"],
    "meanpool": [*BASE, "model.pooling=mean"],
    "lr1e-3-bs32-bce": [
        *BASE,
        "optim.lr_head=1e-3",
        "optim.batch_size=32",
        "optim.epochs=30",
        "loss.repulsive_weight=0",
    ],
}


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(VARIANTS)
    folds = [int(f) for f in (sys.argv[2] if len(sys.argv) > 2 else "0,1,2,3,4").split(",")]
    for name in names:
        vals, secs = [], []
        for fold in folds:
            cfg = make_config(
                "frozen",
                ["model.backbone.name_or_path=none", f"data.fold={fold}", "eval.n_boot=50", *VARIANTS[name]],
                dataset="mias",
            )
            with tempfile.TemporaryDirectory() as tmp:
                t = time.time()
                res = train(cfg, os.path.join(tmp, "run"), progress=False).results
                secs.append(time.time() - t)
            vals.append(res["train"]["best_val_auc"])
        print(
            name,
            json.dumps({"val_auc_mean": float(np.mean(vals)), "val_auc": vals, "seconds": secs}),
            flush=True,
        )


if __name__ == "__main__":
    main()
