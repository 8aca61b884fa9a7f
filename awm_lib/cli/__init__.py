"""``python -m awm_lib <command> ...``: one module per command under ``awm_lib/cli/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``--help`` is fast.
Any :class:`awm_lib.errors.AWMError`, and any bad argument, becomes one line on
stderr (``python -m awm_lib <command>: error: ...``) and exit status 2. Warnings
(Python warnings and the library's log warnings alike) are printed once each, as
one line without a source path.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from awm_lib.errors import AWMError

PROG = "python -m awm_lib"

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
    "gpu-import": "gpu_import_cmd",
    "ablation": "ablation_cmd",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (naming the flag) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each option's default (unless it is None/False or already in the help text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(d, (list, tuple, str)) and not d:
            return text
        return text + " (default: %(default)s)"


def _load(name: str):
    try:
        return importlib.import_module(f"awm_lib.cli.{COMMANDS[name]}")
    except ModuleNotFoundError as e:  # a command not written yet
        if e.name == f"awm_lib.cli.{COMMANDS[name]}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    from awm_lib import __version__

    parser = OneLineParser(prog=PROG, description="Attend What Matters: RoI-token mammogram classification.")
    parser.add_argument("--version", action="version", version=f"{PROG} (awm-lib) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, formatter_class=DefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _WarningPrinter(logging.Handler):
    """Prints each distinct warning once: ``python -m awm_lib <cmd>: warning: <one line>``.

    Installed as ``warnings.showwarning`` and as a handler of the ``awm_lib`` logger
    (the library both logs and warns some messages, e.g. the random backbone).
    """

    def __init__(self, prog: str, stream=None):
        super().__init__(level=logging.WARNING)
        self.prog = prog
        self.stream = stream
        self.seen: set[str] = set()

    def say(self, message: str) -> None:
        text = " ".join(str(message).split())
        if text in self.seen:
            return
        self.seen.add(text)
        print(f"{self.prog}: warning: {text}", file=self.stream or sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage())

    def showwarning(self, message, category, filename, lineno, file=None, line=None):
        self.say(str(message))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{PROG} {args.command}"
    printer = _WarningPrinter(prog)
    log = logging.getLogger("awm_lib")
    old_propagate, old_show = log.propagate, warnings.showwarning
    log.addHandler(printer)
    log.propagate = False
    warnings.showwarning = printer.showwarning
    try:
        return int(args._run(args) or 0)
    except AWMError as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more to write
        return 0
    finally:
        log.removeHandler(printer)
        log.propagate = old_propagate
        warnings.showwarning = old_show
