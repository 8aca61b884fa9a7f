"""Time the blob proposer on one CPU core: ``python benchmarks/bench_proposer.py [--size 2048]``.

Target (issue 9): at most 100 ms per 2048-px image. The image is a mini-MIAS
mammogram resized to ``--size`` (the breast mask is computed once, outside the
timing, as the pipeline caches it; ``--with-mask`` times the segmentation too).
Prints the median and the quartiles over ``--repeat`` runs and the machine's load
average (timings on a busy shared machine are slower than on an idle core);
``--out`` saves them with a run record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from awm_lib import paths
from awm_lib.data.breast import segment_breast
from awm_lib.data.image import load_image
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.proposals.base import make_proposer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--image", default=str(paths.mias_root() / "mdb028.png"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--with-mask", action="store_true", help="include the breast segmentation in the timing")
    ap.add_argument("--no-calc", action="store_true", help="masses only")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    px = load_image(args.image).pixels
    big = np.asarray(Image.fromarray(px).resize((args.size, args.size), Image.BILINEAR), dtype=np.float32)
    mask = segment_breast(big).full_mask()
    prop = make_proposer("blob", calc=not args.no_calc)
    prop.propose(big, mask)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        prop.propose(big, None if args.with_mask else mask)
        times.append(1000 * (time.perf_counter() - t0))
    q = statistics.quantiles(times, n=4)
    load = os.getloadavg()  # a shared machine: a busy CPU makes every timing slower
    res = {
        "loadavg_1_5_15": [round(v, 2) for v in load],
        "cpu_count": os.cpu_count(),
        "size": args.size,
        "threads": args.threads,
        "repeat": args.repeat,
        "with_mask": args.with_mask,
        "calc": not args.no_calc,
        "median_ms": statistics.median(times),
        "q25_ms": q[0],
        "q75_ms": q[2],
    }
    print(
        f"blob proposer, {args.size}x{args.size}, {args.threads} thread(s): median {res['median_ms']:.1f} ms "
        f"(IQR {q[0]:.1f}-{q[2]:.1f}) over {args.repeat} runs; load average {load[0]:.1f} on "
        f"{os.cpu_count()} "
        "CPUs"
    )
    if args.out:
        write_json_atomic(args.out, run_record(command=["python", *sys.argv]) | res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
