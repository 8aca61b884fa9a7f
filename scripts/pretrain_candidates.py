"""Choose the CPU pretraining preset by measurement: short candidate runs, each probed on held-out women.

    python scripts/pretrain_candidates.py train NAME --minutes 10  # one candidate (run several at once)
    python scripts/pretrain_candidates.py probe NAME [NAME ...]    # held-out lesion-vs-normal probe
                                                                   # -> results/pretrain_candidates.json

Every candidate pretrains on the same tissue bank (the mini-MIAS women of the
"pretrain" half plus synthetic mammograms), for the same wall-clock budget, on
this machine, and is probed on the "probe" half only (awm_lib.pretrain.split).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANK = ".cache/pretrain/bank512-half-syn240.npz"
OUT = ROOT / "build" / "pretrain-candidates"
RESULTS = ROOT / "results" / "pretrain_candidates.json"

# shared by every candidate: a narrow ViT (width 192, 6 blocks, 3 heads), small heads, batch 32
BASE = [
    "hidden_size=192",
    "depth=6",
    "heads=3",
    "out_dim=2048",
    "ibot_out_dim=2048",
    "head_hidden=1024",
    "head_bottleneck=256",
    "batch_size=32",
    "lr=5e-4",
    "min_lr=1e-5",
    "ema_momentum=0.99,1.0",
    "drop_path_rate=0.05",
    "bf16=false",
    "log_every=5",
    "checkpoint_every_minutes=3",
    f"bank_path={BANK}",
    "mias_half=pretrain",
]
CANDIDATES = {
    # patch 14 at small crops: 64 tokens per global view, 16 per local
    "p14-g112-l56": ["patch_size=14", "image_size=112", "global_size=112", "local_size=56", "n_local=6"],
    # patch 8: finer tokens, 144 per global view, 36 per local
    "p8-g96-l48": ["patch_size=8", "image_size=96", "global_size=96", "local_size=48", "n_local=6"],
    # patch 8 with views at a finer scale, nearer the probe's lesion crops (about 1x of the 1024-px film)
    "p8-g96-l48-fine": ["patch_size=8", "image_size=96", "global_size=96", "local_size=48", "n_local=6",
                        "global_scale=0.08,0.5", "local_scale=0.005,0.05"],
}


def train(name: str, minutes: float, threads: int) -> int:
    sets = BASE + CANDIDATES[name] + [f"time_limit_minutes={minutes}"]
    cmd = [sys.executable, "-m", "awm_lib", "pretrain", "--out", str(OUT / name), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


def probe(names: list[str], n_boot: int) -> None:
    import torch

    from awm_lib.pretrain.card import read_loss_log
    from awm_lib.pretrain.heldout import run_heldout_probe
    from awm_lib.pretrain.probe import ProbeConfig

    torch.set_num_threads(2)
    record = (
        json.loads(RESULTS.read_text()) if RESULTS.exists() else {"about": __doc__.strip(), "candidates": {}}
    )
    for name in names:
        ckpt = OUT / name
        res = run_heldout_probe(
            ckpt,
            ProbeConfig(n_boot=n_boot, progress=False),
            out_path=OUT / f"{name}-probe.json",
            command=f"python scripts/pretrain_candidates.py probe {name}",
            tasks=("lesion_vs_normal",),
        )
        meta = json.loads((ckpt / "pretrain_config.json").read_text())
        log = read_loss_log(ckpt / "loss_log.jsonl")
        t = res["tasks"]["lesion_vs_normal"]
        summary = {
            m: {
                "ssl_auc": t["results"][name][m]["auc"],
                "random_init_auc": t["results"]["random-init"][m]["auc"],
                "difference_auc": t["difference_vs_random_init"][name][m]["auc"],
            }
            for m in ("knn", "linear")
        }
        record["candidates"][name] = {
            "settings": BASE + CANDIDATES[name],
            "command": meta["command"],
            "seed": meta["seed"],
            "device": meta["device"],
            "date": meta["date"],
            "versions": meta["versions"],
            "steps": meta["steps"],
            "train_seconds": meta["train_seconds"],
            "parameters": res["models"][name]["parameters"],
            "loss_first_last": [log[0]["loss"], log[-1]["loss"]],
            "images_per_s_last": log[-1]["images_per_s"],
            "probe": {
                "task": "lesion_vs_normal",
                "n": t["n"],
                "n_women": t["n_women"],
                "n_boot": n_boot,
                **summary,
            },
        }
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        print(name, json.dumps(summary))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("name", choices=sorted(CANDIDATES))
    t.add_argument("--minutes", type=float, default=10.0)
    t.add_argument("--threads", type=int, default=1)
    q = sub.add_parser("probe")
    q.add_argument("names", nargs="+")
    q.add_argument("--n-boot", type=int, default=500)
    a = p.parse_args()
    if a.cmd == "train":
        sys.exit(train(a.name, a.minutes, a.threads))
    probe(a.names, a.n_boot)
