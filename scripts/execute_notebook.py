"""Execute one notebook with papermill using the parameters of a profile.

    python scripts/execute_notebook.py notebooks/02_cost.ipynb build/02_cost.ipynb --profile cpu
    python scripts/execute_notebook.py IN.ipynb OUT.ipynb --profile gpu --param bench_path=/tmp/bench.json

Parameters come from ``notebooks/profiles.yml``: ``{profile: {notebook_stem: {name: value}}}``.
The notebook runs with the project root as its working directory. The output is
written to a temporary file and renamed, so a failed run leaves no stale output.

Widgets: nbclient stores the state of every ipywidget the notebook created in the
notebook's metadata (``store_widget_state``, passed explicitly below), and myst-nb
embeds it in the HTML page, so the static book can draw the widgets.
Hub downloads are off (``HF_HUB_OFFLINE=1``) unless the caller's environment says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import papermill as pm
import yaml

ROOT = Path(__file__).resolve().parent.parent


def profile_parameters(notebook: Path, profile: str) -> dict:
    table = yaml.safe_load((ROOT / "notebooks" / "profiles.yml").read_text()) or {}
    if profile not in table:
        raise SystemExit(f"unknown profile {profile!r}; notebooks/profiles.yml has {sorted(table)}")
    return dict((table[profile] or {}).get(notebook.stem, {}) or {})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"))
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override one parameter after the profile's (VALUE read as YAML); repeatable")
    args = ap.parse_args()
    params = profile_parameters(args.input, args.profile)
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = yaml.safe_load(value)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name("." + args.output.name + ".running.ipynb")
    t0 = time.time()
    print(f"papermill [{args.profile}] {args.input} {params}", flush=True)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the book never downloads weights
    try:
        pm.execute_notebook(
            str(args.input), str(tmp), parameters=params, cwd=str(ROOT), kernel_name="python3",
            progress_bar=False, log_output=False, store_widget_state=True,
        )
    except BaseException:
        # keep the failed notebook for inspection beside the output, never as the output
        if tmp.exists():
            tmp.replace(args.output.with_name(args.output.stem + ".FAILED.ipynb"))
        raise
    tmp.replace(args.output)
    print(f"  done in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
