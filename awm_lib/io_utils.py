"""Small I/O helpers shared by every layer: atomic writes and run records.

Nothing is ever written half-way: write to a temporary file in the same folder,
then ``os.replace`` it onto the target (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awm_lib


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    >>> with atomic_path("out.png") as tmp:   # doctest: +SKIP
    ...     image.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give them the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def device_name(device: Any = None) -> str:
    """A human-readable device name: the GPU's name, or the CPU model."""
    try:
        import torch

        if (
            device is not None
            and str(device).startswith("cuda")
            or (device is None and torch.cuda.is_available())
        ):
            return torch.cuda.get_device_name(device if device is not None else 0)
    except Exception:  # pragma: no cover - torch missing or CUDA broken
        pass
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU: {cpu} ({os.cpu_count()} cores)"


def run_record(
    command: str | list[str] | None = None, seed: int | None = None, device: Any = None, **extra: Any
) -> dict:
    """What every result file records: command, seed, device, date, versions."""
    versions = {"awm_lib": awm_lib.__version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "numpy"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    if command is None:
        command = sys.argv
    if isinstance(command, list):
        command = " ".join(command)
    rec = {
        "command": command,
        "seed": seed,
        "device": device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions,
    }
    rec.update(extra)
    return rec
