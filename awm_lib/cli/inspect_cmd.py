"""``python -m awm_lib inspect PATH``: what is in this mammogram file?

Prints the shape, photometric interpretation, bits stored, laterality, view
and the breast's bounding box in original pixels; ``--json`` prints the same
as one JSON object; ``--save-png OUT.png`` writes the normalised 8-bit image
(dark background, bright tissue, whatever the file's photometric
interpretation). Bad input raises an :class:`~awm_lib.errors.AWMError`, which
the command registry turns into one line on stderr and exit status 2.
"""

# The library is imported inside the functions, not here: `python -m awm_lib --help` must not wait for torch.
from __future__ import annotations

import argparse
import json

HELP = "show a DICOM / PNG / PGM mammogram's size, tags and breast box"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a DICOM, PNG or PGM file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--save-png", metavar="OUT.png", default=None,
                   help="write the normalised 8-bit image here (a missing folder is created, and said so)")


def inspect_file(path: str) -> tuple[dict, object]:
    """The facts ``inspect`` reports, and the loaded image (for ``--save-png``)."""
    import warnings

    from awm_lib.data.breast import segment_breast
    from awm_lib.data.image import load_image
    from awm_lib.errors import about_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(path)
    with about_file(path):  # "no breast found" names the file
        crop = segment_breast(image.pixels)
    info = {
        "path": str(path),
        "shape": list(image.shape),
        "photometric": image.photometric,
        "bits_stored": image.bits_stored,
        "laterality": image.laterality,
        "view": image.view,
        "modality": image.modality,
        "breast_bbox": [int(v) for v in crop.box],
        "flipped": crop.flipped,
        "warnings": [str(w.message) for w in caught],
    }
    return info, image


def run(args: argparse.Namespace) -> int:
    from awm_lib.cli import PROG
    from awm_lib.cli.args import check_png_out, make_parent
    from awm_lib.errors import AWMError

    png = check_png_out(args.save_png) if args.save_png else None  # before reading the image
    info, image = inspect_file(args.path)
    if png is not None:
        from PIL import Image

        from awm_lib.io_utils import atomic_path

        try:
            with atomic_path(make_parent(png, f"{PROG} inspect")) as tmp:
                Image.fromarray(image.to_uint8()).save(tmp, format="PNG")
        except OSError as e:
            raise AWMError(f"cannot write the PNG ({e.strerror or e})", args.save_png) from e
        info["saved_png"] = str(args.save_png)
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        if key == "warnings":
            for w in value:
                print(f"warning: {w}")
            continue
        print(f"{key:12s} {value}")
    return 0
