"""Blob-proposer recall on two halves of mini-MIAS: ``python benchmarks/proposer_split.py [--out F]``.

The blob proposer's defaults were chosen on the women with an *odd* pair number
(images ``mdb{2n-1}``/``mdb{2n}`` are woman ``n``); the women with an even
number are the held-out half. Reporting recall@k on both halves (and on all)
shows how much of the number was fitted to the data it is reported on. Margins:
the reference's 40 px and the physical 3.4 mm (= 17 px at mini-MIAS's 0.2 mm/px).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm.auto import tqdm

from awm_lib import paths
from awm_lib.data.breast import segment_breast
from awm_lib.data.image import load_image
from awm_lib.data.mias import load_mias, located
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.proposals.base import make_proposer
from awm_lib.proposals.recall import ImageResult, recall_at_k
from awm_lib.proposals.select import PIXEL_MM, REFERENCE_MARGIN_MM, SelectConfig, select_rois


def woman(image_id: str) -> int:
    """mini-MIAS pairs: mdb001/mdb002 are woman 1, mdb003/mdb004 woman 2, ..."""
    return (int("".join(c for c in image_id if c.isdigit())) + 1) // 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(paths.mias_root()))
    ap.add_argument("--out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    proposer = make_proposer("blob")
    rows = []  # (image_id, proposals, image size, breast box, lesions)
    for s in tqdm([s for s in load_mias(args.root) if located(s.lesions)], disable=args.no_progress):
        px = load_image(s.path).pixels
        crop = segment_breast(px)
        rows.append(
            (s.image_id, proposer.propose(px, crop.full_mask()), px.shape, crop.box, located(s.lesions))
        )
    margins = {
        "40px (reference pixels)": SelectConfig(topk=10, margin=40.0),
        f"{REFERENCE_MARGIN_MM}mm": SelectConfig(
            topk=10, margin_mm=REFERENCE_MARGIN_MM, pixel_mm=PIXEL_MM["mias"]
        ),
    }
    out = {"rule": "tune half = women with an odd pair number ((mdb number + 1) // 2), held-out half = even",
           "proposer_settings": proposer.settings(), "margins": {}}
    for name, cfg in margins.items():
        res = []
        for image_id, props, size, box, lesions in rows:
            sel = select_rois(props, size, box, cfg)
            res.append(
                ImageResult(image_id, sel.rois[1 : 1 + sel.n_kept], sel.scores[1 : 1 + sel.n_kept], lesions)
            )
        halves = {"tune (odd)": [r for r in res if woman(r.image_id) % 2 == 1],
                  "held-out (even)": [r for r in res if woman(r.image_id) % 2 == 0], "all": res}
        out["margins"][name] = {
            h: {k: v for k, v in recall_at_k(rr).items() if not k.startswith("found")}
            for h, rr in halves.items()
        }
    print(json.dumps(out["margins"], indent=1))
    if args.out:
        write_json_atomic(args.out, run_record(command=["python", *sys.argv]) | out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
