"""``python -m awm_lib predict IMAGE --checkpoint DIR [--json] [--save-png OUT.png]``.

Prints the probability of cancer for one mammogram (DICOM, PNG or PGM), the
RoIs the model used with their weights (see :mod:`awm_lib.train.inference`),
what the model is (its backbone's source, the data it was trained on, and a
one-line caution when either is a toy), and optionally saves an overlay. An
image with no proposals is classified from the anchor (whole breast) alone,
with a warning and ``"fallback_to_anchor": true``. The image and the checkpoint
are checked before the model is loaded: a folder, a missing file, or an image
under 256 px on its short side is refused in one line.
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

HELP = ("classify one mammogram with a trained run: probability, RoIs with attention, what the model is, "
        "overlay")


def add_arguments(p) -> None:
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="a mammogram file (.dcm, .png, .pgm), at least 256 px on its short side",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a run folder (uses its best checkpoint) or a checkpoint step folder",
    )
    p.add_argument(
        "--proposer",
        default=None,
        choices=("blob", "random", "none", "gdino", "oracle"),
        help="use another proposer than the run's (default: the run's own)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--save-png",
        default=None,
        metavar="OUT.png",
        help="write an overlay of the RoIs on the image (a missing folder is created, and said so)",
    )


def run(args) -> int:
    import json
    import sys
    import warnings

    from awm_lib.cli import PROG
    from awm_lib.cli.args import check_png_out, make_parent
    from awm_lib.data.image import check_mammogram_size, load_image
    from awm_lib.train.checkpoint import resolve_checkpoint

    prog = f"{PROG} predict"
    resolve_checkpoint(args.checkpoint, "best")  # before any work: the run, the image, the output path
    check_mammogram_size(load_image(args.image), args.image)
    png = check_png_out(args.save_png) if args.save_png else None

    from awm_lib.train.dataset import NoProposalsWarning
    from awm_lib.train.inference import predict_image, save_overlay

    with warnings.catch_warnings():
        warnings.simplefilter("always", NoProposalsWarning)  # one line (the CLI prints each warning once)
        pred = predict_image(args.image, args.checkpoint, proposer=args.proposer)
    if png is not None:
        save_overlay(pred, make_parent(png, prog))
    if args.json:
        d = pred.to_dict()
        if png is not None:
            d["overlay"] = str(png)
        print(json.dumps(d, indent=2))
        if pred.caution:
            print(f"{prog}: {pred.caution}", file=sys.stderr)
        return 0
    verdict = (
        f" -> {pred.label} (threshold {pred.threshold:.3f}, chosen on validation)" if pred.label else ""
    )
    print(f"{pred.image}: p(cancer) = {pred.probability:.3f}{verdict}")
    print(
        f"model: backbone {pred.backbone_source} ({pred.backbone_weights}); trained on {pred.training_data}"
    )
    if pred.caution:
        print(pred.caution)
    print(f"RoIs ({pred.n_proposals} proposals from '{pred.proposer}'; weight = {pred.weight_kind}):")
    for r in pred.rois:
        x0, y0, x1, y1 = r["box"]
        print(
            f"  {r['kind']:<8} #{r['rank']}  box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})  weight "
            f"{r['weight']:.3f}"
        )
    if pred.fallback_to_anchor:
        print("  (no proposals: classified from the anchor alone)")
    if png is not None:
        print(f"overlay: {png}")
    return 0
