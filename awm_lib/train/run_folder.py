"""Never lose a run: what a run folder holds, the guard before writing into one, and the clean-up after a
failure.

``python -m awm_lib train --out DIR`` (and :func:`awm_lib.train.experiment.train`)
follow three rules:

* a folder that **holds a run** (a checkpoint or ``results.json``) is never
  written over by accident: without ``resume`` or ``overwrite`` the call is
  refused with :class:`~awm_lib.errors.RunExistsError` before any work;
* ``overwrite`` removes the old run's files (only those: nothing else in the
  folder is touched), then trains from scratch;
* a run that fails before its first checkpoint leaves nothing behind: the folder
  is removed if this run created it, otherwise only the files the run wrote.

This module imports no torch, so the command line can check ``--out`` at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from awm_lib.errors import RunExistsError

# Everything a training run writes into its folder (config.json first, results.json last).
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "checkpoints",
    "predictions_val.csv",
    "predictions_test.csv",
    "results.json",
    "lesion_recall.json",
)
CKPT_DIR = "checkpoints"
RESULTS = "results.json"


def holds_run(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds work that would be lost: a checkpoint or a results file."""
    out_dir = Path(out_dir)
    ck = out_dir / CKPT_DIR
    return (out_dir / RESULTS).is_file() or (ck.is_dir() and any(ck.iterdir()))


def check_run_folder(
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_flag: str = "--resume",
    overwrite_flag: str = "--overwrite",
) -> None:
    """Refuse to train into a folder that holds a run unless asked to resume or overwrite.

    Raises :class:`RunExistsError` (one line naming the folder and both options);
    also refuses a path that is a file, and ``resume`` together with ``overwrite``.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise RunExistsError(
            f"{resume_flag} and {overwrite_flag} contradict each other; give one of them", out_dir
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError("is a file, not a run folder; give a folder for the run", out_dir)
    if holds_run(out_dir) and not (resume or overwrite):
        done = f" (a finished one: {RESULTS} is there)" if (out_dir / RESULTS).is_file() else ""
        raise RunExistsError(
            f"holds a run; use {resume_flag} to continue or {overwrite_flag} to replace it{done}", out_dir
        )


def remove_run_files(out_dir: str | os.PathLike) -> None:
    """Delete a run's own files from ``out_dir`` (for ``overwrite``); other files stay."""
    out_dir = Path(out_dir)
    for name in RUN_FILES:
        p = out_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


@contextlib.contextmanager
def cleanup_on_failure(
    out_dir: str | os.PathLike, *, enabled: bool = True, holds: Callable[[Path], bool] = holds_run
) -> Iterator[Path]:
    """Create ``out_dir``; if the body raises before a checkpoint exists, leave no trace of the run.

    A folder this call created is removed whole; a folder that existed before
    keeps everything but the run's own files. Work that reached a checkpoint is
    always kept (it can be resumed). ``holds(out_dir)`` says whether it did
    (default: :func:`holds_run`; pretraining passes its own test).
    """
    out_dir = Path(out_dir)
    top = None  # the highest folder of out_dir's path that this call creates
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            break
        top = p
    created = top is not None
    if enabled:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield out_dir
    except BaseException:
        if enabled and not holds(out_dir):
            if created:
                shutil.rmtree(top, ignore_errors=True)
            else:
                remove_run_files(out_dir)
        raise
