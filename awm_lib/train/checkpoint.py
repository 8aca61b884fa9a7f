"""Checkpoints: safetensors weights + JSON state, written so a crash never leaves half a file.

A run folder looks like this::

    out_dir/
      checkpoints/
        step-00000120/          one checkpoint (a folder, written whole or not at all)
          model.safetensors     the weights (safetensors: no pickle, loads anywhere)
          config.json           the model's configuration: the folder loads with RoIClassifier.from_pretrained
          state.json            config, step, epoch, best metric, ... (human-readable)
          trainer.pt            optimizer, scheduler and RNG states (only needed to resume)
          COMPLETE              marker written last: a folder without it is ignored
        latest.json             {"last": "step-00000120", "best": "step-00000100"}

Why a folder per step and a pointer file? Renaming a fresh folder onto a new name
is atomic, and so is replacing ``latest.json`` (:func:`awm_lib.io_utils.write_json_atomic`).
If the process is killed at any moment, ``latest.json`` names a checkpoint that
was complete before the kill. Old checkpoints are pruned afterwards, never the
ones ``latest.json`` points at.

Loading checks the configuration: weights saved for one architecture cannot be
loaded into another, and resuming with a different configuration would silently
train something else. Both raise :class:`awm_lib.errors.CheckpointError`
naming the keys that differ.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from awm_lib.errors import CheckpointError
from awm_lib.io_utils import write_json_atomic

WEIGHTS = "model.safetensors"
STATE = "state.json"
CONFIG = "config.json"  # the model's own configuration (awm_lib.model.pretrained): from_pretrained reads it
TRAINER = "trainer.pt"
COMPLETE = "COMPLETE"
POINTER = "latest.json"
CKPT_DIR = "checkpoints"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path  # the step folder
    state: dict  # the contents of state.json (has "config", "step", ...)
    trainer_state: dict | None = None  # optimizer / scheduler / RNG (only when asked for)
    weights_loaded: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.state.get("config", {})

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


# --- saving ---------------------------------------------------------------------------
def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    state: dict,
    trainer_state: dict | None = None,
    *,
    is_best: bool = False,
    keep_last: int = 2,
) -> Path:
    """Write ``out_dir/checkpoints/step-<step>/`` atomically and point ``latest.json`` at it.

    ``state`` must be JSON-serialisable and should hold ``"config"`` (the full run
    configuration as a dict). ``is_best`` also makes it the ``best`` checkpoint.
    Returns the checkpoint folder.
    """
    root = Path(out_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(unwrap(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2, default=_json_default) + "\n")
        pretrained_config = getattr(unwrap(model), "pretrained_config", None)
        if (
            pretrained_config is not None
        ):  # the step folder is also a save_pretrained folder (from_pretrained loads it)
            (tmp / CONFIG).write_text(json.dumps(pretrained_config(), indent=2) + "\n")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER)
        (tmp / COMPLETE).write_text("ok\n")
        if final.exists():  # the same step saved twice (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = read_pointer(out_dir)
    pointer["last"] = final.name
    if is_best:
        pointer["best"] = final.name
    write_json_atomic(root / POINTER, pointer)
    _prune(root, pointer, keep_last)
    return final


def mark_best(out_dir: str | os.PathLike, step: int) -> None:
    """Point ``best`` at an existing checkpoint (e.g. when no evaluation ever ran)."""
    root = Path(out_dir) / CKPT_DIR
    pointer = read_pointer(out_dir)
    pointer["best"] = step_dir_name(step)
    write_json_atomic(root / POINTER, pointer)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _prune(root: Path, pointer: dict, keep_last: int) -> None:
    keep = {pointer.get("last"), pointer.get("best")}
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    keep.update(p.name for p in steps[-max(keep_last, 1):])
    for p in steps:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".step-*"):  # temp folders left by a process killed mid-write
        shutil.rmtree(p, ignore_errors=True)


def read_pointer(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / CKPT_DIR / POINTER
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"corrupt checkpoint pointer ({e}); delete it to start afresh", path=path
        ) from e


# --- finding --------------------------------------------------------------------------
def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """The step folder for ``path``: a step folder itself, or a run folder (then
    ``which`` = ``"best"`` or ``"last"`` picks one through ``latest.json``)."""
    path = Path(path)
    if (path / WEIGHTS).exists() or (path / STATE).exists():
        if not (path / COMPLETE).exists():
            raise CheckpointError(
                "checkpoint is incomplete (no COMPLETE marker): it was being written when the run stopped",
                path=path,
            )
        return path
    if not path.exists():
        raise CheckpointError("no such checkpoint folder", path=path)
    pointer = read_pointer(path)
    if not pointer:
        raise CheckpointError(
            f"not a checkpoint: expected {WEIGHTS} here or {CKPT_DIR}/{POINTER} (a run folder written by "
            "`python -m awm_lib train`)",
            path=path,
        )
    name = pointer.get(which) or pointer.get("last")
    step = path / CKPT_DIR / name
    if not (step / COMPLETE).exists():
        raise CheckpointError(f"{POINTER} names {name}, which is missing or incomplete", path=path)
    return step


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    try:
        resolve_checkpoint(out_dir, "last")
    except CheckpointError:
        return False
    return True


# --- configuration checks -------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists/tuples compared as lists)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


#: Configuration keys added after runs were saved, each with the value that reproduces what the
#: code did before the key existed. A saved configuration WITHOUT such a key matches a current one
#: holding that value (so finished runs and checkpoints stay usable); any other value is a difference.
ADDED_KEYS: dict[str, Any] = {
    # issue 14: the reference implementation's recipe became expressible
    "model.mlp": "gelu", "model.head": "linear", "model.head_hidden": 256, "model.input_proj": True,
    "model.pos_dim": 256, "model.init_std": 0.02, "model.backbone.freeze_tokens": True,
    "loss.repulsive_on": "embeddings", "data.roi_margin_mm": None, "data.square_anchor": False,
    "data.anchor_in_nms": True, "data.roi_border": "shift",
}


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable list of ``key: saved -> current`` for keys that differ (see :data:`ADDED_KEYS`)."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if any(k == i or k.startswith(i + ".") for i in ignore):
            continue
        if k not in a and k in ADDED_KEYS and b.get(k) == ADDED_KEYS[k]:
            continue  # a run saved before the key existed did exactly this
        if a.get(k, "<missing>") != b.get(k, "<missing>"):
            diffs.append(f"{k}: {a.get(k, '<missing>')!r} (checkpoint) vs {b.get(k, '<missing>')!r} (now)")
    return diffs


def check_config_compatible(
    saved: dict, current: dict, ignore: tuple[str, ...] = (), what: str = "configuration"
) -> None:
    """Raise :class:`CheckpointError` if the two (nested) config dicts differ outside ``ignore``."""
    diffs = config_differences(saved, current, ignore)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs) - 8} more)" if len(diffs) > 8 else "")
        raise CheckpointError(
            f"the checkpoint's {what} does not match: {shown}. "
            "Use the same settings (or --set them back), or start a new run folder."
        )


# --- loading --------------------------------------------------------------------------
def load_weights(model: torch.nn.Module, step_dir: str | os.PathLike) -> None:
    """Load ``model.safetensors`` into ``model``; any missing/unexpected/misshaped tensor is an error."""
    path = Path(step_dir) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"no {WEIGHTS} in the checkpoint", path=step_dir)
    try:
        missing, unexpected = load_model(unwrap(model), str(path), strict=False)
    except RuntimeError as e:  # shape mismatch
        first = " ".join(str(e).split())[:400]
        raise CheckpointError(
            f"weights do not fit this model (different architecture?): {first}", path=path
        ) from e
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on corrupt files
        raise CheckpointError(f"cannot read weights ({type(e).__name__}: {e})", path=path) from e
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit this model: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]} "
            "(was the checkpoint made with a different model configuration?)",
            path=path,
        )


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    *,
    which: str = "best",
    expected_config: dict | None = None,
    config_key: str | None = None,
    ignore: tuple[str, ...] = (),
    with_trainer_state: bool = False,
) -> Checkpoint:
    """Read a checkpoint (a step folder or a run folder; see :func:`resolve_checkpoint`).

    ``expected_config`` is compared with the saved ``config`` (or its sub-dict
    ``config_key``, e.g. ``"model"``) before any weight is touched. ``model``, if
    given, receives the weights. ``with_trainer_state`` also reads ``trainer.pt``.
    """
    step_dir = resolve_checkpoint(path, which)
    try:
        state = json.loads((step_dir / STATE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {STATE}: {e}", path=step_dir) from e
    if expected_config is not None:
        saved = state.get("config", {})
        if config_key is not None:
            saved = saved.get(config_key, {})
        check_config_compatible(saved, expected_config, ignore, what=f"{config_key or 'run'} configuration")
    ck = Checkpoint(path=step_dir, state=state)
    if model is not None:
        load_weights(model, step_dir)
        ck.weights_loaded = True
    if with_trainer_state:
        tpath = step_dir / TRAINER
        if not tpath.exists():
            raise CheckpointError(
                f"no {TRAINER}: this checkpoint holds weights only and cannot be resumed", path=step_dir
            )
        ck.trainer_state = torch.load(tpath, map_location="cpu", weights_only=True)
    return ck

