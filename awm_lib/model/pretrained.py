"""``save_pretrained`` / ``from_pretrained`` for the library's classifiers, the transformers way.

A saved model is a folder with two files::

    config.json          {"model_type": "awm-roi-classifier", "awm_lib_version": ..., "config": {...}}
    model.safetensors    the weights (no pickle; loads anywhere)

so a model can be loaded without the code that trained it::

    model = RoIClassifier.from_pretrained("runs/mias-fold0")   # a training run: its best checkpoint
    model.save_pretrained("export/roi-vit-s")                   # a folder anyone can load
    model = RoIClassifier.from_pretrained("export/roi-vit-s")

:meth:`PretrainedModel.from_pretrained` takes a ``save_pretrained`` folder, a
training step folder (``.../checkpoints/step-NNNNNNNN``) or a whole training run
folder (``python -m awm_lib train --out DIR``: it follows
``checkpoints/latest.json`` to the ``best`` or ``last`` checkpoint). Every
checkpoint the trainer writes is itself a ``save_pretrained`` folder (it also
holds ``config.json``); for step folders written before that, the model's
configuration is read from the run's ``state.json``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_model, save_model

from awm_lib import __version__
from awm_lib.config import from_dict, to_dict
from awm_lib.errors import CheckpointError
from awm_lib.io_utils import atomic_path, write_json_atomic
from awm_lib.model.backbone import RandomBackboneWarning

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# The training run folder's layout (written by awm_lib.train.checkpoint; tests/test_pretrained.py keeps them
# equal).
RUN_CHECKPOINTS, RUN_POINTER, RUN_STATE = "checkpoints", "latest.json", "state.json"


def locate(path: str | os.PathLike, which: str = "best") -> Path:
    """The folder that holds the weights: ``path`` itself, or a training run's ``best`` / ``last``
    checkpoint."""
    path = Path(path)
    pointer = path / RUN_CHECKPOINTS / RUN_POINTER
    if not (path / WEIGHTS_NAME).is_file() and pointer.is_file():
        try:
            step = json.loads(pointer.read_text()).get(which)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"unreadable checkpoint pointer ({e})", path=pointer) from None
        if not step:
            raise CheckpointError(f"the run has no {which!r} checkpoint yet", path=pointer)
        path = path / RUN_CHECKPOINTS / step
    if not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"no {WEIGHTS_NAME} here: give a folder written by save_pretrained, a training step folder, "
            f"or a training run folder (with {RUN_CHECKPOINTS}/{RUN_POINTER})", path=path)
    return path


@contextmanager
def quiet_random_backbone():
    """Build a model whose weights are about to be loaded: no "random backbone" warning or log line."""
    log = logging.getLogger("awm_lib.model.backbone")
    disabled = log.disabled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        log.disabled = True
        try:
            yield
        finally:
            log.disabled = disabled


class PretrainedModel:
    """Mixin for an ``nn.Module`` built as ``cls(cfg, backbone=None)`` from a config dataclass ``self.cfg``.

    A subclass sets :attr:`MODEL_TYPE` and :attr:`CONFIG_CLASS`, and says how a
    training run's configuration (``state.json``) holds its own
    (:meth:`config_from_training_run`).
    """

    MODEL_TYPE: ClassVar[str]
    CONFIG_CLASS: ClassVar[type]

    def pretrained_config(self) -> dict:
        """What ``config.json`` holds."""
        return {"model_type": self.MODEL_TYPE, "awm_lib_version": __version__, "config": to_dict(self.cfg)}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each file atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_model(self, str(tmp), metadata={"format": "pt"})
        write_json_atomic(directory / CONFIG_NAME, self.pretrained_config())
        return directory

    @classmethod
    def config_from_training_run(cls, run_config: dict) -> dict:
        """The model's configuration inside a training run's configuration (a ``TrainConfig`` dict)."""
        raise NotImplementedError

    @classmethod
    def read_config(cls, folder: str | os.PathLike) -> Any:
        """The model configuration of a located folder (``config.json``, else the training ``state.json``)."""
        folder = Path(folder)
        try:
            if (folder / CONFIG_NAME).is_file():
                saved = json.loads((folder / CONFIG_NAME).read_text())
                if saved.get("model_type") != cls.MODEL_TYPE:
                    raise CheckpointError(f"holds a {saved.get('model_type')!r}, not a {cls.MODEL_TYPE!r}; "
                                          "load it with its own class", path=folder / CONFIG_NAME)
                return from_dict(cls.CONFIG_CLASS, saved["config"])
            if (folder / RUN_STATE).is_file():  # a training checkpoint written before config.json was
                return from_dict(
                    cls.CONFIG_CLASS,
                    cls.config_from_training_run(json.loads((folder / RUN_STATE).read_text())["config"]),
                )
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(
                f"unreadable model configuration ({type(e).__name__}: {e})", path=folder
            ) from None
        raise CheckpointError(
            f"no {CONFIG_NAME} (nor a training {RUN_STATE}) beside the weights", path=folder
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, which: str = "best", config: Any = None,
                        backbone: torch.nn.Module | None = None, device: str | torch.device = "cpu"):
        """The model saved in ``path`` (see the module docstring), in eval mode on ``device``.

        ``config`` replaces the saved configuration (as in transformers), e.g. the
        one a training run recorded. ``backbone`` replaces the backbone the
        configuration describes; it is needed for checkpoints that hold no backbone
        weights (a head trained on cached tokens of a frozen backbone: pass that
        backbone, or a token input). Weights that do not fit the configuration
        raise :class:`~awm_lib.errors.CheckpointError` naming the tensors.
        """
        folder = locate(path, which)
        cfg = cls.read_config(folder) if config is None else config
        with quiet_random_backbone():  # the weights come from the file
            model = cls(cfg, backbone=backbone)
        file = folder / WEIGHTS_NAME
        try:
            missing, unexpected = load_model(model, str(file), strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise CheckpointError(
                f"weights do not fit this model (different architecture?): {' '.join(str(e).split())[:400]}",
                path=file,
            ) from None
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on corrupt files
            raise CheckpointError(f"cannot read weights ({type(e).__name__}: {e})", path=file) from None
        if backbone is not None:  # the caller's backbone: the file need not hold it
            missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            head_only = missing and all(k.startswith("backbone.") for k in missing)
            hint = ("; the checkpoint holds no backbone (it was trained on cached tokens): pass backbone=..."
                    if head_only else " (was it made with a different model configuration?)")
            raise CheckpointError(f"weights do not fit this model: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}{hint}", path=file)
        return model.to(device).eval()
