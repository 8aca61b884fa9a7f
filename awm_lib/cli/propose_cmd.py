"""``python -m awm_lib propose``: boxes on one image, or lesion recall over a dataset."""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import json
import sys

HELP = "propose RoI boxes on one image, or measure lesion recall@k over a dataset (--eval)"


def add_arguments(p) -> None:
    from awm_lib.cli.args import float_in, int_in

    p.add_argument("image", nargs="?", help="one image (PNG/PGM/DICOM) to propose boxes on")
    p.add_argument(
        "--dataset", choices=["mias", "vindr", "synthetic"], help="dataset to evaluate on (with --eval)"
    )
    p.add_argument("--root", help="dataset folder (default for mias: ../shared/data/mini-mias)")
    p.add_argument(
        "--proposer",
        default="blob",
        choices=["blob", "gdino", "oracle", "random", "none"],
        help="where the boxes come from: blob (training-free detector), "
        "gdino (Grounding DINO, needs --model), "
        "oracle (the annotated lesions, with --eval), random, none (the anchor only)",
    )
    p.add_argument("--topk", type=int_in(0), default=5, help="boxes kept after NMS (plus the anchor), >= 0")
    p.add_argument("--iou", type=float_in(0.0, 1.0), default=0.5, help="NMS IoU threshold, in [0, 1]")
    p.add_argument(
        "--margin", type=float_in(0.0), default=40.0, help="square side = max(w, h) + margin (pixels), >= 0"
    )
    p.add_argument(
        "--border",
        default="shift",
        choices=["shift", "clip", "pad"],
        help="a square box that crosses the image edge is shifted inside it, clipped to it, or padded",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random and oracle proposers")
    p.add_argument(
        "--model", help="gdino: a local folder made with save_pretrained (or a Hub id when online)"
    )
    p.add_argument("--prompt", help="gdino: text prompt (default: the proposer's own)")
    p.add_argument("--eval", action="store_true", help="measure lesion recall@1/5/10 and FROC over --dataset")
    p.add_argument("--limit", type=int_in(1), help="evaluate on the first N images only (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--save-png", help="write an overlay PNG (numbered boxes, anchor in blue)")
    p.add_argument("--out", help="write the evaluation (with run record) to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _proposer(args):
    from awm_lib.proposals.base import make_proposer

    kw = {}
    if args.proposer in ("oracle", "random"):
        kw["seed"] = args.seed
    if args.proposer == "gdino":
        if args.model:
            kw["model"] = args.model
        if args.prompt:
            kw["prompt"] = args.prompt
    return make_proposer(args.proposer, **kw)


def run(args) -> int:
    from awm_lib.errors import ConfigError

    if args.eval:
        if not args.dataset:
            raise ConfigError("--eval needs --dataset mias|vindr|synthetic")
        return _run_eval(args)
    if not args.image:
        raise ConfigError("give an IMAGE, or --dataset ... --eval")
    return _run_image(args)


def _select_cfg(args, topk=None):
    from awm_lib.proposals.select import SelectConfig

    return SelectConfig(
        topk=args.topk if topk is None else topk,
        iou_threshold=args.iou,
        margin=args.margin,
        border=args.border,
        seed=args.seed,
    )


def _run_image(args) -> int:
    from awm_lib.cli import PROG
    from awm_lib.cli.args import check_png_out, make_parent
    from awm_lib.data.breast import segment_breast
    from awm_lib.data.image import load_image
    from awm_lib.errors import ConfigError, about_file
    from awm_lib.proposals.select import select_rois

    if args.proposer == "oracle":
        raise ConfigError("the oracle needs ground truth: use it with --dataset ... --eval")
    png = check_png_out(args.save_png) if args.save_png else None  # before any work
    pixels = load_image(args.image).pixels
    with about_file(args.image):  # "no breast found" names the file
        crop = segment_breast(pixels)
    props = _proposer(args).propose(pixels, crop.full_mask())
    sel = select_rois(props, pixels.shape, crop.box, _select_cfg(args))
    rows = [
        {
            "rank": i,
            "box": [round(v, 1) for v in b],
            "score": round(float(s), 4),
            "kind": "anchor" if i == 0 else ("pad" if not ok else "roi"),
        }
        for i, (b, s, ok) in enumerate(zip(sel.rois.tolist(), sel.scores.tolist(), sel.valid.tolist()))
    ]
    if png is not None:
        save_overlay(pixels, sel.rois, sel.valid, make_parent(png, f"{PROG} propose"))
    if args.json:
        print(
            json.dumps(
                {
                    "image": args.image,
                    "proposer": args.proposer,
                    "n_proposals": len(props),
                    "n_padded": sel.n_padded,
                    "rois": rows,
                    **({"overlay": str(png)} if png is not None else {}),
                }
            )
        )
    else:
        print(f"{args.image}: {len(props)} proposals, {sel.n_kept} kept, {sel.n_padded} padded (box xyxy px)")
        for r in rows:
            print(f"  {r['rank']:2d} {r['kind']:6s} {r['box']} score={r['score']}")
        if png is not None:
            print(f"overlay: {png}")
    return 0


def save_overlay(pixels, rois, valid, path) -> None:
    """PNG of the image with numbered boxes: anchor blue, RoIs green, padding grey."""
    import numpy as np
    from PIL import Image, ImageDraw

    from awm_lib.io_utils import atomic_path

    im = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(im)
    width = max(2, max(im.size) // 400)
    for i, (b, ok) in enumerate(zip(rois.tolist(), valid.tolist())):
        colour = (60, 120, 255) if i == 0 else ((0, 220, 0) if ok else (128, 128, 128))
        draw.rectangle(b, outline=colour, width=width)
        draw.text((b[0] + 3, b[1] + 3), str(i), fill=(255, 255, 0))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _load_samples(args):
    from awm_lib import paths

    if args.dataset == "mias":
        from awm_lib.data.mias import load_mias

        return load_mias(args.root or paths.mias_root())
    from awm_lib.data.vindr import load_vindr
    from awm_lib.errors import ConfigError

    if not args.root:
        raise ConfigError(f"--dataset {args.dataset} needs --root")
    return load_vindr(args.root)


def evaluate(samples, proposer, select_cfg, ks=(1, 5, 10), progress=True) -> dict:
    """Recall@k (proposals only, anchor and padding excluded), splits and FROC over ``samples``."""
    from tqdm.auto import tqdm

    from awm_lib.data.breast import segment_breast
    from awm_lib.data.image import load_image
    from awm_lib.data.types import located
    from awm_lib.proposals.recall import (
        ImageResult,
        froc,
        recall_at_k,
        recall_by_group,
        sensitivity_at_fp,
        size_bin,
    )
    from awm_lib.proposals.select import SelectConfig, select_rois

    cfg = SelectConfig(**{**select_cfg.__dict__, "topk": max(max(ks), select_cfg.topk)})
    results, all_results = [], []
    for s in tqdm(samples, disable=not progress, desc=f"propose[{proposer.name}]"):
        pixels = load_image(s.path).pixels
        lesions = located(s, pixels.shape)
        crop = segment_breast(pixels)
        if proposer.needs_ground_truth:
            props = proposer.propose(pixels, crop.full_mask(), gt_boxes=[les.box for les in lesions])
        else:
            props = proposer.propose(pixels, crop.full_mask())
        sel = select_rois(props, pixels.shape, crop.box, cfg)
        r = ImageResult(s.image_id, sel.rois[1 : 1 + sel.n_kept], sel.scores[1 : 1 + sel.n_kept], lesions)
        all_results.append(r)
        if lesions:
            results.append(r)
    out = recall_at_k(results, ks=tuple(sorted(set(ks) | {select_cfg.topk})))
    out["n_images"] = len(all_results)
    out["n_images_with_lesions"] = len(results)
    out["by_type"] = recall_by_group(results, lambda les: les.kind, ks=ks)
    out["by_size"] = recall_by_group(results, size_bin, ks=ks)
    curve = froc(all_results)
    out["froc"] = sensitivity_at_fp(curve)
    out["hit_rule"] = (
        "box contains the lesion centre and IoU(box, lesion box) >= 0.1; anchor and padding excluded"
    )
    return out


def _run_eval(args) -> int:
    from awm_lib.io_utils import run_record, write_json_atomic

    samples = _load_samples(args)
    if args.limit:
        samples = samples[: args.limit]
    proposer = _proposer(args)
    cfg = _select_cfg(args)
    res = evaluate(samples, proposer, cfg, progress=not args.no_progress)
    res = {"dataset": args.dataset, "proposer": args.proposer, "topk": args.topk, **res,
           "proposer_settings": proposer.settings(), "select": cfg.__dict__}
    if args.out:
        write_json_atomic(
            args.out, run_record(command=["python", "-m", "awm_lib", *sys.argv[1:]], seed=args.seed) | res
        )
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{args.dataset} / {args.proposer}: {res['n_lesions']} lesions in {res['n_images_with_lesions']} "
            "images"
        )
        for k in sorted({1, 5, 10, args.topk}):
            print(f"  recall@{k:<3d} {res[f'recall@{k}']:.3f}")
    return 0
