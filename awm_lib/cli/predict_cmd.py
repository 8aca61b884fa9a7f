"""``python -m awm_lib predict IMAGE --checkpoint DIR [--json] [--save-png OUT.png]``.

Prints the probability of cancer for one mammogram (DICOM, PNG or PGM), the
RoIs the model used with their weights (see :mod:`awm_lib.train.inference`),
and optionally saves an overlay. An image with no proposals is classified from
the anchor (whole breast) alone, with a warning and ``"fallback_to_anchor": true``.
"""

from __future__ import annotations

HELP = "classify one mammogram with a trained run: probability, RoIs with attention, overlay"


def add_arguments(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="a mammogram file (.dcm, .png, .pgm)")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run folder (uses its best checkpoint) or a checkpoint step folder")
    p.add_argument("--proposer", default=None, help="use another proposer than the run's (blob, oracle, random, none, gdino)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--save-png", default=None, metavar="OUT.png", help="write an overlay of the RoIs on the image")


def run(args) -> int:
    import json
    import warnings

    from awm_lib.train.dataset import NoProposalsWarning
    from awm_lib.train.inference import predict_image, save_overlay

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoProposalsWarning)
        pred = predict_image(args.image, args.checkpoint, proposer=args.proposer)
    for w in caught:
        if issubclass(w.category, NoProposalsWarning):
            print(f"awm: warning: {w.message}", file=__import__("sys").stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.save_png:
        save_overlay(pred, args.save_png)
    if args.json:
        d = pred.to_dict()
        if args.save_png:
            d["overlay"] = args.save_png
        print(json.dumps(d, indent=2))
        return 0
    verdict = f" -> {pred.label} (threshold {pred.threshold:.3f}, chosen on validation)" if pred.label else ""
    print(f"{pred.image}: p(cancer) = {pred.probability:.3f}{verdict}")
    print(f"RoIs ({pred.n_proposals} proposals from '{pred.proposer}'; weight = {pred.weight_kind}):")
    for r in pred.rois:
        x0, y0, x1, y1 = r["box"]
        print(f"  {r['kind']:<8} #{r['rank']}  box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})  weight {r['weight']:.3f}")
    if pred.fallback_to_anchor:
        print("  (no proposals: classified from the anchor alone)")
    if args.save_png:
        print(f"overlay: {args.save_png}")
    return 0
