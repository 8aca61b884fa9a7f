"""``python -m awm_lib synth OUTDIR --n N --seed S [--size LONG_SIDE]``: write the synthetic dataset."""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

HELP = "write a VinDr-Mammo-shaped synthetic mammography dataset (DICOMs + both CSVs)"


def add_arguments(p) -> None:
    p.add_argument("outdir", metavar="OUTDIR", help="folder to write (created; an interrupted run resumes)")
    p.add_argument(
        "--n", type=int, default=64, help="number of images, rounded up to whole studies of 4 (default 64)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size",
        type=int,
        default=1024,
        metavar="LONG_SIDE",
        help="image height in pixels; width = 0.796 x height (default 1024; VinDr full size 3518)",
    )
    p.add_argument(
        "--difficulty",
        type=float,
        default=0.3,
        help="0 = obvious cancers .. 1 = subtle cancers and close benign look-alikes (default 0.3)",
    )
    p.add_argument(
        "--prevalence",
        type=float,
        default=0.2,
        help="share of breasts with a cancer, i.e. of BI-RADS 4/5 images (default 0.2; VinDr test ~0.05)",
    )
    p.add_argument(
        "--bits", type=int, choices=(12, 14), default=None, help="bits stored (default: 12 or 14 per study)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from awm_lib.data.synth_dataset import write_synthetic_dataset

    summary = write_synthetic_dataset(
        args.outdir,
        args.n,
        seed=args.seed,
        size=args.size,
        difficulty=args.difficulty,
        prevalence=args.prevalence,
        bits_stored=args.bits,
        progress=not args.no_progress,
    )
    print(f"wrote {summary.describe()}")
    return 0
