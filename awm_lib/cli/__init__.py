"""``python -m awm_lib <command> ...``: one module per command under ``awm_lib/cli/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``--help`` is fast.
Any :class:`awm_lib.errors.AWMError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from awm_lib.errors import AWMError

# command name -> module under awm_lib.cli
COMMANDS = {
    "inspect": "inspect_cmd",
    "synth": "synth_cmd",
    "propose": "propose_cmd",
    "train": "train_cmd",
    "evaluate": "evaluate_cmd",
    "predict": "predict_cmd",
    "pretrain": "pretrain_cmd",
    "bench": "bench_cmd",
    "ablation": "ablation_cmd",
}


def _load(name: str):
    try:
        return importlib.import_module(f"awm_lib.cli.{COMMANDS[name]}")
    except ModuleNotFoundError as e:  # a command not written yet
        if e.name == f"awm_lib.cli.{COMMANDS[name]}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m awm_lib", description="Attend What Matters: RoI-token mammogram classification.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except AWMError as e:
        print(f"awm: error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("awm: interrupted", file=sys.stderr)
        return 130
