""""Load the result if it exists, else train": the guard every notebook uses.

A chapter that needs a trained model calls::

    result = load_or_train(cfg, "results/runs/mias-f0")

* a finished run with the same configuration in that folder -> its results, at once;
* an interrupted one (checkpoints but no ``results.json``) -> resumed and finished;
* nothing there -> trained from scratch.

So a reader's notebook runs in seconds on a laptop with the shipped results,
and the published build on a GPU recomputes everything. A finished run made
with a *different* configuration is an error (:class:`~awm_lib.errors.CheckpointError`),
never silently reused: delete the folder or pass ``retrain=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from awm_lib.train import checkpoint as ckpt
from awm_lib.train.config import RESUME_IGNORE, TrainConfig, to_dict
from awm_lib.train.experiment import CONFIG, TrainResult, read_results, train


def load_or_train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    retrain: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """The :class:`TrainResult` of ``cfg`` in ``out_dir``: loaded if done, else (re)trained.

    Explained in the book: chapter 4, *Where does the model look?*
    (``notebooks/04_attention_visualisation.ipynb``).
    """
    out_dir = Path(out_dir)
    if retrain and out_dir.exists():
        shutil.rmtree(out_dir)
    results = read_results(out_dir)
    if results is not None:
        saved = json.loads((out_dir / CONFIG).read_text())["config"]
        ckpt.check_config_compatible(saved, to_dict(cfg), RESUME_IGNORE, what="finished run's configuration")
        return TrainResult(out_dir, None, results)
    return train(cfg, out_dir, resume=ckpt.has_checkpoint(out_dir), progress=progress,
                 command=command or f"load_or_train(preset={cfg.preset!r}, out_dir={str(out_dir)!r})")
