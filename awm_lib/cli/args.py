"""Argument types that check ranges while the command line is parsed, before any work.

``p.add_argument("--topk", type=int_in(1), ...)`` makes ``--topk -3`` fail at
once with one line that names the flag and the allowed range::

    python -m awm_lib propose: error: argument --topk: must be an integer >= 1, got '-3'
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}"


def int_in(lo: int | None = None, hi: int | None = None):
    """An argparse ``type``: an integer in ``[lo, hi]`` (either end may be None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer {_range_text(lo, hi)}, got {text!r}"
            ) from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_range_text(lo, hi)}, got {text!r}")
        return v

    parse.__name__ = "integer"
    return parse


def float_in(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
):
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``lo_open``/``hi_open`` exclude the ends)."""

    def parse(text: str) -> float:
        rng = _range_text(lo, hi, lo_open, hi_open)
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {rng}, got {text!r}") from None
        bad = not math.isfinite(v)
        if lo is not None:
            bad |= v <= lo if lo_open else v < lo
        if hi is not None:
            bad |= v >= hi if hi_open else v > hi
        if bad:
            raise argparse.ArgumentTypeError(f"must be a number {rng}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


def int_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (non-negative integers)."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0, e.g. 0,1,2, got {text!r}"
        ) from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0, e.g. 0,1,2, got {text!r}"
        )
    return vals


def check_png_out(text: str, flag: str = "--save-png") -> Path:
    """Check an output PNG path before any work: not a folder, named ``*.png``, its parent not a file."""
    from awm_lib.errors import ConfigError

    p = Path(text)
    if p.is_dir():
        raise ConfigError(f"{flag} {text}: is a directory; give a file name, e.g. {p / 'overlay.png'}")
    if p.suffix.lower() != ".png":
        raise ConfigError(f"{flag} {text}: the file written is a PNG; give a name ending in .png")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {text}: {parent} is a file, not a folder")
            break
    return p


def make_parent(p: Path, prog: str, flag: str = "--save-png") -> Path:
    """Create ``p``'s folder if it is missing, and say so on stderr (stdout may be JSON)."""
    if not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        print(f"{prog}: created the folder {p.parent} for {flag}", file=sys.stderr)
    return p
