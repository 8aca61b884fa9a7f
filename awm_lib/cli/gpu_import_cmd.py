"""``python -m awm_lib gpu-import DIR``: bring the prepared GPU run's results home, in one command.

``DIR`` is the folder the device tool copied ``$OUT`` to (``files_at``) after
``bash scripts/gpu_run.sh``. It

* merges ``DIR/bench.json`` into ``results/bench.json`` (each row keeps its device, date, command);
* places the pretrained backbone under ``checkpoints/awm-dino-gpu/`` with its model card
  (device, date, command, minutes) and checks that it loads offline;
* runs the held-out CPU probe on it (``results/pretrain_probe_gpu.json``: the probe half of
  the mini-MIAS women, against a random init of the same architecture);
* keeps the run's manifest, log and executed chapter 2 under ``results/gpu_run/``.
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import argparse
import sys

HELP = "bring the prepared GPU run's results home: benchmark rows, pretrained checkpoint, its probe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the folder $OUT of `bash scripts/gpu_run.sh` came back to")
    p.add_argument(
        "--results", default="results", help="results folder (bench.json, pretrain_probe_gpu.json, gpu_run/)"
    )
    p.add_argument("--checkpoints", default="checkpoints", help="where awm-dino-gpu/ goes")
    p.add_argument("--no-probe", action="store_true", help="do not run the held-out probe on the checkpoint")
    p.add_argument("--probe-boot", type=int, default=1000, help="bootstrap resamples of the probe")
    p.add_argument(
        "--allow-dry",
        action="store_true",
        help=(
            "accept a dry run's output (GPU_DRY=1: tiny CPU figures); only into scratch "
            "--results/--checkpoints"
        ),
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from pathlib import Path

    from awm_lib.bench.gpu_run import import_run
    from awm_lib.errors import ConfigError
    from awm_lib.paths import results_root

    if args.allow_dry and Path(args.results).resolve() == results_root().resolve():
        raise ConfigError(
            "--allow-dry would put a dry run's tiny CPU figures into the project's results; give --results "
            "DIR"
        )
    from awm_lib.pretrain.probe import ProbeConfig

    done = import_run(args.dir, args.results, args.checkpoints, probe=not args.no_probe,
                      probe_cfg=ProbeConfig(n_boot=args.probe_boot, progress=not args.no_progress),
                      allow_dry=args.allow_dry, command="python -m awm_lib " + " ".join(sys.argv[1:]))
    m = done["manifest"]
    print(
        f"GPU run on {m['device']} ({m['date']}): steps "
        f"{', '.join(f'{k} {v}' for k, v in done['steps'].items())}"
    )
    bench = done["bench"]
    print(
        f"bench: {len(bench['rows'])} row(s) merged into {bench['into']}"
        if isinstance(bench, dict)
        else f"bench: {bench}"
    )
    ck = done["checkpoint"]
    print(
        f"checkpoint: {ck['path']} ({ck['size_bytes'] / 1e6:.1f} MB, {ck['train_minutes']} min of training "
        "on "
        f"{ck['device']})"
        if isinstance(ck, dict)
        else f"checkpoint: {ck}"
    )
    if "probe" in done:
        pr = done["probe"]
        print(f"probe: {pr['into']} ({', '.join(pr['tasks'])})" if isinstance(pr, dict) else f"probe: {pr}")
    print(f"kept in {args.results}/gpu_run/: {', '.join(done['kept'])}")
    return 0
