"""Synthetic mammogram speed: images per second at 1024, 2048 and 3518 x 2800 (long side).

    .venv/bin/python benchmarks/bench_synth.py [--repeats N] [--out results/bench_synth.json]

Times :func:`awm_lib.data.synthetic.generate_mammogram` alone (rendering) and
rendering plus writing the DICOM, alternating CC/MLO and L/R views, one
process (numpy and scipy FFTs use one core here). Writes the numbers with a
run record (command, seed, device, date, versions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from awm_lib.data.synth_dataset import _write_dicom
from awm_lib.data.synthetic import SynthConfig, generate_mammogram
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.paths import results_root

SIZES = [(1024, None), (2048, None), (3518, 2800)]


def bench(height: int, width: int | None, repeats: int, seed: int) -> dict:
    render_s, write_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # the first call warms caches (FFT plans, imports)
            cfg = SynthConfig(
                height=height, width=width, view=("CC", "MLO")[i % 2], laterality="LR"[(i // 2) % 2]
            )
            t0 = time.perf_counter()
            m = generate_mammogram(cfg, seed=seed + i)
            t1 = time.perf_counter()
            _write_dicom(
                Path(tmp) / f"{i}.dicom", m, study_id=f"{i:032x}", series_id=f"{i:031x}s", patient="BENCH"
            )
            t2 = time.perf_counter()
            if i:
                render_s.append(t1 - t0)
                write_s.append(t2 - t1)
    mean_render = sum(render_s) / len(render_s)
    mean_total = mean_render + sum(write_s) / len(write_s)
    return {
        "height": height,
        "width": cfg.width,
        "repeats": repeats,
        "render_s_per_image": round(mean_render, 4),
        "render_images_per_s": round(1.0 / mean_render, 3),
        "render_and_dicom_images_per_s": round(1.0 / mean_total, 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=results_root() / "bench_synth.json")
    args = p.parse_args(argv)
    rows = []
    for h, w in SIZES:
        row = bench(h, w, args.repeats, args.seed)
        print(f"{row['height']:5d} x {row['width']:4d}: {row['render_images_per_s']:7.2f} img/s rendering, "
              f"{row['render_and_dicom_images_per_s']:7.2f} img/s with the DICOM write", flush=True)
        rows.append(row)
    record = run_record(
        ["python", *sys.argv],
        seed=args.seed,
        results=rows,
        note="one process; the machine's cores are shared with other jobs, so treat as a lower bound",
    )
    write_json_atomic(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
